//! `pgward expire [--confirm] [--force] [--json]`: the retention plan (`retention::plan`),
//! printed; with `--confirm`, carried out.
//!
//! Order of work, so that a crash at any point leaves a repository that restores every kept
//! backup and a re-run converges:
//! 1. the `expire` lease: two expires never interleave (renewed while the run lasts, and
//!    checked before each deletion step);
//! 2. the plan, from one snapshot, the policy, the live read leases (as holds) and `now`;
//!    printed. Without `--confirm` nothing else happens. A plan deleting more than half of the
//!    backups or dumps needs `--force` as well;
//! 3. the manifests of deleted backups and dumps: from here on they do not exist for restore.
//!    If one cannot be deleted, the run stops here (that backup still exists, so nothing it
//!    needs may go);
//! 4. the read leases again. A reader takes its lease and then checks that the manifest is
//!    still there, so a reader that got in between 2 and 3 holds a lease this listing sees:
//!    what is deleted next (objects, WAL, history files) is only what a plan made with these
//!    holds deletes as well;
//! 5. what else is under the deleted labels (dump objects, leftovers), then WAL, then history
//!    files. Each step lists what it could not delete, and the run fails after the rest;
//! 6. block garbage collection (`retention::gc`): sweep the marks older than `gc_grace`, then
//!    mark the blocks no complete manifest references now.
//!
//! The JSON form (`{"plan": …, "confirmed": …, "deleted": …, "gc": …}`) is a stable
//! interface: fields are only added.

use crate::commands::gc::{GcReport, render_text as render_gc};
use crate::context::Context;
use crate::output;
use crate::pg::WalSegmentName;
use crate::repo::label::Label;
use crate::repo::lock::{self, Lease, LeaseWait, ReadLeaseInfo, Renewing, SAFETY_MARGIN, hostname};
use crate::repo::snapshot::Snapshot;
use crate::retention::gc::{self, Gc, delete_keys};
use crate::retention::plan::{self, Deletions, Hold, Plan, SnapshotInputs};
use crate::retention::policy::Policy;
use crate::storage::Storage;
use anyhow::{Context as _, Result, bail};
use chrono::Utc;
use serde::Serialize;
use std::collections::BTreeSet;

/// How old an incomplete dump without its marker must be to be deleted as a leftover.
const LEFTOVER_AGE: chrono::Duration = chrono::Duration::hours(1);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Carry the plan out (without it, only print it).
    #[arg(long)]
    pub confirm: bool,
    /// Allow a plan that deletes more than half of the backups or dumps.
    #[arg(long)]
    pub force: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What `--confirm` deleted, by step.
#[derive(Debug, Default, Serialize)]
pub struct Deleted {
    pub manifests: usize,
    pub objects: usize,
    pub wal: usize,
    pub histories: usize,
    /// WAL the plan meant to delete, kept because a reader took a read lease meanwhile.
    pub wal_kept_for_new_readers: usize,
    /// Keys that could not be deleted, with why (a re-run retries them).
    pub failed: Vec<(String, String)>,
}

#[derive(Debug, Serialize)]
pub struct ExpireReport {
    pub plan: Plan,
    pub confirmed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted: Option<Deleted>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gc: Option<GcReport>,
}

/// Plans and (with `args.confirm`) carries out the retention policy under the expire lease:
/// the command's work, and the agent's `expire` job.
pub async fn run_expire(ctx: &Context, args: &Args) -> Result<ExpireReport> {
    let policy = ctx.policy()?;
    let storage = &ctx.storage;
    // Renewed in the background, and checked before each deletion step: an expire that was
    // paused past its lease (another one may have taken over) deletes nothing more.
    // The agent's expire waits for one started by hand ([agent] lease_wait); the command
    // line's is refused at once, naming the holder.
    let wait = LeaseWait {
        for_purposes: &["expire"],
        max: ctx.lease_wait,
        poll: std::time::Duration::from_secs(2),
        events: &ctx.events,
        cancel: Some(&ctx.stopping),
    };
    let lease = Lease::acquire_waiting(
        storage.clone(),
        "expire",
        "expire",
        crate::clock::system(),
        &wait,
    )
    .await?
    .keep_renewed();
    let result = expire(ctx, args, &policy, &lease).await;
    if let Err(e) = lease.release().await {
        tracing::warn!("cannot release the expire lease: {e:#}");
    }
    result
}

