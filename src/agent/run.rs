//! `pgward agent`: the policy's jobs on their schedules, in this process, one at a time.
//!
//! Jobs run one after another (a backup and an expire never race; a drill has the machine to
//! itself). A job whose scheduled time comes while it is still running is not started twice:
//! each such start is counted as `skipped`. A job whose time came while another job ran runs
//! once that one ends. The last start, success and failure of every job persist in
//! `[agent] state_dir` (`jobs.json`), so a restart neither forgets them nor repeats them; a
//! run missed while the agent was down runs once at start (`[agent] catch_up = false` turns
//! that off).
//!
//! After each job the repository catalog is read again (backups, dumps, WAL holes, the
//! newest drill reports) and the server's archiver is asked (`pg_stat_archiver`,
//! `pg_wal/archive_status`), so the metrics are never staler than one job (and one
//! [`REFRESH_EVERY`] when idle).
//!
//! SIGTERM or SIGINT: no new job starts; a running one gets `[agent] stop_timeout` to finish,
//! then is cancelled through its context (a cancelled backup or dump writes no manifest, a
//! cancelled drill stops its server and removes its directory); the agent exits 0.

use crate::agent::http::{self, Endpoints, Readiness};
use crate::agent::jobs::{self, RunFacts};
use crate::agent::metrics::{Metrics, RepoFacts};
use crate::agent::schedule::{self, Schedule};
use crate::agent::state::{AgentState, JobState};
use crate::agent::systemd;
use crate::config::Config;
use crate::context::Context;
use crate::events::{Event, Fanout};
use crate::notify::Notifier;
use crate::repo::lock::WaitCancelled;
use crate::retention::policy::{Job, JobKind, Policy};
use anyhow::{Context as _, Result, bail};
use chrono::{DateTime, Utc};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long queued notifications may still be delivered at shutdown (a job's failure that
/// made the agent stop deserves its page; a dead webhook must not hold the stop).
const NOTIFY_FLUSH: Duration = Duration::from_secs(10);

/// How often an idle agent renders the page at `/` again.
const PAGE_EVERY: Duration = Duration::from_secs(600);

/// The longest the page's rendering may hold the loop (or twice `[wal] timeout`).
const PAGE_DEADLINE: Duration = Duration::from_secs(60);

/// How often an idle agent refreshes the repository and archiver facts.
pub const REFRESH_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Default)]
pub struct AgentOptions {
    /// Run the first job of this kind now, once, and exit with its result.
    pub once: Option<JobKind>,
}

/// One scheduled job.
struct Slot {
    job: Job,
    name: String,
    kind: &'static str,
    schedule: Schedule,
    next: Option<DateTime<Utc>>,
}

/// What SIGHUP replaces: the configuration, the policy, and the jobs built from them.
struct Plan {
    config: Config,
    policy: Arc<Policy>,
    slots: Vec<Slot>,
}

impl Plan {
    /// `config`'s policy and its jobs with their schedules parsed; any error refuses the whole.
    fn build(config: Config, config_path: &Path) -> Result<Plan> {
        let policy = Policy::for_config(&config, config_path)?;
        let mut slots: Vec<Slot> = Vec::new();
        for job in &policy.jobs {
            let name = jobs::job_name(job);
            let schedule = Schedule::parse(&job.schedule, policy.retention.timezone)
                .with_context(|| format!("job {name} in {}", policy.origin))?;
            if slots.iter().any(|s| s.name == name) {
                bail!(
                    "two jobs are named {name} in {}\nhint: give one a `name`",
                    policy.origin
                );
            }
            slots.push(Slot {
                kind: jobs::kind_name(job.kind),
                job: job.clone(),
                name,
                schedule,
                next: None,
            });
        }
        Ok(Plan {
            config,
            policy: Arc::new(policy),
            slots,
        })
    }

    /// A context for work under this plan: its configuration and policy (never the files'
    /// current text, which a refused reload found broken), the agent's storage and events.
    fn context(&self, agent: &Context) -> Context {
        let mut c = Context::with_storage(
            self.config.clone(),
            agent.config_path.clone(),
            agent.storage.clone(),
        );
        c.events = agent.events.clone();
        c.policy = Some(self.policy.clone());
        c.lease_wait = self.config.agent.lease_wait;
        c
    }
}

