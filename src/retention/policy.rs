//! The policy file (`policy = "..."` in pgward.toml): retention rules and `[[job]]` schedules.
//!
//! Parsed the way pgward.toml is: unknown keys and bad values are refused with their line
//! (through the configuration's own error describer), and every error names the file and
//! what to do. Without a configured policy, [`DEFAULT_POLICY`] — the text of
//! `policies/default.toml`, compiled in — applies, so the shipped file and the built-in
//! behaviour can never disagree.
//!
//! A missing `[retention.backups]` or `[retention.dumps]` section means "no rules: keep
//! everything of that kind" (never "keep only one"); an empty section means "min_keep only".

use crate::config;
use anyhow::{Result, anyhow};
use chrono_tz::Tz;
use serde::{Deserialize, Deserializer};
use std::path::Path;
use std::time::Duration;

/// The built-in policy: `policies/default.toml`.
pub const DEFAULT_POLICY: &str = include_str!("../../policies/default.toml");
const DEFAULT_GC_GRACE: Duration = Duration::from_secs(24 * 3600);

/// A parsed policy file.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// The file it came from, or `built-in policies/default.toml`.
    pub origin: String,
    pub retention: Retention,
    pub jobs: Vec<Job>,
}

/// What the retention plan takes.
#[derive(Debug, Clone, PartialEq)]
pub struct Retention {
    /// Calendar buckets are periods of this zone.
    pub timezone: Tz,
    /// `None`: no `[retention.backups]` section, every backup is kept.
    pub backups: Option<KeepRules>,
    /// `None`: no `[retention.dumps]` section, every dump is kept.
    pub dumps: Option<KeepRules>,
    /// `None`: all WAL from the oldest kept backup on is kept.
    pub pitr_window: Option<Duration>,
    /// How long a marked block stays before a later gc may delete it.
    pub gc_grace: Duration,
}

/// `[retention.backups]` / `[retention.dumps]`: rules are ORed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeepRules {
    #[serde(default)]
    pub keep_last: u32,
    #[serde(default)]
    pub keep_hourly: u32,
    #[serde(default)]
    pub keep_daily: u32,
    #[serde(default)]
    pub keep_weekly: u32,
    #[serde(default)]
    pub keep_monthly: u32,
    #[serde(default)]
    pub keep_yearly: u32,
    /// Relative to the newest complete item, so nothing ages out while backups stop.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub keep_within: Option<Duration>,
    #[serde(default = "one", deserialize_with = "de_min_keep")]
    pub min_keep: u32,
}

impl Default for KeepRules {
    fn default() -> Self {
        KeepRules {
            keep_last: 0,
            keep_hourly: 0,
            keep_daily: 0,
            keep_weekly: 0,
            keep_monthly: 0,
            keep_yearly: 0,
            keep_within: None,
            min_keep: 1,
        }
    }
}

/// What `[[job]]` may say. The agent gives it meaning; here it is only checked and kept.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    pub kind: JobKind,
    /// crontab(5) syntax, optionally with seconds; checked by the agent.
    pub schedule: String,
    pub name: Option<String>,
    /// The drills to run (`kind = "drill"`): `drill = "a"` or `drill = ["a", "b"]`; none
    /// given means every drill in `[drill] tests`.
    #[serde(default, deserialize_with = "one_or_many")]
    pub drill: Option<Vec<String>>,
    /// The databases to dump (`kind = "dump"`).
    pub databases: Option<Vec<String>>,
    /// Read everything, not a rotating sample (`kind = "verify"`).
    #[serde(default)]
    pub full: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Backup,
    Dump,
    Expire,
    Verify,
    Drill,
}

