//! The HTML recovery report (issue 15, item 2) in a real browser: Debian's `chromium`,
//! headless, loads the file `pgward report --html` wrote.
//!
//! - A real repository (a PostgreSQL 15 source archiving through pgward, two base backups, one
//!   archived segment deleted after the newest backup, a pin, two stored drill reports and a
//!   drill file with limits): the DOM holds a timeline per timeline, the hole (named by its
//!   segment), a mark for each backup (the pinned one marked), both drill verdicts and the
//!   limit lines; nothing in it points outside the document, and chromium, sent through a
//!   loopback proxy that counts connections, makes none; the screenshot is not blank and
//!   shows the hole's red and the WAL's blue.
//! - A synthetic repository (1000 backups, 100k WAL entries, dumps and drills, written with the
//!   repo module's writers into memory storage, no real WAL): the page stays under 2 MB, and
//!   chromium loads and draws it within the deadline. Both `render` and chromium are timed.
//!
//! Chromium runs as root here, which needs `--no-sandbox`; every run gets its own
//! `--user-data-dir`, background networking off, and a deadline after which it is killed by
//! PID.

mod common;

use common::backup_scenarios::{Source, backup_label};
use common::pg::{RepoSpec, TestDir, chown_tree_postgres, write_postgres_file};
use pgward::codec::Sha256Digest;
use pgward::config::Config;
use pgward::context::Context;
use pgward::drill::report::{
    self as drill_report, DrillReport, Failure, TargetReport, Verdict as DrillVerdict,
};
use pgward::pg::{Lsn, Timeline, WalFileName, WalSegmentName};
use pgward::repo::dumps::{DatabaseDump, DumpManifest, StoredObject};
use pgward::repo::identity::RepoIdentity;
use pgward::repo::label::{Label, rfc3339};
use pgward::repo::layout;
use pgward::repo::manifest::{BackupStats, MANIFEST_VERSION, Manifest};
use pgward::status::{Level, Reason, Verdict};
use pgward::storage::Storage;
use pgward::storage::local::LocalStorage;
use pgward::storage::memory::MemoryStorage;
use std::collections::BTreeSet;
use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Deadline for one chromium run (it starts in about a second here).
const CHROMIUM_DEADLINE: Duration = Duration::from_secs(60);
const SEG: u64 = 16 << 20;

// ---------------------------------------------------------------------------------------------
// Chromium
// ---------------------------------------------------------------------------------------------

/// Where chromium itself goes on every start, whatever the page (measured here with Debian's
/// chromium 156 even with `--disable-background-networking --disable-component-update`): the
/// component updater (`POST http://update.googleapis.com/service/update2/json`, its clock
/// `GET http://clients2.google.com/time/1/current`, downloads via `redirector.gvt1.com`) and
/// the account check (`CONNECT accounts.google.com:443`). Only these hosts are the browser's;
/// any other request came from the page.
const CHROMIUMS_OWN: [&str; 4] = [
    "update.googleapis.com",
    "clients2.google.com",
    "accounts.google.com",
    "redirector.gvt1.com",
];

