//! Checks `pgward::pg` against files written by a real PostgreSQL, not only against the
//! synthetic bytes of the unit tests: the `pg_control` offsets are compared field by field with
//! `pg_controldata`, and a real WAL segment must pass `wal_page::check_segment`.
//!
//! Binaries come from `$PGWARD_PG_BINDIR`, else `/usr/lib/postgresql/15/bin`. A missing
//! PostgreSQL fails these tests; it never skips them. As root, every PostgreSQL program runs as
//! the `postgres` user through `runuser` (initdb and the server refuse to run as root).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pgward::pg::control::ControlFile;
use pgward::pg::version::read_major_version;
use pgward::pg::wal_page::{self, WalPageError};
use pgward::pg::{Timeline, WalSegmentName};
use tempfile::TempDir;

const DEFAULT_BINDIR: &str = "/usr/lib/postgresql/15/bin";

/// Where the PostgreSQL programs are and how to run them.
struct Pg {
    bindir: PathBuf,
    as_postgres: bool,
}

impl Pg {
    fn locate() -> Pg {
        let bindir = std::env::var_os("PGWARD_PG_BINDIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_BINDIR));
        for tool in ["initdb", "pg_controldata", "pg_ctl", "psql"] {
            assert!(
                bindir.join(tool).is_file(),
                "{} not found: these tests need PostgreSQL (apt-get install postgresql-15) or \
                 PGWARD_PG_BINDIR pointing at its bin directory",
                bindir.join(tool).display()
            );
        }
        let euid = run(Command::new("id").arg("-u"), "id -u");
        Pg {
            bindir,
            as_postgres: euid.trim() == "0",
        }
    }

    /// A command for PostgreSQL program `tool`, run in `cwd` (which the `postgres` user must be
    /// able to enter) with messages in English so `pg_controldata` output can be parsed.
    fn command(&self, tool: &str, cwd: &Path) -> Command {
        let program = self.bindir.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        cmd.current_dir(cwd).env("LC_ALL", "C").env("LANG", "C");
        cmd
    }

    /// A fresh temporary directory under /tmp (short, so a Unix socket path fits) that the
    /// user running PostgreSQL owns.
    fn tempdir(&self) -> TempDir {
        let dir = tempfile::Builder::new()
            .prefix("pgward-pg")
            .tempdir_in("/tmp")
            .expect("create temp dir");
        if self.as_postgres {
            run(
                Command::new("chown").arg("postgres:").arg(dir.path()),
                "chown temp dir to postgres",
            );
        }
        dir
    }

    /// Runs initdb in `dir/data` with `extra` options and returns the data directory.
    fn initdb(&self, dir: &Path, extra: &[&str]) -> PathBuf {
        let data = dir.join("data");
        run(
            self.command("initdb", dir)
                .arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "-A", "trust", "-N"])
                .args(extra),
            "initdb",
        );
        data
    }

    /// `pg_controldata` output as a map from label to value.
    fn controldata(&self, data: &Path) -> HashMap<String, String> {
        let out = run(
            self.command("pg_controldata", data.parent().unwrap())
                .arg(data),
            "pg_controldata",
        );
        out.lines()
            .filter_map(|line| line.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect()
    }

    fn major_version(&self, cwd: &Path) -> u32 {
        // "pg_controldata (PostgreSQL) 15.13 (Debian 15.13-1.pgdg120+1)"
        let out = run(
            self.command("pg_controldata", cwd).arg("--version"),
            "pg_controldata --version",
        );
        let version = out
            .split_once(") ")
            .map(|(_, rest)| rest)
            .unwrap_or_default();
        let major = version
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap_or_default();
        major
            .parse()
            .unwrap_or_else(|_| panic!("cannot read a version from {out:?}"))
    }
}

