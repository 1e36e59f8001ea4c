#!/usr/bin/env bash
# Base backup and restore benchmark (issue 3): pgward against pgBackRest 2.45 (process-max=2,
# compress-type=zst, compress-level=3, start-fast=y), side by side in one run, on the pgbench
# scale-100 cluster that bench/backup/setup.sh left running.
#
# Usage (as root or postgres):  bash bench/backup/run.sh [RUNS]   (default 3, at least 3)
#
#   full     RUNS x: both repositories recreated (pgward init / pgbackrest stanza-create), then a
#            full backup with each tool (order alternates). Wall time, peak RSS, bytes stored.
#   append   2 x: an append-mostly "day" (1% new rows in pgbench_accounts, 100 updates of recent
#            rows), then pgward backup / pgbackrest backup --type=incr. Wall time, bytes added.
#   pgbench  1 x: pgbench -c 4 -j 2 -T 30, then the same two backups.
#   restore  RUNS x per tool: the newest backup into a fresh empty directory.
#   restore-warm  the same, but just before the cache drop of each timed run the source data
#            directory is read through the page cache. This VM returns freed memory to its host
#            (virtio-balloon free page reporting), and the first touch of a returned page costs
#            a host fault: a buffered 1.6 GB write took 3.0 s right after a quiet pause and
#            0.75 s when memory had just been in use. Writers that go through the page cache
#            (pgBackRest) pay that in "restore"; this variant gives them their best case.
#   delta    a small change (1000 new rows, 100 updates) and one more backup with each tool; then
#            RUNS x per tool: full restore of the previous backup (untimed), then a timed delta
#            restore (pgward restore --delta / pgbackrest restore --delta) of the newest one.
#   limits   zstd -3 on one core and on two, on a 1 GB table file; disk read (O_DIRECT) and
#            write (O_DIRECT, and buffered + fsync).
#
# Wall times are whole-process timings: bash date +%s%N around the command. Peak RSS is GNU
# time's "Maximum resident set size", which is the largest single process of the tree (for
# pgBackRest that includes its local worker processes, each counted on its own, not summed).
# As root, the page cache is dropped (sync; echo 3 > /proc/sys/vm/drop_caches) before every
# timed backup and restore of either tool. "Bytes added" is du -sb of the repository's backup
# part before and after (pgward: everything but wal/; pgBackRest: backup/), so the WAL that the
# shared archive_command pushes to both is left out; the whole-repository delta is logged too.
#
# Output: a Markdown table on stdout; every measurement in $BENCH_DIR/results/results.tsv and
# every command's output under $BENCH_DIR/results/.

set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"

RUNS=${1:-${RUNS:-3}}
[ "$RUNS" -ge 3 ] || die "use at least 3 runs"
[ -x "$PGWARD" ] && [ -f "$PGDATA/postmaster.pid" ] || die "run bench/backup/setup.sh first (the cluster must be running)"
BENCH_NICE=${BENCH_NICE:-$([ "$(id -u)" -eq 0 ] && echo -10 || echo 0)}
RES="$BENCH_DIR/results"
rm -rf "$RES"; mkdir -p "$RES"
TSV="$RES/results.tsv"
echo -e "scenario\ttool\trun\twall_ms\tmaxrss_kb\tbackup_bytes_added\trepo_bytes_added\tnote" >"$TSV"
RESTORE_DIR="$BENCH_DIR/restore"
[ "$(id -u)" -eq 0 ] && chown -R postgres:postgres "$RES"

as_pg_nice() {
    if [ "$(id -u)" -eq 0 ]; then
        (cd / && nice -n "$BENCH_NICE" runuser -u postgres -- "$@")
    else
        (cd / && nice -n "$BENCH_NICE" "$@")
    fi
}
PGWARD_CMD=("$PGWARD" --config "$PGWARD_CONF")
PGBR_CMD=(pgbackrest --config="$PGBR_CONF" --stanza="$STANZA")