/// A loopback listener standing in for a proxy: it records the first line of every request
/// (`CONNECT host:443 ...`, `GET http://host/...`) and answers none (the connection closes,
/// so the request fails at once). Chromium is told to send everything through it.
struct RecordingProxy {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RecordingProxy {
    fn start() -> RecordingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, st) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        let seen = seen.clone();
                        std::thread::spawn(move || {
                            let _ = conn.set_nonblocking(false);
                            let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                            let mut buf = [0u8; 2048];
                            let n = conn.read(&mut buf).unwrap_or(0);
                            let text = String::from_utf8_lossy(&buf[..n]);
                            let line = text.lines().next().unwrap_or("(nothing sent)");
                            seen.lock().unwrap().push(line.to_string());
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        RecordingProxy {
            port,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn assert_page_fetched_nothing(&self) {
        let fetched = self.page_requests(Duration::from_millis(300));
        assert!(fetched.is_empty(), "the page fetched: {fetched:?}");
    }

    /// Requests not to [`CHROMIUMS_OWN`] hosts, after giving the last ones `settle` to arrive.
    fn page_requests(&self, settle: Duration) -> Vec<String> {
        std::thread::sleep(settle);
        let all = self.requests.lock().unwrap().clone();
        eprintln!("proxy saw {} requests: {all:?}", all.len());
        all.into_iter()
            .filter(|line| {
                let target = line.split_whitespace().nth(1).unwrap_or("");
                let host = target
                    .trim_start_matches("http://")
                    .trim_start_matches("https://")
                    .split(['/', ':'])
                    .next()
                    .unwrap_or("");
                !CHROMIUMS_OWN.contains(&host)
            })
            .collect()
    }
}

impl Drop for RecordingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Proves that `proxy` sees what a page fetches: a page with an external image and style
/// sheet makes chromium ask the proxy for both hosts.
fn assert_proxy_sees_page_requests(dir: &Path) {
    let proxy = RecordingProxy::start();
    let canary = dir.join("canary.html");
    std::fs::write(
        &canary,
        "<!DOCTYPE html><html><head><link rel=\"stylesheet\" \
         href=\"https://style.pgward-canary.invalid/a.css\"></head><body>\
         <img src=\"http://img.pgward-canary.invalid/a.png\"></body></html>\n",
    )
    .unwrap();
    chromium(&canary, &proxy, &["--dump-dom".to_string()]);
    let seen = proxy.page_requests(Duration::from_millis(500));
    for host in ["style.pgward-canary.invalid", "img.pgward-canary.invalid"] {
        assert!(
            seen.iter().any(|l| l.contains(host)),
            "the proxy did not see the canary page fetch {host}: {seen:?}"
        );
    }
}

struct Chromium {
    stdout: String,
    stderr: String,
    took: Duration,
}

/// Runs headless chromium on `page` with `args` (`--dump-dom`, `--screenshot=...`), every
/// request through `proxy`; kills it by PID after [`CHROMIUM_DEADLINE`].
fn chromium(page: &Path, proxy: &RecordingProxy, args: &[String]) -> Chromium {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("chromium");
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-extensions",
        "--disable-sync",
        "--metrics-recording-only",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .arg(format!("--proxy-server=127.0.0.1:{}", proxy.port))
    // Loopback too: chromium bypasses the proxy for localhost by default.
    .arg("--proxy-bypass-list=<-loopback>")
    .args(args)
    .arg(format!("file://{}", page.display()))
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run chromium ({e})\nhint: apt-get install chromium"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > CHROMIUM_DEADLINE {
            // Our own child, by PID; its helpers die with it (they watch their parent's pipe).
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium did not finish within {CHROMIUM_DEADLINE:?} on {}\n{}",
                page.display(),
                err_t.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = started.elapsed();
    let (stdout, stderr) = (out_t.join().unwrap(), err_t.join().unwrap());
    assert!(
        status.success(),
        "chromium failed ({status}) on {}\n{stderr}",
        page.display()
    );
    Chromium {
        stdout,
        stderr,
        took,
    }
}

fn dump_dom(page: &Path, proxy: &RecordingProxy) -> Chromium {
    let c = chromium(page, proxy, &["--dump-dom".to_string()]);
    assert!(
        c.stdout.trim_end().ends_with("</html>"),
        "chromium's DOM is not a whole document ({} bytes):\n{}\n{}",
        c.stdout.len(),
        &c.stdout[..c.stdout.len().min(2000)],
        c.stderr
    );
    c
}

/// A decoded screenshot.
struct Shot {
    w: u32,
    h: u32,
    pixels: Vec<[u8; 3]>,
    took: Duration,
}

/// Chromium's screenshot of `page` at `size` (`W,H`), decoded.
fn screenshot(page: &Path, proxy: &RecordingProxy, size: &str) -> Shot {
    let dir = tempfile::tempdir().unwrap();
    let shot = dir.path().join("shot.png");
    let c = chromium(
        page,
        proxy,
        &[
            format!("--screenshot={}", shot.display()),
            format!("--window-size={size}"),
        ],
    );
    let file = std::fs::File::open(&shot)
        .unwrap_or_else(|e| panic!("no screenshot at {} ({e})\n{}", shot.display(), c.stderr));
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    let pixels = buf[..info.buffer_size()]
        .chunks(channels)
        .map(|p| match channels {
            1 | 2 => [p[0], p[0], p[0]],
            _ => [p[0], p[1], p[2]],
        })
        .collect();
    let shot = Shot {
        w: info.width,
        h: info.height,
        pixels,
        took: c.took,
    };
    let colours = shot.pixels.iter().collect::<BTreeSet<_>>().len();
    assert!(colours > 1, "the screenshot of {} is blank", page.display());
    shot
}

fn near(p: [u8; 3], want: [u8; 3]) -> bool {
    p.iter().zip(want).all(|(a, b)| a.abs_diff(b) <= 12)
}

impl Shot {
    /// The longest vertical run of pixels of colour `want` (the legend's swatches are about
    /// 13 pixels high; a lane's bar is twice that).
    fn tallest_run(&self, want: [u8; 3]) -> u32 {
        let (w, h) = (self.w as usize, self.h as usize);
        let mut best = 0;
        for x in 0..w {
            let mut run = 0;
            for y in 0..h {
                if near(self.pixels[y * w + x], want) {
                    run += 1;
                    best = best.max(run);
                } else {
                    run = 0;
                }
            }
        }
        best
    }

    /// Panics unless `what` shows in `colour`, at least `min` pixels high.
    fn assert_drawn(&self, what: &str, colour: [u8; 3], min: u32) {
        let run = self.tallest_run(colour);
        assert!(
            run >= min,
            "no {what} in the screenshot: its colour's tallest run is {run} px"
        );
    }
}

const HOLE_RED: [u8; 3] = [0xd0, 0x02, 0x1b];
const WAL_BLUE: [u8; 3] = [0x4a, 0x90, 0xd9];

// ---------------------------------------------------------------------------------------------
// Reading the DOM
// ---------------------------------------------------------------------------------------------

/// Every start tag of the DOM whose `class` attribute is `class`, or starts with `class`
/// and a space (`mark backup` finds `mark backup pinned`, `hole` does not find `holes`).
fn tags<'a>(dom: &'a str, class: &str) -> Vec<&'a str> {
    let needle = format!("class=\"{class}");
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = dom[from..].find(&needle) {
        let at = from + i;
        let next = dom.as_bytes()[at + needle.len()];
        let start = dom[..at].rfind('<').unwrap();
        let end = at + dom[at..].find('>').unwrap();
        if next == b'"' || next == b' ' {
            out.push(&dom[start..=end]);
        }
        from = end;
    }
    out
}

/// The value of attribute `name` in a start tag.
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let needle = format!(" {name}=\"");
    let i = tag.find(&needle)? + needle.len();
    Some(&tag[i..i + tag[i..].find('"')?])
}