/// The first failed deletion of a carried-out plan, as an error (a re-run retries it).
pub fn deletion_failures(report: &ExpireReport) -> Result<()> {
    if let Some(d) = &report.deleted
        && let Some((key, why)) = d.failed.first()
    {
        bail!(
            "{} objects could not be deleted (first: {key}: {why})\n\
             hint: run `pgward expire --confirm` again; it retries what is left",
            d.failed.len()
        );
    }
    if let Some(g) = &report.gc
        && let Some((key, why)) = g.sweep.failed.first()
    {
        bail!(
            "{} blocks could not be deleted (first: {key}: {why}); their marks stay\n\
             hint: run `pgward gc` again; it retries them",
            g.sweep.failed.len()
        );
    }
    Ok(())
}

pub async fn run(ctx: &Context, args: &Args) -> Result<()> {
    let report = run_expire(ctx, args).await?;
    let text = if args.json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        render_text(&report)
    };
    output::stdout(&text).context("cannot write the report to standard output")?;
    deletion_failures(&report)
}

async fn expire(
    ctx: &Context,
    args: &Args,
    policy: &Policy,
    lease: &Renewing<Lease>,
) -> Result<ExpireReport> {
    let storage = ctx.storage.as_ref();
    let host = hostname();
    let snapshot = Snapshot::load(storage).await?;
    let now = Utc::now();
    let mut inputs = SnapshotInputs::of(&snapshot, &host);
    // A dump label without a marker is a leftover only once it is old: a paged listing can
    // miss a new dump's marker yet see its first object.
    for d in &mut inputs.dumps_incomplete {
        if d.label.time().is_none_or(|t| t > now - LEFTOVER_AGE) {
            d.live = true;
        }
    }
    let holds = live_holds(storage, now).await?;
    let first = plan::plan(&inputs.input(&snapshot, &holds), &policy.retention, now);
    if !args.confirm {
        return Ok(ExpireReport {
            plan: first,
            confirmed: false,
            deleted: None,
            gc: None,
        });
    }
    if first.force.needed && !args.force {
        let f = &first.force;
        bail!(
            "the plan deletes {} of {} backups and {} of {} dumps, more than half; nothing was \
             deleted\nhint: check the policy ({}) and the plan (`pgward expire`), then run \
             `pgward expire --confirm --force` if it is what you want",
            f.backups_deleted,
            f.backups_total,
            f.dumps_deleted,
            f.dumps_total,
            policy.origin
        );
    }
    let planned = first.deletions();
    let mut deleted = Deleted::default();
    lease.check(SAFETY_MARGIN).await?;
    let mut gone = delete_step(storage, &planned.manifests, &mut deleted.failed).await;
    deleted.manifests = gone;
    if !deleted.failed.is_empty() {
        // A backup whose manifest is still there still exists for restore: nothing it needs
        // may go. Stop here; the next run starts from a fresh plan.
        return Ok(ExpireReport {
            plan: first,
            confirmed: true,
            deleted: Some(deleted),
            gc: None,
        });
    }

    // Readers that got in while the manifests went keep what they read: a plan made with
    // their holds keeps their labels' objects, their WAL and history files, so only what both
    // plans delete goes (what is spared is garbage for a later run).
    let holds_now = live_holds(storage, Utc::now()).await?;
    let mut rest = planned.clone();
    if holds_now != holds {
        let again = plan::plan(&inputs.input(&snapshot, &holds_now), &policy.retention, now);
        let still = again.deletions();
        let both = |first: &[String], second: &[String]| -> Vec<String> {
            let second: BTreeSet<&String> = second.iter().collect();
            first
                .iter()
                .filter(|k| second.contains(k))
                .cloned()
                .collect()
        };
        rest.objects = both(&planned.objects, &still.objects);
        rest.prefixes = both(&planned.prefixes, &still.prefixes);
        rest.wal = both(&planned.wal, &still.wal);
        rest.histories = both(&planned.histories, &still.histories);
    }
    deleted.wal_kept_for_new_readers = planned.wal.len() - rest.wal.len();

    lease.check(SAFETY_MARGIN).await?;
    let mut objects = rest.objects.clone();
    objects.extend(listed_under(storage, &rest, &objects).await?);
    gone = delete_step(storage, &objects, &mut deleted.failed).await;
    deleted.objects = gone;
    lease.check(SAFETY_MARGIN).await?;
    deleted.wal = delete_step(storage, &rest.wal, &mut deleted.failed).await;
    deleted.histories = delete_step(storage, &rest.histories, &mut deleted.failed).await;

    let run = Gc {
        storage: &ctx.storage,
        events: &ctx.events,
        clock: crate::clock::system(),
        grace: policy.retention.gc_grace,
    };
    let sweep = gc::sweep(&run).await?;
    let mark = gc::mark(&run).await?;
    Ok(ExpireReport {
        plan: first,
        confirmed: true,
        deleted: Some(deleted),
        gc: Some(GcReport { sweep, mark }),
    })
}

