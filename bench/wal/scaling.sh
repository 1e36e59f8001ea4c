#!/usr/bin/env bash
# How the cost of one wal-push, one wal-fetch, one fetch of a missing name and one `info` grows
# with the number of WAL objects already archived (0, 10 000, 100 000), on a local repository,
# for two pgward binaries side by side (repository format 1 vs 2, say).
#
#   bash bench/wal/scaling.sh OLD_BINARY NEW_BINARY [RUNS]
#
# Each binary gets its own repository in the format it writes (`repo.json` says which), filled
# with N placeholder objects under that format's keys (their contents are never read: only
# their names are listed), plus one real segment from a throwaway cluster, which is the one
# pushed and fetched. Needs PostgreSQL 15 (initdb) and the `farm-bench` timer on PATH, and a
# `postgres` user when run as root. Prints one table row per measurement.
set -euo pipefail

OLD=${1:?old binary} NEW=${2:?new binary} RUNS=${3:-7}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
WORK=${BENCH_DIR:-/tmp/pgward-scaling}
rm -rf "$WORK" && mkdir -p "$WORK" && chmod 755 "$WORK"

as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# One real segment and its cluster's identity.
mkdir -p "$WORK/pg" && chown postgres "$WORK/pg" 2>/dev/null || true
as_pg "$PGBIN/initdb" -D "$WORK/pg/data" -U postgres -A trust -N >/dev/null
SEG=000000010000000000000001
mkdir -p "$WORK/seg" && cp "$WORK/pg/data/pg_wal/$SEG" "$WORK/seg/$SEG"
SYSID=$("$PGBIN/pg_controldata" "$WORK/pg/data" | awk -F': *' '/Database system identifier/ {print $2}')

# repo.json for format $1, then $2 placeholder segments after the real one.
make_repo() {
  local dir=$1 format=$2 n=$3
  mkdir -p "$dir"
  cat >"$dir/repo.json" <<EOF
{"format_version": $format, "system_identifier": "$SYSID", "pg_major": 15,
 "wal_segment_size": 16777216, "block_size": 1048576,
 "created_at": "2026-12-01T00:00:00Z", "created_by": "bench"}
EOF
  python3 - "$dir" "$format" "$n" <<'EOF'
import os, sys
root, fmt, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sha = "ab" * 32
made = set()
for segno in range(2, n + 2):
    log, seg = segno >> 8, segno & 0xFF
    name = f"00000001{log:08X}{seg:08X}"
    d = os.path.join(root, "wal", "00000001") if fmt == 1 else os.path.join(root, "wal", "00000001", f"{log:08X}")
    if d not in made:
        os.makedirs(d, exist_ok=True)
        made.add(d)
    open(os.path.join(d, f"{name}-{sha}.zst"), "wb").close()
EOF
}

config() {
  cat >"$1" <<EOF
[repo]
url = "file://$2"
[wal]
push_ahead = 0
prefetch = 0
spool_dir = "$3"
EOF
}

# The name just after the placeholders: missing, at the end of the archive.
missing_after() {
  local segno=$(($1 + 2))
  printf '00000001%08X%08X' $((segno >> 8)) $((segno & 0xFF))
}

# farm-bench pairs A (format 2, the new binary) with B (format 1, the old one) run by run and
# prints min / median / max of each figure and of the ratio A/B; quote the medians.
for n in 0 10000 100000; do
  for which in old new; do
    bin=$OLD; fmt=1
    [ "$which" = new ] && { bin=$NEW; fmt=2; }
    make_repo "$WORK/$which-$n/repo" "$fmt" "$n"
    config "$WORK/$which-$n/pgward.toml" "$WORK/$which-$n/repo" "$WORK/$which-$n/spool"
  done
  old="$WORK/old-$n" new="$WORK/new-$n" miss=$(missing_after "$n")
  # A push starts from a repository without the segment: its object is removed first.
  farm-bench -n "$RUNS" \
    --vs "sh -c 'rm -f $old/repo/wal/00000001/$SEG-*; exec $OLD --config $old/pgward.toml wal-push $WORK/seg/$SEG'" \
    -- sh -c "rm -f $new/repo/wal/00000001/00000000/$SEG-*; exec $NEW --config $new/pgward.toml wal-push $WORK/seg/$SEG" \
    >"$WORK/farm-$n-push.txt" 2>&1
  # The segment is archived for the fetches.
  "$NEW" --config "$new/pgward.toml" wal-push "$WORK/seg/$SEG" 2>/dev/null
  "$OLD" --config "$old/pgward.toml" wal-push "$WORK/seg/$SEG" 2>/dev/null
  farm-bench -n "$RUNS" \
    --vs "$OLD --config $old/pgward.toml wal-fetch $SEG $WORK/fetched-old" \
    -- "$NEW" --config "$new/pgward.toml" wal-fetch "$SEG" "$WORK/fetched-new" \
    >"$WORK/farm-$n-fetch.txt" 2>&1
  # A name past the end of the archive: "not archived", exit 1 (as at the end of recovery).
  farm-bench -n "$RUNS" \
    --vs "sh -c '$OLD --config $old/pgward.toml wal-fetch $miss $WORK/x 2>/dev/null; exit 0'" \
    -- sh -c "$NEW --config $new/pgward.toml wal-fetch $miss $WORK/x 2>/dev/null; exit 0" \
    >"$WORK/farm-$n-missing.txt" 2>&1
  farm-bench -n "$RUNS" --timeout 300 \
    --vs "$OLD --config $old/pgward.toml info" \
    -- "$NEW" --config "$new/pgward.toml" info \
    >"$WORK/farm-$n-info.txt" 2>&1
  for what in push fetch missing info; do
    echo "== $n archived objects: $what (A = new binary, format 2; B = old binary, format 1)"
    cat "$WORK/farm-$n-$what.txt"
  done
done
