//! A real PostgreSQL for integration tests, in the manner of neon's `wal_craft`.
//!
//! Clusters are `pgward::pg::scratch` servers; this file adapts them to tests (panics instead of
//! errors, the server log in every message) and owns the scratch directories they live in and
//! running the built `pgward` binary the way PostgreSQL does.
//! Invariants kept here so tests do not have to think about them:
//! - When the tests run as root, everything PostgreSQL touches runs as the `postgres` user
//!   (initdb refuses root, and `archive_command` runs as the server's user), and every file the
//!   server or pgward must use lives under a `/tmp` directory that user can reach.
//! - Every subprocess runs under a deadline; a hang becomes a panic that shows the server log.
//! - A cluster is stopped (immediate) when its [`PgCluster`] is dropped, even on panic, and a
//!   [`TestDir`] is removed when dropped, so a test run leaves no server and no files behind.
//! - A missing PostgreSQL installation is a test failure, never a skip.
#![allow(dead_code)]

use pgward::pg::binaries::PgBinaries;
use pgward::pg::conf;
use pgward::pg::scratch::{Initdb, Running, ScratchCluster, ScratchSpec, Shutdown, server_log};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

pub use pgward::pg::binaries::OsUser as PgUser;
/// What a finished subprocess produced.
pub use pgward::process::Output as RunOutput;

/// Deadline for ordinary PostgreSQL client calls (psql, pg_ctl).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// Deadline for bulk work (pgbench, pg_basebackup).
const BULK_TIMEOUT: Duration = Duration::from_secs(180);
/// Deadline for one pgward invocation unless the caller gives its own.
const PGWARD_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// The PostgreSQL programs, and the postgres user
// ---------------------------------------------------------------------------------------------

/// The PostgreSQL programs as pgward finds them (`$PGWARD_PG_BINDIR`, the Debian directories,
/// `pg_config`), run as `postgres` when we are root. Panics when there are none.
pub fn pg_bins() -> &'static PgBinaries {
    static BINS: OnceLock<PgBinaries> = OnceLock::new();
    BINS.get_or_init(|| {
        PgBinaries::locate(None).unwrap_or_else(|e| {
            panic!(
                "{e:#}\nThe integration tests need a real PostgreSQL 15: `apt-get install \
                 postgresql-15`, or set PGWARD_PG_BINDIR to its bin directory; as root they \
                 also need its `postgres` user."
            )
        })
    })
}

/// Whether this process runs with effective uid 0.
pub fn is_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| pgward::pg::binaries::is_root().expect("cannot find the effective uid"))
}

/// The `postgres` user; panics when there is none.
pub fn postgres_user() -> &'static PgUser {
    static USER: OnceLock<PgUser> = OnceLock::new();
    USER.get_or_init(|| pgward::pg::binaries::postgres_user().unwrap_or_else(|e| panic!("{e:#}")))
}

/// Makes `path` owned by the postgres user when running as root (no-op otherwise).
pub fn chown_postgres(path: &Path) {
    pg_bins()
        .run_as()
        .chown(path)
        .unwrap_or_else(|e| panic!("{e:#}"));
}

/// Makes `root` and everything below it owned by the postgres user (a repository written by
/// an in-process backup, which runs as root, before postgres restores from it or pushes to it).
pub fn chown_tree_postgres(root: &Path) {
    chown_postgres(root);
    for e in fs::read_dir(root).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            chown_tree_postgres(&p);
        } else {
            chown_postgres(&p);
        }
    }
}

/// Makes `cmd` run as the postgres user when we are root. The standard library's setuid/setgid
/// in the child rather than `runuser`: a deadline kill then reaches the real process (runuser
/// cannot forward SIGKILL), and there is no PAM session in between.
pub fn as_postgres(cmd: &mut Command) -> &mut Command {
    pg_bins().run_as().apply(cmd)
}

/// The directory holding `initdb`, `pg_ctl`, ...
pub fn pg_bindir() -> &'static Path {
    pg_bins().bindir()
}

// ---------------------------------------------------------------------------------------------
// Running subprocesses under a deadline
// ---------------------------------------------------------------------------------------------

/// Runs `cmd` to completion, killing it and panicking (with what it printed so far) if it takes
/// longer than `timeout`. Standard input is closed; output is captured.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> RunOutput {
    pgward::process::run(cmd, timeout).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `cmd` under a deadline and panics with its output unless it exits 0.
