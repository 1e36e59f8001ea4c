#!/usr/bin/env bash
# WAL archiving benchmark (issue 2): pgward against pgBackRest, side by side, in one run.
# Needs bench/wal/setup.sh first. Usage (as root or postgres):  bash bench/wal/run.sh [RUNS]
#
#   (a) sequential archive_command calls, one per .ready segment:
#       pgward wal-push (push_ahead = 0)        vs  pgbackrest archive-push (archive-async=n)
#   (b) the same backlog with look-ahead:
#       pgward wal-push (push_ahead = 4)        vs  pgbackrest archive-push (archive-async=y,
#                                                   process-max=2)
#   (c) sequential restore_command calls into pg_wal/RECOVERYXLOG:
#       pgward wal-fetch (prefetch = 8)         vs  pgbackrest archive-get (archive-async=y,
#                                                   process-max=2; queue 128 MiB = 8 segments)
#       plus, for reference, both without look-ahead (prefetch = 0 / archive-async=n)
#   (d) peak RSS (/usr/bin/time -v, "Maximum resident set size") of one wal-push,
#       push_ahead = 0 and 4, and of one pgbackrest archive-push for comparison.
#
# Every measured pass starts from a fresh copy of the backlog (pg_wal hard-linked from the
# read-only pristine copy, archive_status copied) and fresh repositories and spools. Passes of
# the two tools alternate (A B, B A, ...) so drift on the machine hits both. Medians over RUNS
# (default 5) passes are reported. Same zstd level (3), same local disk, same run.
#
# Output: a Markdown table on stdout; raw per-call latencies under $BENCH_DIR/results/.

set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"

RUNS=${1:-${RUNS:-5}}
[ "$RUNS" -ge 3 ] || die "use at least 3 runs"
[ -d "$PRISTINE" ] && [ -x "$PGWARD" ] || die "run bench/wal/setup.sh first"
[ -f "$PGDATA/postmaster.pid" ] && die "the bench cluster is running; stop it first"
# On a shared machine both tools run at the same raised priority (root only), so that other
# users' compilers take less of the two cores from whichever tool is being measured.
BENCH_NICE=${BENCH_NICE:-$([ "$(id -u)" -eq 0 ] && echo -10 || echo 0)}
as_pg_nice() {
    if [ "$(id -u)" -eq 0 ]; then
        (cd / && nice -n "$BENCH_NICE" runuser -u postgres -- "$@")
    else
        (cd / && nice -n "$BENCH_NICE" "$@")
    fi
}
RES="$BENCH_DIR/results"
rm -rf "$RES"
mkdir -p "$RES"
cp "$here/loop.sh" "$BENCH_DIR/loop.sh"
chmod 0755 "$BENCH_DIR/loop.sh"
[ "$(id -u)" -eq 0 ] && chown -R postgres:postgres "$RES" "$BENCH_DIR/loop.sh"
SEGLIST="$BENCH_DIR/segments.txt"
NSEG=$(wc -l <"$SEGLIST")
SEGBYTES=16777216

PGWARD_SYNC=("$PGWARD" --config "$CONF/pgward-sync.toml")
PGWARD_AHEAD=("$PGWARD" --config "$CONF/pgward-async.toml")
PGWARD_FETCH=("$PGWARD" --config "$CONF/pgward-fetch.toml")
PGBACKREST=$(command -v pgbackrest)
PGBR_SYNC=("$PGBACKREST" --config="$CONF/pgbackrest-sync.conf" --stanza="$STANZA")
PGBR_ASYNC=("$PGBACKREST" --config="$CONF/pgbackrest-async.conf" --stanza="$STANZA")

# Waits (never kills) until no background process of a previous pass is left: pgBackRest's
# async archive-push/get process and pgward's detached prefetcher both carry $CONF in their
# command lines.
wait_background() {
    local i=0
    while pgrep -u postgres -f -- "$CONF/" >/dev/null; do
        i=$((i + 1))
        [ $i -lt 600 ] || die "background processes of the last pass still running after 60 s: $(pgrep -a -u postgres -f -- "$CONF/")"
        sleep 0.1
    done
}

