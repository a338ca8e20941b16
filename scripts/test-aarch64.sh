#!/usr/bin/env bash
# Cross-compiles the handover and timeshift crates for aarch64-unknown-linux-gnu and runs their unit tests under
# qemu-user (the architecture module, the scanner, syscall injection against a fake thread).
# The ptrace tests (tests/real.rs) need a real aarch64 kernel and are not run here: qemu-user
# does not implement ptrace. Run as root on Debian; installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

packages=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
rustup target add aarch64-unknown-linux-gnu >/dev/null

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64-static -L /usr/aarch64-linux-gnu"
# Everything (the real tests and the benchmark too) builds and lints for aarch64; the unit
# tests run.
cargo clippy -p faultline-handover -p faultline-timeshift --all-targets --target aarch64-unknown-linux-gnu -- -D warnings
cargo test -p faultline-handover --lib --target aarch64-unknown-linux-gnu "$@"
# timeshift: the clock names, the jump encodings, and qemu-user's own aarch64 vDSO parsed.
cargo test -p faultline-timeshift --lib --target aarch64-unknown-linux-gnu "$@"
