//! `wal-push`, `wal-fetch`, `init` and configuration loading, given bad input, through the built
//! binary as PostgreSQL runs it (as postgres, cwd = the data directory, relative `%p`).
//!
//! The contract under test (DESIGN.md, "WAL", "Recovery must never end early" and principles
//! 1/2/5): a failed push exits 1, never above 125; a refused push leaves the repository
//! untouched; a failed fetch leaves no file at the destination and exits above 125 when the data
//! directory is in archive recovery (`recovery.signal`), 1 on a standby (`standby.signal`) and
//! when run by hand; "not archived" (exit 1, quiet) only at the end of the archive. Each scenario gets its own initdb'd cluster (about a second, never
//! started: the segment initdb leaves in pg_wal is real WAL with this cluster's identity).

mod common;

use common::pg::*;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The segment initdb writes; it carries the cluster's system identifier in its page header.
const SEG1: &str = "000000010000000000000001";
const SEG_SIZE: usize = 16 * 1024 * 1024;

/// A cluster (never started) with an initialised local repository.
struct Setup {
    pg: PgCluster,
    repo: PathBuf,
    cfg: PathBuf,
    dir: TestDir,
}

impl Setup {
    fn new(tag: &str) -> Setup {
        let dir = TestDir::new(tag);
        let pg = PgCluster::init(&dir, "pg", InitOpts::default());
        let repo = dir.path().join("repo");
        let cfg = write_config(&dir, &pg.datadir, RepoSpec::Local(repo.clone()));
        let setup = Setup { pg, repo, cfg, dir };
        pgward_ok(setup.dir.path(), &["--config", setup.cfg_arg(), "init"]);
        setup
    }

    fn cfg_arg(&self) -> &str {
        self.cfg.to_str().unwrap()
    }

    /// `wal-push <rel>` exactly as `archive_command` runs it: cwd = pgdata, path relative.
    fn push(&self, rel: &str) -> RunOutput {
        pgward(
            &self.pg.datadir,
            &["--config", self.cfg_arg(), "wal-push", rel],
        )
    }

    /// `wal-fetch <name> pg_wal/RECOVERYXLOG` as `restore_command` runs it.
    fn fetch(&self, name: &str) -> RunOutput {
        pgward(
            &self.pg.datadir,
            &[
                "--config",
                self.cfg_arg(),
                "wal-fetch",
                name,
                "pg_wal/RECOVERYXLOG",
            ],
        )
    }

    fn pg_wal(&self, name: &str) -> PathBuf {
        self.pg.datadir.join("pg_wal").join(name)
    }

    /// Every stored WAL object file under `wal/`.
    fn wal_objects(&self) -> Vec<String> {
        snapshot_tree(&self.repo)
            .into_keys()
            .filter(|k| k.starts_with("wal/"))
            .collect()
    }
}

fn assert_exit_1(out: &RunOutput, what: &str) {
    assert_eq!(
        out.code(),
        Some(1),
        "{what}: expected exit 1\n{}",
        out.describe()
    );
}

/// stdout + stderr, lowercased, for message checks.
fn messages(out: &RunOutput) -> String {
    format!("{}\n{}", out.stdout, out.stderr).to_lowercase()
}

fn assert_mentions(out: &RunOutput, needles: &[&str], what: &str) {
    let text = messages(out);
    assert!(
        needles.iter().any(|n| text.contains(n)),
        "{what}: output should mention one of {needles:?}\n{}",
        out.describe()
    );
}

fn flip_bytes(path: &Path, offset: usize, len: usize) {
    let mut bytes = fs::read(path).unwrap();
    for b in &mut bytes[offset..offset + len] {
        *b ^= 0x5a;
    }
    fs::write(path, bytes).unwrap();
}

