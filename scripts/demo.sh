#!/usr/bin/env bash
# The main job, locally: a private containerd, a pod made the way kubelet makes it, resolved to its
# host PID through the runtime and entered with nsexec (then more faults as they land).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/as-root.sh
./scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --workspace --bins
exec cargo run -q -p faultline-tests --bin faultline-demo -- "$@"
