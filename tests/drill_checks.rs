//! A drill's scratch server against a real PostgreSQL 15: its configuration is pgward's own
//! (`drill::isolation`) and its checks (`drill::checks`) pass only on evidence.
//!
//! The source has production-like settings the copy must not inherit or trip over: more
//! `max_connections` than the default, limits set in an `include_dir` that exists only on the
//! source host, TLS on with certificate files that are not here, archiving and a primary. The copy
//! starts as a standby with the source's limits (read from pg_control), promotes, does not
//! archive; then every check runs on it: ok, failed and skipped, each with what it saw.

#[path = "common/pg.rs"]
mod pg;

use pg::{InitOpts, PgCluster, TestDir, pg_bins};
use pgward::drill::checks;
use pgward::drill::expect::Expect;
use pgward::drill::file::{RowsCheck, SqlCheck, Tolerance};
use pgward::drill::isolation::{isolate_files, read_limits, scratch_settings};
use pgward::drill::report::{CheckResult, CheckStatus};
use pgward::drill::source::SourceDb;
use pgward::pg::conf;
use pgward::pg::scratch::{Initdb, ScratchDir, ScratchSpec};
use std::time::Duration;

fn assert_status(r: &CheckResult, status: CheckStatus, detail_has: &str) {
    assert!(
        r.status == status && r.detail.contains(detail_has),
        "{}: wanted {status:?} with `{detail_has}`, got {:?}: {}",
        r.name,
        r.status,
        r.detail
    );
}

fn source_db(src: &PgCluster) -> SourceDb {
    let conninfo = format!(
        "host={} port={} user=postgres dbname=postgres",
        src.socket_dir.display(),
        src.port
    );
    SourceDb::new(pg_bins().clone(), &conninfo).unwrap()
}

