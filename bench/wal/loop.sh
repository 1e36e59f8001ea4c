#!/usr/bin/env bash
# One measured pass over the backlog, made the way PostgreSQL makes the calls.
# Run as postgres by run.sh; not meant to be called by hand.
#
#   loop.sh push  SEGLIST PGDATA OUT LOG -- CMD ARGS...   (%p = pg_wal/NAME, %f = NAME)
#   loop.sh fetch SEGLIST PGDATA OUT LOG -- CMD ARGS...   (%p = pg_wal/RECOVERYXLOG, %f = NAME)
#
# push:  like the archiver, one call per .ready segment, oldest first, cwd = PGDATA, and
#        archive_status/NAME.ready renamed to NAME.done after each success.
# fetch: like the startup process, one call per segment in order into pg_wal/RECOVERYXLOG,
#        which is deleted after each call (recovery replays it, then unlinks it).
# Calls are back to back (no replay or WAL generation between them): this measures the tool.
# OUT gets one line per call "NAME MICROSECONDS" and a last line "total MICROSECONDS".
# Any failed call aborts the pass (exit 1): a benchmark of failing calls means nothing.

set -uo pipefail
mode=$1 seglist=$2 pgdata=$3 out=$4 logf=$5
shift 5
[ "$1" = "--" ] && shift
template=("$@")


cd "$pgdata" || exit 1
: >"$out"
mapfile -t names <"$seglist"
start=${EPOCHREALTIME/./}
for name in "${names[@]}"; do
    if [ "$mode" = push ]; then
        p="pg_wal/$name"
        [ -e "pg_wal/archive_status/$name.ready" ] || { echo "no .ready for $name" >&2; exit 1; }
    else
        p="pg_wal/RECOVERYXLOG"
    fi
    cmd=()
    for a in "${template[@]}"; do a=${a//%p/$p}; cmd+=("${a//%f/$name}"); done
    t0=${EPOCHREALTIME/./}
    "${cmd[@]}" </dev/null >>"$logf" 2>&1
    rc=$?
    t1=${EPOCHREALTIME/./}
    if [ $rc -ne 0 ]; then
        echo "call for $name exited $rc: ${cmd[*]} (see $logf)" >&2
        exit 1
    fi
    if [ "$mode" = push ]; then
        mv "pg_wal/archive_status/$name.ready" "pg_wal/archive_status/$name.done"
    else
        [ -f "$p" ] || { echo "fetch of $name left no file at $p" >&2; exit 1; }
        if [ -n "${VERIFY_WITH:-}" ]; then
            got=$(sha256sum "$p" | cut -d' ' -f1)
            want=$(grep " $name\$" "$VERIFY_WITH" | cut -d' ' -f1)
            [ "$got" = "$want" ] || { echo "fetched $name has sha256 $got, expected $want" >&2; exit 1; }
        fi
        rm -f "$p"
    fi
    echo "$name $((t1 - t0))" >>"$out"
done
end=${EPOCHREALTIME/./}
echo "total $((end - start))" >>"$out"
