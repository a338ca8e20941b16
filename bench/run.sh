#!/usr/bin/env bash
# Benchmark faultline-injector against native and bindfs, in one run, with the same jobs.
#
# Data (on BENCH_DIR's filesystem, ext4 by default):
#   seqread  fio, 1 MiB buffered sequential reads of a cached 1 GiB file      (MB/s)
#   seqwrite fio, 1 MiB buffered sequential writes                            (MB/s)
#   randread fio, 4 KiB random reads of a cached 256 MiB file                 (IOPS)
# and, through faultline with a read/write rule active on the file (every request through
# the daemon and evaluated; a 0 ms latency injects nothing), the same three.
#
# Metadata (bench/metaops.c, one thread), on tmpfs (a private one this script mounts: a
# stable native) and on BENCH_DIR's filesystem: create (open O_CREAT|O_EXCL + close), stat,
# unlink, and "miss" (stat of a name that does not exist: through FUSE one LOOKUP round trip
# each, the round-trip limit). Every round uses fresh directories; the setups take turns.
# An untimed traced pass (tracefs, fuse:fuse_request_send) counts the FUSE requests each
# operation costs; the round-trip limit of an operation is the miss rate divided by the
# requests it waits for.
#
# Transports: "io_uring" mounts start while the fuse module's enable_uring is Y (DaemonSet
# mode with --enable-fuse-io-uring), "/dev/fuse" mounts while it is N (the module's default:
# sidecar mode). The parameter is set back to what it was at the end.
#
# Usage: sudo bench/run.sh            (root: it mounts FUSE filesystems and a tmpfs)
# Env:   BENCH_DIR (default /var/tmp/faultline-bench), RUNTIME seconds per fio run (5),
#        REPEAT rounds of fio runs (5), INJECTOR (default target/release/faultline-injector),
#        META_FILES (20000), META_ROUNDS stat passes (10), META_REPEAT metadata rounds (5),
#        FIO=0 to skip the data jobs,
#        HOGS: CPU hogs (`yes`, normal priority) kept running through the measurements, to see
#        each setup on a busy node (0).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
BENCH_DIR=${BENCH_DIR:-/var/tmp/faultline-bench}
TMPFS_DIR=$BENCH_DIR-tmpfs
RUNTIME=${RUNTIME:-5}
REPEAT=${REPEAT:-5}
INJECTOR=${INJECTOR:-$repo/target/release/faultline-injector}
META_FILES=${META_FILES:-20000}
META_ROUNDS=${META_ROUNDS:-10}
META_REPEAT=${META_REPEAT:-5}
FIO=${FIO:-1}
HOGS=${HOGS:-0}

for tool in fio bindfs gcc python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install fio bindfs gcc python3)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
[ -x "$INJECTOR" ] || { echo "build first: cargo build --release -p faultline-injector" >&2; exit 1; }
uring=/sys/module/fuse/parameters/enable_uring
[ -w "$uring" ] || { echo "$uring is not writable: FUSE over io_uring needs kernel 6.14+" >&2; exit 1; }

