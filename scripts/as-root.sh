# shellcheck shell=bash
# Sourced by the scripts that need root: re-runs the calling script through sudo when started
# as another user and sudo exists; otherwise says so and stops. Keeps the caller's PATH (the
# Rust toolchain usually lives in the user's ~/.cargo/bin) and CARGO_HOME/RUSTUP_HOME.
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then
    exec sudo --preserve-env=CARGO_HOME,RUSTUP_HOME,CI env "PATH=$PATH" "$PWD/scripts/$(basename "$0")" "$@"
  fi
  echo "$(basename "$0"): run as root (it installs packages, starts containerd and mounts FUSE); sudo is not installed" >&2
  exit 1
fi