/// What a self-contained page must not contain: anything that loads or links elsewhere.
fn assert_self_contained(dom: &str) {
    for bad in [
        "http:", "https:", "ftp:", "url(", "@import", "<script", "<link", "<img", "<iframe",
        "<object", "<embed", " src=", " href=", "srcset",
    ] {
        assert!(
            !dom.to_ascii_lowercase().contains(bad),
            "the page contains `{bad}`"
        );
    }
}

/// A `latest` drill report of `drill` that started at `at` (what `pgward drill` stores; the
/// library's own `drill::report::testing::sample` is only built for its unit tests).
fn drill_at(at: chrono::DateTime<chrono::Utc>, drill: &str, verdict: DrillVerdict) -> DrillReport {
    DrillReport {
        format: drill_report::FORMAT,
        label: drill_report::label_for(at, drill),
        drill: drill.into(),
        file: format!("restore-tests/{drill}.toml"),
        from: "backup".into(),
        pgward_version: env!("CARGO_PKG_VERSION").into(),
        postgres_version: "15.18".into(),
        host: "db1".into(),
        started_at: at,
        finished_at: at + chrono::Duration::seconds(20),
        backup: None,
        target: TargetReport {
            kind: "latest".into(),
            value: None,
            archive_end_segment: None,
        },
        reached: None,
        markers: None,
        phases: vec![],
        rto_seconds: Some(12.5),
        rpo_seconds: Some(30.0),
        checks: vec![],
        verdict,
        failure: None,
        kept: None,
        notes: vec![],
    }
}

