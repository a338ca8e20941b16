#!/usr/bin/env bash
# Builds the agent and controller images without a Docker engine or a registry, as OCI image
# archives that `ctr images import` (or `skopeo copy oci-archive:...`) takes:
#   target/images/faultline-agent.tar       faultline-agent:<version>
#   target/images/faultline-controller.tar  faultline-controller:<version>
# The same images as the Dockerfile's targets `agent` and `controller`, read from the
# Dockerfile itself (tests/src/dockerfile.rs; instructions it cannot reproduce are errors): the
# base is the Dockerfile's Debian release made from Debian packages by mmdebstrap (minbase, with
# the docs, man pages and locales left out as Debian's slim images leave them out), plus the
# packages its `apt-get install` adds; a second layer holds the files its COPYs copy, where
# they copy them; the user and entrypoint are its USER and ENTRYPOINT.
#
#   scripts/build-images.sh                 # release binaries (cargo build --release, as the Dockerfile)
#   scripts/build-images.sh --debug --out-dir DIR   # the debug binaries already built (the e2e suite)
#
# The bases are cached under target/images/cache (one per release and package list), so only
# the first build downloads from the Debian mirror (FAULTLINE_DEBIAN_MIRROR, default
# http://deb.debian.org/debian, and its -security sibling).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/as-root.sh
export PATH="$HOME/.cargo/bin:$PATH"

profile=release
out_dir=target/images
while [ $# -gt 0 ]; do
  case $1 in
  --debug) profile=debug ;;
  --out-dir) out_dir=${2:?--out-dir needs a directory}; shift ;;
  *) echo "build-images: unknown argument $1 (--debug, --out-dir DIR)" >&2; exit 2 ;;
  esac
  shift
done
command -v mmdebstrap >/dev/null || { echo "build-images: mmdebstrap is missing (scripts/setup.sh installs it)" >&2; exit 1; }

target_dir=$(pwd)/target
tool=$target_dir/debug/faultline-image
if [ "$profile" = release ]; then
  cargo build --locked -q -p faultline-tests --bin faultline-image
  # shellcheck disable=SC2046 # one -p per package the Dockerfile's build stage builds
  cargo build --release --locked $(printf -- '-p %s ' $("$tool" cargo-packages)) --bins
fi
[ -x "$tool" ] || { echo "build-images: $tool is missing (cargo build --workspace)" >&2; exit 1; }

mirror=${FAULTLINE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
cache=$target_dir/images/cache
mkdir -p "$cache" "$out_dir"

# The Debian base of a target, made once per release and package list.
base_of() {
  local target=$1 suite packages key base
  suite=$("$tool" plan --target "$target" | sed -n 's/^suite //p')
  packages=$("$tool" plan --target "$target" | sed -n 's/^packages //p')
  key=$(printf '%s\n' "$suite" "$packages" "$mirror" minbase slim-merged-usr-v2 | sha256sum | cut -c1-16)
  base=$cache/$target-$suite-$key.tar
  # One builder at a time per cache (test processes may run this side by side).
  exec 9>"$cache/.lock"
  flock 9
  if [ ! -f "$base" ]; then
    echo "build-images: $target base: Debian $suite minbase${packages:+ + $packages} (mmdebstrap, from $mirror)" >&2
    # merged /usr set up by mmdebstrap's hook, as Debian's images have it (the default for
    # bookworm installs the usrmerge package instead, which brings perl: 40 MB more).
    mmdebstrap --quiet --variant=minbase --mode=root --format=tar \
      --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
      ${packages:+--include="${packages// /,}"} \
      --aptopt='Acquire::Languages "none"' \
      --dpkgopt='path-exclude=/usr/share/doc/*' \
      --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      --dpkgopt='path-exclude=/usr/share/man/*' \
      --dpkgopt='path-exclude=/usr/share/groff/*' \
      --dpkgopt='path-exclude=/usr/share/info/*' \
      --dpkgopt='path-exclude=/usr/share/lintian/*' \
      --dpkgopt='path-exclude=/usr/share/linda/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' \
      --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/var/log/apt/* "$1"/var/log/dpkg.log' \
      "$suite" "$base.partial" \
      "deb $mirror $suite main" \
      "deb $mirror $suite-updates main" \
      "deb ${mirror%/debian}/debian-security $suite-security main" >&2
    mv "$base.partial" "$base"
  fi
  exec 9>&-
  echo "$base"
}

for target in agent controller; do
  base=$(base_of "$target")
  "$tool" build --target "$target" --base "$base" --binaries "$target_dir/$profile" \
    --out "$out_dir/faultline-$target.tar" >/dev/null
  size=$(stat -c %s "$out_dir/faultline-$target.tar")
  echo "build-images: $out_dir/faultline-$target.tar ($((size / 1024 / 1024)) MiB, $profile binaries)"
done