# The machine may be shared: before every pass wait (at most QUIET_WAIT s, default 60) until
# the CPUs were at most QUIET_MAX_BUSY % (default 10) busy over one second. Passes that had to
# start on a busy machine are counted in the report.
QUIET_WAIT=${QUIET_WAIT:-60}
QUIET_MAX_BUSY=${QUIET_MAX_BUSY:-10}
cpu_busy_pct() { local s0; s0=$(cpu_ticks); sleep 1; busy_between "$s0" "$(cpu_ticks)"; }
cpu_ticks() { local a b c d e f g h; read -r _ a b c d e f g h _ </proc/stat; echo "$((a + b + c + d + e + f + g + h)) $((d + e))"; }
busy_between() { # "TOTAL IDLE" snapshots -> busy %
    local t1 i1 t2 i2
    read -r t1 i1 <<<"$1"; read -r t2 i2 <<<"$2"
    echo $((100 - 100 * (i2 - i1) / (t2 - t1)))
}
quiet_gate() {
    local end busy
    end=$(($(date +%s) + QUIET_WAIT))
    while :; do
        busy=$(cpu_busy_pct)
        [ "$busy" -le "$QUIET_MAX_BUSY" ] && return 0
        if [ "$(date +%s)" -ge "$end" ]; then
            log "  machine still ${busy}% busy after ${QUIET_WAIT}s; measuring anyway"
            echo "$busy" >>"$RES/noisy-passes"
            return 0
        fi
    done
}

# A fresh backlog (every segment .ready again) and a fresh repository and spool for TOOL.
fresh_push() {
    local tool=$1
    wait_background
    rm -rf "$PGDATA/pg_wal"
    cp -al "$PRISTINE" "$PGDATA/pg_wal"
    rm -rf "$PGDATA/pg_wal/archive_status"
    cp -a "$PRISTINE/archive_status" "$PGDATA/pg_wal/"
    mkdir -p "$RUN"
    case $tool in
    pgward)
        rm -rf "$RUN/pgward-repo" "$RUN/pgward-spool"
        cp -a "$TEMPLATES/pgward-repo" "$RUN/" ;;
    pgbackrest)
        rm -rf "$RUN"/pgbackrest-*
        mkdir -p "$RUN/pgbackrest-spool" "$RUN/pgbackrest-lock" "$RUN/pgbackrest-log"
        cp -a "$TEMPLATES/pgbackrest-repo" "$RUN/" ;;
    esac
    [ "$(id -u)" -eq 0 ] && chown -R postgres:postgres "$RUN" "$PGDATA/pg_wal"
    sync
}

# A fresh spool for TOOL; its repository stays filled for fetching.
fresh_fetch() {
    local tool=$1
    wait_background
    rm -f "$PGDATA/pg_wal/RECOVERYXLOG"
    case $tool in
    pgward) rm -rf "$RUN/pgward-spool" ;;
    pgbackrest)
        rm -rf "$RUN/pgbackrest-spool" "$RUN/pgbackrest-lock" "$RUN/pgbackrest-log"
        mkdir -p "$RUN/pgbackrest-spool" "$RUN/pgbackrest-lock" "$RUN/pgbackrest-log" ;;
    esac
    [ "$(id -u)" -eq 0 ] && chown -R postgres:postgres "$RUN"
    sync
}

# pass MODE(push|fetch) TAG RUN# -- CMD...   -> $RES/TAG.RUN#.lat
pass() {
    local mode=$1 tag=$2 i=$3 s0 s1
    shift 4
    s0=$(cpu_ticks)
    as_pg_nice env ${VERIFY_WITH:+VERIFY_WITH=$VERIFY_WITH} bash "$BENCH_DIR/loop.sh" "$mode" "$SEGLIST" "$PGDATA" \
        "$RES/$tag.$i.lat" "$RES/$tag.$i.log" -- "$@" ||
        die "pass $tag #$i failed (log: $RES/$tag.$i.log)"
    local n
    n=$(grep -vc '^total' "$RES/$tag.$i.lat")
    [ "$n" -eq "$NSEG" ] || die "pass $tag #$i made $n calls, expected $NSEG"
    s1=$(cpu_ticks)
    log "  $tag #$i: $(summary_of "$RES/$tag.$i.lat" | awk '{ printf "%s seg/s, median %s ms, p90 %s ms, max %s ms", $1, $2, $3, $4 }'); machine $(busy_between "$s0" "$s1")% busy"
}

# "SEG_PER_S MEDIAN_MS P90_MS MAX_MS" of one pass (plain awk: no gawk extensions).
summary_of() {
    local total
    total=$(awk '$1 == "total" { print $2 }' "$1")
    grep -v '^total' "$1" | awk '{ print $2 }' | sort -n |
        awk -v total="$total" '{ v[++n] = $1 }
            END {
              med = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
              printf "%.1f %.1f %.1f %.1f\n", n / (total / 1e6), med / 1000, v[int(n * 0.9 + 0.5)] / 1000, v[n] / 1000
            }'
}