// ---------------------------------------------------------------------------------------------
// A real repository
// ---------------------------------------------------------------------------------------------

#[test]
fn the_report_of_a_real_repository_in_chromium() {
    let dir = TestDir::new("report");
    let repo = dir.path().join("repo");
    let mut src = Source::start(&dir, "src", RepoSpec::Local(repo.clone()));
    let policy = dir.write_file(
        "policy.toml",
        "timezone = \"Europe/Berlin\"\n\
         [retention.backups]\nkeep_last = 1\n\
         [retention.wal]\npitr_window = \"6h\"\n",
    );
    let text = format!(
        "policy = {:?}\n{}",
        policy.display().to_string(),
        std::fs::read_to_string(&src.cfg).unwrap()
    );
    write_postgres_file(&src.cfg, text.as_bytes());
    // Drill files beside pgward.toml (the default `restore-tests`): their limits are drawn.
    dir.subdir("restore-tests");
    dir.write_file(
        "restore-tests/weekly.toml",
        "from = \"backup\"\ntarget = \"latest\"\nmax_rto = \"30m\"\nmax_rpo = \"1h\"\n",
    );

    src.batch("a", 10);
    let b1 = backup_label(&src.backup(&dir));
    src.batch("b", 10);
    src.switch_and_archive();
    let b2 = backup_label(&src.backup(&dir));
    let mut after = Vec::new();
    for i in 0..3 {
        src.batch(&format!("c{i}"), 10);
        after.push(src.switch_and_archive());
    }
    // The middle one of the three goes: a hole after the newest backup.
    let hole = after[1].clone();
    let storage = LocalStorage::new(repo.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listing = storage.list(layout::WAL_PREFIX).await.unwrap();
        let key = listing
            .iter()
            .find(|o| layout::parse_wal_key(&o.key).is_some_and(|(n, _)| n.to_string() == hole))
            .unwrap_or_else(|| panic!("{hole} is not archived"))
            .key
            .clone();
        storage.delete(&key).await.unwrap();
        // Two drills: one passed from the first backup, one failed from the second (its
        // failure text is markup, which the page must show as text).
        let now = chrono::Utc::now();
        let mut passed = drill_at(
            now - chrono::Duration::hours(3),
            "weekly",
            DrillVerdict::Passed,
        );
        passed.started_at = now - chrono::Duration::hours(3);
        passed.backup = Some(b1.clone());
        let mut failed = drill_at(
            now - chrono::Duration::minutes(1),
            "weekly",
            DrillVerdict::Failed,
        );
        failed.started_at = now - chrono::Duration::minutes(1);
        failed.backup = Some(b2.clone());
        failed.rto_seconds = Some(2000.0);
        failed.failure = Some(Failure {
            phase: "recovery".into(),
            reason: "<script>alert(1)</script> block missing".into(),
            server_log_tail: None,
        });
        drill_report::store(&storage, &mut passed).await.unwrap();
        drill_report::store(&storage, &mut failed).await.unwrap();
    });
    chown_tree_postgres(&repo);
    src.pgward_ok(
        &dir,
        &["pin", &b1, "--reason", "before the \"<v2>\" migration"],
    );

    let page = dir.path().join("report.html");
    let started = Instant::now();
    let out = src.pgward_ok(
        &dir,
        &["report", "--html", page.to_str().unwrap(), "--days", "2"],
    );
    let generated = started.elapsed();
    assert!(
        out.stdout.contains("recovery report written to"),
        "{}",
        out.describe()
    );
    let html = std::fs::read_to_string(&page).unwrap();
    assert_self_contained(&html);

    let proxy = RecordingProxy::start();
    let run = dump_dom(&page, &proxy);
    let dom = &run.stdout;
    assert_self_contained(dom);

    // A timeline per PostgreSQL timeline: here only timeline 1.
    let timelines: Vec<&str> = tags(dom, "timeline")
        .iter()
        .filter_map(|t| attr(t, "data-timeline"))
        .collect();
    assert_eq!(timelines, ["1"], "timelines in the DOM");

    // The hole, named by its segment, with its LSNs in the hover text.
    let holes = tags(dom, "hole");
    assert_eq!(holes.len(), 1, "{holes:?}");
    assert_eq!(attr(holes[0], "data-first"), Some(hole.as_str()));
    let seg = WalSegmentName::parse(&hole).unwrap();
    let start_lsn = seg.start_lsn(SEG).to_string();
    assert_eq!(attr(holes[0], "data-start-lsn"), Some(start_lsn.as_str()));
    assert!(dom.contains(&format!(
        "hole: {hole} missing (1 segment), WAL {start_lsn}"
    )));
    assert!(!tags(dom, "coverage").is_empty(), "WAL coverage drawn");
    assert_eq!(tags(dom, "pitr").len(), 1, "the PITR window is shaded");

    // A mark for each backup; the pinned one marked.
    let marks = tags(dom, "mark backup");
    let on_marks: BTreeSet<&str> = marks
        .iter()
        .flat_map(|t| attr(t, "data-labels").unwrap().split(' '))
        .collect();
    assert_eq!(on_marks, BTreeSet::from([b1.as_str(), b2.as_str()]));
    let pinned: Vec<&&str> = marks
        .iter()
        .filter(|t| attr(t, "class").unwrap().contains("pinned"))
        .collect();
    assert_eq!(pinned.len(), 1, "{marks:?}");
    assert!(attr(pinned[0], "data-labels").unwrap().contains(&b1));

    // The drills' verdicts, on the timeline and in the history.
    let verdicts: Vec<&str> = tags(dom, "mark drill")
        .iter()
        .filter_map(|t| attr(t, "data-drill-verdict"))
        .collect();
    assert_eq!(verdicts, ["passed", "failed"], "oldest first");
    let rows: Vec<&str> = tags(dom, "drill")
        .iter()
        .filter_map(|t| attr(t, "data-drill-verdict"))
        .collect();
    assert_eq!(
        rows,
        ["failed", "passed"],
        "the history table, newest first"
    );
    let limits: Vec<(&str, &str)> = tags(dom, "limit")
        .iter()
        .map(|t| {
            (
                attr(t, "data-metric").unwrap(),
                attr(t, "data-drill").unwrap(),
            )
        })
        .collect();
    assert_eq!(limits, [("rto", "weekly"), ("rpo", "weekly")]);
    assert!(dom.contains("&lt;script&gt;alert(1)&lt;/script&gt; block missing"));

    // The table: each backup with what keeps it (keep_last 1 keeps only the newest; the pin
    // keeps the first).
    let row = |label: &str| {
        tags(dom, "backup")
            .into_iter()
            .find(|t| attr(t, "data-label") == Some(label))
            .unwrap_or_else(|| panic!("no table row for {label}"))
    };
    assert_eq!(attr(row(&b1), "class"), Some("backup keep pinned"));
    assert_eq!(attr(row(&b2), "class"), Some("backup keep"));
    assert!(
        dom.contains("pinned: before the \"&lt;v2&gt;\" migration"),
        "the pin's reason, as text"
    );
    assert!(dom.contains("newest complete backup"));
    // The verdict is status's: the hole after the newest backup is CRITICAL, named.
    assert!(
        tags(dom, "verdict")
            .iter()
            .any(|t| attr(t, "data-verdict") == Some("CRITICAL")),
        "{:?}",
        tags(dom, "verdict")
    );
    assert!(
        dom.contains(&format!("WAL hole after the newest backup at {hole}")),
        "the verdict's reason names the hole"
    );
    // Dates in UTC and in the policy's zone.
    assert!(dom.contains(" UTC (") && (dom.contains(" CET)") || dom.contains(" CEST)")));

    let shot = screenshot(&page, &proxy, "1400,1400");
    shot.assert_drawn("hole", HOLE_RED, 24);
    // (This repository's WAL spans a minute: a pixel of a 2-day axis, under the hole's red.
    // The synthetic repository's screenshot checks the WAL's blue.)
    proxy.assert_page_fetched_nothing();
    assert_proxy_sees_page_requests(dir.path());
    eprintln!(
        "real repository: report generated in {generated:?} ({} bytes), chromium --dump-dom \
         {:?}, --screenshot {:?}",
        html.len(),
        run.took,
        shot.took
    );
}