/// Runs `cmd` and returns its stdout; panics with its output if it fails.
fn run(cmd: &mut Command, what: &str) -> String {
    let out: Output = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {cmd:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Stops the server when dropped, also when the test panics, so no postmaster outlives it.
struct RunningServer<'a> {
    pg: &'a Pg,
    data: PathBuf,
    cwd: PathBuf,
}

impl Drop for RunningServer<'_> {
    fn drop(&mut self) {
        // Errors are ignored: after a clean stop the server is simply not running any more.
        let _ = self
            .pg
            .command("pg_ctl", &self.cwd)
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// Parses the data directory's pg_control with pgward and compares every field with
/// `pg_controldata`.
fn assert_matches_controldata(pg: &Pg, data: &Path) -> ControlFile {
    let control = ControlFile::read(data).expect("parse real pg_control");
    let expected = pg.controldata(data);
    let field = |label: &str| -> &str {
        expected
            .get(label)
            .unwrap_or_else(|| panic!("pg_controldata printed no {label:?}: {expected:#?}"))
    };
    let seg_size = u64::from(control.xlog_seg_size);
    let redo_file = WalSegmentName::from_segno(
        control.checkpoint_timeline,
        control.checkpoint_redo.segment_no(seg_size),
        seg_size,
    );
    let pairs = [
        (
            "pg_control version number",
            control.pg_control_version.to_string(),
        ),
        (
            "Catalog version number",
            control.catalog_version.to_string(),
        ),
        (
            "Database system identifier",
            control.system_identifier.to_string(),
        ),
        ("Database cluster state", control.state.to_string()),
        (
            "Latest checkpoint location",
            control.checkpoint_lsn.to_string(),
        ),
        (
            "Latest checkpoint's REDO location",
            control.checkpoint_redo.to_string(),
        ),
        ("Latest checkpoint's REDO WAL file", redo_file.to_string()),
        (
            "Latest checkpoint's TimeLineID",
            control.checkpoint_timeline.0.to_string(),
        ),
        ("Database block size", control.blcksz.to_string()),
        ("WAL block size", control.xlog_blcksz.to_string()),
        ("Bytes per WAL segment", control.xlog_seg_size.to_string()),
        (
            "Data page checksum version",
            control.data_checksum_version.to_string(),
        ),
    ];
    for (label, ours) in pairs {
        assert_eq!(ours, field(label), "{label} differs from pg_controldata");
    }
    assert_eq!(
        read_major_version(data).expect("read PG_VERSION"),
        pg.major_version(data.parent().unwrap())
    );
    control
}

#[test]
fn pg_control_matches_pg_controldata() {
    let pg = Pg::locate();
    let dir = pg.tempdir();
    let data = pg.initdb(dir.path(), &[]);
    let control = assert_matches_controldata(&pg, &data);
    assert_eq!(control.data_checksum_version, 0);
    assert_eq!(control.xlog_seg_size, 16 * 1024 * 1024);
    assert_eq!(control.checkpoint_timeline, Timeline(1));
}

#[test]
fn pg_control_with_data_checksums() {
    let pg = Pg::locate();
    let dir = pg.tempdir();
    let data = pg.initdb(dir.path(), &["--data-checksums"]);
    let control = assert_matches_controldata(&pg, &data);
    assert_eq!(control.data_checksum_version, 1);
}

#[test]
fn pg_control_with_32_mib_segments() {
    let pg = Pg::locate();
    let dir = pg.tempdir();
    let data = pg.initdb(dir.path(), &["--wal-segsize=32"]);
    let control = assert_matches_controldata(&pg, &data);
    assert_eq!(control.xlog_seg_size, 32 * 1024 * 1024);
}

#[test]
fn real_wal_segments_pass_check_segment() {
    let pg = Pg::locate();
    let dir = pg.tempdir();
    let data = pg.initdb(dir.path(), &[]);
    let socket_dir = dir.path().to_str().expect("utf-8 temp path");
    // wal_keep_size: without it the shutdown checkpoint recycles the switched-out segment 1
    // under a future name, and there would be no complete old segment left to check.
    let server_opts = format!(
        "-c listen_addresses='' -c unix_socket_directories='{socket_dir}' -c fsync=off \
         -c wal_keep_size=1GB"
    );
    let log = dir.path().join("server.log");
    {
        // The guard exists before the start so that a start that half-worked is cleaned up too.
        let _server = RunningServer {
            pg: &pg,
            data: data.clone(),
            cwd: dir.path().to_owned(),
        };
        let started = pg
            .command("pg_ctl", dir.path())
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o", &server_opts, "start"])
            .output()
            .expect("run pg_ctl start");
        assert!(
            started.status.success(),
            "pg_ctl start failed: {}\n{}\nserver log:\n{}",
            String::from_utf8_lossy(&started.stdout),
            String::from_utf8_lossy(&started.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        run(
            pg.command("psql", dir.path())
                .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-U", "postgres"])
                .args(["-d", "postgres", "-h", socket_dir])
                .args([
                    "-c",
                    "create table t as select generate_series(1, 1000) as i",
                ])
                .args(["-c", "select pg_switch_wal()"]),
            "psql",
        );
        run(
            pg.command("pg_ctl", dir.path())
                .arg("-D")
                .arg(&data)
                .args(["-m", "fast", "-w", "stop"]),
            "pg_ctl stop",
        );
    }

    let control = assert_matches_controldata(&pg, &data);
    let seg_size = u64::from(control.xlog_seg_size);
    let sysid = control.system_identifier;
    // After the switch and the shutdown checkpoint, every segment up to the one holding the
    // checkpoint is complete WAL (later names may be pre-allocated, zero-filled files).
    let major = pg.major_version(dir.path());
    let last = control.checkpoint_lsn.segment_no(seg_size);
    assert!(last >= 2, "pg_switch_wal did not move to a new segment");
    for segno in 1..=last {
        let name = WalSegmentName::from_segno(Timeline(1), segno, seg_size);
        let bytes = std::fs::read(data.join("pg_wal").join(name.to_string()))
            .unwrap_or_else(|e| panic!("read segment {name}: {e}"));
        let header = wal_page::check_segment(&bytes, &name, sysid, control.xlog_seg_size)
            .unwrap_or_else(|e| panic!("real segment {name} refused: {e}"));
        assert_eq!(header.major_version(), Some(major), "{name}");
        assert_eq!(header.sysid, sysid);
        assert_eq!(header.pageaddr, name.start_lsn(seg_size));

        let err = wal_page::check_segment(&bytes, &name, sysid ^ 1, control.xlog_seg_size)
            .expect_err("a wrong system identifier must be refused");
        assert!(
            matches!(err, WalPageError::SysidMismatch { found, .. } if found == sysid),
            "{err}"
        );

        let renamed = name.next(seg_size);
        let err = wal_page::check_segment(&bytes, &renamed, sysid, control.xlog_seg_size)
            .expect_err("content under another segment's name must be refused");
        assert!(
            matches!(err, WalPageError::PageAddrMismatch { .. }),
            "{err}"
        );
    }
}