# The median of numbers on stdin.
median() { sort -g | awk '{ v[++n] = $1 } END { m = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2; printf "%.1f\n", m }'; }

# Median over the runs of column COL (1 = seg/s, 2 = median latency ms) for TAG.
median_of() {
    local tag=$1 col=$2 f
    for f in "$RES/$tag".*.lat; do summary_of "$f"; done | awk -v c="$col" '{ print $c }' | median
}

# Stored bytes of the WAL in each repository after a push pass.
stored_bytes() { find "$1" -name '0*.zst' -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }'; }
count_objects() { find "$1" -name '0*.zst' | wc -l; }

check_repo() { # after a push pass: the repository holds every segment
    local dir n
    case $1 in pgward) dir=$RUN/pgward-repo/wal ;; pgbackrest) dir=$RUN/pgbackrest-repo/archive ;; esac
    n=$(count_objects "$dir")
    [ "$n" -eq "$NSEG" ] || die "$1 repository holds $n segments, expected $NSEG"
}

# measure KIND(push|fetch) LETTER RUN# TOOL -- CMD...: one pass of TOOL from a fresh state.
measure() {
    local kind=$1 letter=$2 i=$3 tool=$4
    shift 4
    "fresh_$kind" "$tool"
    quiet_gate
    pass "$kind" "$letter-$tool" "$i" "$@"
    [ "$kind" = push ] && check_repo "$tool"
    return 0
}

# pair KIND LETTER RUNS PGWARD_CMD... -- PGBACKREST_CMD...: alternating passes of both tools.
pair() {
    local kind=$1 letter=$2 runs=$3 i
    shift 3
    local -a a=() b=()
    while [ "$1" != "--" ]; do a+=("$1"); shift; done
    shift
    b=("$@")
    for i in $(seq 1 "$runs"); do
        if [ $((i % 2)) -eq 1 ]; then
            measure "$kind" "$letter" "$i" pgward -- "${a[@]}"
            measure "$kind" "$letter" "$i" pgbackrest -- "${b[@]}"
        else
            measure "$kind" "$letter" "$i" pgbackrest -- "${b[@]}"
            measure "$kind" "$letter" "$i" pgward -- "${a[@]}"
        fi
    done
}

log "backlog: $NSEG segments; $RUNS runs per measurement; results in $RES"
t_all=$(date +%s)

log "(a) sequential archive_command calls, no look-ahead"
pair push a "$RUNS" "${PGWARD_SYNC[@]}" wal-push %p -- "${PGBR_SYNC[@]}" archive-push %p

log "(b) the same backlog with look-ahead (push_ahead = 4 / archive-async, process-max 2)"
pair push b "$RUNS" "${PGWARD_AHEAD[@]}" wal-push %p -- "${PGBR_ASYNC[@]}" archive-push %p
# Both repositories now hold the whole backlog (checked): they are the source for (c).
PGWARD_STORED=$(stored_bytes "$RUN/pgward-repo/wal")
PGBR_STORED=$(stored_bytes "$RUN/pgbackrest-repo/archive")

log "(c) sequential restore_command calls (one verified pass each first, not timed)"
VERIFY_WITH="$BENCH_DIR/segments.sha256" measure fetch v 0 pgward -- "${PGWARD_FETCH[@]}" wal-fetch %f %p
VERIFY_WITH="$BENCH_DIR/segments.sha256" measure fetch v 0 pgbackrest -- "${PGBR_ASYNC[@]}" archive-get %f %p
pair fetch c "$RUNS" "${PGWARD_FETCH[@]}" wal-fetch %f %p -- "${PGBR_ASYNC[@]}" archive-get %f %p
log "(c0) for reference: restore without look-ahead (prefetch = 0 / archive-async=n)"
pair fetch c0 "$RUNS" "${PGWARD_SYNC[@]}" wal-fetch %f %p -- "${PGBR_SYNC[@]}" archive-get %f %p

