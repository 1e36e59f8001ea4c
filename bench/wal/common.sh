# Shared settings for bench/wal/*.sh (sourced, not run).
# Everything lives under $BENCH_DIR (default /tmp/pgward-bench), owned by postgres.

BENCH_DIR=${BENCH_DIR:-/tmp/pgward-bench}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PGPORT=${PGPORT:-55432}
STANZA=bench

PGDATA="$BENCH_DIR/pgdata"
SOCK="$BENCH_DIR/sock"
PRISTINE="$BENCH_DIR/pristine-pg_wal"     # the backlog: segments + archive_status/*.ready
TEMPLATES="$BENCH_DIR/templates"          # empty-but-initialised repositories
CONF="$BENCH_DIR/conf"
RUN="$BENCH_DIR/run"                      # per-run state, wiped before every measured run
PGWARD="$BENCH_DIR/bin/pgward"

# Run a command as postgres (from a cwd postgres can read).
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

die() { echo "error: $*" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