/// The configuration and policy read again for SIGHUP. What only a restart can change (the
/// repository, `[agent] listen` and `allow_remote`, `state_dir`) keeps its running value and
/// is named in the second value. A job whose name and schedule are unchanged keeps its next
/// run; a new or rescheduled one is next due at its schedule's next time after `now`.
fn reload(
    current: &Plan,
    config_path: &Path,
    now: DateTime<Utc>,
) -> Result<(Plan, Vec<&'static str>)> {
    let (mut config, _) = Config::load(Some(config_path))?;
    let mut kept = Vec::new();
    // The storage was built from these (secrets compared too: a rotated key needs a restart,
    // and is not silently ignored).
    let (repo, old_repo) = (&mut config.repo, &current.config.repo);
    if (&repo.url, &repo.s3) != (&old_repo.url, &old_repo.s3) {
        kept.push("[repo] url and [repo.s3]");
        (repo.url, repo.s3) = (old_repo.url.clone(), old_repo.s3.clone());
    }
    if config.wal.timeout != current.config.wal.timeout {
        kept.push("[wal] timeout (the repository's retries)");
        config.wal.timeout = current.config.wal.timeout;
    }
    let (old, new) = (&current.config.agent, &mut config.agent);
    if (new.listen, new.allow_remote) != (old.listen, old.allow_remote) {
        kept.push("[agent] listen");
        (new.listen, new.allow_remote) = (old.listen, old.allow_remote);
    }
    if new.state_dir != old.state_dir {
        kept.push("[agent] state_dir");
        new.state_dir = old.state_dir.clone();
    }
    let mut plan = Plan::build(config, config_path)?;
    let same_zone = plan.policy.retention.timezone == current.policy.retention.timezone;
    for s in &mut plan.slots {
        let unchanged = current
            .slots
            .iter()
            .find(|o| same_zone && o.name == s.name && o.job.schedule == s.job.schedule);
        s.next = match unchanged {
            Some(o) => o.next,
            None => s.schedule.next_after(now),
        };
    }
    Ok((plan, kept))
}

