#!/bin/sh
# init.sh: prepares a pod for the chaosfs sidecar (faultline-injector's sidecar mode). Runs in
# the pod's init container: the application's data moves to the fuse directory, which the
# sidecar serves back over the (now empty) data directory, and these scripts are copied to a
# directory every container of the pod shares. POSIX sh (busybox ash, dash).
#
# Safe to run again (init containers run again when a pod restarts): data already moved stays
# where it is, and nothing is ever overwritten: if a name exists in both directories, nothing
# moves and the script fails, naming it.
set -eu

PROG=${0##*/}
DATA_DIR=
FUSE_DIR=
SCRIPTS_DIR=/tmp/scripts

usage() {
    cat <<USAGE
USAGE: $0 -d <data directory> -f <fuse directory> [-s <scripts directory>]
Used to do some preparation
OPTIONS:
   -h                      Show this message
   -d <data directory>     Data directory of the application
   -f <fuse directory>     Data directory of the fuse original directory
   -s <scripts directory>  Scripts directory (default: $SCRIPTS_DIR)
EXAMPLES:
   init.sh -d /var/lib/tikv/data -f /var/lib/tikv/fuse-data
USAGE
}

fail() {
    echo "$PROG: $*" >&2
    exit 1
}

# An absolute path without trailing slashes; $1 names the option for the error.
absolute() {
    case $2 in
    /*) ;;
    *) fail "$1 $2: must be an absolute path" ;;
    esac
    path=$2
    while [ "${path%/}" != "$path" ] && [ "$path" != / ]; do path=${path%/}; done
    [ "$path" != / ] || fail "$1 $2: must not be the root directory"
    printf '%s\n' "$path"
}

while getopts ":hd:f:s:" opt; do
    case $opt in
    h) usage; exit 0 ;;
    d) DATA_DIR=$OPTARG ;;
    f) FUSE_DIR=$OPTARG ;;
    s) SCRIPTS_DIR=$OPTARG ;;
    :) echo "$PROG: option -$OPTARG needs an argument" >&2; usage >&2; exit 2 ;;
    *) echo "$PROG: unknown option -$OPTARG" >&2; usage >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ $# -eq 0 ] || { echo "$PROG: unexpected argument: $1" >&2; usage >&2; exit 2; }
[ -n "$DATA_DIR" ] || { echo "$PROG: -d <data directory> is required" >&2; usage >&2; exit 2; }
[ -n "$FUSE_DIR" ] || { echo "$PROG: -f <fuse directory> is required" >&2; usage >&2; exit 2; }
DATA_DIR=$(absolute -d "$DATA_DIR")
FUSE_DIR=$(absolute -f "$FUSE_DIR")
SCRIPTS_DIR=$(absolute -s "$SCRIPTS_DIR")
case "$FUSE_DIR/" in "$DATA_DIR/"*) fail "-f $FUSE_DIR must not be the data directory or inside it" ;; esac
case "$DATA_DIR/" in "$FUSE_DIR/"*) fail "-d $DATA_DIR must not be inside the fuse directory" ;; esac
if [ -e "$DATA_DIR" ] && [ ! -d "$DATA_DIR" ]; then fail "-d $DATA_DIR is not a directory"; fi
if [ -e "$FUSE_DIR" ] && [ ! -d "$FUSE_DIR" ]; then fail "-f $FUSE_DIR is not a directory"; fi

# The fuse directory becomes the root of the application's data: same owner and mode as
# the data directory had, so an application that does not run as root can still write.
if [ ! -d "$FUSE_DIR" ]; then
    mkdir -p "$FUSE_DIR"
    if [ -d "$DATA_DIR" ]; then
        chown "$(stat -c %u:%g "$DATA_DIR")" "$FUSE_DIR"
        chmod "$(stat -c %a "$DATA_DIR")" "$FUSE_DIR"
    fi
fi

# Move the data (dotfiles too), after checking every name, so a conflict moves nothing.
if [ -d "$DATA_DIR" ]; then
    for pass in check move; do
        for entry in "$DATA_DIR"/* "$DATA_DIR"/.[!.]* "$DATA_DIR"/..?*; do
            [ -e "$entry" ] || [ -L "$entry" ] || continue
            target=$FUSE_DIR/${entry##*/}
            if [ "$pass" = check ]; then
                if [ -e "$target" ] || [ -L "$target" ]; then
                    fail "$target exists already: not overwriting it with $entry (nothing was moved)"
                fi
            else
                mv "$entry" "$target"
            fi
        done
    done
else
    mkdir -p "$DATA_DIR"
fi

# The scripts, for every container of the pod (the application runs wait-fuse.sh).
SOURCE_DIR=$(cd "$(dirname "$0")" && pwd -P)
mkdir -p "$SCRIPTS_DIR"
if [ "$SOURCE_DIR" != "$(cd "$SCRIPTS_DIR" && pwd -P)" ]; then
    for script in init.sh wait-fuse.sh; do
        cp "$SOURCE_DIR/$script" "$SCRIPTS_DIR/$script.partial"
        chmod 0755 "$SCRIPTS_DIR/$script.partial"
        mv -f "$SCRIPTS_DIR/$script.partial" "$SCRIPTS_DIR/$script"
    done
fi
echo "$PROG: data in $FUSE_DIR, to be served over $DATA_DIR; scripts in $SCRIPTS_DIR"