# --- (d) peak RSS of one call --------------------------------------------------------------------
# rss TAG TOOL CMD...: median over RUNS of /usr/bin/time -v's "Maximum resident set size" (KiB)
# for one archive_command call on the oldest .ready segment, everything else still .ready.
# RSS_ARG replaces that last argument (the background pusher takes the pg_wal directory).
FIRST=$(head -1 "$SEGLIST")
rss() {
    local tag=$1 tool=$2 i arg=${RSS_ARG:-pg_wal/$FIRST}
    shift 2
    for i in $(seq 1 "$RUNS"); do
        fresh_push "$tool"
        quiet_gate >&2
        as_pg_nice bash -c 'cd "$1" && shift && exec /usr/bin/time -v "$@"' _ "$PGDATA" "$@" "$arg" \
            >"$RES/$tag.$i.rss" 2>&1 || die "$tag failed: $(tail -5 "$RES/$tag.$i.rss")"
        sed -n 's/.*Maximum resident set size (kbytes): //p' "$RES/$tag.$i.rss"
    done | median
}
log "(d) peak RSS of one call"
RSS_PW0=$(rss d-pgward-ahead0 pgward "${PGWARD_SYNC[@]}" wal-push)
RSS_PW4=$(rss d-pgward-ahead4 pgward "${PGWARD_AHEAD[@]}" wal-push)
# The background pusher on its own: it stores a window of push_ahead segments with one encode
# per core, then exits 2 s after nobody takes its records.
RSS_BG=$(RSS_ARG="$PGDATA/pg_wal" rss d-pgward-pusher pgward "${PGWARD_AHEAD[@]}" wal-push-ahead)
RSS_BR=$(rss d-pgbackrest-sync pgbackrest "${PGBR_SYNC[@]}" archive-push)
wait_background

