//! The agent's notifications: job events to commands, webhooks and healthchecks-style pings.
//!
//! ```text
//!  agent job ──Event──▶ Notifier::emit (quick: route, build the envelope, try_send)
//!                          │ one bounded queue per [[notify]] entry (QUEUE events)
//!                          ▼
//!                  one task per entry: deliver in order (a ping's start before its end),
//!                  retries and timeouts inside; result → log line + on_result("success"|"failure")
//! ```
//!
//! Entries deliver concurrently and independently: a slow or failing target delays only its
//! own later events, never the agent's jobs or another target. Memory is bounded by the
//! queues; an event that finds its entry's queue full is dropped, logged and counted as a
//! failure. [`Notifier::reload`] swaps the entries for new events; the old entries' tasks
//! finish what they hold and end. [`Notifier::flush`] waits for what is queued, for a while.
//!
//! Which events an entry receives is [`route`] (pure). Secrets never reach a log: URLs are
//! shown as scheme://host only, secrets and signatures not at all.

pub mod command;
pub mod config;
pub mod event;
pub mod webhook;

pub use config::{NotifyConfig, On, RetryConfig, Target};
pub use event::{Envelope, EventKind};

use crate::events::{Event, EventSink};
use bytes::Bytes;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::Instrument as _;
use webhook::{HttpClient, Post, SigningKey};

/// Events an entry may have waiting before new ones are dropped.
pub const QUEUE: usize = 256;

/// Which healthchecks endpoint a ping calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingKind {
    /// `<url>/start`
    Start,
    /// `<url>`
    Success,
    /// `<url>/fail`
    Fail,
}

impl PingKind {
    /// The URL this ping calls.
    pub fn url(self, base: &str) -> String {
        let base = base.trim_end_matches('/');
        match self {
            PingKind::Start => format!("{base}/start"),
            PingKind::Success => base.to_string(),
            PingKind::Fail => format!("{base}/fail"),
        }
    }
}

/// What an entry does with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Command,
    Webhook,
    Ping(PingKind),
}

/// Whether (and how) an entry is told of an event of this kind for a job of this kind.
///
/// - `kinds` (empty = all) filters every target;
/// - a command or a webhook hears of finished jobs only: `failure` → job_failed,
///   `success` → job_succeeded and job_recovered (a recovery is a success), `recovered` →
///   job_recovered;
/// - a ping hears of every start, success and failure (the healthchecks protocol; `on` is
///   refused for a ping when the configuration is read).
pub fn route(c: &NotifyConfig, event: EventKind, job_kind: &str) -> Option<Action> {
    if !c.kinds.is_empty()
        && !c
            .kinds
            .iter()
            .any(|k| crate::agent::jobs::kind_name(*k) == job_kind)
    {
        return None;
    }
    if let Target::Ping { .. } = c.target {
        return Some(Action::Ping(match event {
            EventKind::JobStarted => PingKind::Start,
            EventKind::JobSucceeded | EventKind::JobRecovered => PingKind::Success,
            EventKind::JobFailed => PingKind::Fail,
        }));
    }
    let wanted = match event {
        EventKind::JobStarted => false,
        EventKind::JobFailed => c.on.contains(&On::Failure),
        EventKind::JobSucceeded => c.on.contains(&On::Success),
        EventKind::JobRecovered => c.on.contains(&On::Success) || c.on.contains(&On::Recovered),
    };
    wanted.then_some(match c.target {
        Target::Command { .. } => Action::Command,
        _ => Action::Webhook,
    })
}

/// Told of every final delivery result: `"success"` or `"failure"` (the agent counts them in
/// `pgward_notifications_total{result}`).
pub type OnResult = Arc<dyn Fn(&str) + Send + Sync>;

/// A `[[notify]]` entry ready to deliver (its secret read).
struct Hook {
    config: NotifyConfig,
    name: String,
    key: Option<SigningKey>,
}

struct Delivery {
    envelope: Arc<Envelope>,
    action: Action,
}

/// An entry and the queue of its delivery task.
struct Entry {
    hook: Arc<Hook>,
    tx: mpsc::Sender<Delivery>,
}

struct Shared {
    client: HttpClient,
    on_result: OnResult,
    /// Deliveries queued or running.
    pending: AtomicUsize,
}

/// The agent's notification sink. Cheap to emit into from any task or thread.
pub struct Notifier {
    host: String,
    entries: Mutex<Arc<Vec<Entry>>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let names: Vec<&str> = entries.iter().map(|e| e.hook.name.as_str()).collect();
        f.debug_struct("Notifier")
            .field("host", &self.host)
            .field("entries", &names)
            .finish()
    }
}

/// Reads every entry's secret; all or nothing.
fn prepare(configs: Vec<NotifyConfig>) -> anyhow::Result<Vec<Hook>> {
    configs
        .into_iter()
        .map(|config| {
            let key = match &config.target {
                Target::Webhook {
                    secret_file: Some(path),
                    ..
                } => Some(SigningKey::load(path)?),
                _ => None,
            };
            Ok(Hook {
                name: config.display_name(),
                config,
                key,
            })
        })
        .collect()
}

