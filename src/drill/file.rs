//! Drill files (`restore-tests/*.toml`): what one drill restores, to which target, what it
//! checks and what it must take at most. Parsed the way pgward.toml is: unknown keys and bad
//! values are refused with the file and line.
//!
//! The raw structs below mirror the file (`deny_unknown_fields`); [`Drill`] is what the run
//! uses, with every default filled in and the rules that span keys checked (a dump drill takes
//! no `target` or `marker_table`, a backup drill no `databases`). Names that reach a repository
//! key or SQL — the drill's `name`, `marker_table`, a rows check's `table` — are validated here,
//! so nothing later has to quote or escape them.

use crate::config;
use crate::drill::expect::Expect;
use crate::repo::label::Label;
use anyhow::{Result, anyhow, bail};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where every error sends the reader.
const HINT: &str = "hint: the keys of a drill file are described in restore-tests/README.md";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);
const DEFAULT_DATABASE: &str = "postgres";
/// A drill's name goes into its report's key and label.
const MAX_NAME: usize = 64;
/// A marker drill's name also goes into its restore point, `pgward-drill-<label>`, and
/// PostgreSQL refuses restore point names over 63 bytes (`MAXFNAMELEN - 1`): 63 − the 13 of
/// `pgward-drill-` − the 17 of `20261202T031500Z-` − 4 for a label's `-N` suffix.
const MAX_MARKER_NAME: usize = 29;

/// One drill, as its file describes it, with every default filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Drill {
    /// `name` (default: the file's stem).
    pub name: String,
    /// The file it was read from.
    pub origin: PathBuf,
    pub from: DrillFrom,
    /// `backup`: the label of the backup (or, for `from = "dump"`, the dump) to restore;
    /// `None` = the newest complete one.
    pub backup: Option<String>,
    pub target: Target,
    /// `database`: where a marker drill commits its markers (default `postgres`).
    pub database: String,
    /// `marker_table` (default `pgward_drill`, created by pgward in `database`): an SQL
    /// identifier, optionally schema-qualified (`[A-Za-z_][A-Za-z0-9_]*`, ≤ 63 bytes a part),
    /// used as written. Only on marker drills.
    pub marker_table: Option<String>,
    /// `databases`: a dump drill restores these databases of the dump (empty = all of them).
    pub databases: Vec<String>,
    /// `timeout`: the whole drill (default 1h).
    pub timeout: Duration,
    pub max_rto: Option<Duration>,
    pub max_rpo: Option<Duration>,
    /// `scratch_dir`: where the scratch copy goes (default `[drill] scratch_dir`).
    pub scratch_dir: Option<PathBuf>,
    /// `[settings]`: extra settings for the scratch server, applied after pgward's own
    /// isolation settings except those isolation forbids overriding.
    pub settings: Vec<(String, String)>,
    pub checks: Checks,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrillFrom {
    Backup,
    Dump,
}

impl DrillFrom {
    pub fn as_str(self) -> &'static str {
        match self {
            DrillFrom::Backup => "backup",
            DrillFrom::Dump => "dump",
        }
    }
}

/// `target`: `"marker"`, `"latest"`, `"immediate"`, `{ time = "RFC 3339" }`,
/// `{ ago = "15m" }` (a time relative to the drill's start) or `{ name = "restore point" }`.
/// Dump drills take no target (a dump is one point): theirs is always `Latest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Marker,
    Latest,
    Immediate,
    Time(DateTime<Utc>),
    Ago(Duration),
    Name(String),
}

/// `[checks]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Checks {
    /// `pg_amcheck --heapallindexed` on every database (default true).
    pub amcheck: bool,
    /// Every table read through `pg_dump` into a hashing sink (default false).
    pub read_all: bool,
    /// `pg_checksums --check` on the stopped copy when the cluster has data checksums
    /// (default true; "skipped" when it has none).
    pub checksums: bool,
    pub sql: Vec<SqlCheck>,
    pub rows: Vec<RowsCheck>,
}

/// `[[checks.sql]]`: a query whose first column of the first row must meet `expect`.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlCheck {
    pub database: String,
    pub query: String,
    pub expect: Expect,
}

/// `[[checks.rows]]`: `count(*)` of `table` in the copy compared with the source.
#[derive(Debug, Clone, PartialEq)]
pub struct RowsCheck {
    pub database: String,
    /// An SQL identifier, optionally schema-qualified, validated like `marker_table`.
    pub table: String,
    pub tolerance: Tolerance,
}

/// How far the copy's row count may be from the source's: `tolerance = 100` (rows) or
/// `tolerance = "5%"` (of the source's count). Default 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tolerance {
    Rows(u64),
    Percent(f64),
}

impl Default for Tolerance {
    fn default() -> Tolerance {
        Tolerance::Rows(0)
    }
}