# --- a quiet machine (same gate as bench/wal/run.sh) ---------------------------------------------
QUIET_WAIT=${QUIET_WAIT:-30}
QUIET_MAX_BUSY=${QUIET_MAX_BUSY:-10}
cpu_ticks() { local a b c d e f g h; read -r _ a b c d e f g h _ </proc/stat; echo "$((a + b + c + d + e + f + g + h)) $((d + e))"; }
busy_between() { local t1 i1 t2 i2; read -r t1 i1 <<<"$1"; read -r t2 i2 <<<"$2"; echo $((100 - 100 * (i2 - i1) / (t2 - t1 + 1))); }
quiet_gate() {
    local end busy s0
    end=$(($(date +%s) + QUIET_WAIT))
    while :; do
        s0=$(cpu_ticks); sleep 1; busy=$(busy_between "$s0" "$(cpu_ticks)")
        [ "$busy" -le "$QUIET_MAX_BUSY" ] && return 0
        if [ "$(date +%s)" -ge "$end" ]; then
            log "  machine still ${busy}% busy after ${QUIET_WAIT}s; measuring anyway"
            echo "$busy" >>"$RES/noisy-passes"
            return 0
        fi
    done
}
drop_caches() {
    sync
    if [ "$(id -u)" -eq 0 ]; then echo 3 >/proc/sys/vm/drop_caches; fi
}

backup_bytes() { # $1 = tool
    case $1 in
    # one du over everything but wal/ (two du calls would race with the archiver's pushes)
    pgward) (cd "$REPO_PGWARD" && ls -A | grep -vx wal | xargs du -scb -- | tail -1 | cut -f1) ;;
    pgbackrest) du -sb "$REPO_PGBR/backup" | cut -f1 ;;
    esac
}
repo_bytes() { case $1 in pgward) du -sb "$REPO_PGWARD" | cut -f1 ;; pgbackrest) du -sb "$REPO_PGBR" | cut -f1 ;; esac; }

# timed SCENARIO TOOL RUN NOTE -- CMD...: one whole-process timing under /usr/bin/time -v.
LAST_MS=0
timed() {
    local scen=$1 tool=$2 run=$3 note=$4; shift 5
    local out="$RES/$scen-$tool-$run"
    local b0 r0 s e rss b1 r1
    b0=$(backup_bytes "$tool"); r0=$(repo_bytes "$tool")
    quiet_gate
    if [ -n "${PRE_DROP:-}" ]; then $PRE_DROP; fi
    drop_caches
    s=$(date +%s%N)
    if ! as_pg_nice /usr/bin/time -v -o "$out.time" "$@" >"$out.out" 2>"$out.err"; then
        tail -20 "$out.err" >&2; die "$scen/$tool/$run failed: $*"
    fi
    e=$(date +%s%N)
    LAST_MS=$(( (e - s) / 1000000 ))
    rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$out.time")
    b1=$(backup_bytes "$tool"); r1=$(repo_bytes "$tool")
    echo -e "$scen\t$tool\t$run\t$LAST_MS\t$rss\t$((b1 - b0))\t$((r1 - r0))\t$note" >>"$TSV"
    log "  $scen $tool #$run: ${LAST_MS} ms, peak RSS $((rss / 1024)) MiB, backup bytes +$((b1 - b0)), repo +$((r1 - r0)) $note"
}
pgward_backup() { timed "$1" pgward "$2" "" -- "${PGWARD_CMD[@]}" backup --json; }
pgbr_backup() { timed "$1" pgbackrest "$2" "" -- "${PGBR_CMD[@]}" --type="$3" backup; }
backup_pair() { # SCENARIO RUN PGBR_TYPE; alternate which tool goes first
    if [ $(( $2 % 2 )) -eq 1 ]; then pgward_backup "$1" "$2"; pgbr_backup "$1" "$2" "$3"
    else pgbr_backup "$1" "$2" "$3"; pgward_backup "$1" "$2"; fi
}

fresh_repos() {
    rm -rf "$REPO_PGWARD" "$REPO_PGBR"
    as_pg "${PGWARD_CMD[@]}" init 2>>"$RES/init.log"
    as_pg "${PGBR_CMD[@]}" stanza-create 2>>"$RES/init.log"
}

# --- full backups into fresh repositories ------------------------------------------------------
log "full backups, $RUNS runs, fresh repositories each"
for r in $(seq 1 "$RUNS"); do
    fresh_repos
    backup_pair full "$r" full
done