pub async fn run_agent(ctx: &Context, opts: &AgentOptions) -> Result<()> {
    let started = Utc::now();
    // The default actions of SIGHUP, SIGTERM and SIGINT end the process: watch them before
    // anything can take long.
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| tracing::warn!("cannot watch for SIGHUP; reloads need a restart: {e}"))
        .ok();
    let mut plan = Plan::build(ctx.config.clone(), &ctx.config_path)?;
    let dir = plan.config.agent.state_dir.clone();
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create [agent] state_dir {}", dir.display()))?;
    let mut book = Book {
        state: AgentState::load(&dir)?,
        dir,
    };
    let metrics = Arc::new(Metrics::new(started));
    // The hooks hear the agent's events beside its log: one stream for both.
    let counted = metrics.clone();
    let notifier = Notifier::start(
        plan.config.notify.clone(),
        crate::repo::lock::hostname(),
        Arc::new(move |result: &str| counted.observe_notification(result)),
    )?;
    let mut agent_ctx = Context::with_storage(
        ctx.config.clone(),
        ctx.config_path.clone(),
        ctx.storage.clone(),
    );
    agent_ctx.events = Arc::new(Fanout(vec![ctx.events.clone(), notifier.clone()]));
    let ctx = &agent_ctx;
    if let Some(kind) = opts.once {
        let slot = plan.slots.iter().find(|s| s.job.kind == kind);
        let job = slot.map(|s| s.job.clone()).unwrap_or(Job {
            kind,
            schedule: "0 0 * * *".into(),
            name: None,
            drill: None,
            databases: None,
            full: false,
        });
        let name = jobs::job_name(&job);
        let stop_timeout = plan.config.agent.stop_timeout;
        let stop = Some((&mut shutdown as _, stop_timeout));
        let (result, _) = run_one(ctx, &plan, &job, &name, &mut book, stop).await;
        notifier.flush(NOTIFY_FLUSH).await;
        return result.map(|f| crate::say!("{name}: {}", f.summary));
    }
    if plan.slots.is_empty() {
        tracing::warn!(
            "the policy {} has no [[job]]: the agent only serves its endpoints",
            plan.policy.origin
        );
    }

    let readiness = Arc::new(Mutex::new(Readiness::default()));
    let page = Arc::new(Mutex::new(None));
    let listen = plan.config.agent.listen;
    let listener = http::bind(listen).await?;
    let stop_tasks = CancellationToken::new();
    let server = tokio::spawn(http::serve(
        listener,
        Endpoints {
            metrics: metrics.clone(),
            readiness: readiness.clone(),
            page: page.clone(),
        },
        stop_tasks.clone(),
    ));
    systemd::spawn_watchdog(stop_tasks.clone());
    tracing::info!(listen = %listen, jobs = plan.slots.len(), "agent started");
    systemd::ready();

    let now = Utc::now();
    for s in &mut plan.slots {
        let js = book.state.jobs.get(&s.name).cloned().unwrap_or_default();
        let missed = schedule::missed_run(&s.schedule, js.last_start, now);
        s.next = match missed {
            Some(at) if plan.config.agent.catch_up => {
                tracing::info!(job = %s.name, missed = %at, "a run was missed while the agent was down: running it now");
                Some(now)
            }
            _ => s.schedule.next_after(now),
        };
        metrics.observe_job(&s.name, s.kind, &js, s.next, s.schedule.interval(now));
    }
    let mut facts = refresh(&plan.context(ctx), &metrics, Some(&page)).await;
    set_readiness(
        &readiness,
        &facts,
        &plan.slots,
        &book.state,
        started,
        Utc::now(),
    );

    let mut last_refresh = Instant::now();
    let mut last_page = Instant::now();
    loop {
        let now = Utc::now();
        let due = plan
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.next.map(|t| (t, i)))
            .min();
        let wait = due
            .map(|(t, _)| (t - now).to_std().unwrap_or(Duration::ZERO))
            .unwrap_or(REFRESH_EVERY)
            .min(REFRESH_EVERY.saturating_sub(last_refresh.elapsed()));
        let hup = async {
            match &mut hangup {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut shutdown => break,
            Some(()) = hup => {
                systemd::reloading();
                let reloaded = reload(&plan, &ctx.config_path, Utc::now()).and_then(|r| {
                    // All or nothing: new hooks (their secret files read) or none of it.
                    notifier.reload(r.0.config.notify.clone())?;
                    Ok(r)
                });
                match reloaded {
                    Ok((new, kept)) => {
                        for k in kept {
                            tracing::warn!("{k} changed: that takes a restart; the running value is kept");
                        }
                        for old in &plan.slots {
                            if !new.slots.iter().any(|s| (&s.name, s.kind) == (&old.name, old.kind)) {
                                metrics.forget_job(&old.name, old.kind);
                            }
                        }
                        for s in &new.slots {
                            let js = book.state.jobs.get(&s.name).cloned().unwrap_or_default();
                            metrics.observe_job(&s.name, s.kind, &js, s.next, s.schedule.interval(Utc::now()));
                        }
                        metrics.observe_reload(true);
                        tracing::info!(jobs = new.slots.len(), policy = %new.policy.origin, "configuration and policy reloaded");
                        plan = new;
                    }
                    Err(e) => {
                        metrics.observe_reload(false);
                        tracing::error!(
                            "reload refused; the running configuration and policy are kept: {}",
                            crate::output::error_text(&e)
                        );
                    }
                }
                systemd::ready();
                set_readiness(&readiness, &facts, &plan.slots, &book.state, started, Utc::now());
                continue;
            }
            () = tokio::time::sleep(wait) => {}
        }
        let now = Utc::now();
        let Some(i) = due.filter(|(t, _)| *t <= now).map(|(_, i)| i) else {
            let render = last_page.elapsed() >= PAGE_EVERY;
            facts = refresh(&plan.context(ctx), &metrics, render.then_some(&page)).await;
            if render {
                last_page = Instant::now();
            }
            set_readiness(&readiness, &facts, &plan.slots, &book.state, started, now);
            last_refresh = Instant::now();
            continue;
        };
        let (job, name) = (plan.slots[i].job.clone(), plan.slots[i].name.clone());
        systemd::status(&format!("running {name}"));
        let (result, stopped) = run_one(
            ctx,
            &plan,
            &job,
            &name,
            &mut book,
            Some((&mut shutdown, plan.config.agent.stop_timeout)),
        )
        .await;
        let ended = Utc::now();
        if let Ok(f) = &result
            && let Some(n) = f.verify_problems
        {
            metrics.observe_verify(n);
        }
        let slot = &mut plan.slots[i];
        // Starts of this job that fell inside its own run were not made: skipped.
        let js = book.job(&name);
        let run_start = js.last_start.unwrap_or(ended);
        let mut t = slot.schedule.next_after(run_start);
        while let Some(at) = t.filter(|at| *at <= ended) {
            js.skipped();
            t = slot.schedule.next_after(at);
        }
        let js = js.clone();
        if let Err(e) = book.save() {
            tracing::error!("{e:#}");
        }
        slot.next = slot.schedule.next_after(ended);
        metrics.observe_job(
            &name,
            slot.kind,
            &js,
            slot.next,
            slot.schedule.interval(ended),
        );
        facts = refresh(&plan.context(ctx), &metrics, Some(&page)).await;
        last_page = Instant::now();
        set_readiness(
            &readiness,
            &facts,
            &plan.slots,
            &book.state,
            started,
            Utc::now(),
        );
        last_refresh = Instant::now();
        systemd::status("idle");
        if stopped {
            break;
        }
    }
    tracing::info!("agent stopping");
    systemd::stopping();
    notifier.flush(NOTIFY_FLUSH).await;
    stop_tasks.cancel();
    let _ = server.await;
    if let Err(e) = book.save() {
        tracing::error!("{e:#}");
    }
    Ok(())
}