/// `"a"` or `["a", "b"]`.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(Some(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    }))
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default = "utc", deserialize_with = "de_tz")]
    timezone: Tz,
    #[serde(default)]
    retention: RetentionSection,
    #[serde(default)]
    job: Vec<Job>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionSection {
    backups: Option<KeepRules>,
    dumps: Option<KeepRules>,
    #[serde(default)]
    wal: WalSection,
    #[serde(default, deserialize_with = "de_opt_duration")]
    gc_grace: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WalSection {
    #[serde(default, deserialize_with = "de_opt_duration")]
    pitr_window: Option<Duration>,
}

fn utc() -> Tz {
    Tz::UTC
}

fn one() -> u32 {
    1
}

fn de_tz<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Tz, D::Error> {
    let s = String::deserialize(d)?;
    s.parse::<Tz>().map_err(|_| {
        serde::de::Error::custom(format!(
            "`{s}` is not an IANA time zone; write e.g. \"UTC\" or \"Europe/Berlin\""
        ))
    })
}

fn de_opt_duration<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    let dur = config::parse_duration(&s).map_err(serde::de::Error::custom)?;
    if dur.is_zero() {
        return Err(serde::de::Error::custom(format!(
            "a duration of `{s}` keeps nothing; leave the key out instead"
        )));
    }
    Ok(Some(dur))
}

fn de_min_keep<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<u32, D::Error> {
    let v = u32::deserialize(d)?;
    if v == 0 {
        return Err(serde::de::Error::custom(
            "min_keep = 0 is refused: the newest complete item is always kept; \
             write min_keep = 1 or leave it out",
        ));
    }
    Ok(v)
}

