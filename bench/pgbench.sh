#!/usr/bin/env bash
# PostgreSQL's pgbench natively and through faultline-injector, on one data directory, in one
# run: what a database user pays for each mode.
#   native                  the data directory itself
#   <transport> no rules    the injector mounted over it (--file-io reachable, the default:
#                           every read and write through the daemon, so later rules reach them)
#   <transport> other path  a rule on another directory of the mount (read/write, 0 ms)
#   <transport> fsync +2ms  a 2 ms latency rule on fsync of every file
#   passthrough no rules    --file-io passthrough (kernel passthrough: near native, but rules
#                           added later miss files already open)
# with <transport> io_uring (FUSE over io_uring; this script turns the fuse module's
# enable_uring on for the run and back afterwards) and /dev/fuse (--no-io-uring).
# Two workloads: TPC-B (pgbench's default: 3 updates, a select and an insert per transaction,
# a WAL flush per commit) and select-only (-S). Scale 20 (2,000,000 accounts, 300 MB: more
# than PostgreSQL's default shared_buffers, so reads reach the filesystem). Setups take turns
# within each round, so drift hits them alike; the median of REPEAT rounds is kept.
#
# Usage: sudo bench/pgbench.sh    (root: it mounts FUSE; PostgreSQL from scripts/setup.sh)
# Env:   BENCH_DIR (default /var/tmp/faultline-pgbench), SCALE (20), CLIENTS (4), RUNTIME
#        seconds per run (10), REPEAT rounds (3), INJECTOR (target/release/faultline-injector)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
BENCH_DIR=${BENCH_DIR:-/var/tmp/faultline-pgbench}
SCALE=${SCALE:-20}
CLIENTS=${CLIENTS:-4}
RUNTIME=${RUNTIME:-10}
REPEAT=${REPEAT:-3}
INJECTOR=${INJECTOR:-$repo/target/release/faultline-injector}
PG=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)

[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
[ -x "$PG/pgbench" ] || { echo "PostgreSQL is missing: scripts/setup.sh installs it" >&2; exit 1; }
[ -x "$INJECTOR" ] || { echo "build first: cargo build --release -p faultline-injector" >&2; exit 1; }

DIR=$BENCH_DIR/pg
DATA=$DIR/data
SOCK=$BENCH_DIR/sock
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_pg() { runuser -u postgres -- env PGHOST="$SOCK" PGPORT="$PORT" PGUSER=postgres PGDATABASE=postgres "$@"; }

injector_pid=
uring=/sys/module/fuse/parameters/enable_uring
uring_was=
stop_pg() {
  local pid
  pid=$(head -1 "$DATA/postmaster.pid" 2>/dev/null) || return 0
  kill -INT "$pid" 2>/dev/null || return 0
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
}
stop_injector() {
  [ -n "$injector_pid" ] || return 0
  kill -TERM "$injector_pid" 2>/dev/null || true
  wait "$injector_pid" 2>/dev/null || true
  injector_pid=
}
cleanup() {
  stop_pg
  stop_injector
  grep -q " $DIR fuse.faultline " /proc/self/mounts && umount -l "$DIR"
  rm -rf "$BENCH_DIR"
  [ -n "$uring_was" ] && echo "$uring_was" >"$uring"
  return 0
}
trap cleanup EXIT

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
rm -rf "$BENCH_DIR"
mkdir -p "$DIR/other" "$SOCK" "$BENCH_DIR/logs"
chmod 755 "$BENCH_DIR"
chown -R postgres: "$DIR" "$SOCK" "$BENCH_DIR/logs"
if [ -w "$uring" ]; then uring_was=$(cat "$uring"); echo Y >"$uring"; fi

as_pg "$PG/initdb" -D "$DATA" -k -A trust -U postgres >/dev/null
start_pg() {
  as_pg "$PG/pg_ctl" -D "$DATA" -l "$BENCH_DIR/logs/postgres.log" -w -t 300 \
    -o "-p $PORT -k $SOCK -c listen_addresses=''" start >/dev/null
}
start_pg
as_pg "$PG/pgbench" -i -q -s "$SCALE" >/dev/null 2>&1
stop_pg

# SETUP -> mounts (or not) and starts PostgreSQL.
setup_up() {
  local rules= args=()
  case $1 in
    native) start_pg; return ;;
    uring-*) ;;
    devfuse-*) args+=(--no-io-uring) ;;
    passthrough) args+=(--file-io passthrough) ;;
  esac
  case $1 in
    *-other) rules='[{"type":"latency","path":"'"$DIR"'/other/**","methods":["read","write"],"latency":"0ms"}]' ;;
    *-fsync) rules='[{"type":"latency","path":"'"$DIR"'/**","methods":["fsync"],"latency":"2ms"}]' ;;
  esac
  [ -n "$rules" ] && args+=(--rules "$rules")
  "$INJECTOR" mount --path "$DIR" "${args[@]}" >"$BENCH_DIR/injector.log" 2>"$BENCH_DIR/injector.err" &
  injector_pid=$!
  for _ in $(seq 100); do grep -q '"ready":true' "$BENCH_DIR/injector.log" 2>/dev/null && break; sleep 0.1; done
  grep -q '"ready":true' "$BENCH_DIR/injector.log" || { cat "$BENCH_DIR/injector.err" >&2; exit 1; }
  case $1 in
    uring-*|passthrough) grep -q '"io_uring":true' "$BENCH_DIR/injector.log" || URING_MISSING=1 ;;
  esac
  start_pg
}
setup_down() { stop_pg; stop_injector; }