// ---- the file as written ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DrillFile {
    #[serde(default, deserialize_with = "de_name")]
    name: Option<String>,
    #[serde(default)]
    from: FromFile,
    #[serde(default, deserialize_with = "de_label")]
    backup: Option<String>,
    #[serde(default, deserialize_with = "de_target")]
    target: Option<Target>,
    #[serde(default, deserialize_with = "de_database")]
    database: Option<String>,
    #[serde(default, deserialize_with = "de_opt_identifier")]
    marker_table: Option<String>,
    #[serde(default, deserialize_with = "de_databases")]
    databases: Option<Vec<String>>,
    #[serde(default, deserialize_with = "de_duration")]
    timeout: Option<Duration>,
    #[serde(default, deserialize_with = "de_duration")]
    max_rto: Option<Duration>,
    #[serde(default, deserialize_with = "de_duration")]
    max_rpo: Option<Duration>,
    #[serde(default, deserialize_with = "de_scratch_dir")]
    scratch_dir: Option<PathBuf>,
    #[serde(default, deserialize_with = "de_settings")]
    settings: Vec<(String, String)>,
    #[serde(default)]
    checks: ChecksFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum FromFile {
    #[default]
    Backup,
    Dump,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChecksFile {
    #[serde(default = "yes")]
    amcheck: bool,
    #[serde(default)]
    read_all: bool,
    #[serde(default = "yes")]
    checksums: bool,
    #[serde(default)]
    sql: Vec<SqlFile>,
    #[serde(default)]
    rows: Vec<RowsFile>,
}

impl Default for ChecksFile {
    fn default() -> ChecksFile {
        ChecksFile {
            amcheck: true,
            read_all: false,
            checksums: true,
            sql: Vec::new(),
            rows: Vec::new(),
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlFile {
    #[serde(default, deserialize_with = "de_database")]
    database: Option<String>,
    #[serde(deserialize_with = "de_query")]
    query: String,
    #[serde(deserialize_with = "de_expect")]
    expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RowsFile {
    #[serde(default, deserialize_with = "de_database")]
    database: Option<String>,
    #[serde(deserialize_with = "de_identifier")]
    table: String,
    #[serde(default, deserialize_with = "de_tolerance")]
    tolerance: Tolerance,
}

/// Where the keys that rules across keys concern are written, to name their line.
#[derive(Debug, Default, Deserialize)]
struct KeySpans {
    target: Option<toml::Spanned<toml::Value>>,
    marker_table: Option<toml::Spanned<toml::Value>>,
    databases: Option<toml::Spanned<toml::Value>>,
}

fn custom<E: serde::de::Error>(m: impl std::fmt::Display) -> E {
    E::custom(m)
}

/// `[A-Za-z0-9_-]+`, at most [`MAX_NAME`] characters.
fn check_name(s: &str) -> std::result::Result<(), String> {
    if s.is_empty()
        || s.len() > MAX_NAME
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!(
            "`{s}` is not a drill name: it must be 1 to {MAX_NAME} letters, digits, `_` or `-` \
             (it goes into the report's key)"
        ));
    }
    Ok(())
}

fn de_name<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    check_name(&s).map_err(custom)?;
    Ok(Some(s))
}

fn de_label<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    let label = Label::parse(&s).map_err(custom)?;
    Ok(Some(label.as_str().to_string()))
}

/// A database name: what PostgreSQL accepts (1 to 63 bytes, no NUL).
fn check_database(s: &str) -> std::result::Result<(), String> {
    if s.is_empty() || s.len() > 63 || s.contains('\0') {
        return Err(format!(
            "`{s}` is not a database name (1 to 63 bytes, no NUL)"
        ));
    }
    Ok(())
}

fn de_database<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    check_database(&s).map_err(custom)?;
    Ok(Some(s))
}

fn de_databases<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Vec<String>>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    let mut seen = std::collections::BTreeSet::new();
    for db in &v {
        check_database(db).map_err(custom)?;
        if !seen.insert(db) {
            return Err(custom(format!("database `{db}` is listed twice")));
        }
    }
    Ok(Some(v))
}

/// An SQL identifier, optionally schema-qualified, that needs no quoting: each part
/// `[A-Za-z_][A-Za-z0-9_]*` and at most 63 bytes.
fn check_identifier(s: &str) -> std::result::Result<(), String> {
    let parts: Vec<&str> = s.split('.').collect();
    let part_ok = |p: &&str| {
        !p.is_empty()
            && p.len() <= 63
            && p.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if parts.len() > 2 || !parts.iter().all(part_ok) {
        return Err(format!(
            "`{s}` is not a table name pgward uses: write an unquoted SQL identifier, \
             optionally schema-qualified (`appointments`, `app.appointments`; letters, digits \
             and `_`, not starting with a digit)"
        ));
    }
    Ok(())
}

fn de_identifier<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    let s = String::deserialize(d)?;
    check_identifier(&s).map_err(custom)?;
    Ok(s)
}

fn de_opt_identifier<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<String>, D::Error> {
    de_identifier(d).map(Some)
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    let dur = config::parse_duration(&s).map_err(custom)?;
    if dur.is_zero() {
        return Err(custom(format!(
            "`{s}` is zero: every drill would fail it; leave the key out for no limit"
        )));
    }
    Ok(Some(dur))
}

fn de_scratch_dir<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<PathBuf>, D::Error> {
    let p = PathBuf::deserialize(d)?;
    if !p.is_absolute() {
        return Err(custom(format!(
            "`{}` is relative: the scratch directory must be an absolute path (a drill removes \
             what it makes there)",
            p.display()
        )));
    }
    Ok(Some(p))
}

