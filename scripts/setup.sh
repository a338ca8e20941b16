#!/usr/bin/env bash
# Installs what faultline's build, demo and tests need on a Debian machine (as root). Idempotent:
# installs only the packages that are missing.
set -euo pipefail

packages=(
  containerd runc containernetworking-plugins busybox-static   # the real container runtime
  iptables ipset iproute2 strace                               # network faults (strace: golden tc bytes)
  fuse3                                                        # /dev/fuse, fusermount3
  protobuf-compiler                                            # gRPC code generation (build.rs)
  bindfs fio sqlite3 git                                       # benchmarks and real-tool checks
  wrk                                                          # HTTP proxy overhead benchmark (faultline-bench-http)
  postgresql                                                   # PostgreSQL under a fault mount (injector/tests/postgres.rs, bench/pgbench.sh)
  python3 python3-venv                                         # schema checks (kubernetes-validate from PyPI)
  ca-certificates pkg-config gcc
  mmdebstrap                                                   # images without Docker (scripts/build-images.sh)
  libc6-dev                                                    # static test programs (handover: gcc -static)
  dnsmasq-base                                                 # the upstream DNS server of the DNS e2e stories
  gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static  # aarch64 code run under qemu-user (timeshift, handover)
)
# kubectl renders deploy/ (kubectl kustomize) in tests/tests/deploy: Debian's kubernetes-client,
# unless some kubectl is installed already (another package's /usr/bin/kubectl would conflict).
command -v kubectl >/dev/null || packages+=(kubernetes-client)

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: run as root (it installs packages, and the tests start containerd and mount FUSE)" >&2
  exit 1
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  for d in "$HOME/.cargo/bin" /usr/local/cargo/bin; do
    [ -x "$d/cargo" ] && export PATH="$d:$PATH"
  done
fi
if ! command -v cargo >/dev/null; then
  echo "setup: no Rust toolchain found: install Rust 1.88 or newer (rustup) and re-run" >&2
  exit 1
fi
[ -e /dev/fuse ] || { echo "setup: /dev/fuse is missing (modprobe fuse)" >&2; exit 1; }
echo "setup: ok ($(containerd --version | awk '{print $3}'), runc $(runc --version | awk 'NR==1{print $3}'), $(cargo --version))"