#[test]
fn an_isolated_copy_of_a_production_like_source_promotes_and_passes_its_checks() {
    let t = TestDir::new("dc-iso");
    let conf_d = t.subdir("src-conf.d");
    t.write_file(
        "src-conf.d/limits.conf",
        "max_prepared_transactions = 7\nmax_locks_per_transaction = 128\n",
    );
    let mut src = PgCluster::init(
        &t,
        "src",
        InitOpts {
            extra_conf: vec![
                "max_connections = 300".to_string(),
                conf::setting_line("include_dir", &conf_d.to_string_lossy()),
            ],
            ..InitOpts::default()
        },
    );
    src.start();
    assert_eq!(src.psql("show max_prepared_transactions"), "7");
    src.psql("create database shop");
    let shop = |sql: &str| {
        let mut cmd = pg_bins().command("psql");
        cmd.current_dir("/");
        cmd.args(["-h", &src.socket_dir.to_string_lossy()])
            .args(["-p", &src.port.to_string(), "-U", "postgres", "-d", "shop"])
            .args(["-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql]);
        pg::run_ok(&mut cmd, Duration::from_secs(60));
    };
    shop(
        "create table items (id int primary key, name text); \
          insert into items select g, 'item ' || g from generate_series(1, 1000) g",
    );

    let dir = ScratchDir::create(&t.path().join("drills"), "iso", pg_bins().run_as()).unwrap();
    let root = dir.root().to_path_buf();
    let data = dir.data_dir();
    src.pg_basebackup(&data, &["-X", "stream"]);
    // What only the source host has, and what points at production.
    std::fs::remove_dir_all(&conf_d).unwrap();
    conf::append_lines(
        &data.join("postgresql.conf"),
        &[
            "ssl = on".to_string(),
            "ssl_cert_file = '/nonexistent/server.crt'".to_string(),
            "ssl_key_file = '/nonexistent/server.key'".to_string(),
            "archive_mode = on".to_string(),
            "archive_command = 'false'".to_string(),
            "primary_conninfo = 'host=/nonexistent port=1'".to_string(),
            "synchronous_standby_names = '*'".to_string(),
            "include_if_exists 'also-only-on-the-source.conf'".to_string(),
        ],
        "production settings (test)",
        pg_bins().run_as(),
    )
    .unwrap();

    let limits = read_limits(pg_bins(), &data).unwrap();
    assert_eq!(
        (
            limits.max_connections,
            limits.max_prepared_xacts,
            limits.max_locks_per_xact,
            limits.data_checksums
        ),
        (300, 7, 128, false)
    );
    let notes = isolate_files(&data, pg_bins().run_as()).unwrap();
    assert!(
        notes.iter().any(|n| n.contains("include_dir"))
            && notes.iter().any(|n| n.contains("include_if_exists")),
        "{notes:?}"
    );
    let extra = [("work_mem".to_string(), "8MB".to_string())];
    let mut spec = ScratchSpec::new(pg_bins().clone(), &data, &dir.socket_dir()).unwrap();
    spec.log_file = dir.log_file();
    spec.settings = scratch_settings(&limits, &data, &extra).unwrap();
    let cluster = spec.adopt().unwrap();
    let signal = data.join("standby.signal");
    std::fs::write(&signal, b"").unwrap();
    pg::chown_postgres(&signal);

    let running = cluster.start().unwrap();
    dir.record_postmaster(&running.postmaster()).unwrap();
    let show = |name: &str| running.psql(&format!("show {name}")).unwrap();
    assert_eq!(running.value("select pg_is_in_recovery()").unwrap(), "t");
    for (name, want) in [
        ("max_connections", "300"),
        ("max_prepared_transactions", "7"),
        ("max_locks_per_transaction", "128"),
        ("archive_mode", "off"),
        ("primary_conninfo", ""),
        ("synchronous_standby_names", ""),
        ("ssl", "off"),
        ("listen_addresses", ""),
        ("cluster_name", "pgward-drill"),
        ("work_mem", "8MB"),
    ] {
        assert_eq!(show(name), want, "{name}");
    }
    assert_eq!(
        show("hba_file"),
        data.join("pgward_drill_hba.conf").to_string_lossy()
    );
    running.promote(Duration::from_secs(60)).unwrap();
    assert_eq!(show("archive_mode"), "off");

    // The checks, on the promoted copy.
    let r = checks::amcheck(&running);
    assert_status(&r, CheckStatus::Ok, "relations in");
    let (r, bytes) = checks::read_all(&running);
    assert_status(&r, CheckStatus::Ok, "databases read through pg_dump");
    assert!(bytes > 8192, "{bytes}");

    let sql = |query: &str, expect: &str| SqlCheck {
        database: "shop".into(),
        query: query.into(),
        expect: Expect::Equals(expect.into()),
    };
    let r = checks::sql(&running, &sql("select count(*) from items", "1000"));
    assert_eq!(r.name, "sql: select count(*) from items");
    assert_status(&r, CheckStatus::Ok, "1000");
    let r = checks::sql(&running, &sql("select count(*) from items", "999"));
    assert_status(&r, CheckStatus::Failed, "expected `= 999`, got `1000`");
    let r = checks::sql(&running, &sql("select nope from items", "1"));
    assert_status(&r, CheckStatus::Failed, "nope");

    let source = source_db(&src);
    let rows = |table: &str, tolerance| RowsCheck {
        database: "shop".into(),
        table: table.into(),
        tolerance,
    };
    let r = checks::rows(&source, &running, &rows("items", Tolerance::Rows(0)));
    assert_eq!(r.name, "rows: shop.items");
    assert_status(&r, CheckStatus::Ok, "copy 1000, source 1000");
    // The source moves on after the backup.
    shop("insert into items select g, 'new' from generate_series(1001, 1010) g");
    let r = checks::rows(&source, &running, &rows("public.items", Tolerance::Rows(0)));
    assert_status(
        &r,
        CheckStatus::Failed,
        "the copy has 1000 rows, the source 1010",
    );
    let r = checks::rows(&source, &running, &rows("items", Tolerance::Percent(1.0)));
    assert_status(&r, CheckStatus::Ok, "copy 1000, source 1010");
    let r = checks::rows(&source, &running, &rows("missing", Tolerance::Rows(0)));
    assert_status(&r, CheckStatus::Failed, "cannot count the rows in the copy");

    running.stop().unwrap();
    let r = checks::checksums(
        pg_bins(),
        &data,
        limits.data_checksums,
        Duration::from_secs(120),
    );
    assert_status(&r, CheckStatus::Skipped, "no data checksums");
    assert_eq!(r.seconds, 0.0);
    drop(cluster);
    drop(dir);
    assert!(!root.exists());
}

#[test]
fn checksums_pass_on_a_sound_copy_and_fail_on_a_flipped_byte() {
    let t = TestDir::new("dc-sum");
    let dir = ScratchDir::create(&t.path().join("drills"), "sum", pg_bins().run_as()).unwrap();
    let mut spec = ScratchSpec::new(pg_bins().clone(), &dir.data_dir(), &dir.socket_dir()).unwrap();
    spec.log_file = dir.log_file();
    let cluster = spec
        .initdb(&Initdb {
            data_checksums: true,
        })
        .unwrap();
    let running = cluster.start().unwrap();
    running
        .psql("create table t as select g as id, repeat('x', 100) as pad from generate_series(1, 2000) g")
        .unwrap();
    let file = dir
        .data_dir()
        .join(running.value("select pg_relation_filepath('t')").unwrap());
    running.psql("checkpoint").unwrap();
    running.stop().unwrap();

    let r = checks::checksums(pg_bins(), &dir.data_dir(), true, Duration::from_secs(120));
    assert_status(&r, CheckStatus::Ok, "blocks scanned, no bad checksum");

    // One byte in the tuple area of the table's first page.
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[4000] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    let r = checks::checksums(pg_bins(), &dir.data_dir(), true, Duration::from_secs(120));
    assert_status(&r, CheckStatus::Failed, "checksum verification failed");
}

#[test]
fn amcheck_fails_on_a_corrupt_heap_page_and_says_what_it_found() {
    let t = TestDir::new("dc-amck");
    let dir = ScratchDir::create(&t.path().join("drills"), "amck", pg_bins().run_as()).unwrap();
    let mut spec = ScratchSpec::new(pg_bins().clone(), &dir.data_dir(), &dir.socket_dir()).unwrap();
    spec.log_file = dir.log_file();
    let cluster = spec.initdb(&Initdb::default()).unwrap();
    let running = cluster.start().unwrap();
    running
        .psql(
            "create table t (id int primary key, pad text); \
               insert into t select g, repeat('y', 50) from generate_series(1, 500) g",
        )
        .unwrap();
    let file = dir
        .data_dir()
        .join(running.value("select pg_relation_filepath('t')").unwrap());
    running.psql("checkpoint").unwrap();
    running.stop().unwrap();
    // The first line pointers of the table's first page made redirects to nowhere (no data
    // checksums, so only amcheck can notice).
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[24..40].fill(0x01);
    std::fs::write(&file, &bytes).unwrap();
    let running = cluster.start().unwrap();
    let r = checks::amcheck(&running);
    assert_status(&r, CheckStatus::Failed, "pg_amcheck exited with");
    assert!(
        r.detail
            .contains("heap table \"postgres.public.t\", block 0"),
        "{}",
        r.detail
    );
}