fn de_query<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim().is_empty() {
        return Err(custom("the query is empty"));
    }
    Ok(s)
}

fn de_expect<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Expect, D::Error> {
    String::deserialize(d)?.parse().map_err(custom)
}

/// `[settings]`: name → string, integer, float or boolean, as the text postgresql.conf takes.
fn de_settings<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<(String, String)>, D::Error> {
    let table = BTreeMap::<String, toml::Value>::deserialize(d)?;
    let mut out = Vec::with_capacity(table.len());
    for (name, value) in table {
        let name_ok = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        if !name_ok {
            return Err(custom(format!("`{name}` is not a PostgreSQL setting name")));
        }
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => if b { "on" } else { "off" }.to_string(),
            other => {
                return Err(custom(format!(
                    "setting `{name}` is a {}; give a string, a number or a boolean",
                    other.type_str()
                )));
            }
        };
        out.push((name, text));
    }
    Ok(out)
}

/// `tolerance = 100` (rows) or `"5%"` (of the source's count, 0 to 100).
fn de_tolerance<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Tolerance, D::Error> {
    const HOW: &str = "write a number of rows (`tolerance = 100`) or a percentage \
                       (`tolerance = \"1%\"`)";
    match toml::Value::deserialize(d)? {
        toml::Value::Integer(n) if n >= 0 => Ok(Tolerance::Rows(n as u64)),
        toml::Value::Integer(n) => Err(custom(format!("tolerance {n} is negative; {HOW}"))),
        toml::Value::String(s) => {
            let pct = s
                .trim()
                .strip_suffix('%')
                .and_then(|n| n.trim().parse::<f64>().ok())
                .filter(|p| (0.0..=100.0).contains(p));
            pct.map(Tolerance::Percent).ok_or_else(|| {
                custom(format!(
                    "tolerance `{s}` is not a percentage from 0% to 100%; {HOW}"
                ))
            })
        }
        other => Err(custom(format!(
            "tolerance is a {}; {HOW}",
            other.type_str()
        ))),
    }
}

/// `target`: a string or a one-key table.
fn de_target<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<Target>, D::Error> {
    const HOW: &str = "write \"marker\", \"latest\", \"immediate\", { time = \"2026-12-01T12:00:00Z\" }, \
                       { ago = \"15m\" } or { name = \"restore point\" }";
    let target = match toml::Value::deserialize(d)? {
        toml::Value::String(s) => match s.as_str() {
            "marker" => Target::Marker,
            "latest" => Target::Latest,
            "immediate" => Target::Immediate,
            _ => return Err(custom(format!("`{s}` is not a target; {HOW}"))),
        },
        toml::Value::Table(t) => {
            let mut entries = t.into_iter();
            let (Some((key, value)), None) = (entries.next(), entries.next()) else {
                return Err(custom(format!("a target table has exactly one key; {HOW}")));
            };
            match (key.as_str(), value) {
                ("time", toml::Value::String(s)) => Target::Time(parse_time(&s).map_err(custom)?),
                ("time", toml::Value::Datetime(dt)) => {
                    Target::Time(parse_time(&dt.to_string()).map_err(custom)?)
                }
                ("ago", toml::Value::String(s)) => {
                    let dur = config::parse_duration(&s).map_err(custom)?;
                    if dur.is_zero() {
                        return Err(custom(
                            "target ago = \"0s\" is the drill's start; write target = \"latest\"",
                        ));
                    }
                    Target::Ago(dur)
                }
                ("name", toml::Value::String(s)) => {
                    if s.is_empty() || s.len() > 63 {
                        return Err(custom(format!(
                            "restore point name `{s}` must be 1 to 63 bytes"
                        )));
                    }
                    Target::Name(s)
                }
                (k @ ("time" | "ago" | "name"), v) => {
                    return Err(custom(format!(
                        "target {k} is a {}, not a string; {HOW}",
                        v.type_str()
                    )));
                }
                (k, _) => return Err(custom(format!("`{k}` is not a kind of target; {HOW}"))),
            }
        }
        other => {
            return Err(custom(format!("target is a {}; {HOW}", other.type_str())));
        }
    };
    Ok(Some(target))
}

fn parse_time(s: &str) -> std::result::Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.to_utc())
        .map_err(|e| {
            format!(
                "`{s}` is not an RFC 3339 time with an offset ({e}); write e.g. \
                 \"2026-12-01T12:00:00Z\" or \"2026-12-01T13:00:00+01:00\""
            )
        })
}

/// The line of byte offset `at` in `text` (1-based).
fn line_at(text: &str, at: usize) -> usize {
    text.get(..at.min(text.len()))
        .unwrap_or(text)
        .matches('\n')
        .count()
        + 1
}

