//! `pgward demo`: the whole loop on a throwaway cluster — WAL archiving, a base backup, a
//! point-in-time restore into a second cluster, and a check that the restored data is exactly
//! what was committed before the chosen moment. It is the README's quick start and a smoke test
//! of an installation; it needs no configuration file (it writes its own).
//!
//! It drives pgward the way a real installation does: PostgreSQL runs `pgward wal-push` as its
//! `archive_command` and the restored server runs `pgward wal-fetch` as its `restore_command`,
//! while `init`, `backup`, `restore` and `info` run as separate processes of a copy of this
//! binary kept in the demo directory. Started as root, everything PostgreSQL or pgward touches
//! runs as the `postgres` user (PostgreSQL runs its commands as that user, so the binary, the
//! configuration and the repository must be reachable by it), and the directory is under /tmp,
//! owned by that user, mode 0700 (the servers accept any local connection without a password).
//!
//! Invariant: whatever happens (a failed step, Ctrl-C), every server the demo started is stopped
//! before it returns: they are `pg::scratch` servers, whose guards stop them when dropped. The directory is removed only after a successful run without `--keep` or
//! `--dir`; after a failure it is kept, and the logs in it are named.

use crate::pg::binaries::{PgBinaries, RunAs};
use crate::pg::conf;
use crate::pg::scratch::{Initdb, Running, ScratchCluster, ScratchSpec, free_port, server_log};
use crate::say;
use anyhow::{Context as _, Result, anyhow, bail};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Work in DIR instead of a new directory under /tmp (created if missing, must be empty;
    /// kept afterwards). As root, DIR must be reachable by the `postgres` user.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Keep the demo directory (clusters stopped, repository, logs) for a look afterwards.
    #[arg(long)]
    pub keep: bool,
}

const STEPS: usize = 9;
/// Deadline for one pgward or PostgreSQL command the demo runs.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a switched WAL segment may take to reach the repository.
const ARCHIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the restored server may take to finish recovery.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(60);
/// The pause on each side of the recorded point in time, so that commit timestamps are clearly
/// before or after it (PostgreSQL compares them with microsecond precision, but clocks and
/// `now()` = transaction start deserve a margin).
const POINT_MARGIN: Duration = Duration::from_millis(1100);

/// The tables the demo fills, in the order they are compared.
const TABLES: [&str; 3] = ["users", "appointments", "payments"];

/// A small booking-app schema: barbers and clients, appointments, payments.
const SCHEMA_SQL: &str = "
create table users (
    id          bigserial primary key,
    name        text not null,
    email       text not null unique,
    phone       text,
    role        text not null check (role in ('client', 'barber')),
    created_at  timestamptz not null default now()
);
create table appointments (
    id          bigserial primary key,
    client_id   bigint not null references users,
    barber_id   bigint not null references users,
    service     text not null,
    starts_at   timestamptz not null,
    duration    interval not null,
    price_cents integer not null check (price_cents >= 0),
    status      text not null check (status in ('booked', 'completed', 'cancelled'))
);
create index appointments_barber_time on appointments (barber_id, starts_at);
create table payments (
    id             bigserial primary key,
    appointment_id bigint not null references appointments,
    amount_cents   integer not null,
    tip_cents      integer not null default 0,
    method         text not null check (method in ('card', 'cash', 'wallet')),
    status         text not null default 'paid' check (status in ('paid', 'refunded')),
    paid_at        timestamptz not null default now()
);
";