// ---------------------------------------------------------------------------------------------
// A synthetic repository: 1000 backups, 100k WAL entries
// ---------------------------------------------------------------------------------------------

const BACKUPS: u64 = 1000;
const SEGMENTS: u64 = 100_000;
/// Days the synthetic history spans (more than the 14 shown).
const HISTORY_DAYS: i64 = 21;

fn synthetic_manifest(label: &Label, segno: u64, at: chrono::DateTime<chrono::Utc>) -> Manifest {
    let tli = Timeline(1);
    let start = WalSegmentName::from_segno(tli, segno, SEG);
    let stop = WalSegmentName::from_segno(tli, segno + 1, SEG);
    Manifest {
        format_version: MANIFEST_VERSION,
        label: label.to_string(),
        system_identifier: 7_400_000_000_000_000_001,
        pg_major: 15,
        block_size: 1 << 20,
        timeline: tli,
        start_lsn: Lsn(start.start_lsn(SEG).0 + 0x28),
        stop_lsn: Lsn(stop.start_lsn(SEG).0 + 0x100),
        start_wal: start.to_string(),
        stop_wal: stop.to_string(),
        start_time: rfc3339(&at),
        stop_time: rfc3339(&(at + chrono::Duration::seconds(40))),
        backup_label: String::new(),
        tablespace_map: None,
        data_checksums: true,
        tablespaces: vec![],
        files: vec![],
        bad_pages: vec![],
        stats: BackupStats {
            total_bytes: 24 << 30,
            files: 2000,
            blocks: 24 << 10,
            new_blocks: 300,
            new_bytes: 300 << 20,
            stored_bytes: 90 << 20,
            duration_ms: 40_000,
        },
    }
}

