#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for SECONDS each (default 60) with libFuzzer through
# cargo-fuzz, starting from the kept corpus (fuzz/corpus/NAME) and the crash regressions
# (fuzz/regressions/NAME), then minimises the corpus in place. A crash stops the run and leaves
# its input under fuzz/artifacts/NAME: fix it, then move the input to fuzz/regressions/NAME,
# where the workspace test fuzz_regressions replays it in every test run.
# Not part of CI's default run. Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
seconds=${1:-60}
shift || true
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# cargo-fuzz needs nightly flags (-Zsanitizer); the stable toolchain takes them with this.
export RUSTC_BOOTSTRAP=1
cd fuzz
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)
cargo fuzz build
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "regressions/$t"
  echo "fuzz: $t for ${seconds}s"
  cargo fuzz run "$t" "corpus/$t" "regressions/$t" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 2>&1 |
    grep -E "^(stat::|Done|==|SUMMARY|artifact_prefix|Test unit written)|ERROR|panicked" || true
  if compgen -G "artifacts/$t/crash-*" >/dev/null || compgen -G "artifacts/$t/oom-*" >/dev/null ||
    compgen -G "artifacts/$t/timeout-*" >/dev/null; then
    echo "fuzz: $t found inputs that fail: fuzz/artifacts/$t" >&2
    exit 1
  fi
  cargo fuzz cmin "$t" "corpus/$t" >/dev/null 2>&1 || true
done
echo "fuzz: ${#targets[@]} targets, ${seconds}s each, no crash"