# --- machine limits on this backlog ------------------------------------------------------------
# zstd -3 and sha256 on one core over 8 segments from the pgbench part of the backlog, and the
# cost of starting each tool's process.
log "machine limits"
quiet_gate
mapfile -t SAMPLE < <(tail -n +$((NSEG / 2)) "$SEGLIST" | head -8)
SAMPLE_PATHS=("${SAMPLE[@]/#/$PRISTINE/}")
SAMPLE_MB=$(awk -v n=${#SAMPLE[@]} 'BEGIN { printf "%.1f", n * 16777216 / 1e6 }')
cat "${SAMPLE_PATHS[@]}" >/dev/null
rate() { # MB/s of running CMD once per sample segment (CMD gets the path as its last argument)
    local t0 t1 f
    t0=${EPOCHREALTIME/./}
    for f in "${SAMPLE_PATHS[@]}"; do "$@" "$f" >/dev/null; done
    t1=${EPOCHREALTIME/./}
    awk -v mb="$SAMPLE_MB" -v us=$((t1 - t0)) 'BEGIN { printf "%.0f", mb / (us / 1e6) }'
}
best_rate() { local r best=0; for _ in 1 2 3; do r=$(rate "$@"); [ "$r" -gt "$best" ] && best=$r; done; echo "$best"; }
ZSTD3=$(best_rate zstd -3 -q -c)
# zstd's own in-memory benchmark (no process start-up, no file IO), one core
ZSTD3_MEM=$(zstd -b3 -i1 "${SAMPLE_PATHS[@]}" 2>&1 | tr '\r' '\n' | grep -E 'MB/s.*MB/s' | tail -1 |
    sed -E 's/.*\), *([0-9.]+) MB\/s, *([0-9.]+) MB\/s.*/\1 MB\/s compress, \2 MB\/s decompress/')
ZSTD3_T2=$(best_rate zstd -3 -T2 -q -c)
OPENSSL_SHA=$(best_rate openssl dgst -sha256)
COREUTILS_SHA=$(best_rate sha256sum)
SAMPLE_RATIO=$(for f in "${SAMPLE_PATHS[@]}"; do zstd -3 -q -c "$f" | wc -c; done |
    awk -v n=${#SAMPLE[@]} '{ s += $1 } END { printf "%.1f", n * 16777216 / s }')
startup_ms() { # median wall ms of 21 runs of CMD
    local i t0 t1
    for i in $(seq 1 21); do
        t0=${EPOCHREALTIME/./}; "$@" >/dev/null 2>&1 || true; t1=${EPOCHREALTIME/./}
        echo $((t1 - t0))
    done | sort -n | awk '{ v[n++] = $1 } END { printf "%.1f", v[10] / 1000 }'
}
START_PGWARD=$(startup_ms "$PGWARD" --help)
START_PGBR=$(startup_ms pgbackrest version)

# --- report ------------------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
meets() { awk -v r="$1" -v t="$2" 'BEGIN { print (r >= t) ? "yes" : "no" }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

A_PW=$(median_of a-pgward 1) A_BR=$(median_of a-pgbackrest 1)
B_PW=$(median_of b-pgward 1) B_BR=$(median_of b-pgbackrest 1)
C_PW=$(median_of c-pgward 1) C_BR=$(median_of c-pgbackrest 1)
C0_PW=$(median_of c0-pgward 1) C0_BR=$(median_of c0-pgbackrest 1)
lat() { echo "$(median_of "$1" 2) / $(median_of "$1" 3)"; } # median and p90 per call, ms
AL_PW=$(lat a-pgward) AL_BR=$(lat a-pgbackrest)
BL_PW=$(lat b-pgward) BL_BR=$(lat b-pgbackrest)
CL_PW=$(lat c-pgward) CL_BR=$(lat c-pgbackrest)
C0L_PW=$(lat c0-pgward) C0L_BR=$(lat c0-pgbackrest)
RAW=$((NSEG * SEGBYTES))

{
echo "Backlog: $NSEG segments of pgbench WAL ($((RAW / 1048576)) MiB), $RUNS runs per line, medians;"
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(sed -n 's/^model name\t*: //p' /proc/cpuinfo | head -1), $(uname -r), pgward $("$PGWARD" --version 2>/dev/null | awk '{print $2}'), $(pgbackrest version)."
[ -f "$BENCH_DIR/pgward-build.txt" ] && sed 's/^/pgward /; s/$/;/' "$BENCH_DIR/pgward-build.txt"
echo "Compression (zstd 3): pgward stores $((PGWARD_STORED / 1048576)) MiB (ratio $(ratio $RAW "$PGWARD_STORED")),"
echo "pgBackRest $((PGBR_STORED / 1048576)) MiB (ratio $(ratio $RAW "$PGBR_STORED"))."
echo
echo "| measurement | pgward | pgBackRest 2.45 | pgward / pgBackRest | target | met? |"
echo "|---|---|---|---|---|---|"
r=$(ratio "$A_PW" "$A_BR"); echo "| (a) sequential push, segments/s (push_ahead=0 / sync) | $A_PW | $A_BR | ${r}× | ≥ 3× | $(meets "$r" 3) |"
echo "| (a) latency per call, median / p90, ms | $AL_PW | $AL_BR | | | |"
r=$(ratio "$B_PW" "$B_BR"); echo "| (b) push with look-ahead, segments/s (push_ahead=4 / async, process-max 2) | $B_PW | $B_BR | ${r}× | ≥ 1.5× | $(meets "$r" 1.5) |"
echo "| (b) latency per call, median / p90, ms | $BL_PW | $BL_BR | | | |"
r=$(ratio "$C_PW" "$C_BR"); echo "| (c) sequential fetch, segments/s (prefetch=8 / async get, process-max 2) | $C_PW | $C_BR | ${r}× | ≥ 2× | $(meets "$r" 2) |"
echo "| (c) latency per call, median / p90, ms | $CL_PW | $CL_BR | | | |"
r=$(ratio "$C0_PW" "$C0_BR"); echo "| (c0) fetch without look-ahead, segments/s (prefetch=0 / sync get), reference | $C0_PW | $C0_BR | ${r}× | | |"
echo "| (c0) latency per call, median / p90, ms | $C0L_PW | $C0L_BR | | | |"
echo "| (d) peak RSS of one push, push_ahead=0 / sync, MiB | $(mib "$RSS_PW0") | $(mib "$RSS_BR") | | ≤ 32 MiB | $(awk -v k="$RSS_PW0" 'BEGIN { print (k <= 32768) ? "yes" : "no" }') |"
echo "| (d) peak RSS of one push, push_ahead=4 (the call itself), MiB | $(mib "$RSS_PW4") | | | ≤ 32 MiB | $(awk -v k="$RSS_PW4" 'BEGIN { print (k <= 32768) ? "yes" : "no" }') |"
echo "| (d) peak RSS of the background pusher it starts (window 4, 2 encodes), MiB | $(mib "$RSS_BG") | | | ≤ 32 MiB | $(awk -v k="$RSS_BG" 'BEGIN { print (k <= 32768) ? "yes" : "no" }') |"
echo
echo "Machine limits (8 pgbench segments, one process per segment, best of 3):"
echo "zstd -3 CLI one core $ZSTD3 MB/s (ratio $SAMPLE_RATIO), zstd -3 -T2 $ZSTD3_T2 MB/s; zstd -b3 in memory: $ZSTD3_MEM;"
echo "sha256 openssl $OPENSSL_SHA MB/s, coreutils sha256sum $COREUTILS_SHA MB/s;"
echo "process start-up (median of 21): pgward --help $START_PGWARD ms, pgbackrest version $START_PGBR ms."
echo "Whole run: $(( $(date +%s) - t_all )) s; passes started on a busy machine (>${QUIET_MAX_BUSY}% CPU after ${QUIET_WAIT} s of waiting): $(cat "$RES/noisy-passes" 2>/dev/null | wc -l)."
} | tee "$RES/summary.md"