# WORKLOAD -> tps of one run (-n: no vacuum between runs; the same for every setup).
bench_once() {
  local extra=()
  [ "$1" = select ] && extra=(-S)
  as_pg "$PG/pgbench" -n "${extra[@]}" -c "$CLIENTS" -j 2 -T "$RUNTIME" 2>/dev/null |
    awk '/^tps = /{print $3}'
}

SETUPS=(native uring-none uring-other uring-fsync devfuse-none devfuse-other devfuse-fsync passthrough)
WORKLOADS=(tpcb select)
declare -A TPS
URING_MISSING=
for round in $(seq "$REPEAT"); do
  for s in "${SETUPS[@]}"; do
    setup_up "$s"
    as_pg "$PG/psql" -XAtqc checkpoint >/dev/null
    for w in "${WORKLOADS[@]}"; do
      t=$(bench_once "$w")
      TPS[$s.$w]+="$t "
      echo "round $round $s $w: $t tps" >&2
    done
    setup_down
  done
done

stats() { python3 -c '
import sys, statistics
v = [float(x) for x in sys.argv[1].split()]
n = float(sys.argv[2]) if len(sys.argv) > 2 else 0
m = statistics.median(v)
ratio = f"{m / n:.2f}x" if n else ""
print(f"{m:.0f} | {min(v):.0f}-{max(v):.0f} | {ratio}")' "$@"; }
label() {
  case $1 in
    native) echo "native" ;;
    uring-none) echo "io_uring, no rules" ;;
    uring-other) echo "io_uring, rule on another path" ;;
    uring-fsync) echo "io_uring, fsync +2 ms" ;;
    devfuse-none) echo "/dev/fuse, no rules" ;;
    devfuse-other) echo "/dev/fuse, rule on another path" ;;
    devfuse-fsync) echo "/dev/fuse, fsync +2 ms" ;;
    passthrough) echo "--file-io passthrough, no rules" ;;
  esac
}

echo "pgbench: PostgreSQL $("$PG/postgres" --version | awk '{print $3}'), scale $SCALE, $CLIENTS clients, 2 threads, ${RUNTIME}s per run, median of $REPEAT rounds; kernel $(uname -r); $(nproc) CPUs; load average before: $LOAD_BEFORE${URING_MISSING:+; FUSE over io_uring NOT offered}"
echo
echo "| setup | TPC-B tps (median) | range | vs native | select-only tps (median) | range | vs native |"
echo "|---|---|---|---|---|---|---|"
for s in "${SETUPS[@]}"; do
  tpcb=$(stats "${TPS[$s.tpcb]}" "$(stats "${TPS[native.tpcb]}" | cut -d' ' -f1)")
  sel=$(stats "${TPS[$s.select]}" "$(stats "${TPS[native.select]}" | cut -d' ' -f1)")
  echo "| $(label "$s") | $tpcb | $sel |"
done
