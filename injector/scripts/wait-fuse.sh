#!/bin/sh
# wait-fuse.sh: waits until the chaosfs sidecar (faultline-injector's sidecar mode) has
# mounted the fault filesystem over the application's data directory. The sidecar writes its
# pidfile only once the mount is in place, and removes it when it stops. Run by the
# application container before its own command. POSIX sh (busybox ash, dash).
#
# Exit 0 as soon as the pidfile holds a PID; 1 if it still does not after the retries.
set -eu

PROG=${0##*/}
FILE=/tmp/fuse/pid
DELAY=1
RETRIES=60

usage() {
    cat <<USAGE
USAGE: $0 [-f <pidfile>] [-d <delay>] [-r <retries>]
Waiting for fuse server ready
OPTIONS:
   -h                   Show this message
   -f <pidfile>         Set the target file (default: $FILE)
   -d <delay>           Set the delay time in seconds between checks (default: $DELAY)
   -r <retry>           Set the retry count (default: $RETRIES)
EXAMPLES:
   wait-fuse.sh -f /tmp/fuse/pid -d 5 -r 60
USAGE
}

while getopts ":hf:d:r:" opt; do
    case $opt in
    h) usage; exit 0 ;;
    f) FILE=$OPTARG ;;
    d) DELAY=$OPTARG ;;
    r) RETRIES=$OPTARG ;;
    :) echo "$PROG: option -$OPTARG needs an argument" >&2; usage >&2; exit 2 ;;
    *) echo "$PROG: unknown option -$OPTARG" >&2; usage >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ $# -eq 0 ] || { echo "$PROG: unexpected argument: $1" >&2; usage >&2; exit 2; }
case $RETRIES in
'' | *[!0-9]*) echo "$PROG: -r $RETRIES: expected a whole number" >&2; exit 2 ;;
esac
case $DELAY in
'' | . | *[!0-9.]* | *.*.*) echo "$PROG: -d $DELAY: expected a number of seconds" >&2; exit 2 ;;
esac

ready() {
    pid=
    [ -f "$FILE" ] && read -r pid <"$FILE" 2>/dev/null || true
    case $pid in
    '' | *[!0-9]*) return 1 ;;
    esac
    return 0
}

tries=0
while ! ready; do
    if [ "$tries" -ge "$RETRIES" ]; then
        echo "$PROG: $FILE holds no PID after $RETRIES retries $DELAY s apart: is the chaosfs sidecar running?" >&2
        exit 1
    fi
    tries=$((tries + 1))
    sleep "$DELAY"
done
echo "$PROG: fuse server ready (pid $pid)"
