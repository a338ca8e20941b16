#!/usr/bin/env bash
# Benchmark faultline-injector against native and bindfs, in one run, with the same jobs:
#   seqread  fio, 1 MiB buffered sequential reads of a cached 1 GiB file      (MB/s)
#   seqwrite fio, 1 MiB buffered sequential writes                            (MB/s)
#   randread fio, 4 KiB random reads of a cached 256 MiB file                 (IOPS)
#   create / stat / unlink  bench/metaops.c, a single-threaded metadata loop  (ops/s)
# and, through faultline with a read/write rule active on the file (every request through
# the daemon and evaluated; a 0 ms latency injects nothing), 4 KiB random reads and 1 MiB
# sequential reads and writes.
# faultline runs twice: taking requests through FUSE over io_uring (the default where the
# kernel offers it; this script turns the fuse module's enable_uring on for the run and
# back afterwards), and from /dev/fuse only (--no-io-uring).
#
# Usage: sudo bench/run.sh            (root: it mounts FUSE filesystems)
# Env:   BENCH_DIR (default /var/tmp/faultline-bench), RUNTIME seconds per fio run (5),
#        REPEAT rounds of fio runs, median kept (5), INJECTOR (default target/release/faultline-injector),
#        META_FILES (20000), META_ROUNDS (10), META_REPEAT (5),
#        HOGS: CPU hogs (`yes`, normal priority) kept running through the measurements, to see
#        each setup on a busy node (0).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
BENCH_DIR=${BENCH_DIR:-/var/tmp/faultline-bench}
RUNTIME=${RUNTIME:-5}
REPEAT=${REPEAT:-5}
INJECTOR=${INJECTOR:-$repo/target/release/faultline-injector}
META_FILES=${META_FILES:-20000}
META_ROUNDS=${META_ROUNDS:-10}
HOGS=${HOGS:-0}

for tool in fio bindfs gcc python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install fio bindfs gcc python3)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
[ -x "$INJECTOR" ] || { echo "build first: cargo build --release -p faultline-injector" >&2; exit 1; }