/// Deletes `keys` (batched, retried) and returns how many went; failures are added to `failed`.
async fn delete_step(
    storage: &dyn Storage,
    keys: &[String],
    failed: &mut Vec<(String, String)>,
) -> usize {
    if keys.is_empty() {
        return 0;
    }
    let report = delete_keys(storage, keys).await;
    failed.extend(
        report
            .failed
            .into_iter()
            .map(|f| (f.key, f.error.to_string())),
    );
    report.deleted
}

/// Everything else listed under the deleted labels' prefixes (leftovers of older runs), not
/// already in `known`.
async fn listed_under(
    storage: &dyn Storage,
    planned: &Deletions,
    known: &[String],
) -> Result<Vec<String>> {
    let known: BTreeSet<&String> = known.iter().chain(&planned.manifests).collect();
    let mut out = Vec::new();
    for prefix in &planned.prefixes {
        let listing = storage
            .list(prefix)
            .await
            .with_context(|| format!("cannot list {prefix} in {}", storage.describe()))?;
        out.extend(
            listing
                .into_iter()
                .map(|o| o.key)
                .filter(|k| !known.contains(k)),
        );
    }
    Ok(out)
}

/// The live read leases as plan holds. A lease that names an unparsable label or segment is
/// an error: what it protects would be unknown.
async fn live_holds(storage: &dyn Storage, now: chrono::DateTime<Utc>) -> Result<Vec<Hold>> {
    let leases = lock::live_read_leases(storage, now).await?;
    let mut holds: Vec<Hold> = leases.iter().map(hold_of).collect::<Result<_>>()?;
    holds.sort_by(|a, b| (&a.label, &a.holder).cmp(&(&b.label, &b.holder)));
    Ok(holds)
}

fn hold_of(l: &ReadLeaseInfo) -> Result<Hold> {
    let bad = || {
        format!(
            "the read lease of {} pid {} names an unreadable label or WAL segment ({})\n\
             hint: if that process is gone, remove its lease under locks/read/",
            l.host, l.pid, l.label
        )
    };
    let label = Label::parse(&l.label)
        .map_err(anyhow::Error::msg)
        .with_context(bad)?;
    let wal_from = match &l.wal_from {
        Some(w) => Some((
            w.timeline,
            WalSegmentName::parse(&w.first_segment).with_context(bad)?,
        )),
        None => None,
    };
    Ok(Hold {
        label,
        holder: format!(
            "{} on {} pid {}",
            serde_json::to_value(l.purpose)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| "reader".into()),
            l.host,
            l.pid
        ),
        wal_from,
    })
}

pub fn render_text(r: &ExpireReport) -> String {
    let mut s = r.plan.render_text();
    match &r.deleted {
        None => {
            s.push_str(
                "\ndry run: nothing was deleted; run `pgward expire --confirm` to carry the plan out\n",
            );
        }
        Some(d) => {
            s.push_str(&format!(
                "\ndeleted: {} manifests, {} other objects, {} WAL files, {} history files",
                d.manifests, d.objects, d.wal, d.histories
            ));
            if d.wal_kept_for_new_readers > 0 {
                s.push_str(&format!(
                    "; {} WAL files kept for readers that started meanwhile",
                    d.wal_kept_for_new_readers
                ));
            }
            if !d.failed.is_empty() {
                s.push_str(&format!("; {} could not be deleted", d.failed.len()));
            }
            s.push('\n');
        }
    }
    if let Some(g) = &r.gc {
        s.push_str(&render_gc(g));
    }
    s
}