pids=()
hogs=()
mounts=()
trace=
tracefs_mounted=
cleanup() {
  for p in "${hogs[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  for m in "${mounts[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  [ -n "$trace" ] && rmdir "$trace" 2>/dev/null
  [ -n "$tracefs_mounted" ] && umount "$tracefs_mounted" 2>/dev/null
  umount "$TMPFS_DIR" 2>/dev/null || true
  rm -rf "$BENCH_DIR"
  rmdir "$TMPFS_DIR" 2>/dev/null
  [ -n "${uring_was:-}" ] && echo "$uring_was" >"$uring"
  return 0
}
trap cleanup EXIT

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
uring_was=$(cat "$uring")
rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR"/{native,uring,devfuse,bindfs-src,bindfs,rule,rule-devfuse} "$TMPFS_DIR"
mount -t tmpfs -o size=4g,mode=0755 faultline-bench "$TMPFS_DIR"
mkdir -p "$TMPFS_DIR"/{native,uring,devfuse,bindfs-src,bindfs}
gcc -O2 -o "$BENCH_DIR/metaops" "$here/metaops.c"

# Data files exist before the mounts (in the originals), so every setup reads the same bytes.
FIO_SETUPS=(native uring devfuse bindfs rule rule-devfuse)
if [ "$FIO" = 1 ]; then
  for d in native uring devfuse bindfs-src rule rule-devfuse; do
    head -c 1G /dev/urandom >"$BENCH_DIR/$d/seq.dat"
    head -c 256M /dev/urandom >"$BENCH_DIR/$d/rand.dat"
  done
  sync
fi

start_injector() { # DIR [RULES] [EXTRA ARGS...]
  local dir=$1 rules=${2:-} log
  log=$BENCH_DIR/injector-$(echo "$1" | tr / _).log
  shift $(( $# < 2 ? $# : 2 ))
  if [ -n "$rules" ]; then
    "$INJECTOR" mount --path "$dir" --rules "$rules" "$@" >"$log" 2>"$log.err" &
  else
    "$INJECTOR" mount --path "$dir" "$@" >"$log" 2>"$log.err" &
  fi
  pids+=($!)
  for _ in $(seq 100); do grep -q '"ready":true' "$log" 2>/dev/null && break; sleep 0.1; done
  grep -q '"ready":true' "$log" 2>/dev/null || { echo "injector did not get ready: $(cat "$log.err")" >&2; exit 1; }
  last_log=$log
}
expect_transport() { # true|false: the transport the last injector's ready line reports
  grep -q "\"io_uring\":$1" "$last_log" || { echo "$last_log: expected io_uring $1: $(cat "$last_log")" >&2; exit 1; }
}

# The mounts with no rule take kernel passthrough for data (`--file-io passthrough`: no rule
# may read or write their files); the default mode, reachable, serves like "rule".
rule_on() { echo '[{"type":"latency","path":"'"$BENCH_DIR/$1"'/*.dat","methods":["read","write"],"latency":"0ms"}]'; }
echo N >"$uring" # sidecar mode: the module's default
for dir in "$BENCH_DIR/devfuse" "$TMPFS_DIR/devfuse"; do
  start_injector "$dir" "" --file-io passthrough && expect_transport false
done
start_injector "$BENCH_DIR/rule-devfuse" "$(rule_on rule-devfuse)" --file-io passthrough && expect_transport false
echo Y >"$uring" # DaemonSet mode with --enable-fuse-io-uring
for dir in "$BENCH_DIR/uring" "$TMPFS_DIR/uring"; do
  start_injector "$dir" "" --file-io passthrough && expect_transport true
done
start_injector "$BENCH_DIR/rule" "$(rule_on rule)" --file-io passthrough && expect_transport true
for fs in "$BENCH_DIR" "$TMPFS_DIR"; do
  bindfs --multithreaded "$fs/bindfs-src" "$fs/bindfs"
  mounts+=("$fs/bindfs")
done

for _ in $(seq "$HOGS"); do yes >/dev/null & hogs+=($!); done
results=$BENCH_DIR/results.txt # lines: KIND FS SETUP ROUND JOB VALUE
: >"$results"

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

# Background load on a shared machine drifts: the setups take turns within each round, so a
# drift hits them alike. Files are read once through each setup first ("cached" means
# cached), and each job has an untimed first pass.
if [ "$FIO" = 1 ]; then
  for setup in "${FIO_SETUPS[@]}"; do
    cat "$BENCH_DIR/$setup/seq.dat" "$BENCH_DIR/$setup/rand.dat" >/dev/null
  done
  for job in seqread seqwrite randread; do
    for setup in "${FIO_SETUPS[@]}"; do
      RUNTIME=1 fio_once "$job" "$BENCH_DIR/$setup" >/dev/null
    done
    for round in $(seq "$REPEAT"); do
      for setup in "${FIO_SETUPS[@]}"; do
        echo "fio data $setup $round $job $(fio_once "$job" "$BENCH_DIR/$setup")" >>"$results"
      done
    done
  done
  for setup in "${FIO_SETUPS[@]}"; do rm -f "$BENCH_DIR/$setup/w.dat" "$BENCH_DIR/$setup/seq.dat" "$BENCH_DIR/$setup/rand.dat"; done
fi

# Which FUSE requests each operation costs: one small traced pass per FUSE setup, in a trace
# instance of our own, filtered to that mount's connection.
tracing=/sys/kernel/tracing
if [ ! -d "$tracing/events" ]; then
  mount -t tracefs nodev "$tracing" 2>/dev/null && tracefs_mounted=$tracing
fi
if [ -d "$tracing/events/fuse" ]; then
  trace=$tracing/instances/faultline-bench-$$
  mkdir "$trace"
  echo 8192 >"$trace/buffer_size_kb"
  for fs in tmpfs ext4; do
    root=$BENCH_DIR; [ $fs = tmpfs ] && root=$TMPFS_DIR
    for setup in uring devfuse bindfs; do
      dir=$root/$setup/traced
      mkdir "$dir"
      dev=$(stat -c '%Hd %Ld' "$dir" | awk '{print $1 * 1048576 + $2}')
      echo "connection == $dev" >"$trace/events/fuse/fuse_request_send/filter"
      echo 1 >"$trace/events/fuse/fuse_request_send/enable"
      echo >"$trace/trace"
      echo 1 >"$trace/tracing_on"
      "$BENCH_DIR/metaops" "$dir" 2000 1 "$trace/trace_marker" >/dev/null
      echo 0 >"$trace/tracing_on"
      echo 0 >"$trace/events/fuse/fuse_request_send/enable"
      cp "$trace/trace" "$BENCH_DIR/trace.txt"
      python3 - "$fs" "$setup" 2000 "$BENCH_DIR/trace.txt" >>"$results" <<'EOF'
import collections, re, sys
fs, setup, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
phase, counts = None, collections.defaultdict(collections.Counter)
for line in open(sys.argv[4]):
    m = re.search(r"metaops (\w+)", line)
    if m:
        phase = m.group(1)
        continue
    m = re.search(r"\((FUSE_\w+)\)", line)
    if m and phase and phase != "end":
        counts[phase][m.group(1)[5:]] += 1
for phase, c in counts.items():
    for op, k in c.items():
        print(f"req {fs} {setup} 0 {phase}.{op} {k / n:.2f}")
EOF
      rmdir "$dir"
    done
  done
fi

# The metadata loop is sensitive to the filesystem's state (ext4 allocates around inodes it
# freed a moment ago), so every run gets a fresh directory and the setups take turns.
for round in $(seq "$META_REPEAT"); do
  for fs in tmpfs ext4; do
    root=$BENCH_DIR; [ $fs = tmpfs ] && root=$TMPFS_DIR
    for setup in native uring devfuse bindfs; do
      dir=$root/$setup/meta-$round
      mkdir "$dir"
      "$BENCH_DIR/metaops" "$dir" "$META_FILES" "$META_ROUNDS" |
        while read -r job value; do echo "meta $fs $setup $round $job $value"; done >>"$results"
      rmdir "$dir"
    done
  done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

echo
echo "$(uname -r), $(nproc) CPUs; data: $(df --output=fstype "$BENCH_DIR" | tail -1) at $BENCH_DIR, fio $(fio --version | tr -d 'fio-'); bindfs $(bindfs --version 2>&1 | head -1 | awk '{print $2}')"
echo "fio: ${RUNTIME}s per run, $REPEAT rounds; metadata: $META_FILES files, stat x$META_ROUNDS, $META_REPEAT rounds; load average before: $LOAD_BEFORE, after: $LOAD_AFTER; CPU hogs: $HOGS"
python3 - "$results" "$(df --output=fstype "$BENCH_DIR" | tail -1)" "$FIO" <<'EOF'
import collections, statistics, sys

rows = [l.split() for l in open(sys.argv[1])]
fsname = {"tmpfs": "tmpfs", "ext4": sys.argv[2]}
val = collections.defaultdict(dict)   # (kind, fs, setup, job) -> {round: value}
req = collections.defaultdict(dict)   # (fs, setup, phase) -> {op: per-op count}
for kind, fs, setup, rnd, job, v in rows:
    if kind == "req":
        phase, op = job.split(".")
        req[(fs, setup, phase)][op] = float(v)
    else:
        val[(kind, fs, setup, job)][int(rnd)] = float(v)

def k(x):
    return f"{x / 1000:.1f} k" if x >= 10000 else f"{x:.0f}"

def spread(xs, fmt):
    xs = sorted(xs)
    if not xs:
        return "–"
    m = statistics.median(xs)
    return fmt(m) if len(xs) == 1 else f"{fmt(m)} ({fmt(xs[0])}–{fmt(xs[-1])})"

def cell(kind, fs, setup, job, fmt=k):
    return spread(list(val[(kind, fs, setup, job)].values()), fmt)

def ratio(kind, fs, a, b, job):
    """a / b, taken round by round: median (min–max)."""
    va, vb = val[(kind, fs, a, job)], val[(kind, fs, b, job)]
    return spread([va[r] / vb[r] for r in va if r in vb and vb[r]], lambda x: f"{x:.2f}")

ASYNC = {"RELEASE", "RELEASEDIR", "FORGET", "BATCH_FORGET"}

def requests(fs, setup, phase):
    c = req.get((fs, setup, phase))
    if c is None:
        return None, "–"
    # In the order the kernel sends them: the parent's attributes, the name, the operation;
    # the requests nobody waits for last.
    order = lambda op: (op in ASYNC, {"GETATTR": 0, "LOOKUP": 1}.get(op, 2), op)
    parts = [f"{op}" if abs(n - 1) < 0.05 else f"{n:.2f} {op}"
             for op, n in sorted(c.items(), key=lambda x: order(x[0])) if n >= 0.05]
    waited = sum(n for op, n in c.items() if op not in ASYNC)
    return waited, " + ".join(parts) or "none"

def limit(fs, setup, phase):
    """The round-trip limit: miss rate (one LOOKUP each) / round trips the caller waits for."""
    waited, _ = requests(fs, setup, phase)
    if not waited or waited < 0.5:
        return "–"
    miss = val[("meta", fs, setup, "miss")]
    return spread([m / waited for m in miss.values()], k)

NAMES = {"uring": "faultline io_uring", "devfuse": "faultline /dev/fuse", "bindfs": "bindfs -o multithreaded"}
for fs in ("tmpfs", "ext4"):
    print()
    print(f"Metadata on {fsname[fs]}: ops/s, median (min–max) of the rounds; ratios taken round by round; "
          "limit = the setup's miss rate / the round trips the operation waits for")
    print()
    print("| op | native | faultline io_uring | limit | / native | faultline /dev/fuse | limit | / native | bindfs -o multithreaded | / native | faultline io_uring / bindfs |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for job in ("create", "stat", "unlink", "miss"):
        cells = [job, cell("meta", fs, "native", job)]
        for s in ("uring", "devfuse"):
            cells += [cell("meta", fs, s, job), limit(fs, s, job), ratio("meta", fs, s, "native", job)]
        cells += [cell("meta", fs, "bindfs", job), ratio("meta", fs, "bindfs", "native", job),
                  ratio("meta", fs, "uring", "bindfs", job)]
        print("| " + " | ".join(cells) + " |")
    print()
    print(f"FUSE requests per operation on {fsname[fs]} (traced; RELEASE and FORGET are not waited for, FORGET is not traced):")
    print()
    print("| op | " + " | ".join(NAMES[s] for s in ("uring", "devfuse", "bindfs")) + " |")
    print("|---|---|---|---|")
    for job in ("create", "stat", "unlink", "miss"):
        print(f"| {job} | " + " | ".join(requests(fs, s, job)[1] for s in ("uring", "devfuse", "bindfs")) + " |")

if sys.argv[3] == "1":
    unit = {"seqread": "MB/s", "seqwrite": "MB/s", "randread": "IOPS"}
    num = lambda x: f"{x:.0f}"
    print()
    print(f"Data on {fsname['ext4']}: median (min–max) of the rounds; ratios taken round by round")
    print()
    print("| job | unit | native | faultline io_uring | / native | faultline /dev/fuse | / native | bindfs -o multithreaded | / native | faultline io_uring / bindfs |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for job in ("seqread", "seqwrite", "randread"):
        cells = [job, unit[job], cell("fio", "data", "native", job, num)]
        for s in ("uring", "devfuse", "bindfs"):
            cells += [cell("fio", "data", s, job, num), ratio("fio", "data", s, "native", job)]
        cells += [ratio("fio", "data", "uring", "bindfs", job)]
        print("| " + " | ".join(cells) + " |")
    print()
    print("With a read/write rule active on the file (every request through the daemon):")
    print()
    print("| job | unit | faultline io_uring with rule | / native | faultline /dev/fuse with rule | / native |")
    print("|---|---|---:|---:|---:|---:|")
    for job in ("seqread", "seqwrite", "randread"):
        cells = [job, unit[job]]
        for s in ("rule", "rule-devfuse"):
            cells += [cell("fio", "data", s, job, num), ratio("fio", "data", s, "native", job)]
        print("| " + " | ".join(cells) + " |")
EOF
