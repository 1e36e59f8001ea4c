//! A one-line progress display on standard error, for people watching a backup in a terminal.
//! It is only started when stderr is a terminal, so logs and pipes never see control
//! characters, and redraws at most four times a second.

use super::pipeline::Progress;
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
    let rate = done as f64 / elapsed.as_secs_f64().max(0.001);
    let head = if total > 0 {
        let pct = (done as f64 * 100.0 / total as f64).min(100.0);
        format!("{} / {} ({pct:.0}%)", human_bytes(done), human_bytes(total))
    } else {
        human_bytes(done)
    };
    format!(
        "backup: {head}, {}/s, {} new stored",
        human_bytes(rate as u64),
        human_bytes(stored)
    )
}

/// `1.52 GB`, `310 kB`: decimal units, three significant digits.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else if v >= 100.0 {
        format!("{v:.0} {}", UNITS[unit])
    } else if v >= 10.0 {
        format!("{v:.1} {}", UNITS[unit])
    } else {
        format!("{v:.2} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_520_000_000), "1.52 GB");
        assert_eq!(human_bytes(31_000_000), "31.0 MB");
        assert_eq!(human_bytes(310_000), "310 kB");
    }

    #[test]
    fn render_shows_percent_when_the_total_is_known() {
        let p = Progress::default();
        p.bytes_done.store(500_000_000, Ordering::Relaxed);
        p.bytes_total.store(1_000_000_000, Ordering::Relaxed);
        let line = render(&p, Duration::from_secs(1));
        assert!(
            line.contains("(50%)") && line.contains("500 MB/s"),
            "{line}"
        );
    }
}