/// The jobs' persisted state, and the directory it lives in.
struct Book {
    state: AgentState,
    dir: PathBuf,
}

impl Book {
    fn save(&self) -> Result<()> {
        self.state.save(&self.dir)
    }

    fn job(&mut self, name: &str) -> &mut JobState {
        self.state.jobs.entry(name.to_string()).or_default()
    }
}

/// Runs `job`, recording its start before and its end after (persisted). With `shutdown`, a
/// signal during the run stops any wait for a lease at once (the job never begins), gives work
/// under way `stop_timeout` to finish, then cancels it; the second value says a shutdown was
/// asked for. A run ended by the shutdown is neither a success nor a failure: its start is
/// forgotten (a restart catches it up) and `job_cancelled` is said instead of `job_finished`.
async fn run_one(
    ctx: &Context,
    plan: &Plan,
    job: &Job,
    name: &str,
    book: &mut Book,
    shutdown: Option<(
        &mut (dyn std::future::Future<Output = ()> + Unpin),
        Duration,
    )>,
) -> (Result<RunFacts>, bool) {
    let clock = Instant::now();
    let js = book.job(name);
    let previous_start = js.last_start;
    js.started(Utc::now());
    if let Err(e) = book.save() {
        let e = e.context(format!("job {name} not started"));
        tracing::error!("{}", crate::output::error_text(&e));
        return (Err(e), false);
    }
    let kind = jobs::kind_name(job.kind).to_string();
    ctx.events.emit(&Event::JobStarted {
        job: name.to_string(),
        kind: kind.clone(),
    });
    let mut job_ctx = plan.context(ctx);
    let (cancel, stopping) = (CancellationToken::new(), CancellationToken::new());
    job_ctx.cancel = cancel.clone();
    job_ctx.stopping = stopping.clone();
    let work = jobs::run_job(&job_ctx, job);
    tokio::pin!(work);
    let mut stopped = false;
    let result = match shutdown {
        None => work.await,
        Some((signal, stop_timeout)) => {
            tokio::select! {
                r = &mut work => r,
                () = signal => {
                    stopped = true;
                    stopping.cancel();
                    tracing::info!(job = name, "stopping: the running job gets {} to finish", humantime::format_duration(stop_timeout));
                    match tokio::time::timeout(stop_timeout, &mut work).await {
                        Ok(r) => r,
                        Err(_) => {
                            tracing::warn!(job = name, "cancelling the running job");
                            cancel.cancel();
                            work.await
                        }
                    }
                }
            }
        }
    };
    let duration_ms = clock.elapsed().as_millis() as u64;
    let js = book.job(name);
    let cancelled = match &result {
        Ok(_) => false,
        Err(e) => cancel.is_cancelled() || e.downcast_ref::<WaitCancelled>().is_some(),
    };
    if cancelled {
        js.last_start = previous_start;
        ctx.events.emit(&Event::JobCancelled {
            job: name.to_string(),
            kind,
            duration_ms,
        });
    } else {
        let was_failing = js.failing();
        let (succeeded, summary, details) = match &result {
            Ok(f) => {
                js.succeeded(Utc::now(), clock.elapsed());
                let details = serde_json::Value::Object(f.details.clone());
                (true, f.summary.clone(), details)
            }
            Err(e) => {
                let text = crate::output::error_text(e);
                js.failed(Utc::now(), clock.elapsed(), &text);
                let first = text.lines().next().unwrap_or_default().to_string();
                (false, first, serde_json::json!({ "error": text }))
            }
        };
        ctx.events.emit(&Event::JobFinished {
            job: name.to_string(),
            kind,
            succeeded,
            recovered: succeeded && was_failing,
            summary,
            duration_ms,
            details,
        });
    }
    if let Err(e) = book.save() {
        tracing::error!("{e:#}");
    }
    (result, stopped)
}