fn stored_object(key: String) -> StoredObject {
    StoredObject {
        key,
        size: 5 << 30,
        stored_size: 700 << 20,
        sha256: Sha256Digest::of(b"x"),
    }
}

/// Writes the synthetic repository into `s`; returns the labels of the backups in the last
/// 14 days.
async fn synthetic(s: &MemoryStorage, now: chrono::DateTime<chrono::Utc>) -> Vec<String> {
    let id = RepoIdentity {
        format_version: layout::FORMAT_VERSION,
        system_identifier: 7_400_000_000_000_000_001,
        pg_major: 15,
        wal_segment_size: SEG,
        block_size: 1 << 20,
        created_at: rfc3339(&now),
        created_by: "e2e_report".into(),
    };
    RepoIdentity::create(s, &id).await.unwrap();
    let begin = now - chrono::Duration::days(HISTORY_DAYS);
    let span_ms = (now - begin).num_milliseconds() - 60_000;
    let time_of = |segno: u64| {
        begin + chrono::Duration::milliseconds(span_ms * segno as i64 / SEGMENTS as i64)
    };

    // WAL: one segment every ~18 s, ten of them missing.
    for segno in 1..=SEGMENTS {
        if segno % 10_000 == 5_000 {
            continue;
        }
        let name = WalFileName::Segment(WalSegmentName::from_segno(Timeline(1), segno, SEG));
        let key = layout::wal_key(&name, &Sha256Digest::of(&segno.to_be_bytes()));
        s.put(&key, bytes::Bytes::new()).await.unwrap();
        s.set_modified(&key, time_of(segno));
    }
    // Backups every 100 segments (about every 30 min).
    let window = now - chrono::Duration::days(14);
    let mut recent = Vec::new();
    for i in 0..BACKUPS {
        let segno = 1 + i * (SEGMENTS / BACKUPS);
        let at = time_of(segno);
        let label = Label::for_start(at);
        synthetic_manifest(&label, segno, at)
            .store(s, 3)
            .await
            .unwrap();
        if at >= window {
            recent.push(label.to_string());
        }
    }
    // A dump a day.
    for d in 0..HISTORY_DAYS {
        let at = begin + chrono::Duration::days(d) + chrono::Duration::hours(2);
        let label = Label::for_start(at);
        let l = label.to_string();
        DumpManifest {
            format_version: 1,
            label: label.clone(),
            system_identifier: 7_400_000_000_000_000_001,
            server_version: "15.18".into(),
            pg_dump_version: "15.18".into(),
            start_time: at,
            stop_time: at + chrono::Duration::minutes(4),
            role_passwords: true,
            globals: stored_object(layout::dump_globals_key(&l)),
            databases: vec![DatabaseDump {
                name: "bookedbarber".into(),
                object: stored_object(layout::dump_database_key(&l, "bookedbarber")),
                toc_entries: 120,
                start_time: at,
                stop_time: at + chrono::Duration::minutes(4),
            }],
        }
        .store(s, 3)
        .await
        .unwrap();
    }
    // Drills twice a day, every fifth one failed.
    for n in 0..(HISTORY_DAYS * 2) {
        let at = begin + chrono::Duration::hours(12 * n + 3);
        let verdict = if n % 5 == 4 {
            DrillVerdict::Failed
        } else {
            DrillVerdict::Passed
        };
        let mut r = drill_at(at, "weekly", verdict);
        r.started_at = at;
        r.rto_seconds = Some(600.0 + (n * 37 % 900) as f64);
        r.rpo_seconds = Some(20.0 + (n * 13 % 120) as f64);
        r.backup = None;
        drill_report::store(s, &mut r).await.unwrap();
    }
    recent
}

