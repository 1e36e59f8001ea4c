//! A real PostgreSQL for integration tests, in the manner of neon's `wal_craft`.
//!
//! Owns throwaway clusters (initdb, start, stop, psql, pgbench, pg_basebackup), the scratch
//! directories they live in, and running the built `pgward` binary the way PostgreSQL does.
//! Invariants kept here so tests do not have to think about them:
//! - When the tests run as root, everything PostgreSQL touches runs as the `postgres` user
//!   (initdb refuses root, and `archive_command` runs as the server's user), and every file the
//!   server or pgward must use lives under a `/tmp` directory that user can reach.
//! - Every subprocess runs under a deadline; a hang becomes a panic that shows the server log.
//! - A cluster is stopped (immediate) when its [`PgCluster`] is dropped, even on panic, and a
//!   [`TestDir`] is removed when dropped, so a test run leaves no server and no files behind.
//! - A missing PostgreSQL installation is a test failure, never a skip.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

/// Deadline for ordinary PostgreSQL client calls (psql, pg_ctl).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// Deadline for bulk work (pgbench, pg_basebackup).
const BULK_TIMEOUT: Duration = Duration::from_secs(180);
/// Deadline for one pgward invocation unless the caller gives its own.
const PGWARD_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Who we are, and the postgres user
// ---------------------------------------------------------------------------------------------

/// Whether this process runs with effective uid 0. `/proc/self` is owned by the process's
/// effective uid, which avoids an `unsafe` call to `geteuid`.
pub fn is_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .expect("cannot stat /proc/self to find the effective uid")
    })
}

/// The `postgres` OS user, as found in /etc/passwd.
#[derive(Debug, Clone)]
pub struct PgUser {
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

/// The `postgres` user; panics when running as root and there is none (PostgreSQL refuses to
/// run as root, so the tests cannot work without it).
pub fn postgres_user() -> &'static PgUser {
    static USER: OnceLock<PgUser> = OnceLock::new();
    USER.get_or_init(|| {
        let passwd = fs::read_to_string("/etc/passwd").expect("cannot read /etc/passwd");
        passwd
            .lines()
            .find_map(|line| {
                let f: Vec<&str> = line.split(':').collect();
                if f.len() >= 6 && f[0] == "postgres" {
                    Some(PgUser {
                        uid: f[2].parse().ok()?,
                        gid: f[3].parse().ok()?,
                        home: PathBuf::from(f[5]),
                    })
                } else {
                    None
                }
            })
            .expect(
                "tests run as root but there is no `postgres` user in /etc/passwd; \
                 install PostgreSQL 15 (apt-get install postgresql-15) or run the tests as a \
                 non-root user",
            )
    })
}

/// Makes `path` owned by the postgres user when running as root (no-op otherwise).
pub fn chown_postgres(path: &Path) {
    if is_root() {
        let u = postgres_user();
        std::os::unix::fs::chown(path, Some(u.uid), Some(u.gid))
            .unwrap_or_else(|e| panic!("cannot chown {} to postgres: {e}", path.display()));
    }
}

/// Makes `cmd` run as the postgres user when we are root. Uses the standard library's
/// setuid/setgid in the child rather than `runuser`: a deadline kill then reaches the real
/// process (runuser cannot forward SIGKILL), and there is no PAM session in between.
pub fn as_postgres(cmd: &mut Command) -> &mut Command {
    if is_root() {
        let u = postgres_user();
        cmd.uid(u.uid)
            .gid(u.gid)
            .env("HOME", &u.home)
            .env("USER", "postgres")
            .env("LOGNAME", "postgres");
    }
    cmd
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL binaries
// ---------------------------------------------------------------------------------------------

/// The directory holding `initdb`, `pg_ctl`, ...: `$PGWARD_PG_BINDIR`, else
/// `/usr/lib/postgresql/15/bin`, else `pg_config --bindir`. Panics when none has `initdb`.
pub fn pg_bindir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let mut tried = Vec::new();
        if let Some(d) = std::env::var_os("PGWARD_PG_BINDIR").filter(|d| !d.is_empty()) {
            tried.push(PathBuf::from(d));
        }
        tried.push(PathBuf::from("/usr/lib/postgresql/15/bin"));
        if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
            && out.status.success()
        {
            tried.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
        }
        tried
            .iter()
            .find(|d| d.join("initdb").is_file())
            .cloned()
            .unwrap_or_else(|| {
                panic!(
                    "PostgreSQL not found: no `initdb` in any of {tried:?}. The integration \
                     tests need a real PostgreSQL 15: `apt-get install postgresql-15`, or set \
                     PGWARD_PG_BINDIR to its bin directory."
                )
            })
    })
}