impl Drill {
    /// Parses drill text; `origin` is the file (its stem is the default name).
    pub fn parse(text: &str, origin: &Path) -> Result<Drill> {
        let shown = origin.display();
        let file: DrillFile = toml::from_str(text).map_err(|e| {
            anyhow!(
                "invalid drill file {shown}: {}\n{HINT}",
                config::describe::<DrillFile>(&e, text)
            )
        })?;
        // A rule across keys names the line of the key it refuses.
        let refuse = |key: &str, why: String| {
            let spans: KeySpans = toml::from_str(text).unwrap_or_default();
            let span = match key {
                "target" => spans.target.map(|s| s.span()),
                "marker_table" => spans.marker_table.map(|s| s.span()),
                _ => spans.databases.map(|s| s.span()),
            };
            let at = span
                .map(|s| format!("line {} ", line_at(text, s.start)))
                .unwrap_or_default();
            anyhow!("invalid drill file {shown}: {at}(in `{key}`): {why}\n{HINT}")
        };
        let name = match file.name {
            Some(n) => n,
            None => {
                let stem = origin
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                check_name(&stem).map_err(|e| {
                    anyhow!(
                        "invalid drill file {shown}: the drill is named after the file, and {e}\n\
                         hint: rename the file or set `name = \"...\"` in it"
                    )
                })?;
                stem
            }
        };
        let from = match file.from {
            FromFile::Backup => DrillFrom::Backup,
            FromFile::Dump => DrillFrom::Dump,
        };
        let target = match from {
            DrillFrom::Backup => {
                if file.databases.is_some() {
                    return Err(refuse(
                        "databases",
                        "`databases` is for dump drills (from = \"dump\"); a backup drill \
                         restores the whole cluster"
                            .into(),
                    ));
                }
                let target = file.target.unwrap_or(Target::Latest);
                if file.marker_table.is_some() && target != Target::Marker {
                    return Err(refuse(
                        "marker_table",
                        "`marker_table` is used only by marker drills (target = \"marker\"); \
                         remove it or set the target"
                            .into(),
                    ));
                }
                if target == Target::Marker && name.len() > MAX_MARKER_NAME {
                    bail!(
                        "invalid drill file {shown}: the marker drill's name `{name}` is longer \
                         than {MAX_MARKER_NAME} characters, and its restore point \
                         (pgward-drill-<time>-{name}) would exceed PostgreSQL's limit of 63 \
                         bytes\n\
                         hint: give it a shorter `name`"
                    );
                }
                target
            }
            DrillFrom::Dump => {
                if file.target.is_some() {
                    return Err(refuse(
                        "target",
                        "a dump drill takes no target: a dump restores to the one point it was \
                         taken at; remove `target`, or restore a backup (from = \"backup\")"
                            .into(),
                    ));
                }
                if file.marker_table.is_some() {
                    return Err(refuse(
                        "marker_table",
                        "a dump drill has no markers (they need WAL replay); remove \
                         `marker_table`"
                            .into(),
                    ));
                }
                Target::Latest
            }
        };
        let database = file.database.unwrap_or_else(|| DEFAULT_DATABASE.into());
        let checks = Checks {
            amcheck: file.checks.amcheck,
            read_all: file.checks.read_all,
            checksums: file.checks.checksums,
            sql: file
                .checks
                .sql
                .into_iter()
                .map(|c| SqlCheck {
                    database: c.database.unwrap_or_else(|| database.clone()),
                    query: c.query,
                    expect: c.expect,
                })
                .collect(),
            rows: file
                .checks
                .rows
                .into_iter()
                .map(|c| RowsCheck {
                    database: c.database.unwrap_or_else(|| database.clone()),
                    table: c.table,
                    tolerance: c.tolerance,
                })
                .collect(),
        };
        Ok(Drill {
            name,
            origin: origin.to_path_buf(),
            from,
            backup: file.backup,
            target,
            database,
            marker_table: file.marker_table,
            databases: file.databases.unwrap_or_default(),
            timeout: file.timeout.unwrap_or(DEFAULT_TIMEOUT),
            max_rto: file.max_rto,
            max_rpo: file.max_rpo,
            scratch_dir: file.scratch_dir,
            settings: file.settings,
            checks,
        })
    }

    /// Reads one drill file.
    pub fn load(path: &Path) -> Result<Drill> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            anyhow!(
                "cannot read drill file {}: {e}\nhint: check the path and that this user may \
                 read it",
                path.display()
            )
        })?;
        Drill::parse(&text, path)
    }
}

/// The drills directory: `[drill] tests` relative to pgward.toml's directory, default
/// `restore-tests` beside it.
pub fn tests_dir(cfg: &config::Config, config_path: &Path) -> PathBuf {
    let tests = cfg
        .drill
        .tests
        .as_deref()
        .unwrap_or(Path::new("restore-tests"));
    if tests.is_absolute() {
        return tests.to_path_buf();
    }
    let config = std::path::absolute(config_path).unwrap_or_else(|_| config_path.into());
    config.parent().unwrap_or(Path::new("/")).join(tests)
}

