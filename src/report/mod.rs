//! The HTML recovery report (`pgward report --html FILE`, and the agent's `/` page): the
//! status verdict, a timeline per PostgreSQL timeline (WAL coverage, holes, backups, dumps,
//! drills, the PITR window), the retention plan's reasons for every backup and dump, and the
//! drills' RTO and RPO over time.
//!
//! [`render`] reads (one [`Snapshot`], the policy, the drill reports and drill files), then
//! hands everything to the pure [`model::build`] with `now`, and [`html::page`] draws the
//! model. The page is one self-contained document: nothing is fetched, no script runs.

pub mod html;
pub mod model;

use crate::context::Context;
use crate::drill::file as drill_file;
use crate::drill::report::{self as drill_report, DrillReport};
use crate::repo::lock::hostname;
use crate::repo::snapshot::Snapshot;
use crate::retention::plan::{self as retention_plan, SnapshotInputs};
use crate::status::Verdict;
use crate::storage::Storage;
use anyhow::Result;
use chrono::{DateTime, NaiveDateTime, Utc};
use futures::StreamExt;
use model::Limits;
use std::collections::BTreeMap;

/// The most drill reports read for one page (the newest in the window).
pub const MAX_DRILL_REPORTS: usize = 500;

/// The default number of days shown.
pub const DEFAULT_DAYS: u32 = 14;

/// The page for the repository of `ctx`, as of `now`, over the last `days` days, headed by
/// `verdict`. What cannot be read besides the repository itself (the policy, drill files,
/// a damaged drill report) becomes a warning on the page, not an error.
pub async fn render(
    ctx: &Context,
    verdict: &Verdict,
    days: u32,
    now: DateTime<Utc>,
) -> Result<String> {
    let started = std::time::Instant::now();
    let snapshot = Snapshot::load(ctx.storage.as_ref()).await?;
    let mut warnings = Vec::new();
    let policy = match ctx.policy() {
        Ok(p) => Some(p),
        Err(e) => {
            warnings.push(format!("no retention plan: {e:#}"));
            None
        }
    };
    let plan = policy.as_ref().map(|p| {
        let inputs = SnapshotInputs::of(&snapshot, &hostname());
        retention_plan::plan(&inputs.input(&snapshot, &[]), &p.retention, now)
    });
    let axis = model::Axis::new(now, days);
    let (drills, drill_warnings) = drill_reports(ctx.storage.as_ref(), axis.from).await;
    warnings.extend(drill_warnings);
    let limits = match drill_limits(ctx) {
        Ok(l) => l,
        Err(e) => {
            warnings.push(format!("no max_rto / max_rpo lines: {e:#}"));
            BTreeMap::new()
        }
    };
    let timezone = policy
        .as_ref()
        .map_or(chrono_tz::Tz::UTC, |p| p.retention.timezone);
    let input = model::Input {
        snapshot: &snapshot,
        plan: plan.as_ref(),
        drills: &drills,
        limits: &limits,
        timezone,
        now,
        days,
    };
    let mut page = model::build(&input, verdict);
    page.warnings.extend(warnings);
    let built = started.elapsed();
    let out = html::page(&page);
    tracing::debug!(
        backups = snapshot.catalog.backups.len(),
        drills = drills.len(),
        bytes = out.len(),
        model_ms = built.as_millis() as u64,
        total_ms = started.elapsed().as_millis() as u64,
        "recovery report rendered"
    );
    Ok(out)
}

/// The drill reports that started at or after `from` (by their labels, which begin with the
/// start time), at most [`MAX_DRILL_REPORTS`] of the newest; an unreadable one is a warning.
async fn drill_reports(
    storage: &dyn Storage,
    from: DateTime<Utc>,
) -> (Vec<DrillReport>, Vec<String>) {
    let labels = match drill_report::list_labels(storage).await {
        Ok(l) => l,
        Err(e) => return (Vec::new(), vec![format!("no drill reports: {e:#}")]),
    };
    let recent: Vec<&String> = labels
        .iter()
        .filter(|l| label_time(l).is_none_or(|t| t >= from))
        .collect();
    let skip = recent.len().saturating_sub(MAX_DRILL_REPORTS);
    let loaded: Vec<Result<DrillReport>> = futures::stream::iter(recent.into_iter().skip(skip))
        .map(|l| drill_report::load(storage, l))
        .buffered(8)
        .collect()
        .await;
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    for r in loaded {
        match r {
            Ok(r) => out.push(r),
            Err(e) => warnings.push(format!("{e:#}")),
        }
    }
    (out, warnings)
}

/// The start time a drill report's label begins with (`20261202T031500Z-...`).
fn label_time(label: &str) -> Option<DateTime<Utc>> {
    let head = label.get(..16)?;
    NaiveDateTime::parse_from_str(head, "%Y%m%dT%H%M%SZ")
        .ok()
        .map(|t| t.and_utc())
}

/// `max_rto` / `max_rpo` of every drill file, by drill name. No drills directory is no
/// limits, not an error (drills may be run with `--file`).
fn drill_limits(ctx: &Context) -> Result<BTreeMap<String, Limits>> {
    let dir = drill_file::tests_dir(&ctx.config, &ctx.config_path);
    if !dir.is_dir() {
        return Ok(BTreeMap::new());
    }
    Ok(drill_file::load_dir(&dir)?
        .into_iter()
        .map(|d| {
            (
                d.name,
                Limits {
                    max_rto: d.max_rto,
                    max_rpo: d.max_rpo,
                },
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drill_labels_carry_their_start() {
        let t = label_time("20261202T031500Z-weekly-latest").unwrap();
        assert_eq!(crate::repo::label::rfc3339(&t), "2026-12-02T03:15:00Z");
        assert_eq!(label_time("garbage"), None);
    }
}
