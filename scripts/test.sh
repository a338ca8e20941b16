#!/usr/bin/env bash
# The whole test suite: unit tests of every crate and the end-to-end suite on a real containerd.
# Run as root on Debian; installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --workspace --all-targets
cargo test --workspace --no-fail-fast