pids=()
hogs=()
mounts=()
cleanup() {
  for p in "${hogs[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  for m in "${mounts[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$BENCH_DIR"
  [ -n "${uring_was:-}" ] && echo "$uring_was" >"$uring"
  return 0
}
trap cleanup EXIT

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR"/{native,faultline,devfuse,bindfs-src,bindfs,rule,rule-devfuse}
gcc -O2 -o "$BENCH_DIR/metaops" "$here/metaops.c"

# Data files exist before the mounts (in the originals), so every setup reads the same bytes.
for d in native faultline devfuse bindfs-src rule rule-devfuse; do
  head -c 1G /dev/urandom >"$BENCH_DIR/$d/seq.dat"
  head -c 256M /dev/urandom >"$BENCH_DIR/$d/rand.dat"
done
sync

uring=/sys/module/fuse/parameters/enable_uring
URING=no
if [ -w "$uring" ]; then
  uring_was=$(cat "$uring")
  echo Y >"$uring"
  URING=yes
fi

start_injector() { # DIR [RULES] [EXTRA ARGS...]
  local dir=$1 rules=${2:-} log=$BENCH_DIR/injector-$(basename "$1").log
  shift $(( $# < 2 ? $# : 2 ))
  if [ -n "$rules" ]; then
    "$INJECTOR" mount --path "$dir" --rules "$rules" "$@" >"$log" 2>"$log.err" &
  else
    "$INJECTOR" mount --path "$dir" "$@" >"$log" 2>"$log.err" &
  fi
  pids+=($!)
  for _ in $(seq 100); do grep -q '"ready":true' "$log" 2>/dev/null && return 0; sleep 0.1; done
  echo "injector did not get ready: $(cat "$log.err")" >&2
  exit 1
}

# "faultline" and "devfuse" measure kernel passthrough (no rule may read or write their
# files); the default mode, reachable, serves like "rule" and "rule-devfuse".
start_injector "$BENCH_DIR/faultline" "" --file-io passthrough
start_injector "$BENCH_DIR/devfuse" "" --no-io-uring --file-io passthrough
bindfs --multithreaded "$BENCH_DIR/bindfs-src" "$BENCH_DIR/bindfs"
mounts+=("$BENCH_DIR/bindfs")
rule_on() { echo '[{"type":"latency","path":"'"$BENCH_DIR/$1"'/*.dat","methods":["read","write"],"latency":"0ms"}]'; }
start_injector "$BENCH_DIR/rule" "$(rule_on rule)" --file-io passthrough
start_injector "$BENCH_DIR/rule-devfuse" "$(rule_on rule-devfuse)" --no-io-uring --file-io passthrough
grep -q '"io_uring":true' "$BENCH_DIR/injector-faultline.log" || URING="$URING (not offered: kernel < 6.14?)"

# fio JOB DIR -> one result: MB/s (seqread, seqwrite) or IOPS (randread).
fio_once() {
  local job=$1 dir=$2 args
  case $job in
    seqread)  args=(--rw=read --bs=1M --filename="$dir/seq.dat" --size=1G) ;;
    seqwrite) args=(--rw=write --bs=1M --filename="$dir/w.dat" --size=1G) ;;
    randread) args=(--rw=randread --bs=4k --filename="$dir/rand.dat" --size=256M) ;;
  esac
  fio --name="$job" --ioengine=psync --invalidate=0 --time_based --output-format=json \
    "${args[@]}" --runtime="$RUNTIME" | python3 -c '
import json, sys
j = json.load(sys.stdin)["jobs"][0]
job = sys.argv[1]
print(round(j["read"]["iops"]) if job == "randread" else
      round(j["read" if job == "seqread" else "write"]["bw_bytes"] / 1e6))
' "$job"
}

median() { python3 -c 'import sys, statistics; print(round(statistics.median(float(x) for x in sys.stdin.read().split())))'; }

# Background load on a shared machine drifts: the setups take turns within each round, so a
# drift hits them alike; the median of $REPEAT rounds is kept. Files are read once through
# each setup first ("cached" means cached), and each job has an untimed first pass.
for _ in $(seq "$HOGS"); do yes >/dev/null & hogs+=($!); done
FIO_SETUPS=(native faultline devfuse bindfs rule rule-devfuse)
for setup in "${FIO_SETUPS[@]}"; do
  cat "$BENCH_DIR/$setup/seq.dat" "$BENCH_DIR/$setup/rand.dat" >/dev/null
done
declare -A FIO
for job in seqread seqwrite randread; do
  for setup in "${FIO_SETUPS[@]}"; do
    RUNTIME=1 fio_once "$job" "$BENCH_DIR/$setup" >/dev/null
  done
  for _ in $(seq "$REPEAT"); do
    for setup in "${FIO_SETUPS[@]}"; do
      FIO[$setup.$job]+="$(fio_once "$job" "$BENCH_DIR/$setup") "
    done
  done
done
for setup in "${FIO_SETUPS[@]}"; do rm -f "$BENCH_DIR/$setup/w.dat"; done

# The metadata loop is sensitive to the filesystem's state (ext4 allocates around inodes it
# freed a moment ago), so every run gets a fresh directory and the setups take turns:
# native, faultline, devfuse, bindfs, native, ... ; the median of META_REPEAT runs is kept.
META_REPEAT=${META_REPEAT:-5}
declare -A META
for round in $(seq "$META_REPEAT"); do
  for setup in native faultline devfuse bindfs; do
    dir="$BENCH_DIR/$setup/meta-$round"
    mkdir "$dir"
    META[$setup]+="$("$BENCH_DIR/metaops" "$dir" "$META_FILES" "$META_ROUNDS" | tr '\n' ' ')"$'\n'
    rmdir "$dir"
  done
done
meta_median() { # SETUP -> "create stat unlink"
  printf '%s' "${META[$1]}" | python3 -c '
import sys, statistics, collections
v = collections.defaultdict(list)
for line in sys.stdin:
    f = line.split()
    for k, n in zip(f[0::2], f[1::2]): v[k].append(float(n))
print(" ".join(str(round(statistics.median(v[k]))) for k in ("create", "stat", "unlink")))
'
}

declare -A R
for setup in "${FIO_SETUPS[@]}"; do
  for job in seqread seqwrite randread; do
    R[$setup.$job]=$(echo "${FIO[$setup.$job]}" | median)
  done
done
for setup in native faultline devfuse bindfs; do
  read -r R[$setup.create] R[$setup.stat] R[$setup.unlink] < <(meta_median "$setup")
done

ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
unit() { case $1 in seqread|seqwrite) echo "MB/s" ;; randread) echo "IOPS" ;; *) echo "ops/s" ;; esac; }

echo
echo "$(uname -r), $(nproc) CPUs, $(df --output=fstype "$BENCH_DIR" | tail -1) at $BENCH_DIR, fio $(fio --version | tr -d 'fio-'), bindfs $(bindfs --version 2>&1 | head -1 | awk '{print $2}')"
echo "fio: ${RUNTIME}s per run, median of $REPEAT rounds; metadata: $META_FILES files, stat x$META_ROUNDS, median of $META_REPEAT; load average before: $LOAD_BEFORE; CPU hogs: $HOGS; FUSE over io_uring: $URING"
echo
echo "faultline = FUSE over io_uring where offered; faultline /dev/fuse = --no-io-uring."
echo
echo "| job | unit | native | faultline (no rules) | faultline /dev/fuse | bindfs -o multithreaded | faultline / native | faultline /dev/fuse / native | bindfs / native | faultline / bindfs |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for job in seqread seqwrite randread create stat unlink; do
  n=${R[native.$job]} f=${R[faultline.$job]} d=${R[devfuse.$job]} b=${R[bindfs.$job]}
  echo "| $job | $(unit $job) | $n | $f | $d | $b | $(ratio "$f" "$n") | $(ratio "$d" "$n") | $(ratio "$b" "$n") | $(ratio "$f" "$b") |"
done
echo
echo "With a read/write rule active on the file (every request through the daemon):"
echo
echo "| job | unit | faultline with rule | faultline /dev/fuse with rule | with rule / native | /dev/fuse with rule / native |"
echo "|---|---|---:|---:|---:|---:|"
for job in seqread seqwrite randread; do
  r=${R[rule.$job]} d=${R[rule-devfuse.$job]} n=${R[native.$job]}
  echo "| $job | $(unit $job) | $r | $d | $(ratio "$r" "$n") | $(ratio "$d" "$n") |"
done