/// One batch of business: new barbers and clients, appointments from `first_day` on (three in
/// four completed), and a payment for every completed appointment that has none. One
/// transaction, so it has one commit time.
fn batch_sql(tag: &str, barbers: u32, clients: u32, appointments: u32, first_day: &str) -> String {
    format!(
        "begin;
insert into users (name, email, role)
    select 'Barber {tag}-' || g, 'barber.{tag}.' || g || '@example.com', 'barber'
    from generate_series(1, {barbers}) g;
insert into users (name, email, phone, role)
    select 'Client {tag}-' || g, 'client.{tag}.' || g || '@example.com',
           '+1-555-' || lpad(((g * 37) % 10000)::text, 4, '0'), 'client'
    from generate_series(1, {clients}) g;
with c as (select array_agg(id order by id) a from users where role = 'client'),
     b as (select array_agg(id order by id) a from users where role = 'barber')
insert into appointments (client_id, barber_id, service, starts_at, duration, price_cents, status)
    select c.a[1 + (g * 7) % cardinality(c.a)], b.a[1 + g % cardinality(b.a)],
           (array['haircut', 'skin fade', 'beard trim', 'hot towel shave', 'kids cut'])[1 + g % 5],
           timestamptz '{first_day} 09:00+00' + (g / 8) * interval '1 day'
               + (g % 8) * interval '1 hour',
           interval '45 minutes', 2500 + (g % 5) * 500,
           case when g % 4 = 0 then 'booked' else 'completed' end
    from generate_series(1, {appointments}) g, c, b;
insert into payments (appointment_id, amount_cents, tip_cents, method)
    select a.id, a.price_cents, (a.id % 4) * 250, (array['card', 'cash', 'wallet'])[1 + a.id % 3]
    from appointments a
    where a.status = 'completed'
      and not exists (select 1 from payments p where p.appointment_id = a.id)
    order by a.id;
commit;"
    )
}

/// The batch after the point in time also changes history: it cancels booked appointments and
/// refunds payments, so the check covers updates as well as inserts.
const LATER_CHANGES_SQL: &str = "
begin;
update appointments set status = 'cancelled' where status = 'booked' and id % 2 = 0;
update payments set status = 'refunded' where id % 10 = 0;
commit;";

/// Runs the demo. Returns an error (exit 1) when a step fails or a check does not pass.
pub async fn run(args: &Args) -> Result<()> {
    let started = Instant::now();
    let bins = PgBinaries::locate(None)?;
    let version = bins.server_version()?;
    let ws = Workspace::create(args, bins.run_as())?;
    say!("pgward demo: the whole loop on a throwaway cluster");
    say!("  directory   {}", ws.root.display());
    say!(
        "  postgres    {} (PostgreSQL {version}), run as {}",
        bins.bindir().display(),
        bins.run_as().describe()
    );
    let mut demo = Demo::new(ws, bins);
    // Ctrl-C is polled first so its handler is installed before a step blocks on a server
    // call; until then SIGINT would end the process without stopping the servers.
    let outcome = tokio::select! {
        biased;
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
        r = demo.steps() => r,
    };
    demo.finish(outcome, started).await
}

// ---------------------------------------------------------------------------------------------
// The demo directory
// ---------------------------------------------------------------------------------------------

struct Workspace {
    root: PathBuf,
    /// Remove the directory after a successful run (a temp dir without --keep).
    remove_on_success: bool,
}

