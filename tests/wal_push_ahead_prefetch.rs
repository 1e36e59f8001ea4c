//! Push-ahead and prefetch end to end, through the built binary as PostgreSQL runs it (as
//! postgres, cwd = the data directory, relative `%p`), on real WAL from a real cluster.
//!
//! The backlog: a cluster archives with `archive_command = '/bin/false'` while it writes and
//! switches WAL, so `.ready` files pile up; then it is stopped and the test plays the archiver,
//! calling `wal-push` oldest first and renaming `.ready` to `.done` after each success.
//!
//! Checked: one `wal-push` stores its file and starts the detached background pusher, which
//! stores a window of the next `push_ahead` files of the backlog and records them, and keeps
//! that window filled as later calls take records; such a call only recognises the local file
//! (crc32c against the record); every segment is stored exactly once and `info` shows one
//! contiguous range. One `wal-fetch` starts a detached
//! prefetcher that spools the next `prefetch` segments; a fetch served from the spool is
//! byte-identical, a tampered spool file is never handed out, and the prefetcher exits.

mod common;

use common::pg::*;
use pgward::config::Config;
use pgward::context::Context;
use pgward::storage::memory::MemoryStorage;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PUSH_AHEAD: usize = 4;
const PREFETCH: usize = 4;

/// A stopped cluster with a backlog of `.ready` segments, and an initialised repository.
struct Backlog {
    pg: PgCluster,
    repo: PathBuf,
    cfg: PathBuf,
    /// This repository's corner of the spool directory (`<spool_dir>/<12 hex>`).
    spool: PathBuf,
    /// Segments with a `.ready` file, oldest first.
    ready: Vec<String>,
    dir: TestDir,
}

impl Backlog {
    fn new(tag: &str) -> Backlog {
        let dir = TestDir::new(tag);
        let mut pg = PgCluster::init(
            &dir,
            "pg",
            InitOpts {
                data_checksums: false,
                extra_conf: vec![
                    "archive_mode = on".into(),
                    "archive_command = '/bin/false'".into(),
                    "wal_keep_size = '1GB'".into(),
                    "autovacuum = off".into(),
                ],
            },
        );
        let repo = dir.path().join("repo");
        let cfg = write_config_with(
            &dir,
            &pg.datadir,
            RepoSpec::Local(repo.clone()),
            &WalOpts {
                push_ahead: PUSH_AHEAD,
                prefetch: PREFETCH,
                timeout: "30s".into(),
            },
        );
        pgward_ok(dir.path(), &["--config", cfg.to_str().unwrap(), "init"]);

        pg.start();
        pg.psql("create table t (id int, filler text)");
        for i in 0..8 {
            pg.psql(&format!(
                "insert into t select g, repeat('x', 100) from generate_series({}, {}) g",
                i * 100,
                i * 100 + 99
            ));
            pg.psql("select pg_switch_wal()");
        }
        // Immediate: a fast shutdown would let the archiver retry /bin/false for seconds.
        pg.stop_immediate();

        let status = pg.datadir.join("pg_wal/archive_status");
        let mut ready: Vec<String> = fs::read_dir(&status)
            .unwrap()
            .filter_map(|e| {
                let f = e.unwrap().file_name().to_string_lossy().into_owned();
                let stem = f.strip_suffix(".ready")?;
                (stem.len() == 24).then(|| stem.to_string())
            })
            .collect();
        ready.sort();
        assert!(
            ready.len() >= 8,
            "expected a backlog of 8 .ready segments, found {ready:?}\n{}",
            pg.log_tail(30)
        );

        let spool = spool_root(&cfg);
        Backlog {
            pg,
            repo,
            cfg,
            spool,
            ready,
            dir,
        }
    }

    fn cfg_arg(&self) -> &str {
        self.cfg.to_str().unwrap()
    }

    fn pg_wal(&self, name: &str) -> PathBuf {
        self.pg.datadir.join("pg_wal").join(name)
    }

    /// `wal-push pg_wal/<name>` as the archiver runs it, JSON logs.
    fn push(&self, name: &str) -> RunOutput {
        pgward(
            &self.pg.datadir,
            &[
                "--config",
                self.cfg_arg(),
                "--log-format",
                "json",
                "wal-push",
                &format!("pg_wal/{name}"),
            ],
        )
    }

    /// What the archiver does after `archive_command` succeeded.
    fn mark_done(&self, name: &str) {
        let status = self.pg.datadir.join("pg_wal/archive_status");
        fs::rename(
            status.join(format!("{name}.ready")),
            status.join(format!("{name}.done")),
        )
        .unwrap();
    }

