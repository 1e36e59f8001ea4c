#!/usr/bin/env bash
# pgward dump / restore-dump against what an operator would use instead, on the same data in
# the same run (after `bench/dump/setup.sh`):
#   (a) `pgward dump --db DB` vs the seeds' script `pg_dump --format=custom --compress=6
#       --file=X DB`: wall time, peak RSS, bytes stored;
#   (b) `pgward restore-dump --db DB --to-db copy --create` vs `createdb copy && pg_restore -d
#       copy X` from the local file.
#
#   bash bench/dump/run.sh [RUNS] [DB...]     # default 3 runs, databases bookings and pgbench
#
# Whole-process timings by `farm-bench` (A = pgward, B = the alternative, run in turn; quote
# the medians). Raw output goes to $BENCH_DIR/results-*.txt.
set -euo pipefail
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
DIR=${BENCH_DIR:-/tmp/pgward-dump-bench}
RUNS=${1:-3}
shift || true
DBS=("${@:-bookings}")
[ $# -eq 0 ] && DBS=(bookings pgbench)
PG="-h $DIR/sock -p 55432 -U postgres"
as_pg() { if [ "$(id -u)" = 0 ]; then echo "runuser -u postgres --"; fi; }
RUN=$(as_pg)

for db in "${DBS[@]}"; do
  out="$DIR/results-$db"
  # (a) dumps. The script's file is rewritten each run; pgward makes a new label each run.
  farm-bench -n "$RUNS" --warmup 0 --timeout 3000 \
    --vs "$RUN $PGBIN/pg_dump $PG --format=custom --compress=6 --file=$DIR/$db.pgdump $db" \
    -- $RUN "$DIR/pgward" --config "$DIR/pgward.toml" dump --db "$db" >"$out-dump.txt" 2>&1
  script_bytes=$(stat -c %s "$DIR/$db.pgdump")
  label=$(ls "$DIR/repo/dumps" | sort | tail -1)
  pgward_bytes=$(stat -c %s "$DIR/repo/dumps/$label/$db.pgdump.zst")
  raw_bytes=$($RUN "$PGBIN/pg_dump" $PG -Fc -Z0 "$db" | wc -c)
  echo "$db: pg_dump -Fc -Z0 writes $raw_bytes bytes; the script stores $script_bytes; pgward stores $pgward_bytes" >>"$out-dump.txt"
  # (b) restores into a fresh database each run.
  farm-bench -n "$RUNS" --warmup 0 --timeout 3000 \
    --vs "sh -c '$RUN $PGBIN/dropdb $PG --if-exists copy_b && $RUN $PGBIN/createdb $PG copy_b && exec $RUN $PGBIN/pg_restore $PG --exit-on-error -d copy_b $DIR/$db.pgdump'" \
    -- sh -c "$RUN $PGBIN/dropdb $PG --if-exists copy_a && exec $RUN $DIR/pgward --config $DIR/pgward.toml restore-dump --label $label --db $db --to-db copy_a --create" \
    >"$out-restore.txt" 2>&1
  cat "$out-dump.txt" "$out-restore.txt"
done