#[test]
fn a_thousand_backups_and_a_hundred_thousand_segments_stay_small_and_fast() {
    let dir = TestDir::new("report-big");
    let policy = dir.write_file(
        "policy.toml",
        "timezone = \"America/New_York\"\n\
         [retention.backups]\nkeep_last = 24\nkeep_daily = 7\nkeep_weekly = 4\n\
         [retention.dumps]\nkeep_daily = 30\n\
         [retention.wal]\npitr_window = \"7d\"\n",
    );
    let cfg_path = dir.write_file(
        "pgward.toml",
        format!(
            "policy = {:?}\n[repo]\nurl = \"file:///nonexistent-pgward-report-test\"\n",
            policy.display().to_string()
        ),
    );
    let (config, cfg_path) = Config::load(Some(&cfg_path)).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let now = chrono::Utc::now();
    let storage = Arc::new(MemoryStorage::new());
    let written = Instant::now();
    let recent = rt.block_on(synthetic(&storage, now));
    eprintln!("synthetic repository written in {:?}", written.elapsed());
    let ctx = Context::with_storage(config, cfg_path, storage);
    let verdict = Verdict::from_reasons(vec![Reason {
        level: Level::Critical,
        text: "WAL hole after the newest backup".into(),
    }]);

    // Of which: reading the catalog (listing 100k keys, decoding 1000 manifests).
    let started = Instant::now();
    let snapshot = rt
        .block_on(pgward::repo::snapshot::Snapshot::load(ctx.storage.as_ref()))
        .unwrap();
    let load = started.elapsed();
    assert_eq!(snapshot.catalog.backups.len(), BACKUPS as usize);
    let mut times = Vec::new();
    let mut html = String::new();
    for _ in 0..3 {
        let started = Instant::now();
        html = rt
            .block_on(pgward::report::render(&ctx, &verdict, 14, now))
            .unwrap();
        times.push(started.elapsed());
    }
    times.sort();
    assert!(
        html.len() < 2 << 20,
        "the page is {} bytes, over 2 MB",
        html.len()
    );
    let page = dir.path().join("big.html");
    std::fs::write(&page, &html).unwrap();
    assert_self_contained(&html);

    let proxy = RecordingProxy::start();
    // What chromium costs on a page with next to nothing in it: its own start.
    let tiny = dir.path().join("tiny.html");
    std::fs::write(&tiny, "<!DOCTYPE html><html><body><p>x</p></body></html>\n").unwrap();
    let baseline = dump_dom(&tiny, &proxy).took;
    let run = dump_dom(&page, &proxy);
    let dom = &run.stdout;
    // Measured here: about 0.4 s more than the empty page. The margin is for a loaded machine;
    // a page that takes seconds to lay out has stopped aggregating.
    assert!(
        run.took < baseline + Duration::from_secs(5),
        "chromium took {:?} on the page, {baseline:?} on an empty one",
        run.took
    );

    assert_eq!(
        tags(dom, "timeline")
            .iter()
            .filter_map(|t| attr(t, "data-timeline"))
            .collect::<Vec<_>>(),
        ["1"]
    );
    let marks = tags(dom, "mark backup");
    let on_marks: Vec<&str> = marks
        .iter()
        .flat_map(|t| attr(t, "data-labels").unwrap().split(' '))
        .collect();
    assert_eq!(
        on_marks, recent,
        "each backup of the last 14 days on one mark"
    );
    assert!(
        marks.len() < recent.len() / 2,
        "{} marks for {} backups: close ones are merged",
        marks.len(),
        recent.len()
    );
    // Ten holes in 21 days, about seven of them in the last 14; all listed as text.
    let holes: usize = tags(dom, "hole")
        .iter()
        .map(|t| attr(t, "data-count").unwrap().parse::<usize>().unwrap())
        .sum();
    assert!((6..=8).contains(&holes), "{holes} holes drawn");
    assert_eq!(dom.matches("<li>hole: ").count(), 10);
    assert!(tags(dom, "coverage").len() <= 20);
    assert_eq!(tags(dom, "mark dump").len(), 14);
    assert!(tags(dom, "mark drill").len() >= 27);
    assert_eq!(
        tags(dom, "backup").len(),
        BACKUPS as usize,
        "every backup in the table"
    );

    let shot = screenshot(&page, &proxy, "1400,1000");
    shot.assert_drawn("hole", HOLE_RED, 24);
    shot.assert_drawn("WAL bar", WAL_BLUE, 20);
    proxy.assert_page_fetched_nothing();
    eprintln!(
        "synthetic repository ({BACKUPS} backups, {SEGMENTS} segments): {} bytes of HTML; \
         render (load + plan + model + HTML, {} build) min {:?} median {:?} of 3, of which \
         the catalog load {load:?}; chromium \
         --dump-dom {:?} (an empty page: {baseline:?}), --screenshot {:?}",
        html.len(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        times[0],
        times[1],
        run.took,
        shot.took
    );
}