pub fn run_ok(cmd: &mut Command, timeout: Duration) -> RunOutput {
    let what = format!("{cmd:?}");
    let out = run_with_timeout(cmd, timeout);
    assert!(out.status.success(), "{what} failed\n{}", out.describe());
    out
}

// ---------------------------------------------------------------------------------------------
// Scratch directories
// ---------------------------------------------------------------------------------------------

/// A scratch directory under /tmp (short path, for Unix socket names), mode 0755 and owned by
/// postgres when running as root. Removed on drop unless `PGWARD_KEEP_TEST_DIRS` is set.
pub struct TestDir {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl TestDir {
    pub fn new(tag: &str) -> TestDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("pgw-{tag}-"))
            .tempdir_in("/tmp")
            .expect("cannot create a temp dir under /tmp");
        let path = dir.path().to_path_buf();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        chown_postgres(&path);
        TestDir {
            dir: Some(dir),
            path,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates (if needed) a subdirectory that postgres owns, mode 0755.
    pub fn subdir(&self, name: &str) -> PathBuf {
        let p = self.path.join(name);
        make_postgres_dir(&p);
        p
    }

    /// Writes a file readable by postgres (and owned by it when we are root).
    pub fn write_file(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path.join(name);
        write_postgres_file(&p, contents.as_ref());
        p
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take()
            && std::env::var_os("PGWARD_KEEP_TEST_DIRS").is_some()
        {
            eprintln!("keeping test dir {}", dir.keep().display());
        }
    }
}

/// Creates `p` (and parents) with mode 0755, owned by postgres when we are root.
pub fn make_postgres_dir(p: &Path) {
    fs::create_dir_all(p).unwrap_or_else(|e| panic!("cannot create {}: {e}", p.display()));
    fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
    chown_postgres(p);
}

/// Writes `contents` to `p` with mode 0644, owned by postgres when we are root.
pub fn write_postgres_file(p: &Path, contents: &[u8]) {
    fs::write(p, contents).unwrap_or_else(|e| panic!("cannot write {}: {e}", p.display()));
    fs::set_permissions(p, fs::Permissions::from_mode(0o644)).unwrap();
    chown_postgres(p);
}

/// A TCP port nobody listens on right now (see [`pgward::pg::scratch::free_port`]).
pub fn free_port() -> u16 {
    pgward::pg::scratch::free_port().unwrap_or_else(|e| panic!("{e:#}"))
}

// ---------------------------------------------------------------------------------------------
// The pgward binary, where postgres can run it
// ---------------------------------------------------------------------------------------------

fn world_reachable(path: &Path) -> bool {
    let Ok(meta) = fs::metadata(path) else {
        return false;
    };
    if meta.mode() & 0o005 != 0o005 {
        return false;
    }
    path.ancestors()
        .skip(1)
        .filter(|a| !a.as_os_str().is_empty())
        .all(|a| fs::metadata(a).is_ok_and(|m| m.mode() & 0o001 != 0))
}

/// The built `pgward` binary at a path the postgres user can execute. `archive_command` runs as
/// postgres and fails with exit 126 if any parent directory lacks o+x (a target dir under /root,
/// for instance). If the build output is not world-reachable, it is copied once per build into
/// `/tmp/pgward-test-bin/<size>-<mtime>/pgward` (shared by test processes of the same build;
/// copies of builds older than a day are pruned).
pub fn reachable_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let built = PathBuf::from(env!("CARGO_BIN_EXE_pgward"));
        if !is_root() || world_reachable(&built) {
            return built;
        }
        let meta =
            fs::metadata(&built).unwrap_or_else(|e| panic!("cannot stat {}: {e}", built.display()));
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let root = Path::new("/tmp/pgward-test-bin");
        make_world_dir(root);
        prune_old_copies(root);
        let dir = root.join(format!("{}-{mtime}", meta.len()));
        make_world_dir(&dir);
        let dest = dir.join("pgward");
        if !dest.exists() {
            let tmp = dir.join(format!("pgward.tmp.{}", std::process::id()));
            fs::copy(&built, &tmp).unwrap_or_else(|e| {
                panic!("cannot copy {} to {}: {e}", built.display(), tmp.display())
            });
            fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).unwrap();
            fs::rename(&tmp, &dest).unwrap();
        }
        dest
    })
    .clone()
}

