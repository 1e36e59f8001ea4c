#!/usr/bin/env bash
# Prepares the base backup / restore benchmark (issue 3): one running PostgreSQL 15 cluster with
# a pgbench database of scale 100 (~1.5 GB), whose archive_command pushes every WAL file to BOTH
# repositories (pgward wal-push, then pgbackrest archive-push; both must succeed), an initialised
# pgward repository and a pgBackRest stanza. bench/backup/run.sh recreates both repositories for
# every full-backup repetition.
#
# Usage (as root or as postgres):  bash bench/backup/setup.sh [SCALE]   (default 100)
# Environment: BENCH_DIR (default /tmp/pgward-bkbench), PGBIN, PGPORT (default 55433),
# PGWARD_BIN (default: target/release/pgward of this crate). Everything under $BENCH_DIR is
# deleted and recreated. Takes ~2-4 minutes.

set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
crate=$(cd "$here/../.." && pwd)
. "$here/common.sh"

SCALE=${1:-100}
PGWARD_BIN=${PGWARD_BIN:-$crate/target/release/pgward}
command -v pgbackrest >/dev/null || die "pgbackrest is not installed (apt-get install -y pgbackrest)"
[ -x "$PGBIN/initdb" ] || die "no PostgreSQL binaries in $PGBIN"
[ -x /usr/bin/time ] || die "GNU time (/usr/bin/time) is needed"
if [ ! -x "$PGWARD_BIN" ]; then
    log "building pgward (cargo build --release)"
    (cd "$crate" && cargo build --release)
fi

if [ -f "$PGDATA/postmaster.pid" ]; then
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop || true
fi
case "$BENCH_DIR" in /tmp/?*) ;; *) die "BENCH_DIR must be under /tmp (got $BENCH_DIR)";; esac
rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR/bin" "$SOCK" "$CONF" "$BENCH_DIR/pgbackrest-log" "$BENCH_DIR/pgbackrest-lock" \
    "$BENCH_DIR/pgbackrest-spool" "$BENCH_DIR/pgward-spool" "$BENCH_DIR/results"
install -m 0755 "$PGWARD_BIN" "$PGWARD"
{
    echo "binary: $PGWARD_BIN, built $(date -u -r "$PGWARD_BIN" '+%Y-%m-%d %H:%M UTC'), sha256 $(sha256sum "$PGWARD" | cut -c1-16)"
    if [ -n "${PGWARD_SOURCE:-}" ]; then
        echo "source: $PGWARD_SOURCE"
    else
        echo "source: working tree of $(git -C "$crate" rev-parse --short HEAD 2>/dev/null || echo '?') with $(git -C "$crate" status --porcelain -- src 2>/dev/null | wc -l) changed path(s) under src/ at setup time"
    fi
} >"$BENCH_DIR/pgward-build.txt"

# --- configs -----------------------------------------------------------------------------------
cat >"$PGWARD_CONF" <<CONF
[postgres]
pgdata = "$PGDATA"
conninfo = "host=$SOCK port=$PGPORT user=postgres dbname=postgres"
bindir = "$PGBIN"

[repo]
url = "file://$REPO_PGWARD"
compression_level = 3

[wal]
push_ahead = 0
prefetch = 0
spool_dir = "$BENCH_DIR/pgward-spool"
timeout = "60s"

[backup]
jobs = 2
wal_wait_timeout = "5m"
CONF
cat >"$PGBR_CONF" <<CONF
[global]
repo1-path=$REPO_PGBR
repo1-retention-full=100
spool-path=$BENCH_DIR/pgbackrest-spool
lock-path=$BENCH_DIR/pgbackrest-lock
log-path=$BENCH_DIR/pgbackrest-log
log-level-console=warn
log-level-file=info
compress-type=zst
compress-level=3
process-max=2
start-fast=y
archive-async=n

[$STANZA]
pg1-path=$PGDATA
pg1-socket-path=$SOCK
pg1-port=$PGPORT
CONF
# archive_command: both tools must archive every WAL file (each tool's backup waits for its own
# copy of the WAL it needs). Re-pushing a file already stored is a success for both. The name
# contains "pgbackrest" because pgbackrest check insists that archive_command does.
cat >"$BENCH_DIR/bin/archive-pgward-and-pgbackrest.sh" <<SH
#!/bin/bash
set -e
"$PGWARD" --config "$PGWARD_CONF" wal-push "\$1"
pgbackrest --config="$PGBR_CONF" --stanza=$STANZA archive-push "\$1"
SH
chmod 0755 "$BENCH_DIR" "$BENCH_DIR/bin/archive-pgward-and-pgbackrest.sh"
[ "$(id -u)" -eq 0 ] && chown -R postgres:postgres "$BENCH_DIR"

# --- the cluster --------------------------------------------------------------------------------
log "initdb $PGDATA (data checksums on)"
as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres -A trust -N -k >/dev/null
cat >>"$PGDATA/postgresql.conf" <<EOF2

# --- pgward backup benchmark ---
port = $PGPORT
listen_addresses = ''
unix_socket_directories = '$SOCK'
wal_level = replica
archive_mode = on
archive_command = '$BENCH_DIR/bin/archive-pgward-and-pgbackrest.sh %p'
max_wal_size = 4GB
synchronous_commit = off
shared_buffers = 256MB
EOF2
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$BENCH_DIR/postgres.log" -w -t 60 start >/dev/null

# Repositories before any WAL is archived (archive_command fails and retries until then).
as_pg "$PGWARD" --config "$PGWARD_CONF" init
as_pg pgbackrest --config="$PGBR_CONF" --stanza=$STANZA stanza-create

log "pgbench -i -s $SCALE"
t0=$(date +%s)
pgbench_ -i -s "$SCALE" -q postgres 2>&1 | tail -1 >&2
psql_ -c 'checkpoint' -c 'select pg_switch_wal()' >/dev/null
log "  loaded in $(( $(date +%s) - t0 )) s; database $(psql_ -c "select pg_size_pretty(pg_database_size('postgres'))"), cluster $(du -sh "$PGDATA" | cut -f1)"

# Wait until the archiver has caught up (both tools), then check both archives.
for i in $(seq 1 300); do
    [ -z "$(find "$PGDATA/pg_wal/archive_status" -name '*.ready')" ] && break
    sleep 1
done
[ -z "$(find "$PGDATA/pg_wal/archive_status" -name '*.ready')" ] || die "archiver did not catch up; see $BENCH_DIR/postgres.log"
as_pg pgbackrest --config="$PGBR_CONF" --stanza=$STANZA check
log "ready; cluster running on port $PGPORT; run bash bench/backup/run.sh"
