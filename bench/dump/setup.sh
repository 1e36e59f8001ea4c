#!/usr/bin/env bash
# A PostgreSQL 15 cluster with a booking-like database of at least 1 GB (`bookings`: users,
# appointments, payments — text, e-mail addresses, timestamps, numbers; not pgbench's
# blank-padded filler, which compresses almost for free) and, for comparison, a pgbench
# database (`pgbench`, scale 20), plus an initialised local pgward repository.
#
#   bash bench/dump/setup.sh            # BENCH_DIR (default /tmp/pgward-dump-bench)
#
# Run as root (PostgreSQL runs as `postgres`) or as postgres. Takes a few minutes.
set -euo pipefail
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
DIR=${BENCH_DIR:-/tmp/pgward-dump-bench}
BIN=${PGWARD_BIN:-$(cd "$(dirname "$0")/../.." && pwd)/target/release/pgward}
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

if [ -f "$DIR/data/postmaster.pid" ]; then as_pg "$PGBIN/pg_ctl" -D "$DIR/data" -m fast stop || true; fi
rm -rf "$DIR" && mkdir -p "$DIR/sock" "$DIR/repo" "$DIR/spool" && cp "$BIN" "$DIR/pgward"
[ "$(id -u)" = 0 ] && chown -R postgres "$DIR"
as_pg "$PGBIN/initdb" -D "$DIR/data" -U postgres -A trust -N >/dev/null
cat >>"$DIR/data/postgresql.conf" <<CONF
port = 55432
listen_addresses = ''
unix_socket_directories = '$DIR/sock'
shared_buffers = 512MB
maintenance_work_mem = 512MB
max_wal_size = 8GB
checkpoint_timeout = 30min
CONF
as_pg "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w start >/dev/null
psql() { as_pg "$PGBIN/psql" -h "$DIR/sock" -p 55432 -U postgres -qAtX -v ON_ERROR_STOP=1 "$@"; }
psql -c "create database bookings"
psql -d bookings <<'SQL'
create table users (id bigint primary key, name text not null, email text not null unique,
                    phone text, created_at timestamptz not null);
create table appointments (id bigint primary key, user_id bigint not null references users,
                           barber text not null, start_time timestamptz not null,
                           end_time timestamptz not null, status text not null, notes text);
create table payments (id bigint primary key, appointment_id bigint not null references appointments,
                       amount numeric(10,2) not null, method text not null, paid_at timestamptz);
insert into users
select g, 'Customer ' || g || ' ' || (array['Smith','Jones','Garcia','Müller','Rossi','Kowalski'])[1 + g % 6],
       'customer' || g || '@' || (array['example.com','mail.example','barbers.test'])[1 + g % 3],
       '+1-555-' || lpad((g % 10000000)::text, 7, '0'),
       timestamptz '2020-01-01' + (g % 157680000) * interval '1 second'
from generate_series(1, 1000000) g;
insert into appointments
select g, 1 + (g::bigint * 7919) % 1000000, (array['Ana','Ben','Chloé','Dmitri','Eve','Farid'])[1 + g % 6],
       timestamptz '2021-01-01' + (g % 94608000) * interval '1 second',
       timestamptz '2021-01-01' + (g % 94608000) * interval '1 second' + interval '45 minutes',
       (array['booked','done','cancelled','no-show'])[1 + g % 4],
       case when g % 3 = 0 then 'wants a ' || (array['fade','trim','beard trim','shave'])[1 + g % 4]
            || ' — regular since ' || (2015 + g % 9) || ', prefers ' || (array['morning','evening'])[1 + g % 2]
            || ' slots; ref ' || md5(g::text) end
from generate_series(1, 6000000) g;
insert into payments
select g, g, ((g * 37) % 9000) / 100.0 + 10, (array['card','cash','voucher'])[1 + g % 3],
       timestamptz '2021-01-01' + (g % 94608000) * interval '1 second' + interval '50 minutes'
from generate_series(1, 6000000, 1) g where g % 4 <> 2;
create index on appointments (start_time);
create index on appointments (user_id);
create view upcoming as select * from appointments where status = 'booked';
SQL
psql -c "create database pgbench"
as_pg "$PGBIN/pgbench" -h "$DIR/sock" -p 55432 -U postgres -i -s 20 -q pgbench >/dev/null 2>&1
psql -c "checkpoint"
cat >"$DIR/pgward.toml" <<TOML
[postgres]
pgdata = "$DIR/data"
conninfo = "host=$DIR/sock port=55432 user=postgres dbname=postgres"
[repo]
url = "file://$DIR/repo"
[wal]
spool_dir = "$DIR/spool"
TOML
[ "$(id -u)" = 0 ] && chown -R postgres "$DIR"
as_pg "$DIR/pgward" --config "$DIR/pgward.toml" init
psql -c "select datname, pg_size_pretty(pg_database_size(datname)) from pg_database where datname in ('bookings','pgbench')"