fn make_world_dir(p: &Path) {
    fs::create_dir_all(p).unwrap_or_else(|e| panic!("cannot create {}: {e}", p.display()));
    fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
}

fn prune_old_copies(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(24 * 3600));
        if old {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// Runs the pgward binary as postgres (as PostgreSQL would), with `cwd` as working directory.
/// Panics only if it exceeds its deadline; the caller checks the exit status.
pub fn pgward(cwd: &Path, args: &[&str]) -> RunOutput {
    pgward_timeout(cwd, args, PGWARD_TIMEOUT)
}

pub fn pgward_timeout(cwd: &Path, args: &[&str], timeout: Duration) -> RunOutput {
    let mut cmd = Command::new(reachable_binary());
    cmd.args(args).current_dir(cwd);
    as_postgres(&mut cmd);
    run_with_timeout(&mut cmd, timeout)
}

/// Runs the pgward binary as postgres with standard output and standard error connected to
/// pipes whose read ends are closed before it starts writing, as in `pgward ... | true` once
/// `true` has exited (or `| head -1` once it has its line). Panics past the usual deadline;
/// returns the exit status for the caller to check.
pub fn pgward_closed_pipes(cwd: &Path, args: &[&str]) -> ExitStatus {
    let mut cmd = Command::new(reachable_binary());
    cmd.args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    as_postgres(&mut cmd);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start pgward {args:?}: {e}"));
    drop(child.stdout.take());
    drop(child.stderr.take());
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for pgward") {
            return status;
        }
        if start.elapsed() > PGWARD_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("timed out after {PGWARD_TIMEOUT:?}: pgward {args:?} with closed pipes");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Like [`pgward`] but panics with the output unless it exits 0.
pub fn pgward_ok(cwd: &Path, args: &[&str]) -> RunOutput {
    let out = pgward(cwd, args);
    assert!(
        out.status.success(),
        "pgward {args:?} (cwd {}) failed\n{}",
        cwd.display(),
        out.describe()
    );
    out
}

// ---------------------------------------------------------------------------------------------
// pgward configuration
// ---------------------------------------------------------------------------------------------

/// Where the repository of a test configuration lives.
#[derive(Debug, Clone)]
pub enum RepoSpec {
    /// A local repository directory (created and given to postgres by `write_config`).
    Local(PathBuf),
    S3 {
        endpoint: String,
        bucket: String,
        prefix: String,
        access_key: String,
        secret_key: String,
    },
}

/// The `[wal]` section of a test configuration.
#[derive(Debug, Clone)]
pub struct WalOpts {
    pub push_ahead: usize,
    pub prefetch: usize,
    pub timeout: String,
}

impl Default for WalOpts {
    fn default() -> Self {
        WalOpts {
            push_ahead: 4,
            prefetch: 8,
            timeout: "60s".to_string(),
        }
    }
}

/// A TOML basic string.
pub fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Writes a pgward config for `pgdata` and `repo` with default `[wal]` settings; see
/// [`write_config_with`].
pub fn write_config(dir: &TestDir, pgdata: &Path, repo: RepoSpec) -> PathBuf {
    write_config_with(dir, pgdata, repo, &WalOpts::default())
}

/// Writes `pgward-<n>.toml` into `dir` (readable by postgres) with its own spool directory
/// `spool-<n>`. A local repository directory is created and owned by postgres.
pub fn write_config_with(dir: &TestDir, pgdata: &Path, repo: RepoSpec, wal: &WalOpts) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let spool = dir.subdir(&format!("spool-{n}"));
    let mut text = format!(
        "[postgres]\npgdata = {}\n\n",
        toml_str(&pgdata.to_string_lossy())
    );
    match &repo {
        RepoSpec::Local(path) => {
            make_postgres_dir(path);
            text += &format!(
                "[repo]\nurl = {}\n\n",
                toml_str(&format!("file://{}", path.display()))
            );
        }
        RepoSpec::S3 {
            endpoint,
            bucket,
            prefix,
            access_key,
            secret_key,
        } => {
            text += &format!(
                "[repo]\nurl = {}\n\n[repo.s3]\nendpoint = {}\nregion = \"us-east-1\"\n\
                 force_path_style = true\naccess_key_id = {}\nsecret_access_key = {}\n\n",
                toml_str(&format!("s3://{bucket}/{prefix}")),
                toml_str(endpoint),
                toml_str(access_key),
                toml_str(secret_key),
            );
        }
    }
    text += &format!(
        "[wal]\npush_ahead = {}\nprefetch = {}\nspool_dir = {}\ntimeout = {}\n",
        wal.push_ahead,
        wal.prefetch,
        toml_str(&spool.to_string_lossy()),
        toml_str(&wal.timeout),
    );
    dir.write_file(&format!("pgward-{n}.toml"), text)
}

