#!/usr/bin/env bash
# Prepares the WAL archiving benchmark (issue 2): a PostgreSQL 15 cluster whose pg_wal holds a
# backlog of real 16 MiB segments from a pgbench workload, all still `.ready`, a pristine copy of
# that pg_wal, an initialised pgBackRest stanza and an initialised pgward repository (kept as
# templates that bench/wal/run.sh copies before every measured run).
#
# Usage (as root or as postgres):  bash bench/wal/setup.sh [MIN_SEGMENTS]   (default 128)
# Environment: BENCH_DIR (default /tmp/pgward-bench), PGBIN, PGPORT, PGWARD_BIN (default: the
# crate's target/release/pgward, built with `cargo build --release` if missing).
#
# Everything under $BENCH_DIR is deleted and recreated.

set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
crate=$(cd "$here/../.." && pwd)
. "$here/common.sh"

MIN_SEGMENTS=${1:-128}
PGWARD_BIN=${PGWARD_BIN:-$crate/target/release/pgward}

command -v pgbackrest >/dev/null || die "pgbackrest is not installed (apt-get install -y pgbackrest)"
command -v pgbench >/dev/null || [ -x "$PGBIN/pgbench" ] || die "pgbench not found"
[ -x "$PGBIN/initdb" ] || die "no PostgreSQL binaries in $PGBIN"
if [ ! -x "$PGWARD_BIN" ]; then
    log "building pgward (cargo build --release)"
    (cd "$crate" && cargo build --release)
fi

# --- a clean bench directory ------------------------------------------------------------------
if [ -f "$PGDATA/postmaster.pid" ]; then
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop || true
fi
case "$BENCH_DIR" in /tmp/?*) ;; *) die "BENCH_DIR must be under /tmp (got $BENCH_DIR)";; esac
rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR/bin" "$SOCK" "$TEMPLATES" "$CONF" "$RUN"
install -m 0755 "$PGWARD_BIN" "$PGWARD"
# Which pgward is measured (the working tree may differ from HEAD while others edit it).
# PGWARD_SOURCE describes a binary given by PGWARD_BIN (e.g. "git archive 44aef43").
{
    echo "binary: $PGWARD_BIN, built $(date -u -r "$PGWARD_BIN" '+%Y-%m-%d %H:%M UTC'), sha256 $(sha256sum "$PGWARD" | cut -c1-16)"
    if [ -n "${PGWARD_SOURCE:-}" ]; then
        echo "source: $PGWARD_SOURCE"
    else
        echo "source: working tree of $(git -C "$crate" rev-parse --short HEAD 2>/dev/null || echo '?') with $(git -C "$crate" status --porcelain -- src 2>/dev/null | wc -l) changed path(s) under src/ at setup time"
    fi
} >"$BENCH_DIR/pgward-build.txt"
chmod 0755 "$BENCH_DIR"
[ "$(id -u)" -eq 0 ] && chown -R postgres:postgres "$BENCH_DIR"

# --- the cluster, with archiving failing so every segment stays .ready ------------------------
log "initdb $PGDATA"
as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres -A trust -N >/dev/null
cat >>"$PGDATA/postgresql.conf" <<EOF

# --- pgward WAL benchmark ---
port = $PGPORT
listen_addresses = ''
unix_socket_directories = '$SOCK'
wal_level = replica
archive_mode = on
# Archiving fails on purpose while the backlog is generated: every finished segment keeps its
# archive_status/*.ready file, exactly what the archiver would hand to archive_command.
archive_command = 'false'
# Unarchived segments are never removed anyway; wal_keep_size/max_wal_size keep anything else
# from being recycled. A short checkpoint_timeout makes every round of pgbench write the
# full-page images a busy server writes after each checkpoint (and the backlog builds in
# ~2 minutes instead of ~15).
max_wal_size = 4GB
wal_keep_size = 4GB
checkpoint_timeout = 30s
synchronous_commit = off
shared_buffers = 256MB
EOF
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$BENCH_DIR/postgres.log" -w -t 60 start >/dev/null

psql_() { as_pg "$PGBIN/psql" -h "$SOCK" -p "$PGPORT" -U postgres -d postgres -qAtX "$@"; }
pgbench_() { as_pg "$PGBIN/pgbench" -h "$SOCK" -p "$PGPORT" -U postgres "$@"; }
ready_count() { find "$PGDATA/pg_wal/archive_status" -name '*.ready' | wc -l; }