/// SIGTERM or SIGINT. The handlers are installed when this is called (before the agent does
/// anything slow: a signal before then would end the process with its default action); the
/// future completes at the first signal.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let streams = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        match streams {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                tracing::warn!("cannot watch for SIGTERM/SIGINT; stop the agent with SIGKILL");
                std::future::pending::<()>().await
            }
        }
    }
}

/// What the last refresh found: the repository's facts, or why it could not be read.
type Refreshed = std::result::Result<RepoFacts, String>;

/// Reads the catalog, the newest drill reports and the archiver; updates the metrics and
/// renders the page served at `/` (the status verdict and the recovery report).
/// `page`: render it too (after a job, at start, and every [`PAGE_EVERY`] when idle: the page
/// reads the whole catalog again, which an idle agent need not do every minute).
async fn refresh(
    ctx: &Context,
    metrics: &Metrics,
    page: Option<&Mutex<Option<Arc<String>>>>,
) -> Refreshed {
    let facts = refresh_metrics(ctx, metrics).await;
    let Some(page) = page else {
        return facts;
    };
    let now = Utc::now();
    let render = async {
        let verdict = crate::status::judge(&crate::status::gather(ctx, now).await, now);
        crate::report::render(ctx, &verdict, crate::report::DEFAULT_DAYS, now).await
    };
    // A store that stalls must not stall the scheduling loop with it.
    let deadline = PAGE_DEADLINE.max(ctx.config.wal.timeout * 2);
    match tokio::time::timeout(deadline, render).await {
        Ok(Ok(html)) => *page.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(html)),
        // The last page stays; its time says how old it is.
        Ok(Err(e)) => tracing::warn!(
            "cannot render the recovery report: {}",
            crate::output::error_text(&e)
        ),
        Err(_) => tracing::warn!(
            "the recovery report was not rendered within {}; the last one is served",
            humantime::format_duration(deadline)
        ),
    }
    facts
}

async fn refresh_metrics(ctx: &Context, metrics: &Metrics) -> Refreshed {
    let archiver = crate::pg::archiver::read(&ctx.config).await.ok();
    if let Some(a) = &archiver {
        metrics.observe_archiver(a);
    }
    let facts = match crate::commands::info::report(ctx).await {
        Ok(r) => {
            let newest = r.backups.last();
            let stored = r.backups.iter().map(|b| b.stored_bytes).sum::<u64>()
                + r.dumps.iter().map(|d| d.stored_size).sum::<u64>()
                + r.timelines.iter().map(|t| t.stored_bytes).sum::<u64>();
            let gaps = r
                .timelines
                .iter()
                .flat_map(|t| &t.gaps)
                .map(|g| g.segments as i64)
                .sum();
            // Recoverable up to the oldest WAL not yet archived (now, when nothing waits);
            // without the server's answer, only to the newest backup's end.
            let window_end = match (&archiver, newest) {
                (Some(a), Some(_)) => Some(
                    Utc::now() - chrono::Duration::milliseconds((a.rpo_seconds * 1000.0) as i64),
                ),
                (None, Some(b)) => Some(b.stop_time),
                (_, None) => None,
            };
            Ok(RepoFacts {
                backups: r.backups.len() as i64,
                dumps: r.dumps.len() as i64,
                stored_bytes: stored,
                last_backup_size_bytes: newest.map_or(0, |b| b.total_bytes),
                last_backup_stored_bytes: newest.map_or(0, |b| b.stored_bytes),
                window_start: r.backups.first().map(|b| b.stop_time),
                window_end,
                wal_gap_segments: gaps,
            })
        }
        Err(e) => Err(crate::output::error_text(&e)),
    };
    metrics.observe_repo(facts.as_ref().ok());
    if let Ok((reports, _)) =
        crate::drill::report::latest_per_drill(ctx.storage.as_ref(), 100).await
    {
        metrics.observe_drills(&reports);
    }
    facts
}