/// Every file under `root` with its contents, keyed by path relative to `root` — to prove a
/// refused command left a local repository untouched.
pub fn snapshot_tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.insert(rel, fs::read(&p).unwrap_or_default());
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Clusters
// ---------------------------------------------------------------------------------------------

/// Options for [`PgCluster::init`].
#[derive(Debug, Clone, Default)]
pub struct InitOpts {
    pub data_checksums: bool,
    /// Lines appended to postgresql.conf after the harness's own settings (so they win).
    pub extra_conf: Vec<String>,
}

/// One PostgreSQL cluster in a [`TestDir`], listening on a Unix socket only: a
/// `pgward::pg::scratch` server that panics where that returns an error.
pub struct PgCluster {
    pub name: String,
    pub datadir: PathBuf,
    pub socket_dir: PathBuf,
    pub port: u16,
    pub log_file: PathBuf,
    cluster: ScratchCluster,
    /// The guard of the server this cluster started; dropping it stops the server.
    running: Option<Running>,
}

impl PgCluster {
    /// `initdb` a new cluster at `<dir>/<name>` (not started). The server runs with fsync on:
    /// archive durability is what these tests are about.
    pub fn init(dir: &TestDir, name: &str, opts: InitOpts) -> PgCluster {
        let init = Initdb {
            data_checksums: opts.data_checksums,
        };
        let cluster = Self::spec(dir, name, dir.path().join(name))
            .initdb(&init)
            .unwrap_or_else(|e| panic!("cannot set up cluster {name}: {e:#}"));
        let cluster = PgCluster::wrap(name, cluster);
        let mut conf = vec![
            "wal_level = replica".to_string(),
            "max_wal_size = '1GB'".to_string(),
            "log_line_prefix = '%m [%p] %q%a '".to_string(),
            "log_checkpoints = on".to_string(),
        ];
        conf.extend(opts.extra_conf);
        cluster.append_conf(&conf);
        cluster
    }

    /// Takes over an existing data directory (a base backup, say) as cluster `name` with its own
    /// port and socket directory. The overrides go into postgresql.auto.conf, which PostgreSQL
    /// reads last, so they beat anything inherited from the source (including ALTER SYSTEM).
    pub fn from_datadir(
        dir: &TestDir,
        name: &str,
        datadir: PathBuf,
        extra_conf: &[String],
    ) -> PgCluster {
        let cluster = Self::spec(dir, name, datadir)
            .adopt()
            .unwrap_or_else(|e| panic!("cannot adopt cluster {name}: {e:#}"));
        let cluster = PgCluster::wrap(name, cluster);
        cluster.append_auto_conf(extra_conf);
        cluster
    }

    /// The harness's scratch server: socket in `<dir>/<name>.s`, log in `<dir>/<name>.log`,
    /// stopped immediately when dropped (a test that wanted a clean stop says so).
    fn spec(dir: &TestDir, name: &str, datadir: PathBuf) -> ScratchSpec {
        let socket_dir = dir.subdir(&format!("{name}.s"));
        let mut spec = ScratchSpec::new(pg_bins().clone(), &datadir, &socket_dir)
            .unwrap_or_else(|e| panic!("{e:#}"));
        spec.log_file = dir.path().join(format!("{name}.log"));
        spec.on_drop = Shutdown::Immediate;
        spec
    }

    fn wrap(name: &str, cluster: ScratchCluster) -> PgCluster {
        let s = cluster.spec();
        PgCluster {
            name: name.to_string(),
            datadir: s.datadir.clone(),
            socket_dir: s.socket_dir.clone(),
            port: s.port,
            log_file: s.log_file.clone(),
            cluster,
            running: None,
        }
    }

