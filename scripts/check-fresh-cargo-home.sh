#!/usr/bin/env bash
# Runs the tests that start cargo themselves (the deploy test reads `cargo metadata --offline`)
# with a cargo home that holds only what a build for this platform downloads: the crates of
# `cargo fetch --target <host>`, nothing an earlier build or resolve left behind. A test that
# passes only on a machine which built the project before fails here (issue 22: an unfiltered
# `cargo metadata --offline` wanted Windows-only crates that a fresh clone never downloads).
# Costs one download of this platform's crates (about 30 MB from crates.io) and no rebuild: the
# test binaries are the ones already built, run with CARGO_HOME pointing elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."

# Test targets (package:test) whose sources run cargo, and where those sources live.
checked=("faultline-tests:deploy")
checked_sources=(tests/tests/deploy)

# Any other source that starts cargo must join the list above.
starts_cargo='env::var\("CARGO"\)|env!\("CARGO"\)|Command::new\("cargo"\)'
mapfile -t found < <(git ls-files '*.rs' | grep -v '^vendor/' | xargs grep -lE "$starts_cargo" || true)
for file in "${found[@]}"; do
  covered=no
  for dir in "${checked_sources[@]}"; do
    [[ $file == "$dir"/* ]] && covered=yes
  done
  if [ "$covered" = no ]; then
    echo "check-fresh-cargo-home: $file starts cargo, but its test is not in this script's list" >&2
    exit 1
  fi
done

host=$(rustc -vV | sed -n 's/^host: //p')
home=$(mktemp -d)
trap 'rm -rf "$home"' EXIT
echo "check-fresh-cargo-home: fetching the crates for $host into an empty cargo home"
CARGO_HOME=$home cargo fetch --locked --quiet --target "$host"

for target in "${checked[@]}"; do
  package=${target%%:*}
  test=${target#*:}
  exe=$(cargo test --locked -p "$package" --test "$test" --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["executable"])')
  [ -n "$exe" ] || { echo "check-fresh-cargo-home: no test binary for $target" >&2; exit 1; }
  echo "check-fresh-cargo-home: $package --test $test with CARGO_HOME=$home"
  # Not through `cargo test`: a new CARGO_HOME moves the registry sources and would rebuild
  # every dependency. The binary finds cargo on PATH, as a user's shell would.
  (cd "tests" && env -u CARGO CARGO_HOME="$home" "$exe" -q)
done