/// Every `*.toml` in `dir`, in name order; two drills with one name are refused.
pub fn load_dir(dir: &Path) -> Result<Vec<Drill>> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        anyhow!(
            "cannot read the drills directory {}: {e}\nhint: `[drill] tests` in pgward.toml names \
             it (relative to pgward.toml; default restore-tests beside it); create it with drill \
             files (restore-tests/README.md) or run one with --file PATH",
            dir.display()
        )
    })?;
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry
            .map_err(|e| anyhow!("cannot read the drills directory {}: {e}", dir.display()))?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".toml") && !name.starts_with('.') && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    let mut drills: Vec<Drill> = Vec::with_capacity(paths.len());
    for path in paths {
        let drill = Drill::load(&path)?;
        if let Some(other) = drills.iter().find(|d| d.name == drill.name) {
            bail!(
                "two drill files define the drill `{}`: {} and {}\nhint: give one of them \
                 another `name`",
                drill.name,
                other.origin.display(),
                drill.origin.display()
            );
        }
        drills.push(drill);
    }
    Ok(drills)
}

/// The drills `names` ask for (or all with `all`), in the order asked; an unknown name is an
/// error listing the known ones.
pub fn select(drills: Vec<Drill>, names: &[String], all: bool) -> Result<Vec<Drill>> {
    let known = || {
        if drills.is_empty() {
            "there are no drill files".to_string()
        } else {
            let names: Vec<&str> = drills.iter().map(|d| d.name.as_str()).collect();
            format!("the drills are: {}", names.join(", "))
        }
    };
    if all && !names.is_empty() {
        bail!("name drills or use --all, not both ({})", known());
    }
    if all {
        if drills.is_empty() {
            bail!(
                "--all found no drill files, so nothing would be proved\nhint: add drill files \
                 (restore-tests/README.md) or run one with --file PATH"
            );
        }
        return Ok(drills);
    }
    if names.is_empty() {
        bail!("name a drill or use --all ({})", known());
    }
    let mut out: Vec<Drill> = Vec::with_capacity(names.len());
    for name in names {
        if out.iter().any(|d| &d.name == name) {
            continue;
        }
        match drills.iter().find(|d| &d.name == name) {
            Some(d) => out.push(d.clone()),
            None => bail!(
                "no drill named `{name}` ({})\nhint: --file PATH runs a drill file from \
                 elsewhere",
                known()
            ),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Drill> {
        Drill::parse(text, Path::new("/etc/pgward/restore-tests/weekly.toml"))
    }

    fn err(text: &str) -> String {
        format!("{:#}", parse(text).unwrap_err())
    }

    #[test]
    fn the_shipped_drills_parse() {
        let shipped = [
            (
                "weekly-latest",
                include_str!("../../restore-tests/weekly-latest.toml"),
            ),
            (
                "pitr-marker",
                include_str!("../../restore-tests/pitr-marker.toml"),
            ),
            (
                "dump-daily",
                include_str!("../../restore-tests/dump-daily.toml"),
            ),
        ];
        let drills: Vec<Drill> = shipped
            .iter()
            .map(|(name, text)| {
                Drill::parse(text, Path::new(&format!("restore-tests/{name}.toml")))
                    .unwrap_or_else(|e| panic!("{name}: {e:#}"))
            })
            .collect();
        let min = |m: u64| Some(Duration::from_secs(m * 60));

        let weekly = &drills[0];
        assert_eq!(weekly.name, "weekly-latest");
        assert_eq!(
            (weekly.from, &weekly.target),
            (DrillFrom::Backup, &Target::Latest)
        );
        assert!(weekly.checks.amcheck && weekly.checks.read_all);
        assert_eq!((weekly.max_rto, weekly.max_rpo), (min(30), min(60)));
        let sql = &weekly.checks.sql[0];
        assert_eq!(sql.database, "bookedbarber");
        assert_eq!(sql.query, "select count(*) from appointments");
        assert_eq!(sql.expect, "> 0".parse().unwrap());

        let pitr = &drills[1];
        assert_eq!(
            (pitr.from, &pitr.target),
            (DrillFrom::Backup, &Target::Marker)
        );
        assert_eq!(pitr.database, "bookedbarber");
        assert!(pitr.checks.amcheck);
        assert_eq!(pitr.max_rto, min(30));

        let dump = &drills[2];
        assert_eq!(dump.from, DrillFrom::Dump);
        assert_eq!(dump.databases, ["bookedbarber"]);
        assert!(dump.checks.sql.len() >= 2);
        assert!(dump.checks.sql.iter().all(|c| c.database == "bookedbarber"));
        assert!(!dump.checks.rows.is_empty());
        assert!(
            dump.checks
                .rows
                .iter()
                .all(|r| r.tolerance == Tolerance::Percent(1.0))
        );
    }

    #[test]
    fn an_empty_file_is_a_latest_backup_drill_with_the_defaults() {
        let d = parse("").unwrap();
        assert_eq!(d.name, "weekly");
        assert_eq!(d.from, DrillFrom::Backup);
        assert_eq!(d.backup, None);
        assert_eq!(d.target, Target::Latest);
        assert_eq!(d.database, "postgres");
        assert_eq!(d.marker_table, None);
        assert!(d.databases.is_empty());
        assert_eq!(d.timeout, Duration::from_secs(3600));
        assert_eq!((d.max_rto, d.max_rpo), (None, None));
        assert_eq!(d.scratch_dir, None);
        assert!(d.settings.is_empty());
        assert_eq!(
            d.checks,
            Checks {
                amcheck: true,
                read_all: false,
                checksums: true,
                sql: vec![],
                rows: vec![],
            }
        );
    }

    #[test]
    fn every_key_is_read() {
        let d = parse(
            r#"
name = "pitr_1"
backup = "20261201T120000Z"
target = "marker"
database = "bookedbarber"
marker_table = "ops.drill_markers"
timeout = "20m"
max_rto = "30m"
max_rpo = "1h"
scratch_dir = "/srv/scratch"
[settings]
work_mem = "64MB"
max_parallel_workers = 4
jit = false
random_page_cost = 1.1
[checks]
amcheck = false
read_all = true
checksums = false
[[checks.sql]]
query = "select count(*) from appointments"
expect = "> 0"
[[checks.sql]]
database = "postgres"
query = "select 1"
expect = "1"
[[checks.rows]]
table = "users"
[[checks.rows]]
database = "other"
table = "public.appointments"
tolerance = 10
[[checks.rows]]
table = "appointments"
tolerance = "1.5%"
"#,
        )
        .unwrap();
        assert_eq!(d.name, "pitr_1");
        assert_eq!(d.backup.as_deref(), Some("20261201T120000Z"));
        assert_eq!(d.target, Target::Marker);
        assert_eq!(d.marker_table.as_deref(), Some("ops.drill_markers"));
        assert_eq!(d.timeout, Duration::from_secs(1200));
        assert_eq!(d.max_rto, Some(Duration::from_secs(1800)));
        assert_eq!(d.max_rpo, Some(Duration::from_secs(3600)));
        assert_eq!(d.scratch_dir, Some(PathBuf::from("/srv/scratch")));
        let settings: Vec<(&str, &str)> = d
            .settings
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            settings,
            [
                ("jit", "off"),
                ("max_parallel_workers", "4"),
                ("random_page_cost", "1.1"),
                ("work_mem", "64MB"),
            ]
        );
        assert!(!d.checks.amcheck && d.checks.read_all && !d.checks.checksums);
        assert_eq!(
            d.checks.sql[0].database, "bookedbarber",
            "defaults to `database`"
        );
        assert_eq!(d.checks.sql[0].expect, "> 0".parse().unwrap());
        assert_eq!(d.checks.sql[1].database, "postgres");
        let rows: Vec<(&str, &str, Tolerance)> = d
            .checks
            .rows
            .iter()
            .map(|r| (r.database.as_str(), r.table.as_str(), r.tolerance))
            .collect();
        assert_eq!(
            rows,
            [
                ("bookedbarber", "users", Tolerance::Rows(0)),
                ("other", "public.appointments", Tolerance::Rows(10)),
                ("bookedbarber", "appointments", Tolerance::Percent(1.5)),
            ]
        );
    }

    #[test]
    fn every_target_form() {
        let t = |v: &str| parse(&format!("target = {v}")).map(|d| d.target);
        let at = DateTime::parse_from_rfc3339("2026-12-01T11:00:00Z")
            .unwrap()
            .to_utc();
        let cases: Vec<(&str, Target)> = vec![
            (r#""marker""#, Target::Marker),
            (r#""latest""#, Target::Latest),
            (r#""immediate""#, Target::Immediate),
            (
                r#"{ time = "2026-12-01T12:00:00+01:00" }"#,
                Target::Time(at),
            ),
            (r#"{ time = 2026-12-01T11:00:00Z }"#, Target::Time(at)),
            (r#"{ ago = "15m" }"#, Target::Ago(Duration::from_secs(900))),
            (
                r#"{ name = "before-migration" }"#,
                Target::Name("before-migration".into()),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(t(text).unwrap(), want, "{text}");
        }
    }

    #[test]
    fn a_dump_drill() {
        let d = parse(
            r#"
from = "dump"
databases = ["bookedbarber", "postgres"]
[checks]
amcheck = false
"#,
        )
        .unwrap();
        assert_eq!(d.from, DrillFrom::Dump);
        assert_eq!(d.target, Target::Latest);
        assert_eq!(d.databases, ["bookedbarber", "postgres"]);
    }

    /// Each bad file is refused naming the file, the line, the key and the reason, with the
    /// hint to the README.
    #[test]
    fn bad_files_are_refused_by_line_and_key() {
        // (text, line, key, reason)
        let cases: &[(&str, usize, &str, &str)] = &[
            (
                "name = \"x\"\ntargte = \"latest\"",
                2,
                "",
                "unknown field `targte`",
            ),
            ("\n\nname = \"a b\"", 3, "name", "`a b` is not a drill name"),
            (
                &format!("name = \"{}\"", "n".repeat(65)),
                1,
                "name",
                "1 to 64 letters",
            ),
            ("from = \"tape\"", 1, "from", "unknown variant `tape`"),
            ("backup = \"a/b\"", 1, "backup", "`a/b` is not a label"),
            (
                "target = \"newest\"",
                1,
                "target",
                "`newest` is not a target; write \"marker\"",
            ),
            (
                "target = { time = \"2026-12-01 12:00\" }",
                1,
                "target",
                "not an RFC 3339 time with an offset",
            ),
            (
                "target = { time = 2026-12-01T12:00:00 }",
                1,
                "target",
                "not an RFC 3339 time with an offset",
            ),
            (
                "target = { ago = \"soon\" }",
                1,
                "target",
                "`soon` is not a duration",
            ),
            (
                "target = { ago = \"0s\" }",
                1,
                "target",
                "write target = \"latest\"",
            ),
            ("target = { name = \"\" }", 1, "target", "1 to 63 bytes"),
            (
                "target = { time = \"x\", name = \"y\" }",
                1,
                "target",
                "exactly one key",
            ),
            (
                "target = { lsn = \"0/1\" }",
                1,
                "target",
                "`lsn` is not a kind of target",
            ),
            ("target = 5", 1, "target", "target is a integer"),
            (
                "target = \"marker\"\nmarker_table = \"drop table x; --\"",
                2,
                "marker_table",
                "is not a table name pgward uses",
            ),
            (
                "target = \"marker\"\nmarker_table = \"a.b.c\"",
                2,
                "marker_table",
                "optionally schema-qualified",
            ),
            (
                "target = \"marker\"\nmarker_table = \"1st\"",
                2,
                "marker_table",
                "not starting with a digit",
            ),
            ("timeout = \"0s\"", 1, "timeout", "is zero"),
            ("timeout = \"an hour\"", 1, "timeout", "is not a duration"),
            ("max_rto = 30", 1, "max_rto", "invalid type: integer"),
            ("max_rpo = \"0m\"", 1, "max_rpo", "is zero"),
            (
                "scratch_dir = \"scratch\"",
                1,
                "scratch_dir",
                "must be an absolute path",
            ),
            (
                "[settings]\nwork_mem = [1]",
                1,
                "settings",
                "setting `work_mem` is a array",
            ),
            (
                "[settings]\n\"bad name\" = 1",
                1,
                "settings",
                "is not a PostgreSQL setting name",
            ),
            ("[checks]\namchek = true", 2, "", "unknown field `amchek`"),
            (
                "[checks]\nread_all = \"yes\"",
                2,
                "checks.read_all",
                "invalid type: string",
            ),
            (
                "[[checks.sql]]\nquery = \"select 1\"",
                1,
                "checks.sql",
                "missing field `expect`",
            ),
            (
                "[[checks.sql]]\nquery = \" \"\nexpect = \"1\"",
                2,
                "checks.sql.query",
                "the query is empty",
            ),
            (
                "[[checks.sql]]\nquery = \"select 1\"\nexpect = \"~ (\"",
                3,
                "checks.sql.expect",
                "is not a valid regex: unclosed group",
            ),
            (
                "[[checks.sql]]\nquery = \"select 1\"\nexpect = \"> one\"",
                3,
                "checks.sql.expect",
                "is not a number",
            ),
            (
                "[[checks.rows]]\ntable = \"users\"\ntolerance = \"5\"",
                3,
                "checks.rows.tolerance",
                "is not a percentage",
            ),
            (
                "[[checks.rows]]\ntable = \"users\"\ntolerance = \"101%\"",
                3,
                "checks.rows.tolerance",
                "from 0% to 100%",
            ),
            (
                "[[checks.rows]]\ntable = \"users\"\ntolerance = -1",
                3,
                "checks.rows.tolerance",
                "tolerance -1 is negative",
            ),
            (
                "[[checks.rows]]\ntable = \"users; drop\"",
                2,
                "checks.rows.table",
                "is not a table name",
            ),
            (
                "[[checks.rows]]\ntolerance = 1",
                1,
                "checks.rows",
                "missing field `table`",
            ),
            ("database = \"\"", 1, "database", "is not a database name"),
            // Rules across keys name the line of the key refused.
            (
                "from = \"dump\"\n\ntarget = \"latest\"",
                3,
                "target",
                "a dump drill takes no target",
            ),
            (
                "from = \"dump\"\nmarker_table = \"m\"",
                2,
                "marker_table",
                "a dump drill has no markers",
            ),
            (
                "from = \"dump\"\ndatabases = [\"a\", \"a\"]",
                2,
                "databases",
                "listed twice",
            ),
            (
                "# a backup drill\ndatabases = [\"a\"]",
                2,
                "databases",
                "`databases` is for dump drills",
            ),
            (
                "target = \"latest\"\nmarker_table = \"m\"",
                2,
                "marker_table",
                "used only by marker drills",
            ),
        ];
        let mut wrong = Vec::new();
        for (text, line, key, reason) in cases {
            let e = err(text);
            let ok = e.starts_with("invalid drill file /etc/pgward/restore-tests/weekly.toml: ")
                && e.contains(&format!("line {line}"))
                && (key.is_empty() || e.contains(&format!("(in `{key}`)")))
                && e.contains(reason)
                && e.ends_with(
                    "hint: the keys of a drill file are described in restore-tests/README.md",
                );
            if !ok {
                wrong.push(format!(
                    "{text:?} (want line {line}, `{key}`, {reason:?}):\n  {e}"
                ));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn a_name_from_the_file_must_be_valid_and_a_marker_name_short() {
        let e = format!(
            "{:#}",
            Drill::parse("", Path::new("/d/weekly latest.toml")).unwrap_err()
        );
        assert!(
            e.contains(
                "the drill is named after the file, and `weekly latest` is not a drill name"
            ),
            "{e}"
        );
        assert!(e.contains("hint: rename the file or set `name"), "{e}");

        let long = "n".repeat(30);
        let e = err(&format!("name = \"{long}\"\ntarget = \"marker\""));
        assert!(e.contains("longer than 29 characters"), "{e}");
        assert!(e.contains("hint: give it a shorter `name`"), "{e}");
        let ok = "n".repeat(29);
        assert_eq!(
            parse(&format!("name = \"{ok}\"\ntarget = \"marker\""))
                .unwrap()
                .name,
            ok
        );
        // The restore point of the longest marker name, with the longest label suffix, fits.
        let rp = format!("pgward-drill-20261202T031500Z-{ok}-100");
        assert_eq!(rp.len(), 63);
        assert_eq!(parse(&format!("name = \"{long}\"")).unwrap().name, long);
    }

    #[test]
    fn the_tests_dir_is_relative_to_the_config_file() {
        let base = "[postgres]\npgdata = \"/pg\"\n[repo]\nurl = \"file:///r\"\n";
        let cfg = config::Config::parse(base, "c").unwrap();
        assert_eq!(
            tests_dir(&cfg, Path::new("/etc/pgward/pgward.toml")),
            Path::new("/etc/pgward/restore-tests")
        );
        let cfg =
            config::Config::parse(&format!("{base}[drill]\ntests = \"drills\"\n"), "c").unwrap();
        assert_eq!(
            tests_dir(&cfg, Path::new("/etc/pgward/pgward.toml")),
            Path::new("/etc/pgward/drills")
        );
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            tests_dir(&cfg, Path::new("pgward.toml")),
            cwd.join("drills")
        );
        let cfg =
            config::Config::parse(&format!("{base}[drill]\ntests = \"/srv/d\"\n"), "c").unwrap();
        assert_eq!(
            tests_dir(&cfg, Path::new("/etc/pgward/pgward.toml")),
            Path::new("/srv/d")
        );
    }

    #[test]
    fn load_dir_reads_every_toml_in_order_and_refuses_one_name_twice() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("b.toml", "");
        write("a.toml", "from = \"dump\"");
        write("README.md", "not a drill");
        write(".c.toml.swp", "junk");
        std::fs::create_dir(dir.path().join("sub.toml")).unwrap();
        let drills = load_dir(dir.path()).unwrap();
        let names: Vec<&str> = drills.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(drills[0].origin, dir.path().join("a.toml"));

        write("c.toml", "name = \"a\"");
        let e = format!("{:#}", load_dir(dir.path()).unwrap_err());
        assert!(e.contains("two drill files define the drill `a`"), "{e}");
        assert!(e.contains("a.toml and ") && e.contains("c.toml"), "{e}");
        assert!(e.contains("hint: give one of them another `name`"), "{e}");

        write("c.toml", "targte = 1");
        let e = format!("{:#}", load_dir(dir.path()).unwrap_err());
        assert!(e.contains("c.toml: line 1"), "{e}");

        let e = format!("{:#}", load_dir(&dir.path().join("missing")).unwrap_err());
        assert!(e.contains("cannot read the drills directory"), "{e}");
        assert!(
            e.contains("hint: `[drill] tests` in pgward.toml names it"),
            "{e}"
        );
    }

    #[test]
    fn select_takes_names_in_the_order_asked() {
        let drills: Vec<Drill> = ["daily", "monthly", "weekly"]
            .iter()
            .map(|n| Drill::parse("", Path::new(&format!("{n}.toml"))).unwrap())
            .collect();
        let names = |v: &[Drill]| v.iter().map(|d| d.name.clone()).collect::<Vec<_>>();
        let s = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();

        let got = select(drills.clone(), &s(&["weekly", "daily", "weekly"]), false).unwrap();
        assert_eq!(names(&got), ["weekly", "daily"]);
        assert_eq!(
            names(&select(drills.clone(), &[], true).unwrap()),
            ["daily", "monthly", "weekly"]
        );

        // (names, all, error fragments)
        let cases: &[(&[&str], bool, &[&str])] = &[
            (
                &["yearly"],
                false,
                &[
                    "no drill named `yearly`",
                    "the drills are: daily, monthly, weekly",
                    "hint: --file PATH",
                ],
            ),
            (
                &[],
                false,
                &[
                    "name a drill or use --all",
                    "the drills are: daily, monthly, weekly",
                ],
            ),
            (&["daily"], true, &["not both"]),
        ];
        for (n, all, fragments) in cases {
            let e = format!("{:#}", select(drills.clone(), &s(n), *all).unwrap_err());
            for f in *fragments {
                assert!(e.contains(f), "{n:?} {all}: want {f:?}: {e}");
            }
        }
        let e = format!("{:#}", select(vec![], &[], true).unwrap_err());
        assert!(e.contains("--all found no drill files"), "{e}");
        let e = format!("{:#}", select(vec![], &s(&["x"]), false).unwrap_err());
        assert!(e.contains("there are no drill files"), "{e}");
    }
}
