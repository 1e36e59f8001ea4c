//! Running a program to completion under a deadline, with its output captured.
//!
//! For the short-lived programs pgward drives synchronously (`initdb`, `pg_ctl`, `psql`, and
//! pgward itself in the tests): a hang must become an error naming the program and what it
//! printed so far, never a hung caller. Standard input is closed. Output is read by two threads
//! so a chatty program cannot block on a full pipe; when the deadline passes the program is
//! killed (SIGKILL, the direct child only). A daemon the program left holding the pipes (which
//! `pg_ctl start` avoids by sending the server's output to its log file) cannot hold the caller:
//! the readers get a short grace period after the program exits, and are then left behind.

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long the output readers may take after the program exited.
const READER_GRACE: Duration = Duration::from_secs(5);

/// What a finished program produced.
#[derive(Debug, Clone)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// A readable dump for error and assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "status: {:?} after {:.2?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.elapsed, self.stdout, self.stderr
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot start {what}: {source}")]
    Spawn {
        what: String,
        source: std::io::Error,
    },
    #[error(
        "timed out after {timeout:?}: {what}\n--- stdout so far ---\n{stdout}\n--- stderr so far ---\n{stderr}"
    )]
    TimedOut {
        what: String,
        timeout: Duration,
        stdout: String,
        stderr: String,
    },
}

/// Runs `cmd` to completion; kills it and returns [`RunError::TimedOut`] if it takes longer than
/// `timeout`. A non-zero exit is not an error here: the caller reads [`Output::status`].
pub fn run(cmd: &mut Command, timeout: Duration) -> Result<Output, RunError> {
    let what = format!("{cmd:?}");
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| RunError::Spawn {
            what: what.clone(),
            source,
        })?;
    let stdout = Captured::spawn(child.stdout.take());
    let stderr = Captured::spawn(child.stderr.take());
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(source) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(RunError::Spawn { what, source });
            }
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(RunError::TimedOut {
                what,
                timeout,
                stdout: stdout.text(),
                stderr: stderr.text(),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = start.elapsed();
    let grace = Instant::now() + READER_GRACE;
    while !(stdout.is_finished() && stderr.is_finished()) && Instant::now() < grace {
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(Output {
        status,
        stdout: stdout.text(),
        stderr: stderr.text(),
        elapsed,
    })
}

/// A pipe drained into a buffer by a thread.
struct Captured {
    buf: Arc<Mutex<Vec<u8>>>,
    reader: Option<JoinHandle<()>>,
}

impl Captured {
    fn spawn(src: Option<impl Read + Send + 'static>) -> Captured {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let reader = src.map(|mut src| {
            let buf = buf.clone();
            std::thread::spawn(move || {
                let mut chunk = [0u8; 8192];
                while let Ok(n @ 1..) = src.read(&mut chunk) {
                    buf.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend_from_slice(&chunk[..n]);
                }
            })
        });
        Captured { buf, reader }
    }

    fn is_finished(&self) -> bool {
        self.reader.as_ref().is_none_or(|r| r.is_finished())
    }

    fn text(&self) -> String {
        let buf = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&buf).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_and_status() {
        let out = run(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!((out.code(), out.stdout.as_str()), (Some(3), "out\n"));
        assert_eq!(out.stderr, "err\n");
    }

    #[test]
    fn a_hang_is_killed_at_the_deadline() {
        let started = Instant::now();
        let err = run(
            Command::new("sh").args(["-c", "echo begun; exec sleep 30"]),
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10));
        let text = err.to_string();
        assert!(
            text.starts_with("timed out after") && text.contains("begun"),
            "{text}"
        );
    }
}
