//! systemd's notification protocol (`Type=notify`): `READY=1` once the endpoints listen,
//! `RELOADING=1` … `READY=1` around a SIGHUP reload, `STOPPING=1` on shutdown, `STATUS=` lines
//! saying what runs, and `WATCHDOG=1` at half of `WatchdogSec` while the agent's runtime is
//! alive. Outside systemd (no `NOTIFY_SOCKET`) every call is a no-op.
//!
//! The watchdog is kept by its own task, beside the jobs, not by the scheduling loop: a
//! backup may rightly run for hours, and a watchdog that only the loop fed would kill it. What
//! it proves is that the process and its runtime still answer (a wedged runtime stops the
//! task, and systemd restarts the agent); a job that hangs is bounded by its own timeouts.
//! Programs the agent starts never inherit the socket (see `pg::binaries`).

use sd_notify::NotifyState;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot notify systemd: {e}");
    }
}

pub fn ready() {
    send(&[NotifyState::Ready, NotifyState::Status("running")]);
}

pub fn reloading() {
    send(&[NotifyState::Reloading]);
}

pub fn status(text: &str) {
    send(&[NotifyState::Status(text)]);
}

pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// Feeds the watchdog until `stop` fires, when `WatchdogSec` is set for this process.
pub fn spawn_watchdog(stop: CancellationToken) {
    let Some(limit) = sd_notify::watchdog_enabled() else {
        return;
    };
    let every = (limit / 2).max(Duration::from_millis(100));
    tracing::info!(
        "systemd watchdog: {} (fed every {})",
        humantime::format_duration(limit),
        humantime::format_duration(every)
    );
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => send(&[NotifyState::Watchdog]),
            }
        }
    });
}
