//! `pgward restore`: restore a base backup into a data directory, to any point in time.
//!
//! The work is [`crate::restore::run_restore`]; this file turns arguments into a
//! [`RestoreRequest`] and prints the plan and the result. `--json` prints the
//! [`RestoreOutcome`](crate::restore::RestoreOutcome) as one object (a stable format: fields
//! are only ever added).

use crate::context::Context;
use crate::output;
use crate::restore::dest::parse_tablespace_mapping;
use crate::restore::target::{self, RecoveryTarget, TargetAction, TimelineChoice};
use crate::restore::{RestoreRequest, report, run_restore};
use anyhow::{Result, bail};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("recovery_target").multiple(false)))]
pub struct Args {
    /// The data directory to restore into: absent or empty, or with --delta an old copy of the
    /// same cluster.
    #[arg(long, value_name = "DIR")]
    pub pgdata: PathBuf,
    /// The backup to restore (a label); default: the newest one that ends before the target.
    #[arg(long, value_name = "LABEL")]
    pub backup: Option<String>,
    /// Stop at this time; an offset is required: `2026-11-22 14:30:00+00`, RFC 3339.
    #[arg(long, group = "recovery_target", value_name = "TIME")]
    pub target_time: Option<String>,
    /// Stop at this WAL position, like 0/3000060.
    #[arg(long, group = "recovery_target", value_name = "LSN")]
    pub target_lsn: Option<String>,
    /// Stop at the commit of this transaction.
    #[arg(long, group = "recovery_target", value_name = "XID")]
    pub target_xid: Option<String>,
    /// Stop at this restore point (pg_create_restore_point).
    #[arg(long, group = "recovery_target", value_name = "NAME")]
    pub target_name: Option<String>,
    /// `immediate`: stop as soon as the backup is consistent.
    #[arg(long, group = "recovery_target", value_enum, value_name = "immediate")]
    pub target: Option<TargetKeyword>,
    /// What the server does at the target [default: promote].
    #[arg(long, value_enum)]
    pub target_action: Option<TargetAction>,
    /// The timeline to recover along: latest, current, or a number [default: latest].
    #[arg(long, value_name = "latest|current|N")]
    pub target_timeline: Option<String>,
    /// Stop just before the target instead of just after it (time, LSN and xid targets).
    #[arg(long)]
    pub target_exclusive: bool,
    /// Restore tablespace OID into DIR instead of its original location (repeatable).
    #[arg(long = "tablespace-map", value_name = "OID=DIR")]
    pub tablespace_map: Vec<String>,
    /// Reuse an existing data directory of the same cluster: only blocks that differ are
    /// fetched and written, and what the backup does not have is removed.
    #[arg(long)]
    pub delta: bool,
    /// Print the plan and stop without touching anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Restore although the data directory's postmaster.pid names a process or a socket that
    /// looks alive: only when you know the file is stale and no server runs on the directory,
    /// in this or any other container (what it names belongs to something else).
    #[arg(long)]
    pub force: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TargetKeyword {
    Immediate,
}

impl Args {
    pub fn request(&self) -> Result<RestoreRequest> {
        let target = if let Some(t) = &self.target_time {
            RecoveryTarget::Time(target::parse_time(t)?)
        } else if let Some(l) = &self.target_lsn {
            RecoveryTarget::Lsn(target::parse_lsn(l)?)
        } else if let Some(x) = &self.target_xid {
            RecoveryTarget::Xid(target::parse_xid(x)?)
        } else if let Some(n) = &self.target_name {
            RecoveryTarget::Name(target::parse_name(n)?)
        } else if self.target.is_some() {
            RecoveryTarget::Immediate
        } else {
            RecoveryTarget::EndOfArchive
        };
        if self.target_action.is_some() && !target.is_set() {
            bail!(
                "--target-action needs a recovery target\nhint: without one, recovery replays \
                 the whole archive and then promotes"
            );
        }
        let timeline: TimelineChoice = match &self.target_timeline {
            Some(t) => target::parse_timeline(t)?,
            None => TimelineChoice::Latest,
        };
        let mut tablespace_map = BTreeMap::new();
        for m in &self.tablespace_map {
            let (oid, dir) = parse_tablespace_mapping(m)?;
            if tablespace_map.insert(oid, dir).is_some() {
                bail!("--tablespace-map gives tablespace {oid} twice");
            }
        }
        Ok(RestoreRequest {
            pgdata: self.pgdata.clone(),
            backup: self.backup.clone(),
            target,
            action: self.target_action.unwrap_or(TargetAction::Promote),
            timeline,
            timeline_given: self.target_timeline.is_some(),
            exclusive: self.target_exclusive,
            tablespace_map,
            delta: self.delta,
            dry_run: self.dry_run,
            force: self.force,
            exe: None,
        })
    }
}

pub async fn run(ctx: &Context, args: &Args) -> Result<()> {
    let req = args.request()?;
    let (delta, inclusive, action) = (req.delta, !req.exclusive, req.action);
    let outcome = run_restore(ctx, req).await?;
    let text = if args.json {
        serde_json::to_string_pretty(&outcome)? + "\n"
    } else {
        let mut text = report::render_plan(&outcome, delta, inclusive, action.as_str());
        if let Some(r) = &outcome.result {
            text += &report::render_result(&outcome, r, delta);
        }
        text
    };
    output::report_done("the restore", &text);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(argv: &[&str]) -> Result<RestoreRequest> {
        let mut full = vec!["restore", "--pgdata", "/data"];
        full.extend_from_slice(argv);
        Cli::try_parse_from(full)?.args.request()
    }

    #[test]
    fn arguments_become_a_request() {
        let r = parse(&[]).unwrap();
        assert_eq!(r.target, RecoveryTarget::EndOfArchive);
        assert_eq!(r.timeline, TimelineChoice::Latest);
        assert!(!r.timeline_given);
        assert_eq!(r.action, TargetAction::Promote);
        let r = parse(&[
            "--target-lsn",
            "0/3000060",
            "--target-action",
            "pause",
            "--target-exclusive",
        ])
        .unwrap();
        assert_eq!(r.target, RecoveryTarget::Lsn("0/3000060".parse().unwrap()));
        assert_eq!(r.action, TargetAction::Pause);
        assert!(r.exclusive);
        let r = parse(&["--target", "immediate", "--target-timeline", "current"]).unwrap();
        assert_eq!(r.target, RecoveryTarget::Immediate);
        assert_eq!(r.timeline, TimelineChoice::Current);
        assert!(r.timeline_given);
        let r = parse(&["--target-timeline", "latest"]).unwrap();
        assert!(r.timeline_given, "an explicit `latest` is a choice");
        let r = parse(&[
            "--tablespace-map",
            "16385=/a",
            "--tablespace-map",
            "16386=/b",
            "--delta",
            "--force",
        ])
        .unwrap();
        assert_eq!(r.tablespace_map.len(), 2);
        assert!(r.delta && r.force);
    }

    #[test]
    fn bad_combinations_are_refused() {
        for argv in [
            &["--target-lsn", "0/1", "--target-xid", "5"][..],
            &["--target-action", "pause"],
            &["--target-time", "2026-11-22 14:30:00"],
            &["--tablespace-map", "1=/a", "--tablespace-map", "1=/b"],
            &["--target-timeline", "newest"],
            &["--target", "now"],
        ] {
            assert!(parse(argv).is_err(), "{argv:?}");
        }
    }
}