log "pgbench -i -s 20"
pgbench_ -i -s 20 -q postgres 2>&1 | tail -1 >&2
rounds=0
while [ "$(ready_count)" -lt "$MIN_SEGMENTS" ]; do
    rounds=$((rounds + 1))
    [ $rounds -le 60 ] || die "still fewer than $MIN_SEGMENTS .ready segments after 60 rounds"
    pgbench_ -c 4 -j 2 -T 10 -n postgres 2>&1 | grep -E '^tps' | sed 's/^/  /' >&2 || true
    log "  $(ready_count) segments .ready"
done
psql_ -c 'select pg_switch_wal()' >/dev/null
sleep 1
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
n=$(ready_count)
log "cluster stopped; $n segments .ready"
# The archiver must have failed (archive_command = 'false'), never succeeded.
[ -z "$(find "$PGDATA/pg_wal/archive_status" -name '*.done')" ] || die "some segments were archived"

# --- the pristine backlog ----------------------------------------------------------------------
# Segment files are made read-only: neither tool may change them, and run.sh hard-links them
# into pg_wal for every run (archive_status is copied afresh).
cp -a "$PGDATA/pg_wal" "$PRISTINE"
chmod 0444 "$PRISTINE"/0* 
ls "$PRISTINE/archive_status" | sed -n 's/\.ready$//p' | sort >"$BENCH_DIR/segments.txt"
(cd "$PRISTINE" && sha256sum $(cat "$BENCH_DIR/segments.txt")) >"$BENCH_DIR/segments.sha256"
[ "$(id -u)" -eq 0 ] && chown -R postgres:postgres "$BENCH_DIR"

# --- pgBackRest: one config per mode, same repository/spool paths under $RUN -----------------
pgbr_conf() { # $1 = async y|n
    cat <<EOF
[global]
repo1-path=$RUN/pgbackrest-repo
spool-path=$RUN/pgbackrest-spool
lock-path=$RUN/pgbackrest-lock
log-path=$RUN/pgbackrest-log
compress-type=zst
compress-level=3
archive-async=$1
process-max=2

[$STANZA]
pg1-path=$PGDATA
pg1-socket-path=$SOCK
pg1-port=$PGPORT
EOF
}
pgbr_conf n >"$CONF/pgbackrest-sync.conf"
pgbr_conf y >"$CONF/pgbackrest-async.conf"

# stanza-create --no-online reads pg_control from the stopped cluster, so the backlog is not
# archived by starting the server with pgBackRest as archive_command.
as_pg pgbackrest --config="$CONF/pgbackrest-sync.conf" --stanza=$STANZA \
    --repo1-path="$TEMPLATES/pgbackrest-repo" --log-path="$BENCH_DIR" --lock-path="$BENCH_DIR/lock" \
    --no-online --log-level-console=warn stanza-create

# --- pgward: one config per mode, same repository/spool paths under $RUN ----------------------
pgward_conf() { # $1 = push_ahead, $2 = prefetch, $3 = repo dir
    cat <<EOF
[postgres]
pgdata = "$PGDATA"
conninfo = "host=$SOCK port=$PGPORT user=postgres dbname=postgres"
bindir = "$PGBIN"

[repo]
url = "file://$3"
compression_level = 3

[wal]
push_ahead = $1
prefetch = $2
spool_dir = "$RUN/pgward-spool"
timeout = "60s"
EOF
}
pgward_conf 0 0 "$RUN/pgward-repo" >"$CONF/pgward-sync.toml"
pgward_conf 4 0 "$RUN/pgward-repo" >"$CONF/pgward-async.toml"
pgward_conf 0 8 "$RUN/pgward-repo" >"$CONF/pgward-fetch.toml"
pgward_conf 0 0 "$TEMPLATES/pgward-repo" >"$CONF/pgward-init.toml"
[ "$(id -u)" -eq 0 ] && chown -R postgres:postgres "$BENCH_DIR"
as_pg "$PGWARD" --config "$CONF/pgward-init.toml" init

raw=$((n * 16))
log "ready: $n segments ($raw MiB) of pgbench WAL in $PRISTINE; run bash bench/wal/run.sh"