impl Notifier {
    /// Reads the entries' secret files and starts one delivery task per entry (call it inside
    /// the agent's tokio runtime). Fails, naming the file and the fix, when a `secret_file`
    /// cannot be read or is not a Standard Webhooks secret.
    pub fn start(
        configs: Vec<NotifyConfig>,
        host: String,
        on_result: OnResult,
    ) -> anyhow::Result<Arc<Notifier>> {
        let hooks = prepare(configs)?;
        let shared = Arc::new(Shared {
            client: webhook::client(),
            on_result,
            pending: AtomicUsize::new(0),
        });
        let entries = spawn_entries(hooks, &shared);
        Ok(Arc::new(Notifier {
            host,
            entries: Mutex::new(Arc::new(entries)),
            shared,
        }))
    }

    /// New events go to these entries (SIGHUP). All or nothing: when a secret file cannot be
    /// read the old entries stay and the error says why. Deliveries already queued finish.
    /// Call it inside the agent's tokio runtime (it starts the new entries' tasks).
    pub fn reload(&self, configs: Vec<NotifyConfig>) -> anyhow::Result<()> {
        let hooks = prepare(configs)?;
        let entries = spawn_entries(hooks, &self.shared);
        *self.entries.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(entries);
        Ok(())
    }

    /// Waits until every queued delivery has ended, at most `within`; then gives up on the
    /// rest, logging how many (at shutdown: the process is about to exit).
    pub async fn flush(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let pending = self.shared.pending.load(Ordering::SeqCst);
            if pending == 0 {
                return;
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    pending,
                    "{pending} notification(s) not delivered within {} at shutdown; dropped",
                    humantime::format_duration(within)
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Deliveries queued or running now.
    pub fn pending(&self) -> usize {
        self.shared.pending.load(Ordering::SeqCst)
    }
}

fn spawn_entries(hooks: Vec<Hook>, shared: &Arc<Shared>) -> Vec<Entry> {
    hooks
        .into_iter()
        .map(|hook| {
            let hook = Arc::new(hook);
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(worker(hook.clone(), shared.clone(), rx));
            Entry { hook, tx }
        })
        .collect()
}

/// One entry's deliveries, in order, until its queue is dropped (reload, shutdown).
async fn worker(hook: Arc<Hook>, shared: Arc<Shared>, mut rx: mpsc::Receiver<Delivery>) {
    while let Some(d) = rx.recv().await {
        let started = Instant::now();
        let e = &d.envelope;
        // Retry lines of this delivery carry the target and the event id.
        let span = tracing::info_span!("notify", hook = %hook.name, id = %e.id);
        let result = deliver(&hook, &shared.client, &d).instrument(span).await;
        match &result {
            Ok(()) => tracing::info!(
                notify = %hook.name,
                event = e.event.as_str(),
                job = %e.job,
                id = %e.id,
                ms = started.elapsed().as_millis() as u64,
                "notification delivered"
            ),
            Err(cause) => tracing::warn!(
                notify = %hook.name,
                event = e.event.as_str(),
                job = %e.job,
                id = %e.id,
                "notification failed: {cause}"
            ),
        }
        (shared.on_result)(if result.is_ok() { "success" } else { "failure" });
        shared.pending.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn deliver(hook: &Hook, client: &HttpClient, d: &Delivery) -> Result<(), String> {
    let e = &d.envelope;
    match (&hook.config.target, d.action) {
        (Target::Command { argv, timeout }, _) => command::run(argv, *timeout, e).await,
        (Target::Webhook { url, retry, .. }, _) => {
            let body = Bytes::from(e.to_json());
            let id = e.id.clone();
            let key = hook.key.clone();
            let signed_body = body.clone();
            let headers = move || {
                let ts = chrono::Utc::now().timestamp();
                let mut h = vec![
                    ("webhook-id", id.clone()),
                    ("webhook-timestamp", ts.to_string()),
                ];
                if let Some(k) = &key {
                    h.push(("webhook-signature", k.sign(&id, ts, &signed_body)));
                }
                h
            };
            let post = Post {
                url,
                content_type: "application/json",
                body,
                headers: Vec::new(),
            };
            webhook::send(client, post, retry, &headers)
                .await
                .map(|_| ())
        }
        (Target::Ping { url, retry }, Action::Ping(kind)) => {
            let target = kind.url(url);
            let post = Post {
                url: &target,
                content_type: "text/plain; charset=utf-8",
                body: Bytes::from(e.summary.clone()),
                headers: Vec::new(),
            };
            let scrubbed = |s: String| webhook::scrub(&s, url);
            webhook::send(client, post, retry, &|| Vec::new())
                .await
                .map(|_| ())
                .map_err(scrubbed)
        }
        (Target::Ping { .. }, _) => Ok(()),
    }
}

impl EventSink for Notifier {
    fn emit(&self, event: &Event) {
        if !matches!(event, Event::JobStarted { .. } | Event::JobFinished { .. }) {
            return;
        }
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(envelope) = Envelope::of(event, &self.host, event::new_id(), chrono::Utc::now())
        else {
            return;
        };
        let envelope = Arc::new(envelope);
        for entry in entries.iter() {
            let Some(action) = route(&entry.hook.config, envelope.event, &envelope.kind) else {
                continue;
            };
            self.shared.pending.fetch_add(1, Ordering::SeqCst);
            let d = Delivery {
                envelope: envelope.clone(),
                action,
            };
            if entry.tx.try_send(d).is_err() {
                self.shared.pending.fetch_sub(1, Ordering::SeqCst);
                tracing::warn!(
                    notify = %entry.hook.name,
                    event = envelope.event.as_str(),
                    job = %envelope.job,
                    "notification dropped: {QUEUE} earlier ones are still waiting for this \
                     target\nhint: check that the target answers (see the earlier failures)"
                );
                (self.shared.on_result)("failure");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retention::policy::JobKind;
    use std::time::Duration;

    fn entry(target: Target, on: &[On], kinds: &[JobKind]) -> NotifyConfig {
        NotifyConfig {
            name: None,
            on: on.to_vec(),
            kinds: kinds.to_vec(),
            target,
        }
    }

    #[test]
    fn which_entries_receive_which_events() {
        let command = Target::Command {
            argv: vec!["/bin/true".into()],
            timeout: Duration::from_secs(1),
        };
        let retry = RetryConfig {
            retries: 0,
            timeout: Duration::from_secs(1),
            backoff: Duration::from_millis(1),
        };
        let webhook = Target::Webhook {
            url: "http://127.0.0.1:1/h".into(),
            secret_file: None,
            retry,
        };
        let ping = Target::Ping {
            url: "http://127.0.0.1:1/u".into(),
            retry,
        };
        use Action::*;
        use EventKind::*;
        use On::*;
        let default = &config::DEFAULT_ON;
        // (entry, event, job kind, expected, why)
        let cases: Vec<(NotifyConfig, EventKind, &str, Option<Action>, &str)> = vec![
            (
                entry(command.clone(), default, &[]),
                JobFailed,
                "backup",
                Some(Command),
                "default on: failure",
            ),
            (
                entry(command.clone(), default, &[]),
                JobRecovered,
                "backup",
                Some(Command),
                "default on: recovered",
            ),
            (
                entry(command.clone(), default, &[]),
                JobSucceeded,
                "backup",
                None,
                "default: no plain success",
            ),
            (
                entry(command.clone(), default, &[]),
                JobStarted,
                "backup",
                None,
                "starts go to pings only",
            ),
            (
                entry(webhook.clone(), &[Success], &[]),
                JobSucceeded,
                "dump",
                Some(Webhook),
                "success",
            ),
            (
                entry(webhook.clone(), &[Success], &[]),
                JobRecovered,
                "dump",
                Some(Webhook),
                "a recovery is a success",
            ),
            (
                entry(webhook.clone(), &[Success], &[]),
                JobFailed,
                "dump",
                None,
                "success only",
            ),
            (
                entry(webhook.clone(), &[Recovered], &[]),
                JobSucceeded,
                "dump",
                None,
                "recovered only",
            ),
            (
                entry(webhook.clone(), &[Failure, Success], &[]),
                JobStarted,
                "dump",
                None,
                "no start for a webhook",
            ),
            (
                entry(webhook.clone(), &[Failure], &[JobKind::Backup]),
                JobFailed,
                "dump",
                None,
                "kinds filter",
            ),
            (
                entry(
                    webhook.clone(),
                    &[Failure],
                    &[JobKind::Backup, JobKind::Dump],
                ),
                JobFailed,
                "dump",
                Some(Webhook),
                "kinds match",
            ),
            (
                entry(ping.clone(), default, &[]),
                JobStarted,
                "verify",
                Some(Ping(PingKind::Start)),
                "ping start",
            ),
            (
                entry(ping.clone(), default, &[]),
                JobSucceeded,
                "verify",
                Some(Ping(PingKind::Success)),
                "ping success whatever on says",
            ),
            (
                entry(ping.clone(), default, &[]),
                JobRecovered,
                "verify",
                Some(Ping(PingKind::Success)),
                "ping recovery",
            ),
            (
                entry(ping.clone(), default, &[]),
                JobFailed,
                "verify",
                Some(Ping(PingKind::Fail)),
                "ping fail",
            ),
            (
                entry(ping.clone(), default, &[JobKind::Drill]),
                JobFailed,
                "verify",
                None,
                "ping kinds filter",
            ),
        ];
        for (c, event, kind, want, why) in cases {
            assert_eq!(route(&c, event, kind), want, "{why}");
        }
    }

    #[test]
    fn ping_urls() {
        for base in ["https://hc-ping.com/u", "https://hc-ping.com/u/"] {
            assert_eq!(PingKind::Start.url(base), "https://hc-ping.com/u/start");
            assert_eq!(PingKind::Success.url(base), "https://hc-ping.com/u");
            assert_eq!(PingKind::Fail.url(base), "https://hc-ping.com/u/fail");
        }
    }
}