impl Workspace {
    fn create(args: &Args, run_as: &RunAs) -> Result<Workspace> {
        let (root, remove_on_success) = match &args.dir {
            Some(dir) => {
                let dir = std::path::absolute(dir)
                    .with_context(|| format!("cannot resolve {}", dir.display()))?;
                fs::create_dir_all(&dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                let not_empty = fs::read_dir(&dir)
                    .with_context(|| format!("cannot read {}", dir.display()))?
                    .next()
                    .is_some();
                if not_empty {
                    bail!(
                        "{} is not empty\nhint: give --dir a new or empty directory, or leave \
                         it out to use a temporary one",
                        dir.display()
                    );
                }
                (dir, false)
            }
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("pgward-demo-")
                    .tempdir_in("/tmp")
                    .context("cannot create a directory under /tmp")?
                    .keep();
                (dir, !args.keep)
            }
        };
        if let RunAs::User(u) = run_as
            && let Some(blocked) = root
                .ancestors()
                .skip(1)
                .find(|a| fs::metadata(a).is_ok_and(|m| m.mode() & 0o001 == 0))
        {
            bail!(
                "{} cannot be reached by the `{}` user: {} has no o+x permission\n\
                 hint: PostgreSQL runs archive_command as that user; use a directory under /tmp",
                root.display(),
                u.name,
                blocked.display()
            );
        }
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot chmod {}", root.display()))?;
        run_as.chown(&root)?;
        Ok(Workspace {
            root,
            remove_on_success,
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// A subdirectory owned by the user PostgreSQL runs as.
    fn subdir(&self, name: &str, run_as: &RunAs) -> Result<PathBuf> {
        let p = self.path(name);
        fs::create_dir_all(&p).with_context(|| format!("cannot create {}", p.display()))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot chmod {}", p.display()))?;
        run_as.chown(&p)?;
        Ok(p)
    }
}

/// Puts this very binary where the `postgres` user can run it: a hard link when the demo
/// directory is on the same file system (a debug build is hundreds of MB, and copying and later
/// deleting it would be most of the demo's run time), else a copy. The running program is
/// `/proc/self/exe`, which stays valid when a rebuild replaces the file on disk; a link is kept
/// only if it is that very file.
fn install_binary(dest: &Path) -> Result<()> {
    let running = Path::new("/proc/self/exe");
    let running_id = fs::metadata(running).ok().map(|m| (m.dev(), m.ino()));
    if let Ok(exe) = std::env::current_exe()
        && fs::hard_link(&exe, dest).is_ok()
    {
        let linked = fs::metadata(dest)
            .ok()
            .map(|m| ((m.dev(), m.ino()), m.mode()));
        match linked {
            Some((id, mode)) if Some(id) == running_id && mode & 0o005 == 0o005 => return Ok(()),
            _ => fs::remove_file(dest)
                .with_context(|| format!("cannot remove {}", dest.display()))?,
        }
    }
    let src = if running_id.is_some() {
        running.to_path_buf()
    } else {
        std::env::current_exe().context("cannot find the running pgward binary")?
    };
    fs::copy(&src, dest)
        .with_context(|| format!("cannot copy {} to {}", src.display(), dest.display()))?;
    fs::set_permissions(dest, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot chmod {}", dest.display()))?;
    Ok(())
}

/// A TOML basic string.
fn toml_quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

// ---------------------------------------------------------------------------------------------
// Subprocesses
// ---------------------------------------------------------------------------------------------

/// Runs `cmd` with stdin closed and output captured, under `COMMAND_TIMEOUT` (killed when the
/// deadline passes or the demo is interrupted).
async fn run_command(cmd: std::process::Command, what: &str) -> Result<Output> {
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    tokio::time::timeout(COMMAND_TIMEOUT, cmd.output())
        .await
        .map_err(|_| anyhow!("`{what}` did not finish within {COMMAND_TIMEOUT:?}"))?
        .with_context(|| format!("cannot run `{what}`"))
}

/// Like [`run_command`], and an error carrying the command's output unless it exits 0.
async fn run_ok(cmd: std::process::Command, what: &str) -> Result<Output> {
    let out = run_command(cmd, what).await?;
    if !out.status.success() {
        bail!(
            "`{what}` failed ({})\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(out)
}

/// Prints a command's output, indented under the current step.
fn print_indented(text: &str) {
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        say!("      | {line}");
    }
}

// ---------------------------------------------------------------------------------------------
// What the demo asks of its servers
// ---------------------------------------------------------------------------------------------

/// Runs a blocking call of the scratch server (a psql or pg_ctl subprocess) off the runtime's
/// scheduling: the demo waits for it anyway.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// A server of the demo in `<demo dir>/<name>`, its log beside it, its socket in `sockets/`.
fn server_spec(ws: &Workspace, bins: &PgBinaries, name: &str) -> Result<ScratchSpec> {
    let mut spec = ScratchSpec::new(bins.clone(), &ws.path(name), &ws.path("sockets"))?;
    spec.log_file = ws.path(&format!("{name}.log"));
    Ok(spec)
}

/// Switches to a new WAL segment and waits until the finished one is archived. Returns its
/// name. The server log is checked too: an archive_command that dies by a signal or is not
/// executable makes the archiver exit FATAL without counting a failure.
fn switch_and_wait_archived(server: &Running) -> Result<String> {
    let segment = server.value("select pg_walfile_name(pg_switch_wal())")?;
    let deadline = Instant::now() + ARCHIVE_TIMEOUT;
    loop {
        let row = server
            .rows(
                "select coalesce(last_archived_wal, ''), failed_count, \
                 coalesce(last_failed_wal, '') from pg_stat_archiver",
            )?
            .into_iter()
            .next()
            .context("pg_stat_archiver is empty")?;
        if row[0].len() == segment.len() && row[0] >= segment {
            return Ok(segment);
        }
        let fatal = server_log::fatal_lines(&server.log_since_start());
        if !fatal.is_empty() {
            bail!(
                "the archiver of the primary failed:\n{}\n{}",
                fatal.join("\n"),
                server.log_tail(30)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "{segment} was not archived within {ARCHIVE_TIMEOUT:?} (failed attempts: \
                 {}, last failed: {})\n{}",
                row[1],
                row[2],
                server.log_tail(30)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Row count and an md5 of every row in id order, per demo table.
fn fingerprints(server: &Running) -> Result<Vec<Fingerprint>> {
    let mut out = Vec::new();
    for table in TABLES {
        let row = server
            .rows(&format!(
                "select count(*), coalesce(md5(string_agg(t::text, '|' order by t.id)), '-'), \
                 coalesce(max(t.id), 0) from {table} t"
            ))?
            .into_iter()
            .next()
            .with_context(|| format!("no fingerprint for {table}"))?;
        out.push(Fingerprint {
            rows: row[0].parse().context("row count")?,
            md5: row[1].clone(),
            max_id: row[2].parse().context("max id")?,
        });
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    rows: u64,
    md5: String,
    max_id: u64,
}

impl Fingerprint {
    fn short(&self) -> String {
        format!(
            "{:>4} rows {}",
            self.rows,
            &self.md5[..self.md5.len().min(8)]
        )
    }
}

// ---------------------------------------------------------------------------------------------
// The steps
// ---------------------------------------------------------------------------------------------

struct Demo {
    ws: Workspace,
    bins: PgBinaries,
    /// The pgward binary PostgreSQL runs (a link or copy of this one, reachable by postgres).
    exe: PathBuf,
    config: PathBuf,
    /// Set up in step 1, started in step 2.
    primary_cluster: Option<ScratchCluster>,
    primary: Option<Running>,
    restored: Option<Running>,
    step: usize,
    step_title: String,
    step_started: Instant,
}

impl Demo {
    fn new(ws: Workspace, bins: PgBinaries) -> Demo {
        Demo {
            exe: ws.path("bin/pgward"),
            config: ws.path("pgward.toml"),
            ws,
            bins,
            primary_cluster: None,
            primary: None,
            restored: None,
            step: 0,
            step_title: String::new(),
            step_started: Instant::now(),
        }
    }

    fn begin(&mut self, title: &str) {
        self.end();
        self.step += 1;
        self.step_title = title.to_string();
        self.step_started = Instant::now();
        say!("\n[{}/{STEPS}] {title}", self.step);
    }

    /// Prints how long the current step took.
    fn end(&self) {
        if self.step > 0 {
            say!("      ({:.1} s)", self.step_started.elapsed().as_secs_f64());
        }
    }

    fn primary(&self) -> &Running {
        self.primary
            .as_ref()
            .expect("the primary is started in step 2")
    }

    /// Runs `pgward --config <demo config> <args>` as PostgreSQL's user.
    async fn pgward(&self, args: &[&str]) -> Result<Output> {
        let mut cmd = std::process::Command::new(&self.exe);
        cmd.arg("--config")
            .arg(&self.config)
            .args(args)
            .current_dir(&self.ws.root)
            .env_remove(crate::config::CONFIG_ENV);
        self.bins.run_as().apply(&mut cmd);
        run_ok(cmd, &format!("pgward {}", args.join(" "))).await
    }

    /// Steps 1 to 8. Returns how many checks failed.
    async fn steps(&mut self) -> Result<usize> {
        let run_as = self.bins.run_as().clone();

        // 1 -----------------------------------------------------------------------------------
        self.begin("initdb a throwaway cluster and init a local repository");
        let bin_dir = self.ws.path("bin");
        fs::create_dir_all(&bin_dir)
            .with_context(|| format!("cannot create {}", bin_dir.display()))?;
        fs::set_permissions(&bin_dir, fs::Permissions::from_mode(0o755))?;
        install_binary(&self.exe)?;
        self.ws.subdir("sockets", &run_as)?;
        let spool = self.ws.subdir("spool", &run_as)?;
        let repo = self.ws.path("repo");
        let archive_command = format!(
            "{} --config {} wal-push %p",
            conf::command_word(&self.exe.to_string_lossy()),
            conf::command_word(&self.config.to_string_lossy())
        );
        let spec = server_spec(&self.ws, &self.bins, "primary")?
            .setting("wal_level", "replica")
            .setting("archive_mode", "on")
            .setting("archive_command", &archive_command)
            .setting("log_line_prefix", "%m [%p] ");
        let (port, socket_dir) = (spec.port, spec.socket_dir.clone());
        let primary = blocking(|| {
            spec.initdb(&Initdb {
                data_checksums: true,
            })
        })?;
        let primary_dir = primary.datadir().to_path_buf();
        self.primary_cluster = Some(primary);

        let conninfo = format!(
            "host={} port={port} user=postgres dbname=postgres",
            socket_dir.display()
        );
        let config_text = format!(
            "# written by `pgward demo`\n\
             [postgres]\npgdata = {}\nconninfo = {}\nbindir = {}\n\n\
             [repo]\nurl = {}\n\n\
             [wal]\nspool_dir = {}\ntimeout = \"30s\"\n\n\
             [backup]\nwal_wait_timeout = \"60s\"\n",
            toml_quote(&primary_dir.to_string_lossy()),
            toml_quote(&conninfo),
            toml_quote(&self.bins.bindir().to_string_lossy()),
            toml_quote(&format!("file://{}", repo.display())),
            toml_quote(&spool.to_string_lossy()),
        );
        fs::write(&self.config, config_text)
            .with_context(|| format!("cannot write {}", self.config.display()))?;
        run_as.chown(&self.config)?;
        self.pgward(&["init"]).await?;
        say!(
            "      cluster  {} (data checksums on, socket port {port})",
            self.ws.path("primary").display()
        );
        say!("      repo     file://{}", repo.display());
        say!("      config   {}", self.config.display());

        // 2 -----------------------------------------------------------------------------------
        self.begin("start it, archiving WAL with wal-push");
        say!("      archive_command = {}", conf::quote(&archive_command));
        let cluster = self.primary_cluster.as_ref().expect("set up in step 1");
        let primary = self.primary.insert(blocking(|| cluster.start())?);
        let first = blocking(|| switch_and_wait_archived(primary))?;
        say!("      switched WAL: {first} is in the repository");

        // 3 -----------------------------------------------------------------------------------
        self.begin("create a booking schema (users, appointments, payments) with data");
        let primary = self.primary();
        let now = blocking(|| {
            primary.psql(SCHEMA_SQL)?;
            primary.psql(&batch_sql("a", 6, 40, 120, "2026-01-05"))?;
            fingerprints(primary)
        })?;
        print_counts("rows", &now);

        // 4 -----------------------------------------------------------------------------------
        self.begin("take a base backup");
        let out = self.pgward(&["backup"]).await?;
        print_indented(&String::from_utf8_lossy(&out.stdout));

        // 5 -----------------------------------------------------------------------------------
        self.begin("write more, recording a point in time between two batches");
        let primary = self.primary();
        let at_point = blocking(|| {
            primary.psql(&batch_sql("b", 2, 12, 40, "2026-02-02"))?;
            fingerprints(primary)
        })?;
        print_counts("batch 1 committed, now", &at_point);
        tokio::time::sleep(POINT_MARGIN).await;
        let point = blocking(|| {
            primary.value(
                "select to_char(now() at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'",
            )
        })?;
        say!("      point in time: {point}");
        tokio::time::sleep(POINT_MARGIN).await;
        let source_now = blocking(|| {
            primary.psql(&batch_sql("c", 1, 6, 24, "2026-03-02"))?;
            primary.psql(LATER_CHANGES_SQL)?;
            fingerprints(primary)
        })?;
        print_counts(
            "batch 2 committed (and some cancellations, refunds), now",
            &source_now,
        );
        // A time target needs a commit after it in the archive: switch and wait for it.
        let last = blocking(|| switch_and_wait_archived(primary))?;
        say!("      switched WAL: {last} is in the repository");

        // 6 -----------------------------------------------------------------------------------
        self.begin("restore to that point into a second directory and start it");
        // Its own socket and port, and no archiving (a promoted copy must not push a new
        // timeline into the demo's archive): set over what the copy inherited from the primary.
        let mut spec =
            server_spec(&self.ws, &self.bins, "restored")?.setting("archive_mode", "off");
        while spec.port == port {
            spec.port = free_port()?;
        }
        let restored_port = spec.port;
        let restored_dir = spec.datadir.to_string_lossy().into_owned();
        let out = self
            .pgward(&[
                "restore",
                "--pgdata",
                &restored_dir,
                "--target-time",
                &point,
                "--target-action",
                "promote",
            ])
            .await?;
        print_indented(&String::from_utf8_lossy(&out.stdout));
        let restored = blocking(|| spec.adopt())?;
        let restored = self.restored.insert(blocking(|| restored.start())?);
        blocking(|| restored.wait_recovery_done(RECOVERY_TIMEOUT))?;
        let log = restored.log_since_start();
        let notable = log
            .lines()
            .filter(|l| l.contains("recovery stopping"))
            .chain(
                log.lines()
                    .filter(|l| l.contains("last completed transaction")),
            );
        for line in notable {
            say!(
                "      log: {}",
                line.split_once("LOG:  ").map_or(line, |x| x.1)
            );
        }
        say!("      restored server on socket port {restored_port}, recovery finished, promoted");

        // 7 -----------------------------------------------------------------------------------
        self.begin("check: the restored cluster holds exactly the rows from before the point");
        let restored = self.restored.as_ref().expect("restored in step 6");
        let restored_now = blocking(|| fingerprints(restored))?;
        let mut failed = 0;
        say!(
            "      {:<14} {:<20} {:<20} {:<20} result",
            "table",
            "at the point",
            "source now",
            "restored"
        );
        for (i, table) in TABLES.iter().enumerate() {
            let ok = restored_now[i] == at_point[i];
            failed += usize::from(!ok);
            say!(
                "      {:<14} {:<20} {:<20} {:<20} {}",
                table,
                at_point[i].short(),
                source_now[i].short(),
                restored_now[i].short(),
                if ok { "PASS" } else { "FAIL" }
            );
        }
        let mut later = 0u64;
        for (i, table) in TABLES.iter().enumerate() {
            let sql = format!(
                "select count(*) from {table} where id > {}",
                at_point[i].max_id
            );
            later += blocking(|| restored.value(&sql))?
                .parse::<u64>()
                .context("count")?;
        }
        let later_ok = later == 0;
        failed += usize::from(!later_ok);
        say!(
            "      {:<77} {}",
            format!("rows written after the point in the restored cluster: {later}"),
            if later_ok { "PASS" } else { "FAIL" }
        );
        // The comparison proves nothing unless the source really changed after the point.
        let changed = TABLES
            .iter()
            .enumerate()
            .all(|(i, _)| source_now[i] != at_point[i]);
        failed += usize::from(!changed);
        say!(
            "      {:<77} {}",
            "every table changed on the source after the point",
            if changed { "PASS" } else { "FAIL" }
        );

        // 8 -----------------------------------------------------------------------------------
        self.begin("pgward info");
        let out = self.pgward(&["info"]).await?;
        print_indented(&String::from_utf8_lossy(&out.stdout));
        Ok(failed)
    }

    /// Step 9 and the outcome: stop the servers (always), then remove the directory after a
    /// clean run, or keep it and name the logs.
    async fn finish(mut self, outcome: Result<usize>, started: Instant) -> Result<()> {
        // A failed step is an error with the step named; failed checks are counted (every step
        // ran, so the report is complete).
        let (step_error, checks_failed) = match outcome {
            Ok(n) => (None, n),
            Err(e) => (
                Some(e.context(format!("step {} ({}) failed", self.step, self.step_title))),
                0,
            ),
        };
        let passed = step_error.is_none() && checks_failed == 0;
        if step_error.is_none() {
            self.begin("clean up");
        } else {
            say!("      FAILED\n\ncleaning up");
        }
        let mut stop_errors = Vec::new();
        for (name, server) in [
            ("restored", self.restored.take()),
            ("primary", self.primary.take()),
        ] {
            if let Some(server) = server {
                match blocking(|| server.stop()) {
                    Ok(()) => say!("      stopped the {name} server"),
                    Err(e) => stop_errors.push(format!("{e:#}")),
                }
            }
        }
        let root = self.ws.root.clone();
        if passed && stop_errors.is_empty() && self.ws.remove_on_success {
            remove_dir(&root).await?;
            say!("      removed {}", root.display());
        } else {
            say!("      kept {}", root.display());
        }
        if step_error.is_none() {
            self.end();
        }

        let total = started.elapsed().as_secs_f64();
        if passed && stop_errors.is_empty() {
            say!("\ndemo passed in {total:.1} s");
            return Ok(());
        }
        let mut error = match (step_error, checks_failed) {
            (Some(e), _) => {
                say!("\ndemo FAILED at step {} after {total:.1} s", self.step);
                e
            }
            (None, n) if n > 0 => {
                say!("\ndemo FAILED after {total:.1} s: {n} check(s) did not pass");
                anyhow!("{n} check(s) did not pass")
            }
            (None, _) => {
                say!("\ndemo FAILED after {total:.1} s: the servers did not stop cleanly");
                anyhow!("the servers did not stop cleanly")
            }
        };
        say!("where to look:");
        for name in ["primary", "restored"] {
            let log = root.join(format!("{name}.log"));
            if log.exists() {
                say!("  {name} server log: {}", log.display());
            }
        }
        say!("  (archive_command and restore_command write pgward's own messages there too)");
        if self.config.exists() {
            say!("  configuration: {}", self.config.display());
        }
        if !stop_errors.is_empty() {
            error = error.context(stop_errors.join("\n"));
        }
        Err(error)
    }
}

/// Removes the demo directory. A `wal-fetch` prefetcher or a `wal-push` background pusher
/// (detached by design) may still be finishing a file in the spool, so one failure is retried
/// after a moment.
async fn remove_dir(root: &Path) -> Result<()> {
    if fs::remove_dir_all(root).is_ok() {
        return Ok(());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    fs::remove_dir_all(root).with_context(|| format!("cannot remove {}", root.display()))
}

fn print_counts(what: &str, f: &[Fingerprint]) {
    let parts: Vec<String> = TABLES
        .iter()
        .zip(f)
        .map(|(t, f)| format!("{} {t}", f.rows))
        .collect();
    say!("      {what}: {}", parts.join(", "));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_quoting() {
        for tricky in [r#"/tmp/"x"\"#, "/tmp/it's", "/tmp/new\nline"] {
            let doc: toml::Table = format!("k = {}", toml_quote(tricky)).parse().unwrap();
            assert_eq!(doc["k"].as_str(), Some(tricky));
        }
    }

    #[test]
    fn batch_is_one_transaction() {
        let sql = batch_sql("t", 1, 2, 3, "2026-01-05");
        assert!(sql.trim_start().starts_with("begin;"));
        assert!(sql.trim_end().ends_with("commit;"));
        assert_eq!(sql.matches("commit;").count(), 1);
    }
}