# --- the append-mostly day ----------------------------------------------------------------------
append_day() { # $1 = rows to insert, $2 = updates of recent rows
    psql_ <<SQL
insert into pgbench_accounts (aid, bid, abalance, filler)
  select m + g, 1 + (m + g - 1) / 100000, 0, ''
  from (select max(aid) as m from pgbench_accounts) x, generate_series(1, $1) g;
update pgbench_accounts set abalance = abalance + 1
  where aid in (select (select max(aid) from pgbench_accounts) - (random() * 100000)::int from generate_series(1, $2));
SQL
}
for r in 1 2; do
    log "append-mostly day #$r: 100000 new rows (1%), 100 updates of recent rows"
    append_day 100000 100
    backup_pair append "$r" incr
done

# --- pgbench -T 30 -----------------------------------------------------------------------------
log "pgbench -c 4 -j 2 -T 30"
pgbench_ -n -c 4 -j 2 -T 30 postgres 2>&1 | grep -E '^(tps|number of transactions actually)' | sed 's/^/  /' >&2 || true
backup_pair pgbench 1 incr

# --- restores of the newest backup into an empty directory --------------------------------------
fresh_dir() { rm -rf "$RESTORE_DIR"; mkdir -m 0700 "$RESTORE_DIR"; [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$RESTORE_DIR"; return 0; }
pgward_restore() { timed "$1" pgward "$2" "$3" -- "${PGWARD_CMD[@]}" restore --pgdata "$RESTORE_DIR" "${@:4}"; }
pgbr_restore() { timed "$1" pgbackrest "$2" "$3" -- "${PGBR_CMD[@]}" --pg1-path="$RESTORE_DIR" "${@:4}" restore; }
log "full restores, $RUNS runs per tool"
for r in $(seq 1 "$RUNS"); do
    for tool in $([ $((r % 2)) -eq 1 ] && echo "pgward pgbackrest" || echo "pgbackrest pgward"); do
        fresh_dir
        if [ "$tool" = pgward ]; then pgward_restore restore "$r" ""; else pgbr_restore restore "$r" ""; fi
        echo "$tool run $r: $(du -sb "$RESTORE_DIR" | cut -f1) bytes, $(find "$RESTORE_DIR" -type f | wc -l) files" >>"$RES/restored-sizes"
    done
done
RESTORED_BYTES=$(du -sb "$RESTORE_DIR" | cut -f1)

# Touch memory through the page cache (the next drop_caches frees it again, host-backed).
prewarm_memory() { find "$PGDATA" -type f -exec cat {} + >/dev/null 2>&1 || true; }
log "full restores after a memory warm-up, $RUNS runs per tool"
for r in $(seq 1 "$RUNS"); do
    for tool in $([ $((r % 2)) -eq 1 ] && echo "pgbackrest pgward" || echo "pgward pgbackrest"); do
        fresh_dir
        if [ "$tool" = pgward ]; then
            PRE_DROP=prewarm_memory pgward_restore restore-warm "$r" ""
        else
            PRE_DROP=prewarm_memory pgbr_restore restore-warm "$r" ""
        fi
    done
done

# --- delta restore after a small change ---------------------------------------------------------
prev_pgward=$(as_pg "${PGWARD_CMD[@]}" backup --json 2>/dev/null </dev/null | sed -n 's/.*"label": "\([^"]*\)".*/\1/p' || true)
# (the line above takes one more pgward backup of the unchanged cluster so that "previous" is
# well defined for both tools; pgBackRest takes one too)
as_pg "${PGBR_CMD[@]}" --type=incr backup
prev_pgbr=$(as_pg "${PGBR_CMD[@]}" info --output=json | grep -o '"label":"[^"]*"' | tail -1 | sed 's/"label":"\(.*\)"/\1/')
log "small change: 1000 new rows, 100 updates; previous backups: pgward $prev_pgward, pgBackRest $prev_pgbr"
append_day 1000 100
backup_pair small 1 incr
for r in $(seq 1 "$RUNS"); do
    for tool in $([ $((r % 2)) -eq 1 ] && echo "pgward pgbackrest" || echo "pgbackrest pgward"); do
        fresh_dir
        if [ "$tool" = pgward ]; then
            as_pg "${PGWARD_CMD[@]}" restore --pgdata "$RESTORE_DIR" --backup "$prev_pgward" >/dev/null 2>>"$RES/delta-prep.log"
            pgward_restore delta "$r" "" --delta
        else
            as_pg "${PGBR_CMD[@]}" --pg1-path="$RESTORE_DIR" --set="$prev_pgbr" restore 2>>"$RES/delta-prep.log"
            pgbr_restore delta "$r" "" --delta
        fi
    done
done
rm -rf "$RESTORE_DIR"

# --- machine limits ------------------------------------------------------------------------------
log "machine limits"
TBL="$PGDATA/$(psql_ -c "select pg_relation_filepath('pgbench_accounts')")"
TBL_BYTES=$(stat -c %s "$TBL")
cat "$TBL" >/dev/null
mbps() { echo "scale=0; $1 / 1000000 * 1000 / $2" | bc; } # bytes, ms -> MB/s
t_ms() { local s e; s=$(date +%s%N); "$@"; e=$(date +%s%N); echo $(( (e - s) / 1000000 )); }
{
    zs=$(t_ms sh -c "zstd -3 -T1 -q -c '$TBL' >'$BENCH_DIR/tbl.zst'")
    ratio=$(echo "scale=1; $TBL_BYTES / $(stat -c %s "$BENCH_DIR/tbl.zst")" | bc)
    echo "zstd -3 one core on $(basename "$TBL") ($TBL_BYTES bytes): $(mbps "$TBL_BYTES" "$zs") MB/s, ratio $ratio"
    zs2=$(t_ms sh -c "zstd -3 -T2 -q -c '$TBL' >/dev/null")
    echo "zstd -3 -T2: $(mbps "$TBL_BYTES" "$zs2") MB/s"
    zd=$(t_ms sh -c "zstd -d -q -c '$BENCH_DIR/tbl.zst' >/dev/null")
    echo "zstd -d one core: $(mbps "$TBL_BYTES" "$zd") MB/s of output"
    drop_caches
    rd=$(t_ms dd if="$TBL" of=/dev/null bs=1M iflag=direct status=none)
    echo "disk read (dd bs=1M iflag=direct): $(mbps "$TBL_BYTES" "$rd") MB/s"
    cat "$TBL" >/dev/null
    wd=$(t_ms dd if="$TBL" of="$BENCH_DIR/ddtest" bs=1M oflag=direct status=none)
    echo "disk write (dd bs=1M oflag=direct): $(mbps "$TBL_BYTES" "$wd") MB/s"
    rm -f "$BENCH_DIR/ddtest"
    wf=$(t_ms dd if="$TBL" of="$BENCH_DIR/ddtest" bs=1M conv=fsync status=none)
    echo "disk write (dd bs=1M conv=fsync): $(mbps "$TBL_BYTES" "$wf") MB/s"
    rm -f "$BENCH_DIR/ddtest" "$BENCH_DIR/tbl.zst"
} | tee "$RES/limits.txt" >&2

# --- summary --------------------------------------------------------------------------------------
log "summary (medians)"
echo "restored data directory: $RESTORED_BYTES bytes" >>"$RES/limits.txt"
median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) print "-"; else if (NR%2) print a[(NR+1)/2]; else print int((a[NR/2]+a[NR/2+1])/2)}'; }
col() { awk -F'\t' -v s="$1" -v t="$2" -v c="$3" '$1==s && $2==t {print $c}' "$TSV" | median; }
printf '| scenario | runs | pgward wall ms | pgBackRest wall ms | ratio | pgward peak RSS MiB | pgBackRest peak RSS MiB | pgward bytes added | pgBackRest bytes added | bytes ratio |\n'
printf '|---|---|---|---|---|---|---|---|---|---|\n'
for s in full append pgbench restore restore-warm small delta; do
    n=$(awk -F'\t' -v s="$s" '$1==s && $2=="pgward"' "$TSV" | wc -l)
    [ "$n" -gt 0 ] || continue
    pw=$(col "$s" pgward 4); pb=$(col "$s" pgbackrest 4)
    rw=$(col "$s" pgward 5); rb=$(col "$s" pgbackrest 5)
    bw=$(col "$s" pgward 6); bb=$(col "$s" pgbackrest 6)
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$s" "$n" "$pw" "$pb" \
        "$(echo "scale=2; $pw / $pb" | bc)" "$((rw / 1024))" "$((rb / 1024))" "$bw" "$bb" \
        "$( [ "$bb" -gt 0 ] && echo "scale=3; $bw / $bb" | bc || echo -)"
done
[ -f "$RES/noisy-passes" ] && log "$(wc -l <"$RES/noisy-passes") measurement(s) started on a busy machine"
cat "$BENCH_DIR/pgward-build.txt" >&2