fn pg_command(program: &str) -> Command {
    let mut cmd = Command::new(pg_bindir().join(program));
    // Nothing from the developer's environment may redirect a client to another server.
    for var in [
        "PGDATA",
        "PGHOST",
        "PGHOSTADDR",
        "PGPORT",
        "PGUSER",
        "PGDATABASE",
        "PGPASSWORD",
        "PGSERVICE",
        "PGOPTIONS",
        "PGSSLMODE",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("LC_ALL", "C");
    as_postgres(&mut cmd);
    cmd
}

// ---------------------------------------------------------------------------------------------
// Running subprocesses under a deadline
// ---------------------------------------------------------------------------------------------

/// What a finished subprocess produced.
#[derive(Debug)]
pub struct RunOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl RunOutput {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
    /// A readable dump for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "status: {:?} after {:.2?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.elapsed, self.stdout, self.stderr
        )
    }
}

fn spawn_reader(
    mut src: impl Read + Send + 'static,
    buf: Arc<Mutex<Vec<u8>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match src.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.lock().unwrap().extend_from_slice(&chunk[..n]),
            }
        }
    })
}

/// Runs `cmd` to completion, killing it and panicking (with what it printed so far) if it takes
/// longer than `timeout`. Standard input is closed; output is captured.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> RunOutput {
    let what = format!("{cmd:?}");
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let out_buf = Arc::new(Mutex::new(Vec::new()));
    let err_buf = Arc::new(Mutex::new(Vec::new()));
    let out_t = spawn_reader(child.stdout.take().unwrap(), out_buf.clone());
    let err_t = spawn_reader(child.stderr.take().unwrap(), err_buf.clone());
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            break status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            // The readers may be blocked on a pipe a grandchild still holds: do not join them.
            panic!(
                "timed out after {timeout:?}: {what}\n--- stdout so far ---\n{}\n--- stderr so far ---\n{}",
                String::from_utf8_lossy(&out_buf.lock().unwrap()),
                String::from_utf8_lossy(&err_buf.lock().unwrap()),
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = start.elapsed();
    // Output of a process that left a daemon holding its pipes (pg_ctl start redirects the
    // postmaster to the log file, so this should not happen) is cut off after a grace period.
    let grace = Instant::now();
    while !(out_t.is_finished() && err_t.is_finished()) && grace.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let stdout = String::from_utf8_lossy(&out_buf.lock().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&err_buf.lock().unwrap()).into_owned();
    RunOutput {
        status,
        stdout,
        stderr,
        elapsed,
    }
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

/// A TCP port nobody listens on right now. Clusters listen on Unix sockets only (each in its
/// own directory), so a rare collision would not even matter; the port just names the socket.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot find a free port")
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

/// One PostgreSQL cluster in a [`TestDir`], listening on a Unix socket only.
pub struct PgCluster {
    pub name: String,
    pub datadir: PathBuf,
    pub socket_dir: PathBuf,
    pub port: u16,
    pub log_file: PathBuf,
    /// Directory the PostgreSQL tools run in (readable by postgres).
    cwd: PathBuf,
}

impl PgCluster {
    /// `initdb` a new cluster at `<dir>/<name>` (not started). The server runs with fsync on:
    /// archive durability is what these tests are about.
    pub fn init(dir: &TestDir, name: &str, opts: InitOpts) -> PgCluster {
        let datadir = dir.path().join(name);
        let mut cmd = pg_command("initdb");
        cmd.current_dir(dir.path()).arg("-D").arg(&datadir).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-N",
            "-E",
            "UTF8",
            "--locale=C",
        ]);
        if opts.data_checksums {
            cmd.arg("-k");
        }
        run_ok(&mut cmd, CLIENT_TIMEOUT);
        let cluster = PgCluster::adopt(dir, name, datadir, "postgresql.conf");
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
        let cluster = PgCluster::adopt(dir, name, datadir, "postgresql.auto.conf");
        cluster.append_auto_conf(extra_conf);
        cluster
    }

    fn adopt(dir: &TestDir, name: &str, datadir: PathBuf, conf_file: &str) -> PgCluster {
        let socket_dir = dir.subdir(&format!("{name}.s"));
        let cluster = PgCluster {
            name: name.to_string(),
            datadir,
            socket_dir,
            port: free_port(),
            log_file: dir.path().join(format!("{name}.log")),
            cwd: dir.path().to_path_buf(),
        };
        let lines = [
            format!("port = {}", cluster.port),
            "listen_addresses = ''".to_string(),
            format!(
                "unix_socket_directories = '{}'",
                cluster.socket_dir.display()
            ),
        ];
        cluster.append_to(conf_file, &lines);
        cluster
    }

    fn append_to(&self, file: &str, lines: &[String]) {
        use std::io::Write;
        let path = self.datadir.join(file);
        let mut f = fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
        writeln!(f, "\n# added by the pgward test harness").unwrap();
        for l in lines {
            writeln!(f, "{l}").unwrap();
        }
        drop(f);
        chown_postgres(&path);
    }

    /// Appends settings to postgresql.conf (takes effect on the next start or reload).
    pub fn append_conf(&self, lines: &[String]) {
        self.append_to("postgresql.conf", lines);
    }

    /// Appends settings to postgresql.auto.conf (overrides postgresql.conf).
    pub fn append_auto_conf(&self, lines: &[String]) {
        self.append_to("postgresql.auto.conf", lines);
    }

    pub fn is_running(&self) -> bool {
        self.datadir.join("postmaster.pid").exists()
    }

    /// `pg_ctl start -w`; the caller judges the outcome (a recovery that must fail, say).
    pub fn try_start(&mut self) -> RunOutput {
        let mut cmd = pg_command("pg_ctl");
        cmd.current_dir(&self.cwd)
            .arg("-D")
            .arg(&self.datadir)
            .arg("-l")
            .arg(&self.log_file)
            .args(["-w", "-t", "60", "start"]);
        run_with_timeout(&mut cmd, Duration::from_secs(90))
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
            "cluster {} did not start\n{}\n{}",
            self.name,
            out.describe(),
            self.log_tail(60)
        );
    }

    fn pg_ctl_stop(&self, mode: &str) -> RunOutput {
        let mut cmd = pg_command("pg_ctl");
        cmd.current_dir(&self.cwd)
            .arg("-D")
            .arg(&self.datadir)
            .args(["-m", mode, "-w", "-t", "60", "stop"]);
        run_with_timeout(&mut cmd, Duration::from_secs(90))
    }

    /// Fast shutdown (a shutdown checkpoint; the archiver gets to finish its current file).
    pub fn stop(&mut self) {
        let out = self.pg_ctl_stop("fast");
        assert!(
            out.status.success(),
            "cluster {} did not stop\n{}\n{}",
            self.name,
            out.describe(),
            self.log_tail(60)
        );
    }

    pub fn stop_immediate(&mut self) {
        let out = self.pg_ctl_stop("immediate");
        assert!(
            out.status.success(),
            "cluster {} did not stop (immediate)\n{}",
            self.name,
            out.describe()
        );
    }

    fn psql_command(&self, sql: &str) -> Command {
        let mut cmd = pg_command("psql");
        cmd.current_dir(&self.cwd)
            .arg("-h")
            .arg(&self.socket_dir)
            .args(["-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", "postgres", "-XAtq"])
            .args(["-v", "ON_ERROR_STOP=1", "-c", sql]);
        cmd
    }

    /// Runs `sql`, returning its unaligned, tuples-only output without the final newline.
    pub fn try_psql(&self, sql: &str) -> Result<String, String> {
        let out = run_with_timeout(&mut self.psql_command(sql), CLIENT_TIMEOUT);
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

    /// Runs `pgbench <args> postgres` against this cluster; panics on failure.
    pub fn pgbench(&self, args: &[&str]) -> RunOutput {
        let mut cmd = pg_command("pgbench");
        cmd.current_dir(&self.cwd)
            .arg("-h")
            .arg(&self.socket_dir)
            .args(["-p", &self.port.to_string(), "-U", "postgres"])
            .args(args)
            .arg("postgres");
        let out = run_with_timeout(&mut cmd, BULK_TIMEOUT);
        assert!(
            out.status.success(),
            "pgbench {args:?} on {} failed\n{}\n{}",
            self.name,
            out.describe(),
            self.log_tail(40)
        );
        out
    }

    /// `pg_basebackup -D target -c fast -N <extra_args>`, as postgres, under a deadline (with
    /// `-X none` it waits for archiving, which hangs if archiving is broken).
    pub fn pg_basebackup(&self, target: &Path, extra_args: &[&str]) {
        let mut cmd = pg_command("pg_basebackup");
        cmd.current_dir(&self.cwd)
            .arg("-h")
            .arg(&self.socket_dir)
            .args(["-p", &self.port.to_string(), "-U", "postgres"])
            .arg("-D")
            .arg(target)
            .args(["-c", "fast", "-N"])
            .args(extra_args);
        let out = run_with_timeout(&mut cmd, BULK_TIMEOUT);
        assert!(
            out.status.success(),
            "pg_basebackup of {} failed\n{}\n{}",
            self.name,
            out.describe(),
            self.log_tail(60)
        );
    }

    /// Runs `pg_amcheck` on every database (installing amcheck where missing); panics with its
    /// report on any corruption.
    pub fn pg_amcheck(&self) {
        let mut cmd = pg_command("pg_amcheck");
        cmd.current_dir(&self.cwd)
            .arg("-h")
            .arg(&self.socket_dir)
            .args(["-p", &self.port.to_string(), "-U", "postgres"])
            .args(["--all", "--install-missing", "--heapallindexed"]);
        let out = run_with_timeout(&mut cmd, BULK_TIMEOUT);
        assert!(
            out.status.success(),
            "pg_amcheck on {} reports problems\n{}",
            self.name,
            out.describe()
        );
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
        fs::read(&self.log_file)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `n` lines of the server log, labelled, for panic messages.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.server_log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(n)..].join("\n");
        format!(
            "--- last {n} lines of {} ---\n{tail}",
            self.log_file.display()
        )
    }

    /// Server log lines at FATAL or PANIC level.
    pub fn fatal_log_lines(&self) -> Vec<String> {
        self.server_log()
            .lines()
            .filter(|l| l.contains("FATAL:") || l.contains("PANIC:"))
            .map(str::to_string)
            .collect()
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
        let start = Instant::now();
        loop {
            if !self.fatal_log_lines().is_empty() {
                self.assert_no_fatal();
            }
            if self.try_psql("select pg_is_in_recovery()").as_deref() == Ok("f") {
                return;
            }
            assert!(
                self.is_running(),
                "cluster {} exited during recovery\n{}",
                self.name,
                self.log_tail(80)
            );
            assert!(
                start.elapsed() < timeout,
                "cluster {} still in recovery after {timeout:?}\n{}",
                self.name,
                self.log_tail(80)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.is_running() {
            let out = self.pg_ctl_stop("immediate");
            if !out.status.success() {
                eprintln!(
                    "could not stop cluster {} on drop\n{}",
                    self.name,
                    out.describe()
                );
            }
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
    cluster.append_conf(&[format!(
        "archive_command = '{} --config {} wal-push %p'",
        reachable_binary().display(),
        cfg.display()
    )]);
}
