#!/usr/bin/env bash
# The whole test suite: unit tests of every crate and the end-to-end suite on a real containerd.
# Run as root on Debian; installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/as-root.sh
./scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
# FUSE over io_uring (Linux 6.14+): the injector uses it wherever the kernel offers it, so
# the suite runs with it offered (the tests that want /dev/fuse only say so), and the
# parameter goes back to what it was afterwards.
uring=/sys/module/fuse/parameters/enable_uring
if [ -w "$uring" ]; then
  uring_was=$(cat "$uring")
  trap 'echo "$uring_was" > "$uring"' EXIT
  echo Y > "$uring"
fi
cargo build --workspace --all-targets
cargo test --workspace --no-fail-fast
# The io_uring transport's own unit tests live in the vendored fuser (outside the workspace).
cargo test --manifest-path vendor/fuser/Cargo.toml --lib --target-dir target/vendor-fuser