    fn append_to(&self, file: &str, lines: &[String]) {
        let path = self.datadir.join(file);
        conf::append_lines(
            &path,
            lines,
            "added by the pgward test harness",
            pg_bins().run_as(),
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// Appends settings to postgresql.conf (takes effect on the next start or reload).
    pub fn append_conf(&self, lines: &[String]) {
        self.append_to("postgresql.conf", lines);
    }

    /// Appends settings to postgresql.auto.conf (overrides postgresql.conf).
    pub fn append_auto_conf(&self, lines: &[String]) {
        self.append_to(conf::AUTO_CONF, lines);
    }

    pub fn is_running(&self) -> bool {
        self.datadir.join("postmaster.pid").exists()
    }

    /// `pg_ctl start -w`; the caller judges the outcome (a recovery that must fail, say). A
    /// failed start leaves no server behind; the output then holds the error.
    pub fn try_start(&mut self) -> RunOutput {
        let started = Instant::now();
        // A server still running refuses the start; the guard of one that exited is replaced.
        let (code, stderr) = match self.cluster.start() {
            Ok(running) => {
                self.running = Some(running);
                (0, String::new())
            }
            Err(e) => (1, format!("{e:#}")),
        };
        RunOutput {
            status: ExitStatus::from_raw(code << 8),
            stdout: String::new(),
            stderr,
            elapsed: started.elapsed(),
        }
    }

    /// Waits until the postmaster has exited (its pid file is gone); false on timeout.
    pub fn wait_stopped(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while self.is_running() {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        true
    }

    pub fn start(&mut self) {
        let out = self.try_start();
        assert!(
            out.status.success(),
            "cluster {} did not start\n{}",
            self.name,
            out.stderr
        );
    }

    fn stop_with(&mut self, mode: Shutdown) {
        let running = self
            .running
            .take()
            .unwrap_or_else(|| panic!("cluster {} is not running", self.name));
        if let Err(e) = running.stop_with(mode) {
            panic!(
                "cluster {} did not stop\n{e:#}\n{}",
                self.name,
                self.log_tail(60)
            );
        }
    }

    /// Fast shutdown (a shutdown checkpoint; the archiver gets to finish its current file).
    pub fn stop(&mut self) {
        self.stop_with(Shutdown::Fast);
    }

    pub fn stop_immediate(&mut self) {
        self.stop_with(Shutdown::Immediate);
    }

    /// Runs `sql`, returning its unaligned, tuples-only output without the final newline.
    pub fn try_psql(&self, sql: &str) -> Result<String, String> {
        let out = self
            .cluster
            .psql_output(sql)
            .unwrap_or_else(|e| panic!("{e}"));
        if out.status.success() {
            Ok(out.stdout.trim_end_matches('\n').to_string())
        } else {
            Err(out.describe())
        }
    }

    /// Like [`try_psql`](Self::try_psql) but panics with the error and the server log tail.
    pub fn psql(&self, sql: &str) -> String {
        self.try_psql(sql).unwrap_or_else(|e| {
            panic!(
                "psql on {} failed: {sql}\n{e}\n{}",
                self.name,
                self.log_tail(40)
            )
        })
    }

    /// Like [`psql`](Self::psql) on database `db`.
    pub fn psql_db(&self, db: &str, sql: &str) -> String {
        let mut cmd = self.cluster.client("psql");
        cmd.args(["-d", db, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql]);
        let out = run_with_timeout(&mut cmd, CLIENT_TIMEOUT);
        assert!(
            out.status.success(),
            "psql on {} (database {db}) failed: {sql}\n{}\n{}",
            self.name,
            out.describe(),
            self.log_tail(40)
        );
        out.stdout.trim_end_matches('\n').to_string()
    }

    /// Runs a client program (`-h`, `-p` and `-U` given) with `args` under `timeout`; panics
    /// with its output and the log tail unless it exits 0.
    fn client_ok(&self, program: &str, args: &[&str], timeout: Duration) -> RunOutput {
        let mut cmd = self.cluster.client(program);
        cmd.args(args);
        let out = run_with_timeout(&mut cmd, timeout);
        assert!(
            out.status.success(),
            "{program} {args:?} on {} failed\n{}\n{}",
            self.name,
            out.describe(),
            self.log_tail(60)
        );
        out
    }

    /// Runs `pgbench <args> postgres` against this cluster; panics on failure.
    pub fn pgbench(&self, args: &[&str]) -> RunOutput {
        let args: Vec<&str> = args.iter().copied().chain(["postgres"]).collect();
        self.client_ok("pgbench", &args, BULK_TIMEOUT)
    }

    /// `pg_basebackup -D target -c fast -N <extra_args>`, as postgres, under a deadline (with
    /// `-X none` it waits for archiving, which hangs if archiving is broken).
    pub fn pg_basebackup(&self, target: &Path, extra_args: &[&str]) {
        let target = target.to_string_lossy();
        let mut args = vec!["-D", &target, "-c", "fast", "-N"];
        args.extend(extra_args);
        self.client_ok("pg_basebackup", &args, BULK_TIMEOUT);
    }

    /// Runs `pg_amcheck` on every database (installing amcheck where missing); panics with its
    /// report on any corruption.
    pub fn pg_amcheck(&self) {
        let args = ["--all", "--install-missing", "--heapallindexed"];
        self.client_ok("pg_amcheck", &args, BULK_TIMEOUT);
    }

    /// Sets `archive_command` with ALTER SYSTEM and reloads.
    pub fn set_archive_command(&self, cmd: &str) {
        self.psql(&format!(
            "alter system set archive_command = '{}'",
            cmd.replace('\'', "''")
        ));
        self.psql("select pg_reload_conf()");
    }

    /// The whole server log (empty if not written yet).
    pub fn server_log(&self) -> String {
        self.cluster.server_log()
    }

    /// The last `n` lines of the server log, labelled, for panic messages.
    pub fn log_tail(&self, n: usize) -> String {
        self.cluster.log_tail(n)
    }

    /// Server log lines at FATAL or PANIC level.
    pub fn fatal_log_lines(&self) -> Vec<String> {
        server_log::fatal_lines(&self.server_log())
    }

    /// Panics (with the log) if the server log has any FATAL or PANIC line.
    pub fn assert_no_fatal(&self) {
        let bad = self.fatal_log_lines();
        assert!(
            bad.is_empty(),
            "server log of {} has FATAL/PANIC lines:\n{}\n{}",
            self.name,
            bad.join("\n"),
            self.log_tail(80)
        );
    }

    /// Polls `sql` until it returns `expected`; panics after `timeout` with the last value.
    pub fn wait_until(&self, sql: &str, expected: &str, timeout: Duration) {
        let start = Instant::now();
        let mut last;
        loop {
            last = self.try_psql(sql);
            if last.as_deref() == Ok(expected) {
                return;
            }
            if start.elapsed() > timeout {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "on {}: `{sql}` did not return {expected:?} within {timeout:?}; last: {last:?}\n{}",
            self.name,
            self.log_tail(60)
        );
    }

    /// Waits until recovery has ended (`pg_is_in_recovery()` is false). `pg_ctl start -w`
    /// returns as soon as a hot standby accepts connections, before recovery has finished or
    /// failed, so this also fails early when the log shows FATAL/PANIC or the server is gone.
    pub fn wait_for_recovery_end(&self, timeout: Duration) {
        let running = self
            .running
            .as_ref()
            .unwrap_or_else(|| panic!("cluster {} was not started", self.name));
        // Earlier starts count too: a test expects a clean log unless it says otherwise. The
        // wait itself watches this start's lines.
        self.assert_no_fatal();
        if let Err(e) = running.wait_recovery_done(timeout) {
            panic!("cluster {}: {e:#}", self.name);
        }
    }
}

/// Makes the pgward config `cfg` usable by `pgward backup` against `cluster` (the harness
/// writes only pgdata and the repository): adds `[postgres] conninfo` and `bindir`, appends
/// `extra_toml`, and points the cluster's archive_command at pgward with this config.
#[allow(dead_code)]
pub fn configure_backup_source(cluster: &PgCluster, cfg: &Path, extra_toml: &str) {
    let conninfo = format!(
        "host={} port={} user=postgres dbname=postgres",
        cluster.socket_dir.display(),
        cluster.port
    );
    let text = fs::read_to_string(cfg).unwrap().replacen(
        "[postgres]\n",
        &format!(
            "[postgres]\nconninfo = {}\nbindir = {}\n",
            toml_str(&conninfo),
            toml_str(&pg_bindir().to_string_lossy())
        ),
        1,
    ) + extra_toml;
    write_postgres_file(cfg, text.as_bytes());
    let archive_command = format!(
        "{} --config {} wal-push %p",
        conf::command_word(&reachable_binary().to_string_lossy()),
        conf::command_word(&cfg.to_string_lossy())
    );
    cluster.append_conf(&[conf::setting_line("archive_command", &archive_command)]);
}