    /// Pushes `name` and checks the exit status; marks it done.
    fn push_ok(&self, name: &str) -> RunOutput {
        let out = self.push(name);
        assert_eq!(out.code(), Some(0), "wal-push {name}\n{}", out.describe());
        self.mark_done(name);
        out
    }

    /// Stored WAL objects (paths under the repository).
    fn wal_objects(&self) -> Vec<String> {
        snapshot_tree(&self.repo)
            .into_keys()
            .filter(|k| k.starts_with("wal/"))
            .collect()
    }

    /// Stored objects of segment `name`.
    fn objects_of(&self, name: &str) -> Vec<String> {
        // Format 2 shards WAL keys by log number: wal/<TLI>/<LOG>/<name>-<sha256>.zst.
        let prefix = format!("wal/{}/{}/{name}-", &name[..8], &name[8..16]);
        self.wal_objects()
            .into_iter()
            .filter(|k| k.starts_with(&prefix))
            .collect()
    }

    fn push_record(&self, name: &str) -> PathBuf {
        self.spool.join("push").join(format!("{name}.json"))
    }

    /// Waits until no background pusher holds the spool's lock (it exits 2 s after its work
    /// runs out).
    fn wait_pusher_exit(&self) {
        let lock = self.spool.join("push/pusher.lock");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let free = match fs::File::open(&lock) {
                Ok(f) => f.try_lock().is_ok(),
                Err(_) => false,
            };
            if free {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the background pusher did not exit within 30 s\n{}",
                fs::read_to_string(self.spool.join("push/pusher.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until push-ahead records exist for all of `names`.
    fn wait_records(&self, names: &[String]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !names.iter().all(|n| self.push_record(n).exists()) {
            assert!(
                Instant::now() < deadline,
                "no push-ahead records for {names:?} after 30 s\n{}",
                fs::read_to_string(self.spool.join("push/pusher.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The background pusher's JSON log events so far.
    fn pusher_events(&self) -> Vec<Value> {
        fs::read_to_string(self.spool.join("push/pusher.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect()
    }

    fn fetch_spool(&self) -> PathBuf {
        self.spool.join("fetch")
    }
}

/// `<spool_dir>/<12 hex>` for this configuration, computed the way pgward does.
fn spool_root(cfg: &Path) -> PathBuf {
    let (config, path) = Config::load(Some(cfg)).unwrap();
    Context::with_storage(config, path, Arc::new(MemoryStorage::new())).spool_dir()
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The JSON log events on standard error (other lines are ignored).
fn events(out: &RunOutput) -> Vec<Value> {
    out.stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

fn message(ev: &Value) -> &str {
    ev["message"].as_str().unwrap_or("")
}

/// Log messages of `wal-push` / `wal-fetch` (see `PushReport::log`, `FetchReport::log`).
const PUSHED: &str = "pushed";
const VERIFIED: &str = "archived earlier by push-ahead; local file verified";
const FETCHED: &str = "fetched";

/// The events about `wal` whose message is exactly `msg`.
fn events_for<'a>(evs: &'a [Value], wal: &str, msg: &str) -> Vec<&'a Value> {
    evs.iter()
        .filter(|e| e["wal"].as_str() == Some(wal) && message(e) == msg)
        .collect()
}

#[test]
fn push_ahead_archives_the_backlog_once() {
    let b = Backlog::new("pushahead");
    let ready = b.ready.clone();
    let mut all_events: Vec<Value> = Vec::new();

    // --- the oldest: pushed by the call, which starts the background pusher -------------------
    let first = b.push_ok(&ready[0]);
    let evs = events(&first);
    let own = events_for(&evs, &ready[0], PUSHED);
    assert!(
        own.len() == 1 && own[0]["ahead"] == Value::Bool(false),
        "{}",
        first.describe()
    );
    all_events.extend(evs);

    // The background pusher stores the next PUSH_AHEAD files and records them, then stops at
    // its window and exits once nobody takes records.
    let ahead = &ready[1..=PUSH_AHEAD];
    b.wait_records(ahead);
    b.wait_pusher_exit();
    let bg = b.pusher_events();
    for name in ahead {
        let pushed = events_for(&bg, name, PUSHED);
        assert!(
            pushed.len() == 1 && pushed[0]["ahead"] == Value::Bool(true),
            "{name} should be pushed ahead by the background pusher\n{bg:#?}"
        );
    }
    let stored: Vec<String> = b.wal_objects();
    assert_eq!(
        stored.len(),
        PUSH_AHEAD + 1,
        "the oldest + a window of {PUSH_AHEAD} ahead: {stored:?}"
    );
    assert!(
        !b.push_record(&ready[0]).exists(),
        "a record for the pushed file itself"
    );
    for name in ahead {
        assert_eq!(b.objects_of(name).len(), 1, "{name}: {stored:?}");
        let rec: Value = serde_json::from_slice(
            &fs::read(b.push_record(name))
                .unwrap_or_else(|e| panic!("no push-ahead record for {name}: {e}")),
        )
        .unwrap();
        let local = fs::read(b.pg_wal(name)).unwrap();
        assert_eq!(rec["name"].as_str(), Some(name.as_str()));
        assert_eq!(
            rec["sha256"].as_str(),
            Some(sha256_hex(&local).as_str()),
            "{rec}"
        );
        assert_eq!(
            rec["crc32c"].as_u64(),
            Some(u64::from(crc32c::crc32c(&local))),
            "{rec}"
        );
        assert!(
            rec["key"]
                .as_str()
                .is_some_and(|k| b.objects_of(name) == vec![k.to_string()]),
            "record key {rec} vs stored {:?}",
            b.objects_of(name)
        );
    }

    // --- the second oldest: only recognised ----------------------------------------------------
    let objects_before = b.objects_of(&ready[1]);
    let second = b.push_ok(&ready[1]);
    eprintln!(
        "wal-push that pushed: {:.2?}; wal-push of a pushed-ahead file: {:.2?}",
        first.elapsed, second.elapsed
    );
    assert!(
        second.elapsed < Duration::from_secs(2),
        "verifying a pushed-ahead file took {:?}",
        second.elapsed
    );
    let evs = events(&second);
    assert_eq!(
        events_for(&evs, &ready[1], VERIFIED).len(),
        1,
        "the log should say {} was archived by push-ahead\n{}",
        ready[1],
        second.describe()
    );
    assert!(
        evs.iter().all(|e| message(e) != PUSHED),
        "the call itself should push nothing\n{}",
        second.describe()
    );
    assert!(
        !b.push_record(&ready[1]).exists(),
        "the used record must be gone"
    );
    assert_eq!(b.objects_of(&ready[1]), objects_before);
    all_events.extend(evs);

    // --- the rest, as the archiver would, while the background pusher keeps ahead ------------
    for name in &ready[2..] {
        let out = b.push_ok(name);
        all_events.extend(events(&out));
    }
    b.wait_pusher_exit();
    all_events.extend(b.pusher_events());

    for name in &ready {
        let objects = b.objects_of(name);
        assert_eq!(objects.len(), 1, "{name}: {objects:?}");
        let local = sha256_hex(&fs::read(b.pg_wal(name)).unwrap());
        assert!(
            objects[0].ends_with(&format!("-{local}.zst")),
            "{name} stored as {} but the local file hashes {local}",
            objects[0]
        );
        let pushed = events_for(&all_events, name, PUSHED).len();
        let verified = events_for(&all_events, name, VERIFIED).len();
        assert_eq!(pushed, 1, "{name} pushed {pushed} times");
        // Every file pushed ahead is recognised by its own call later, exactly once.
        assert_eq!(
            verified,
            usize::from(was_pushed_ahead(&all_events, name)),
            "{name}: verified {verified} times"
        );
    }
    assert!(
        ready[PUSH_AHEAD + 1..]
            .iter()
            .any(|n| was_pushed_ahead(&all_events, n)),
        "the background pusher should have kept pushing ahead as records were taken"
    );
    assert_eq!(b.wal_objects().len(), ready.len(), "{:?}", b.wal_objects());
    assert!(
        all_events
            .iter()
            .all(|e| !message(e).contains("already archived")),
        "something was pushed twice"
    );
    let left: Vec<_> = fs::read_dir(b.spool.join("push"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|f| f.ends_with(".json"))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "push records left: {left:?}");

    // --- info: one contiguous range -------------------------------------------------------------
    let info = pgward_ok(b.dir.path(), &["--config", b.cfg_arg(), "info", "--json"]);
    let info: Value = serde_json::from_str(&info.stdout).unwrap();
    let tls = info["timelines"].as_array().unwrap();
    assert_eq!(tls.len(), 1, "{info:#}");
    let ranges = tls[0]["ranges"].as_array().unwrap();
    assert_eq!(ranges.len(), 1, "{info:#}");
    assert_eq!(ranges[0]["first"].as_str(), Some(ready[0].as_str()));
    assert_eq!(ranges[0]["last"].as_str(), ready.last().map(|s| s.as_str()));
    assert_eq!(ranges[0]["segments"].as_u64(), Some(ready.len() as u64));
    assert_eq!(tls[0]["gaps"].as_array().map(Vec::len), Some(0));
    assert_eq!(info["conflicts"].as_array().map(Vec::len), Some(0));
}

fn was_pushed_ahead(evs: &[Value], name: &str) -> bool {
    events_for(evs, name, PUSHED)
        .iter()
        .any(|e| e["ahead"] == Value::Bool(true))
}

/// Spooled files for `name` in the fetch spool: `(path, "<sha256>-<crc32c>" from the file name)`.
fn spooled(spool: &Path, name: &str) -> Vec<(PathBuf, String)> {
    let Ok(rd) = fs::read_dir(spool) else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let f = e.file_name().to_string_lossy().into_owned();
            let sha = f.strip_prefix(&format!("{name}-"))?.to_string();
            Some((e.path(), sha))
        })
        .collect()
}

#[test]
fn prefetch_spools_the_next_segments_and_never_hands_out_a_bad_copy() {
    let b = Backlog::new("prefetch");
    let ready = b.ready.clone();
    for name in &ready {
        b.push_ok(name);
    }
    assert_eq!(b.wal_objects().len(), ready.len());

    // A restore target, as PostgreSQL uses it: cwd = its data directory, %p = pg_wal/RECOVERYXLOG.
    let restore = b.dir.subdir("restore");
    make_postgres_dir(&restore.join("pg_wal"));
    let dest = restore.join("pg_wal/RECOVERYXLOG");
    let fetch = |name: &str| {
        // PostgreSQL removes RECOVERYXLOG before each restore_command.
        let _ = fs::remove_file(&dest);
        let out = pgward(
            &restore,
            &[
                "--config",
                b.cfg_arg(),
                "--log-format",
                "json",
                "wal-fetch",
                name,
                "pg_wal/RECOVERYXLOG",
            ],
        );
        assert_eq!(out.code(), Some(0), "wal-fetch {name}\n{}", out.describe());
        let got = fs::read(&dest).unwrap();
        assert!(
            got == fs::read(b.pg_wal(name)).unwrap(),
            "wal-fetch {name}: bytes differ from the original"
        );
        let evs = events(&out);
        let fetched = events_for(&evs, name, FETCHED);
        assert_eq!(fetched.len(), 1, "{}", out.describe());
        (fetched[0]["prefetched"].as_bool(), out)
    };

    // --- the first fetch starts the prefetcher ---------------------------------------------------
    let (prefetched, out) = fetch(&ready[0]);
    assert_eq!(prefetched, Some(false), "{}", out.describe());
    let spool = b.fetch_spool();
    let next = &ready[1..=PREFETCH];
    let started = Instant::now();
    loop {
        let have = next
            .iter()
            .filter(|n| spooled(&spool, n).len() == 1)
            .count();
        if have == next.len() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "after 10 s the prefetcher has spooled {have} of {next:?}: {:?}\nprefetch.log:\n{}",
            fs::read_dir(&spool).map(|rd| rd.flatten().map(|e| e.file_name()).collect::<Vec<_>>()),
            fs::read_to_string(spool.join("prefetch.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for name in next {
        let (path, digests) = spooled(&spool, name).remove(0);
        let local = fs::read(b.pg_wal(name)).unwrap();
        assert_eq!(
            digests,
            format!("{}-{:08x}", sha256_hex(&local), crc32c::crc32c(&local)),
            "{}",
            path.display()
        );
        assert!(
            fs::read(&path).unwrap() == local,
            "{} differs",
            path.display()
        );
    }
    assert!(
        spooled(&spool, &ready[PREFETCH + 1]).is_empty(),
        "prefetched beyond the window of {PREFETCH}"
    );

    // --- served from the spool ------------------------------------------------------------------
    let (prefetched, out) = fetch(&ready[1]);
    assert_eq!(prefetched, Some(true), "{}", out.describe());
    assert!(
        spooled(&spool, &ready[1]).is_empty(),
        "the used spool file must be gone"
    );

    // --- a tampered spool file is fetched again from the repository -----------------------------
    let (path, _) = spooled(&spool, &ready[2]).remove(0);
    let len = fs::metadata(&path).unwrap().len();
    let mut f = OpenOptions::new().write(true).open(&path).unwrap();
    f.seek(SeekFrom::Start(len / 2)).unwrap();
    f.write_all(b"tampered, not WAL").unwrap();
    drop(f);
    let (prefetched, out) = fetch(&ready[2]);
    assert_eq!(
        prefetched,
        Some(false),
        "a tampered spool file must not be used\n{}",
        out.describe()
    );
    assert!(
        events(&out)
            .iter()
            .any(|e| message(e).contains("failed verification")),
        "{}",
        out.describe()
    );
    assert!(spooled(&spool, &ready[2]).is_empty(), "tampered file left");

    // --- the prefetcher has exited ----------------------------------------------------------------
    let lock_path = spool.join("prefetch.lock");
    let started = Instant::now();
    loop {
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&lock_path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", lock_path.display()));
        if lock.try_lock().is_ok() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a prefetcher still holds {} after 5 s",
            lock_path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = fs::read_to_string(spool.join("prefetch.log")).unwrap_or_default();
    assert!(
        !log.contains("ERROR") && !log.contains("failed"),
        "prefetch.log:\n{log}"
    );
}

/// A recovery that stops before the end of the archive (a PITR target) leaves prefetched
/// segments nobody will take. While recovery runs (its signal file is there) the prefetcher
/// keeps them for the next `wal-fetch`; once recovery has ended it removes them and exits.
#[test]
fn prefetched_leftovers_are_removed_once_recovery_is_over() {
    let b = Backlog::new("leftovers");
    let ready = b.ready.clone();
    for name in &ready {
        b.push_ok(name);
    }
    // The stopped source is the recovering data directory: its own repository, so wal-fetch's
    // identity check passes, and the prefetcher runs where recovery.signal is.
    let signal = b.pg.datadir.join("recovery.signal");
    write_postgres_file(&signal, b"");
    let _ = fs::remove_file(b.pg.datadir.join("pg_wal/RECOVERYXLOG"));
    let out = pgward(
        &b.pg.datadir,
        &[
            "--config",
            b.cfg_arg(),
            "wal-fetch",
            &ready[0],
            "pg_wal/RECOVERYXLOG",
        ],
    );
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    let spool = b.fetch_spool();
    let next = &ready[1..=PREFETCH];
    let all_spooled = || next.iter().all(|n| spooled(&spool, n).len() == 1);
    let started = Instant::now();
    while !all_spooled() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not prefetched"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Idle past its old exit time, with recovery still running: the files stay.
    std::thread::sleep(Duration::from_secs(3));
    assert!(all_spooled(), "spooled files removed while recovery runs");

    fs::remove_file(&signal).unwrap();
    let lock_path = spool.join("prefetch.lock");
    let started = Instant::now();
    loop {
        let left: Vec<_> = next.iter().flat_map(|n| spooled(&spool, n)).collect();
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&lock_path)
            .unwrap();
        if left.is_empty() && lock.try_lock().is_ok() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "5 s after recovery ended: left {left:?}, lock free: {}\nprefetch.log:\n{}",
            lock.try_lock().is_ok(),
            fs::read_to_string(spool.join("prefetch.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A call whose file is claimed by a pusher that never finishes (here: the test holds the
/// claim) still ends at `wal.timeout` with an error, so PostgreSQL retries; once the claim is
/// free the call archives the file itself.
#[test]
fn a_call_waiting_for_a_stuck_claim_ends_at_wal_timeout() {
    let b = Backlog::new("stuckclaim");
    let text = fs::read_to_string(&b.cfg).unwrap();
    assert!(text.contains("timeout = \"30s\""), "{text}");
    write_postgres_file(
        &b.cfg,
        text.replace("timeout = \"30s\"", "timeout = \"2s\"")
            .as_bytes(),
    );
    let ready = b.ready.clone();
    // The first call creates the spool; its background pusher fills its window and exits.
    b.push_ok(&ready[0]);
    b.wait_records(&ready[1..=PUSH_AHEAD]);
    b.wait_pusher_exit();

    let stuck = &ready[PUSH_AHEAD + 1];
    let claim_path = b.spool.join("push").join(format!("{stuck}.claim"));
    write_postgres_file(&claim_path, b"");
    let claim = fs::File::open(&claim_path).unwrap();
    claim.lock().unwrap();
    let out = b.push(stuck);
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    assert!(
        out.elapsed < Duration::from_secs(5),
        "a call waiting on a claim must end at wal.timeout (2 s), took {:?}\n{}",
        out.elapsed,
        out.describe()
    );
    assert!(
        out.stderr.contains("did not finish within wal.timeout"),
        "{}",
        out.describe()
    );
    assert!(b.objects_of(stuck).is_empty(), "{:?}", b.objects_of(stuck));

    drop(claim);
    let out = b.push_ok(stuck);
    let evs = events(&out);
    assert_eq!(
        events_for(&evs, stuck, PUSHED).len(),
        1,
        "{}",
        out.describe()
    );
    assert_eq!(b.objects_of(stuck).len(), 1);
    b.wait_pusher_exit();
}
