# Shared settings for bench/backup/*.sh (sourced, not run).
# Everything lives under $BENCH_DIR (default /tmp/pgward-bkbench), owned by postgres.

BENCH_DIR=${BENCH_DIR:-/tmp/pgward-bkbench}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PGPORT=${PGPORT:-55433}
STANZA=bench

PGDATA="$BENCH_DIR/pgdata"
SOCK="$BENCH_DIR/sock"
CONF="$BENCH_DIR/conf"
REPO_PGWARD="$BENCH_DIR/repo-pgward"
REPO_PGBR="$BENCH_DIR/repo-pgbackrest"
PGWARD="$BENCH_DIR/bin/pgward"
PGWARD_CONF="$CONF/pgward.toml"
PGBR_CONF="$CONF/pgbackrest.conf"

as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}
psql_() { as_pg "$PGBIN/psql" -h "$SOCK" -p "$PGPORT" -U postgres -d postgres -qAtX "$@"; }
pgbench_() { as_pg "$PGBIN/pgbench" -h "$SOCK" -p "$PGPORT" -U postgres "$@"; }

die() { echo "error: $*" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
