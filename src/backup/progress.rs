//! A backup's progress, reported as events ([`Event::BackupProgress`]) every
//! [`PROGRESS_EVERY`] while the copy runs. How it is shown (a terminal line, a log line every
//! few seconds) is the sink's business (`events::LogSink`).

use super::pipeline::Progress;
use crate::events::{Event, Events, PROGRESS_EVERY};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Reports until dropped, and once more when dropped (so even a short copy reports its
/// final figures).
pub struct Reporter {
    task: tokio::task::JoinHandle<()>,
    events: Events,
    label: String,
    progress: Arc<Progress>,
    started: Instant,
}

impl Reporter {
    pub fn start(events: Events, label: &str, progress: Arc<Progress>) -> Reporter {
        let started = Instant::now();
        let task = {
            let (events, label, progress) = (events.clone(), label.to_string(), progress.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(PROGRESS_EVERY);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    events.emit(&event(&label, &progress, started));
                }
            })
        };
        Reporter {
            task,
            events,
            label: label.to_string(),
            progress,
            started,
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.task.abort();
        self.events
            .emit(&event(&self.label, &self.progress, self.started));
    }
}

fn event(label: &str, p: &Progress, started: Instant) -> Event {
    Event::BackupProgress {
        label: label.to_string(),
        bytes_done: p.bytes_done.load(Ordering::Relaxed),
        bytes_total: p.bytes_total.load(Ordering::Relaxed),
        stored_bytes: p.stored_bytes.load(Ordering::Relaxed),
        elapsed_ms: started.elapsed().as_millis() as u64,
    }
}