impl Policy {
    /// Parses policy text; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Policy> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| {
            anyhow!(
                "invalid policy in {origin}: {}\nhint: the keys are described in policies/README.md",
                config::describe::<PolicyFile>(&e, text)
            )
        })?;
        Ok(Policy {
            origin: origin.to_string(),
            retention: Retention {
                timezone: file.timezone,
                backups: file.retention.backups,
                dumps: file.retention.dumps,
                pitr_window: file.retention.wal.pitr_window,
                gc_grace: file.retention.gc_grace.unwrap_or(DEFAULT_GC_GRACE),
            },
            jobs: file.job,
        })
    }

    /// The built-in policy (`policies/default.toml`).
    pub fn builtin() -> Policy {
        Policy::parse(DEFAULT_POLICY, "built-in policies/default.toml")
            .expect("policies/default.toml parses (tested)")
    }

    /// Reads the policy file at `path`.
    pub fn load(path: &Path) -> Result<Policy> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            anyhow!(
                "cannot read policy file {}: {e}\nhint: `policy = \"...\"` in pgward.toml names \
                 it, relative to pgward.toml's directory; fix the path or the file's permissions",
                path.display()
            )
        })?;
        Policy::parse(&text, &path.display().to_string())
    }

    /// The policy the configuration names (`policy = "..."`), else the built-in one.
    pub fn for_config(cfg: &config::Config, config_path: &Path) -> Result<Policy> {
        match cfg.policy_path(config_path) {
            Some(path) => Policy::load(&path),
            None => Ok(Policy::builtin()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        format!("{:#}", Policy::parse(text, "p.toml").unwrap_err())
    }

    #[test]
    fn the_shipped_policies_parse() {
        let d = Policy::builtin();
        assert_eq!(d.retention.timezone, Tz::UTC);
        assert!(d.retention.backups.is_some() && d.retention.dumps.is_some());
        assert_eq!(d.retention.gc_grace, DEFAULT_GC_GRACE);

        let text = include_str!("../../policies/bookedbarber.toml");
        let b = Policy::parse(text, "bookedbarber.toml").unwrap();
        assert_eq!(
            b.retention.pitr_window,
            Some(Duration::from_secs(7 * 86400))
        );
        let dumps = b.retention.dumps.unwrap();
        assert_eq!(dumps.keep_within, Some(Duration::from_secs(30 * 86400)));
        let kinds: Vec<JobKind> = b.jobs.iter().map(|j| j.kind).collect();
        for k in [
            JobKind::Backup,
            JobKind::Dump,
            JobKind::Expire,
            JobKind::Drill,
        ] {
            assert!(kinds.contains(&k), "{kinds:?}");
        }
        // Each drill job names a drill that ships in restore-tests/.
        let drills: Vec<&str> = (b.jobs.iter())
            .filter(|j| j.kind == JobKind::Drill)
            .filter_map(|j| j.drill.as_deref())
            .flatten()
            .map(String::as_str)
            .collect();
        assert_eq!(drills, ["weekly-latest", "pitr-marker", "dump-daily"]);
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("restore-tests");
        for d in drills {
            let drill = crate::drill::file::Drill::load(&shipped.join(format!("{d}.toml")))
                .unwrap_or_else(|e| panic!("{d}: {e:#}"));
            assert_eq!(drill.name, d);
        }
    }

    #[test]
    fn every_key_parses_with_defaults_for_the_rest() {
        let p = Policy::parse(
            "timezone = \"Europe/Berlin\"\n\
             [retention]\ngc_grace = \"2h\"\n\
             [retention.backups]\nkeep_last = 2\nkeep_hourly = 24\nkeep_daily = 7\n\
             keep_weekly = 4\nkeep_monthly = 12\nkeep_yearly = 3\nkeep_within = \"2d\"\nmin_keep = 3\n\
             [retention.wal]\npitr_window = \"7d\"\n\
             [[job]]\nkind = \"dump\"\nschedule = \"0 3 * * *\"\nname = \"nightly\"\n\
             databases = [\"app\"]\n\
             [[job]]\nkind = \"drill\"\nschedule = \"0 4 * * 0\"\ndrill = \"weekly-pitr\"\n",
            "p.toml",
        )
        .unwrap();
        let r = &p.retention;
        assert_eq!(r.timezone, chrono_tz::Europe::Berlin);
        assert_eq!(r.gc_grace, Duration::from_secs(7200));
        assert_eq!(
            r.backups,
            Some(KeepRules {
                keep_last: 2,
                keep_hourly: 24,
                keep_daily: 7,
                keep_weekly: 4,
                keep_monthly: 12,
                keep_yearly: 3,
                keep_within: Some(Duration::from_secs(2 * 86400)),
                min_keep: 3,
            })
        );
        assert_eq!(r.dumps, None, "no section: no rules");
        assert_eq!(r.pitr_window, Some(Duration::from_secs(7 * 86400)));
        assert_eq!(p.jobs.len(), 2);
        assert_eq!(
            p.jobs[0].databases.as_deref(),
            Some(&["app".to_string()][..])
        );
        assert_eq!(p.jobs[1].drill, Some(vec!["weekly-pitr".to_string()]));
        let listed = Policy::parse(
            "[[job]]\nkind = \"drill\"\nschedule = \"0 4 * * 0\"\ndrill = [\"a\", \"b\"]\n",
            "p.toml",
        )
        .unwrap();
        assert_eq!(listed.jobs[0].drill, Some(vec!["a".into(), "b".into()]));

        let empty = Policy::parse("[retention.backups]\n", "p.toml").unwrap();
        assert_eq!(empty.retention.backups, Some(KeepRules::default()));
        assert_eq!(empty.retention.timezone, Tz::UTC);
    }

    #[test]
    fn mistakes_are_refused_with_file_line_and_what_to_do() {
        let e = err("[retention.backups]\nkeep_last = 2\nkeep_dayly = 7\n");
        assert!(
            e.contains("p.toml") && e.contains("line 3") && e.contains("keep_dayly"),
            "{e}"
        );
        assert!(e.contains("hint: "), "{e}");

        let e = err("[retention.dumps]\nmin_keep = 0\n");
        assert!(e.contains("line 2") && e.contains("min_keep = 1"), "{e}");

        let e = err("timezone = \"Mars/Olympus\"\n");
        assert!(e.contains("line 1") && e.contains("Europe/Berlin"), "{e}");

        let e = err("[retention.wal]\npitr_window = \"a week\"\n");
        assert!(e.contains("line 2") && e.contains("pitr_window"), "{e}");

        let e = err("[[job]]\nkind = \"backup\"\nschedule = \"@hourly\"\nretries = 3\n");
        assert!(e.contains("line 4") && e.contains("retries"), "{e}");

        let e = err("[[job]]\nkind = \"vacuum\"\nschedule = \"@hourly\"\n");
        assert!(e.contains("line 2") && e.contains("vacuum"), "{e}");

        let e = err("[retention]\nkeep_last = 2\n");
        assert!(e.contains("line 2") && e.contains("keep_last"), "{e}");
    }

    #[test]
    fn an_unreadable_policy_file_is_named() {
        let e = format!(
            "{:#}",
            Policy::load(Path::new("/nonexistent/p.toml")).unwrap_err()
        );
        assert!(
            e.contains("/nonexistent/p.toml") && e.contains("hint: "),
            "{e}"
        );
    }
}
