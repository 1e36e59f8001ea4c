//! `pgward::pg::scratch` against a real PostgreSQL 15: the guard's promise that a server it
//! started does not outlive it, checked by PID (and process start time) rather than by the pid
//! file — a guard dropped while a panic unwinds stops its server, and a start that fails stops
//! the postmaster it had already started — and `pg::conf`'s quoting, read back by the server.

#[path = "common/pg.rs"]
mod pg;

use pg::{TestDir, pg_bins};
use pgward::pg::conf;
use pgward::pg::scratch::postmaster::Postmaster;
use pgward::pg::scratch::{AfterUse, Initdb, ScratchCluster, ScratchSpec};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn spec(dir: &TestDir, name: &str) -> ScratchSpec {
    ScratchSpec::new(
        pg_bins().clone(),
        &dir.path().join(name),
        &dir.subdir(&format!("{name}.s")),
    )
    .unwrap()
}

fn initdb(spec: ScratchSpec) -> ScratchCluster {
    spec.initdb(&Initdb::default()).unwrap()
}

#[test]
fn a_guard_dropped_during_a_panic_stops_its_server() {
    let dir = TestDir::new("scr-panic");
    let cluster = initdb(spec(&dir, "p"));
    let seen = Mutex::new(None);
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let running = cluster.start().unwrap();
        *seen.lock().unwrap() = Some(running.postmaster());
        assert_eq!(running.psql("select 1").unwrap(), "1");
        panic!("a step failed while the server ran");
    }));
    assert!(unwound.is_err());
    let postmaster = seen.into_inner().unwrap().expect("the server started");
    assert!(
        !postmaster.is_alive(),
        "postmaster {} still runs after its guard was dropped\n{}",
        postmaster.pid(),
        cluster.log_tail(20)
    );
    assert_eq!(cluster.postmaster(), None);
    // The guard's first try is the spec's (fast): a clean shutdown, not a kill.
    assert!(
        cluster
            .server_log()
            .contains("received fast shutdown request"),
        "{}",
        cluster.log_tail(20)
    );
}

#[test]
fn a_removed_data_directory_goes_only_after_its_server() {
    let dir = TestDir::new("scr-rm");
    let mut spec = spec(&dir, "r");
    spec.after_use = AfterUse::RemoveDataDir;
    let datadir = spec.datadir.clone();
    // The guard outlives the last cluster handle: the directory must wait for the server.
    let running = initdb(spec).start().unwrap();
    assert!(datadir.join("PG_VERSION").is_file());
    let postmaster = running.postmaster();
    drop(running);
    assert!(!postmaster.is_alive(), "postmaster {}", postmaster.pid());
    assert!(!datadir.exists(), "{} is still there", datadir.display());
}

#[test]
fn a_start_that_fails_leaves_no_postmaster_behind() {
    let dir = TestDir::new("scr-fail");
    let mut spec = spec(&dir, "f");
    // Archive recovery whose restore_command hangs: the postmaster runs, but it never accepts
    // connections, so `pg_ctl start -w` gives up after its timeout with the server still there.
    spec.start_timeout = Duration::from_secs(2);
    let spec = spec.setting("restore_command", "sleep 60");
    let cluster = initdb(spec);
    std::fs::write(cluster.datadir().join("recovery.signal"), b"").unwrap();
    pg::chown_postgres(&cluster.datadir().join("recovery.signal"));

    // Every postmaster the start brings up, seen through its pid file while it starts.
    let seen = Arc::new(Mutex::new(Vec::<Postmaster>::new()));
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (seen, done, datadir) = (seen.clone(), done.clone(), cluster.datadir().to_owned());
        std::thread::spawn(move || {
            while !done.load(Ordering::Acquire) {
                if let Some(pm) = Postmaster::of_datadir(&datadir) {
                    let mut seen = seen.lock().unwrap();
                    if !seen.contains(&pm) {
                        seen.push(pm);
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let err = cluster
        .start()
        .expect_err("the start must fail")
        .to_string();
    done.store(true, Ordering::Release);
    watcher.join().unwrap();

    let seen = seen.lock().unwrap();
    assert!(
        !seen.is_empty(),
        "no postmaster was seen: the test proves nothing\n{err}"
    );
    for pm in seen.iter() {
        assert!(
            !pm.is_alive(),
            "postmaster {} outlived the failed start",
            pm.pid()
        );
    }
    assert!(
        err.contains("did not start") && err.contains("was stopped"),
        "{err}"
    );
}

#[test]
fn settings_quoted_by_pg_conf_read_back_unchanged() {
    let dir = TestDir::new("scr-conf");
    let values = [
        "it's",
        r"C:\dir\",
        r"both ' and \ and '' and \\",
        "tab\there %p",
        "line\nbreak",
    ];
    let mut spec = spec(&dir, "q");
    for (i, v) in values.iter().enumerate() {
        spec = spec.setting(&format!("pgward.v{i}"), *v);
    }
    let cluster = initdb(spec.clone());
    let running = cluster.start().unwrap();
    for (i, v) in values.iter().enumerate() {
        let got = running
            .value(&format!("select current_setting('pgward.v{i}')"))
            .unwrap();
        assert_eq!(got, *v, "pgward.v{i}");
    }
    assert_eq!(running.psql("show port").unwrap(), spec.port.to_string());
    running.stop().unwrap();

    // Adopting the directory again replaces the values rather than stacking them.
    let again = spec.setting("pgward.v0", "second").adopt().unwrap();
    let auto_conf = std::fs::read_to_string(again.datadir().join(conf::AUTO_CONF)).unwrap();
    assert_eq!(auto_conf.matches("pgward.v0 =").count(), 1, "{auto_conf}");
    let running = again.start().unwrap();
    assert_eq!(running.psql("show pgward.v0").unwrap(), "second");
    running.stop().unwrap();
}

#[test]
fn a_standby_stays_in_recovery_until_promoted() {
    let dir = TestDir::new("scr-promote");
    let cluster = initdb(spec(&dir, "s"));
    let signal = cluster.datadir().join("standby.signal");
    std::fs::write(&signal, b"").unwrap();
    pg::chown_postgres(&signal);
    // A hot standby with nothing to replay: `pg_ctl start -w` returns, recovery does not end.
    let running = cluster.start().unwrap();
    assert_eq!(running.value("select pg_is_in_recovery()").unwrap(), "t");
    let err = running
        .wait_recovery_done(Duration::from_secs(1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("still in recovery after"), "{err}");
    running.promote(Duration::from_secs(30)).unwrap();
    assert_eq!(running.value("select pg_is_in_recovery()").unwrap(), "f");
    assert!(
        running
            .log_since_start()
            .contains("database system is ready to accept connections")
    );
    running.stop().unwrap();
}
