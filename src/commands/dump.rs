//! `pgward dump [--db NAME]... [--json]`: a logical backup of the server's databases.
//!
//! The work is [`crate::dump::run_dump`]; this file only prints the result. The `--json`
//! object is a stable, documented format: fields are only ever added.

use crate::context::Context;
use crate::dump::{DumpOutcome, DumpRequest, run_dump};
use crate::output;
use crate::repo::dumps::StoredObject;
use crate::repo::label::rfc3339;
use crate::units;
use anyhow::Result;
use serde::Serialize;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Dump this database (repeat for several); default: every database that allows
    /// connections, templates excepted.
    #[arg(long = "db", value_name = "NAME")]
    pub databases: Vec<String>,
    /// Print the result as one JSON object (a stable format) instead of a summary.
    #[arg(long)]
    pub json: bool,
}

/// The `--json` output.
#[derive(Debug, Serialize, PartialEq)]
pub struct Summary {
    pub label: String,
    pub start_time: String,
    pub stop_time: String,
    pub server_version: String,
    pub pg_dump_version: String,
    /// Bytes pg_dump and pg_dumpall wrote, all objects.
    pub size: u64,
    /// Compressed bytes stored, all objects.
    pub stored_size: u64,
    pub duration_ms: u64,
    pub databases: Vec<DatabaseSummary>,
    pub globals: StoredObject,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct DatabaseSummary {
    pub name: String,
    pub key: String,
    pub size: u64,
    pub stored_size: u64,
    /// `size / stored_size`, to two decimals.
    pub ratio: f64,
    pub duration_ms: u64,
    pub sha256: String,
    pub toc_entries: u64,
}

impl Summary {
    pub fn of(o: &DumpOutcome) -> Summary {
        let m = &o.manifest;
        Summary {
            label: m.label.to_string(),
            start_time: rfc3339(&m.start_time),
            stop_time: rfc3339(&m.stop_time),
            server_version: m.server_version.clone(),
            pg_dump_version: m.pg_dump_version.clone(),
            size: m.size(),
            stored_size: m.stored_size(),
            duration_ms: o.duration_ms,
            databases: m
                .databases
                .iter()
                .map(|d| DatabaseSummary {
                    name: d.name.clone(),
                    key: d.object.key.clone(),
                    size: d.object.size,
                    stored_size: d.object.stored_size,
                    ratio: ratio(d.object.size, d.object.stored_size),
                    duration_ms: (d.stop_time - d.start_time).num_milliseconds().max(0) as u64,
                    sha256: d.object.sha256.to_hex(),
                    toc_entries: d.toc_entries,
                })
                .collect(),
            globals: m.globals.clone(),
        }
    }

    fn text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = format!(
            "dump {} complete: {}, {} ({} stored) in {:.1} s\n\
             \x20 server PostgreSQL {}, pg_dump {}; every object read back and checked\n",
            self.label,
            units::count(self.databases.len() as u64, "database", "databases"),
            units::bytes(self.size),
            units::bytes(self.stored_size),
            self.duration_ms as f64 / 1000.0,
            self.server_version,
            self.pg_dump_version,
        );
        let width = self
            .databases
            .iter()
            .map(|d| d.name.chars().count())
            .chain([8])
            .max()
            .unwrap_or(8);
        let _ = writeln!(
            out,
            "  {:<width$}  {:>10}  {:>10}  {:>6}  {:>8}",
            "database", "size", "stored", "ratio", "time"
        );
        for d in &self.databases {
            let _ = writeln!(
                out,
                "  {:<width$}  {:>10}  {:>10}  {:>5.1}x  {:>6.1} s",
                d.name,
                units::bytes(d.size),
                units::bytes(d.stored_size),
                d.ratio,
                d.duration_ms as f64 / 1000.0
            );
        }
        let _ = writeln!(
            out,
            "  {:<width$}  {:>10}  {:>10}  {:>5.1}x",
            "(globals)",
            units::bytes(self.globals.size),
            units::bytes(self.globals.stored_size),
            ratio(self.globals.size, self.globals.stored_size)
        );
        out
    }
}

fn ratio(size: u64, stored: u64) -> f64 {
    (size as f64 / stored.max(1) as f64 * 100.0).round() / 100.0
}

pub async fn run(ctx: &Context, args: &Args) -> Result<()> {
    let request = DumpRequest {
        databases: args.databases.clone(),
    };
    let outcome = run_dump(ctx, &request).await?;
    let summary = Summary::of(&outcome);
    let text = if args.json {
        serde_json::to_string_pretty(&summary)? + "\n"
    } else {
        summary.text()
    };
    output::report_done(&format!("dump {}", summary.label), &text);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Sha256Digest;
    use crate::repo::dumps::{DUMP_MANIFEST_VERSION, DatabaseDump, DumpManifest};
    use crate::repo::label::Label;
    use chrono::DateTime;

    #[test]
    fn json_has_the_documented_fields() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().to_utc();
        let object = |key: &str, size, stored_size| StoredObject {
            key: key.into(),
            size,
            stored_size,
            sha256: Sha256Digest::of(b"x"),
        };
        let o = DumpOutcome {
            manifest: DumpManifest {
                format_version: DUMP_MANIFEST_VERSION,
                label: Label::parse("20261201T120000Z").unwrap(),
                system_identifier: 7,
                server_version: "15.18".into(),
                pg_dump_version: "15.18".into(),
                start_time: t("2026-12-01T12:00:00Z"),
                stop_time: t("2026-12-01T12:00:03Z"),
                role_passwords: true,
                globals: object("dumps/20261201T120000Z/globals.sql.zst", 500, 250),
                databases: vec![DatabaseDump {
                    name: "bookedbarber".into(),
                    object: object("dumps/20261201T120000Z/bookedbarber.pgdump.zst", 4000, 1000),
                    toc_entries: 31,
                    start_time: t("2026-12-01T12:00:01Z"),
                    stop_time: t("2026-12-01T12:00:02.5Z"),
                }],
            },
            duration_ms: 3100,
        };
        let s = Summary::of(&o);
        let v = serde_json::to_value(&s).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "databases",
                "duration_ms",
                "globals",
                "label",
                "pg_dump_version",
                "server_version",
                "size",
                "start_time",
                "stop_time",
                "stored_size"
            ]
        );
        let db = &v["databases"][0];
        let mut keys: Vec<&str> = db.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "duration_ms",
                "key",
                "name",
                "ratio",
                "sha256",
                "size",
                "stored_size",
                "toc_entries"
            ]
        );
        assert_eq!(db["ratio"], 4.0);
        assert_eq!(db["duration_ms"], 1500);
        assert_eq!(v["size"], 4500);
        assert_eq!(v["globals"]["stored_size"], 250);
        assert_eq!(v["start_time"], "2026-12-01T12:00:00Z");
        let text = s.text();
        assert!(
            text.contains("dump 20261201T120000Z complete: 1 database"),
            "{text}"
        );
        assert!(
            text.contains("bookedbarber") && text.contains("4.0x"),
            "{text}"
        );
    }
}
