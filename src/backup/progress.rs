//! A one-line progress display on standard error, for people watching a backup in a terminal.
//! It is only started when stderr is a terminal, so logs and pipes never see control
//! characters, and redraws at most four times a second.

use super::pipeline::Progress;
use crate::units;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const INTERVAL: Duration = Duration::from_millis(250);

/// Redraws until dropped; dropping clears the line.
pub struct Display {
    task: tokio::task::JoinHandle<()>,
}

impl Display {
    pub fn start(progress: Arc<Progress>) -> Display {
        let started = Instant::now();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(INTERVAL);
            loop {
                tick.tick().await;
                let line = render(&progress, started.elapsed());
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r{line}\x1b[K");
                let _ = err.flush();
            }
        });
        Display { task }
    }
}

impl Drop for Display {
    fn drop(&mut self) {
        self.task.abort();
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[K");
        let _ = err.flush();
    }
}

fn render(p: &Progress, elapsed: Duration) -> String {
    let done = p.bytes_done.load(Ordering::Relaxed);
    let total = p.bytes_total.load(Ordering::Relaxed);
    let stored = p.stored_bytes.load(Ordering::Relaxed);
    let head = if total > 0 {
        let pct = (done as f64 * 100.0 / total as f64).min(100.0);
        format!(
            "{} / {} ({pct:.0}%)",
            units::bytes(done),
            units::bytes(total)
        )
    } else {
        units::bytes(done)
    };
    let new = if stored == 0 {
        "nothing new stored yet".to_string()
    } else {
        format!("{} new stored", units::bytes(stored))
    };
    format!(
        "backup: {head}, {}, {new}",
        units::rate(done, elapsed.as_secs_f64())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_shows_percent_when_the_total_is_known() {
        let p = Progress::default();
        p.bytes_done.store(500 << 20, Ordering::Relaxed);
        p.bytes_total.store(1000 << 20, Ordering::Relaxed);
        let line = render(&p, Duration::from_secs(1));
        assert!(
            line.contains("(50%)") && line.contains("500.0 MiB/s"),
            "{line}"
        );
        assert!(line.contains("nothing new stored yet"), "{line}");
    }
}