/// `/readyz`'s reasons (pure): the repository unreachable, a job whose last run failed, a job
/// overdue (no success for twice its interval, counted from the agent's start for a job that
/// never succeeded).
fn readiness_reasons(
    facts: &Refreshed,
    jobs: &[(String, JobState, Option<Duration>)],
    started: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Vec<String> {
    let mut out = Vec::new();
    if let Err(e) = facts {
        out.push(format!("the repository cannot be read: {e}"));
    }
    for (name, s, interval) in jobs {
        if let (Some(f), ok) = (s.last_failure, s.last_success)
            && ok.is_none_or(|ok| f > ok)
        {
            out.push(format!(
                "job {name} is failing: {}",
                s.last_error.as_deref().unwrap_or("see the log")
            ));
        }
        if let Some(interval) = interval {
            let since = s.last_success.unwrap_or(started);
            if schedule::overdue(since, *interval, now) {
                out.push(format!(
                    "job {name} is overdue: no success for {} (its interval is {})",
                    humantime::format_duration((now - since).to_std().unwrap_or_default()),
                    humantime::format_duration(*interval)
                ));
            }
        }
    }
    out
}

fn set_readiness(
    r: &Mutex<Readiness>,
    facts: &Refreshed,
    slots: &[Slot],
    state: &AgentState,
    started: DateTime<Utc>,
    now: DateTime<Utc>,
) {
    let jobs: Vec<(String, JobState, Option<Duration>)> = slots
        .iter()
        .map(|s| {
            (
                s.name.clone(),
                state.jobs.get(&s.name).cloned().unwrap_or_default(),
                s.schedule.interval(now),
            )
        })
        .collect();
    let reasons = readiness_reasons(facts, &jobs, started, now);
    r.lock().unwrap_or_else(|e| e.into_inner()).reasons = reasons;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn readiness_names_each_reason() {
        let started = at("2026-12-02T00:00:00Z");
        let now = at("2026-12-02T05:00:00Z");
        let hour = Some(Duration::from_secs(3600));
        let ok = JobState {
            last_success: Some(at("2026-12-02T04:30:00Z")),
            ..JobState::default()
        };
        let failing = JobState {
            last_success: Some(at("2026-12-02T04:00:00Z")),
            last_failure: Some(at("2026-12-02T04:50:00Z")),
            last_error: Some("the store is down".into()),
            ..JobState::default()
        };
        let recovered = JobState {
            last_success: Some(at("2026-12-02T04:55:00Z")),
            last_failure: Some(at("2026-12-02T04:50:00Z")),
            ..JobState::default()
        };
        let stale = JobState {
            last_success: Some(at("2026-12-02T01:00:00Z")),
            ..JobState::default()
        };
        for (facts, jobs, want) in [
            (
                Ok(RepoFacts::default()),
                vec![("backup", ok.clone(), hour)],
                vec![],
            ),
            (
                Err("connection refused".to_string()),
                vec![("backup", ok.clone(), hour)],
                vec!["the repository cannot be read: connection refused"],
            ),
            (
                Ok(RepoFacts::default()),
                vec![("backup", failing, hour)],
                vec!["job backup is failing: the store is down"],
            ),
            (
                Ok(RepoFacts::default()),
                vec![("backup", recovered, hour)],
                vec![],
            ),
            (
                Ok(RepoFacts::default()),
                vec![("backup", stale, hour)],
                vec!["job backup is overdue: no success for 4h"],
            ),
            // Never succeeded since the agent started five hours ago: overdue.
            (
                Ok(RepoFacts::default()),
                vec![("backup", JobState::default(), hour)],
                vec!["job backup is overdue"],
            ),
        ] {
            let jobs: Vec<_> = jobs
                .into_iter()
                .map(|(n, s, i)| (n.to_string(), s, i))
                .collect();
            let got = readiness_reasons(&facts, &jobs, started, now);
            assert_eq!(got.len(), want.len(), "{got:?}");
            for (g, w) in got.iter().zip(&want) {
                assert!(g.starts_with(w), "{g} does not start with {w}");
            }
        }
        let fresh = readiness_reasons(
            &Ok(RepoFacts::default()),
            &[("backup".into(), JobState::default(), hour)],
            now,
            now,
        );
        assert!(fresh.is_empty(), "{fresh:?}");
    }
}