/// No file named like `RECOVERYXLOG` (or a temp file of it) was left in pg_wal.
fn assert_no_recoveryxlog(s: &Setup) {
    let left: Vec<String> = fs::read_dir(s.pg.datadir.join("pg_wal"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("RECOVERYXLOG"))
        .collect();
    assert!(
        left.is_empty(),
        "failed fetch left files in pg_wal: {left:?}"
    );
}

#[test]
fn duplicate_push_with_same_content_succeeds() {
    let s = Setup::new("dup-same");
    let first = s.push(&format!("pg_wal/{SEG1}"));
    assert_eq!(first.code(), Some(0), "first push\n{}", first.describe());
    assert_eq!(s.wal_objects().len(), 1, "{:?}", s.wal_objects());
    let before = snapshot_tree(&s.repo);

    let again = s.push(&format!("pg_wal/{SEG1}"));
    assert_eq!(again.code(), Some(0), "second push\n{}", again.describe());
    assert_mentions(&again, &["already archived"], "same-content duplicate");
    assert!(snapshot_tree(&s.repo) == before, "repository changed");
}

#[test]
fn duplicate_push_with_different_content_is_refused() {
    let s = Setup::new("dup-diff");
    let first = s.push(&format!("pg_wal/{SEG1}"));
    assert_eq!(first.code(), Some(0), "first push\n{}", first.describe());
    let before = snapshot_tree(&s.repo);

    // Same name, same valid first page (identity and address), other bytes further in.
    flip_bytes(&s.pg_wal(SEG1), 3 * 8192 + 100, 16);
    let out = s.push(&format!("pg_wal/{SEG1}"));
    assert_exit_1(&out, "different-content duplicate");
    assert_mentions(&out, &["different"], "different-content duplicate");
    assert!(
        snapshot_tree(&s.repo) == before,
        "the archived object must stay as it was"
    );
}

#[test]
fn push_of_wal_from_another_cluster_is_refused() {
    let s = Setup::new("foreign-wal");
    let other = PgCluster::init(&s.dir, "other", InitOpts::default());
    // The other cluster's first segment has the very same name: only its page header tells.
    fs::copy(other.datadir.join("pg_wal").join(SEG1), s.pg_wal(SEG1)).unwrap();
    let before = snapshot_tree(&s.repo);

    let out = s.push(&format!("pg_wal/{SEG1}"));
    assert_exit_1(&out, "foreign WAL");
    assert_mentions(&out, &["system identifier"], "foreign WAL");
    assert!(snapshot_tree(&s.repo) == before, "repository changed");
    assert!(s.wal_objects().is_empty());
}

#[test]
fn push_of_random_bytes_named_like_a_segment_is_refused() {
    let s = Setup::new("random");
    let name = "000000010000000000000002";
    write_postgres_file(&s.pg_wal(name), &pseudo_random_bytes(SEG_SIZE, 0x9e37_79b9));
    let before = snapshot_tree(&s.repo);

    let out = s.push(&format!("pg_wal/{name}"));
    assert_exit_1(&out, "random bytes");
    assert!(snapshot_tree(&s.repo) == before, "repository changed");
    assert!(s.wal_objects().is_empty());
}

#[test]
fn push_of_badly_named_file_is_refused() {
    let s = Setup::new("badname");
    write_postgres_file(&s.pg_wal("notwal"), b"not a WAL file\n");
    let before = snapshot_tree(&s.repo);

    let out = s.push("pg_wal/notwal");
    assert_exit_1(&out, "bad name");
    assert_mentions(&out, &["notwal"], "bad name");
    assert!(snapshot_tree(&s.repo) == before, "repository changed");
}

/// A segment of a running server's pg_wal that PostgreSQL has not marked ready may still be
/// being written: a manual push is refused (an incomplete copy would be archived for good and
/// jam PostgreSQL's own push) unless `--force`; once `.ready` exists it is archived.
#[test]
fn manual_push_of_an_unfinished_segment_is_refused() {
    let s = Setup::new("unfinished");
    // A live postmaster: this test's own pid stands in for it.
    let pid_file = s.pg.datadir.join("postmaster.pid");
    write_postgres_file(&pid_file, format!("{}\n", std::process::id()).as_bytes());
    let out = s.push(&format!("pg_wal/{SEG1}"));
    fs::remove_file(&pid_file).unwrap();
    assert_exit_1(&out, "push of a live segment without .ready");
    assert_mentions(&out, &["has not marked"], "live segment");
    assert_mentions(&out, &["--force"], "live segment");
    assert!(s.wal_objects().is_empty(), "{:?}", s.wal_objects());

    write_postgres_file(&pid_file, format!("{}\n", std::process::id()).as_bytes());
    let status = s.pg.datadir.join("pg_wal/archive_status");
    fs::create_dir_all(&status).unwrap();
    write_postgres_file(&status.join(format!("{SEG1}.ready")), b"");
    let out = s.push(&format!("pg_wal/{SEG1}"));
    fs::remove_file(&pid_file).unwrap();
    assert_eq!(out.code(), Some(0), "with .ready\n{}", out.describe());
    assert_eq!(s.wal_objects().len(), 1);
}

#[test]
fn push_of_missing_file_fails() {
    let s = Setup::new("missing");
    let name = "000000010000000000000007";
    let out = s.push(&format!("pg_wal/{name}"));
    assert_exit_1(&out, "missing file");
    assert_mentions(&out, &[name], "missing file");
    assert!(s.wal_objects().is_empty());
}

#[test]
fn fetch_of_never_archived_names_fails_fast() {
    let s = Setup::new("fetch-missing");
    // Something is archived, just not what is asked for.
    let push = s.push(&format!("pg_wal/{SEG1}"));
    assert_eq!(push.code(), Some(0), "push\n{}", push.describe());

    for name in ["000000010000000000000003", "00000009.history"] {
        let out = s.fetch(name);
        assert_exit_1(&out, &format!("wal-fetch {name}"));
        assert!(
            out.elapsed < Duration::from_secs(2),
            "wal-fetch {name} of a missing file took {:?}; recovery asks for these all the time",
            out.elapsed
        );
        assert!(out.code().is_some_and(|c| c <= 125), "{}", out.describe());
        assert_no_recoveryxlog(&s);
    }
}

#[test]
fn fetch_of_corrupt_object_fails_loudly() {
    let s = Setup::new("corrupt");
    let push = s.push(&format!("pg_wal/{SEG1}"));
    assert_eq!(push.code(), Some(0), "push\n{}", push.describe());
    let objects = s.wal_objects();
    assert_eq!(objects.len(), 1, "{objects:?}");
    let object = s.repo.join(&objects[0]);
    let len = fs::metadata(&object).unwrap().len() as usize;
    assert!(len > 64, "object too small to corrupt: {len}");
    flip_bytes(&object, len / 2, 1);

    let out = s.fetch(SEG1);
    assert!(
        matches!(out.code(), Some(1..=125)),
        "wal-fetch of a corrupt object must fail with an ordinary exit code\n{}",
        out.describe()
    );
    assert_mentions(&out, &["corrupt", "checksum"], "corrupt object");
    assert_no_recoveryxlog(&s);
}

/// `wal-fetch` as PostgreSQL runs it in each mode: in archive recovery, on a standby, by hand.
fn fetch_in_each_mode(s: &Setup, name: &str) -> [(&'static str, RunOutput); 3] {
    let signal = |f: &str| s.pg.datadir.join(f);
    let clear = || {
        for f in ["recovery.signal", "standby.signal"] {
            let _ = fs::remove_file(signal(f));
        }
    };
    clear();
    write_postgres_file(&signal("recovery.signal"), b"");
    let recovery = s.fetch(name);
    clear();
    write_postgres_file(&signal("standby.signal"), b"");
    let standby = s.fetch(name);
    clear();
    let manual = s.fetch(name);
    [
        ("archive recovery", recovery),
        ("standby", standby),
        ("by hand", manual),
    ]
}

/// A failure: above 125 in archive recovery (PostgreSQL stops with FATAL instead of promoting),
/// 1 otherwise; always loud, naming `needles`; never a file at the destination.
fn assert_failure_in_each_mode(s: &Setup, name: &str, needles: &[&str], what: &str) {
    for (mode, out) in fetch_in_each_mode(s, name) {
        let want = if mode == "archive recovery" { 200 } else { 1 };
        assert_eq!(
            out.code(),
            Some(want),
            "{what} ({mode})\n{}",
            out.describe()
        );
        for n in needles {
            assert_mentions(&out, &[n], &format!("{what} ({mode})"));
        }
        assert_mentions(&out, &["hint:"], &format!("{what} ({mode})"));
        if mode == "archive recovery" {
            assert_mentions(&out, &["recovery stops here"], what);
        }
        assert_no_recoveryxlog(s);
    }
}

#[test]
fn fetch_failures_stop_archive_recovery_but_not_the_end_of_the_archive() {
    let s = Setup::new("fetch-modes");
    let push = s.push(&format!("pg_wal/{SEG1}"));
    assert_eq!(push.code(), Some(0), "push\n{}", push.describe());

    // The end of the archive and absent history files stay quiet exit 1 in every mode.
    for name in ["000000010000000000000002", "00000002.history"] {
        for (mode, out) in fetch_in_each_mode(&s, name) {
            assert_exit_1(&out, &format!("{name} ({mode})"));
            assert!(
                !out.stderr.to_lowercase().contains("error"),
                "{name} ({mode}) must be quiet\n{}",
                out.describe()
            );
        }
    }

    // A hole: segment 2 is missing while a later segment of the timeline is archived.
    let later = s.repo.join(format!(
        "wal/00000001/00000000/000000010000000000000003-{}.zst",
        "ab".repeat(32)
    ));
    write_postgres_file(&later, b"not read: its key alone shows the archive goes on");
    assert_failure_in_each_mode(
        &s,
        "000000010000000000000002",
        &[
            "000000010000000000000002",
            "hole",
            "000000010000000000000003-",
        ],
        "a hole",
    );
    fs::remove_file(&later).unwrap();

    // A corrupt object: its key and the segment are named.
    let objects = s.wal_objects();
    let object = s.repo.join(&objects[0]);
    let good = fs::read(&object).unwrap();
    flip_bytes(&object, good.len() / 2, 4);
    assert_failure_in_each_mode(
        &s,
        SEG1,
        &[SEG1, "corrupt", &objects[0]],
        "a corrupt object",
    );
    fs::write(&object, &good).unwrap();

    // An uninitialised or unreadable repository is a failure, never "not archived".
    let repo_json = s.repo.join("repo.json");
    let identity = fs::read(&repo_json).unwrap();
    fs::remove_file(&repo_json).unwrap();
    assert_failure_in_each_mode(
        &s,
        "000000010000000000000002",
        &["not initialised"],
        "no repo.json",
    );
    fs::write(&repo_json, b"{ not json").unwrap();
    assert_failure_in_each_mode(
        &s,
        "000000010000000000000002",
        &["repo.json"],
        "a corrupt repo.json",
    );

    // Another cluster's repository: its WAL would not fit this data directory.
    let text = String::from_utf8(identity.clone()).unwrap();
    let id: serde_json::Value = serde_json::from_str(&text).unwrap();
    let sysid = id["system_identifier"].to_string();
    fs::write(&repo_json, text.replace(&sysid, "4242")).unwrap();
    assert_failure_in_each_mode(&s, SEG1, &["system identifier"], "a foreign repository");
    fs::write(&repo_json, &identity).unwrap();

    // Back to normal: restored in every mode.
    for (mode, out) in fetch_in_each_mode(&s, SEG1) {
        assert_eq!(out.code(), Some(0), "{mode}\n{}", out.describe());
    }
    assert_eq!(
        fs::read(s.pg.datadir.join("pg_wal/RECOVERYXLOG")).unwrap(),
        fs::read(s.pg_wal(SEG1)).unwrap()
    );
}

#[test]
fn init_against_another_clusters_repository_is_refused() {
    let s = Setup::new("init-foreign");
    let repo_json = fs::read(s.repo.join("repo.json")).unwrap();
    let other = PgCluster::init(&s.dir, "other", InitOpts::default());
    let other_cfg = write_config(&s.dir, &other.datadir, RepoSpec::Local(s.repo.clone()));

    let out = pgward(
        s.dir.path(),
        &["--config", other_cfg.to_str().unwrap(), "init"],
    );
    assert_exit_1(&out, "init against another cluster's repository");
    assert_mentions(&out, &["system identifier"], "init against another cluster");
    assert!(
        fs::read(s.repo.join("repo.json")).unwrap() == repo_json,
        "repo.json changed"
    );
}

#[test]
fn malformed_config_names_key_and_line() {
    let dir = TestDir::new("badcfg");
    let repo = dir.subdir("repo");
    let spool = dir.subdir("spool");
    let text = format!(
        "[postgres]\n\
         pgdata = {}\n\
         \n\
         [repo]\n\
         url = {}\n\
         \n\
         [wal]\n\
         spool_dir = {}\n\
         push_ahaed = 4\n",
        toml_str(&dir.path().join("data").to_string_lossy()),
        toml_str(&format!("file://{}", repo.display())),
        toml_str(&spool.to_string_lossy()),
    );
    let cfg = dir.write_file("bad.toml", text);
    let cfg = cfg.to_str().unwrap();

    for args in [
        vec!["--config", cfg, "info"],
        vec![
            "--config",
            cfg,
            "wal-push",
            "pg_wal/000000010000000000000001",
        ],
    ] {
        let out = pgward(dir.path(), &args);
        assert!(
            matches!(out.code(), Some(1 | 2)),
            "pgward {args:?} with a bad config\n{}",
            out.describe()
        );
        assert_mentions(&out, &["push_ahaed"], "unknown key");
        assert_mentions(&out, &["line 9"], "line of the unknown key");
    }
}

#[test]
fn wal_push_times_out_against_a_silent_store() {
    let dir = TestDir::new("timeout");
    let pg = PgCluster::init(&dir, "pg", InitOpts::default());
    let silent = SilentServer::start();
    let cfg = write_config_with(
        &dir,
        &pg.datadir,
        RepoSpec::S3 {
            endpoint: format!("http://127.0.0.1:{}", silent.port),
            bucket: "pgward-silent".into(),
            prefix: "repo".into(),
            access_key: "test-access-key".into(),
            secret_key: "test-secret-key".into(),
        },
        &WalOpts {
            timeout: "2s".into(),
            ..WalOpts::default()
        },
    );

    let out = pgward_timeout(
        &pg.datadir,
        &[
            "--config",
            cfg.to_str().unwrap(),
            "wal-push",
            &format!("pg_wal/{SEG1}"),
        ],
        Duration::from_secs(30),
    );
    assert_exit_1(&out, "wal-push against a store that never answers");
    assert!(
        out.elapsed < Duration::from_secs(6),
        "wal.timeout = 2s, yet wal-push took {:?}\n{}",
        out.elapsed,
        out.describe()
    );
    assert!(silent.accepted() > 0, "pgward never connected to the store");

    // Recovery must not hang on a stuck store either, nor leave a file behind.
    let out = pgward_timeout(
        &pg.datadir,
        &[
            "--config",
            cfg.to_str().unwrap(),
            "wal-fetch",
            SEG1,
            "pg_wal/RECOVERYXLOG",
        ],
        Duration::from_secs(30),
    );
    assert_exit_1(&out, "wal-fetch against a store that never answers");
    assert!(
        out.elapsed < Duration::from_secs(6),
        "wal.timeout = 2s, yet wal-fetch took {:?}\n{}",
        out.elapsed,
        out.describe()
    );
    assert!(!pg.datadir.join("pg_wal/RECOVERYXLOG").exists());

    // In archive recovery an unreachable store must stop recovery, not end it.
    write_postgres_file(&pg.datadir.join("recovery.signal"), b"");
    let out = pgward_timeout(
        &pg.datadir,
        &[
            "--config",
            cfg.to_str().unwrap(),
            "wal-fetch",
            SEG1,
            "pg_wal/RECOVERYXLOG",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(
        out.code(),
        Some(200),
        "wal-fetch in archive recovery against a store that never answers\n{}",
        out.describe()
    );
    assert!(out.elapsed < Duration::from_secs(6), "{:?}", out.elapsed);
    assert!(!pg.datadir.join("pg_wal/RECOVERYXLOG").exists());
}

/// A `file://` repository whose disk is stuck (a stalled NFS mount): reading `repo.json`
/// blocks a thread in the kernel forever, here by making it a FIFO nobody writes. The command
/// must still answer within `wal.timeout` and exit, not wait for the stuck thread.
#[test]
fn a_stuck_disk_cannot_keep_wal_push_or_wal_fetch_alive() {
    let s = Setup::new("stuck-disk");
    let cfg = write_config_with(
        &s.dir,
        &s.pg.datadir,
        RepoSpec::Local(s.repo.clone()),
        &WalOpts {
            timeout: "2s".into(),
            ..WalOpts::default()
        },
    );
    let repo_json = s.repo.join("repo.json");
    fs::remove_file(&repo_json).unwrap();
    let mk = std::process::Command::new("mkfifo")
        .arg("-m")
        .arg("0666")
        .arg(&repo_json)
        .status()
        .unwrap();
    assert!(mk.success(), "mkfifo");
    chown_postgres(&repo_json);
    let seg = format!("pg_wal/{SEG1}");
    let cfg = cfg.to_str().unwrap();
    for args in [
        vec!["--config", cfg, "wal-push", &seg],
        vec!["--config", cfg, "wal-fetch", SEG1, "pg_wal/RECOVERYXLOG"],
    ] {
        let out = pgward_timeout(&s.pg.datadir, &args, Duration::from_secs(30));
        assert_exit_1(&out, &format!("{args:?} on a stuck disk"));
        assert!(
            out.elapsed < Duration::from_millis(3500),
            "wal.timeout = 2s, yet {args:?} took {:?}\n{}",
            out.elapsed,
            out.describe()
        );
        assert_mentions(&out, &["wal.timeout"], "stuck disk");
    }
}

/// A TCP server that accepts connections and never answers (until dropped).
struct SilentServer {
    port: u16,
    stop: Arc<AtomicBool>,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SilentServer {
    fn start() -> SilentServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (stop2, accepted2) = (stop.clone(), accepted.clone());
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((sock, _)) => {
                        accepted2.fetch_add(1, Ordering::Relaxed);
                        held.push(sock);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => panic!("silent server accept: {e}"),
                }
            }
        });
        SilentServer {
            port,
            stop,
            accepted,
            thread: Some(thread),
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Deterministic noise (xorshift64*), so a failure reproduces.
fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}
