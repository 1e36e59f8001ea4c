//! A command hook: the program run with the event as JSON on stdin and in `PGWARD_EVENT_*`
//! environment variables, no shell.
//!
//! The program runs in its own process group, so that on timeout the whole group it may have
//! started (a shell script's children) is killed — by the group id of the child this module
//! started, never by name. A non-zero exit, a signal or the timeout is a failed delivery,
//! reported with the tail of what the program wrote to stderr. Its stdout is discarded.

use super::event::Envelope;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How much of the program's stderr a failure reports (its end: where the error usually is).
const STDERR_TAIL: usize = 2048;
/// How long stderr may stay open after the program exited (a daemon it left behind).
const READER_GRACE: Duration = Duration::from_secs(2);

/// Runs the hook once; `Err` is the cause, one line plus the stderr tail.
pub async fn run(argv: &[String], timeout: Duration, envelope: &Envelope) -> Result<(), String> {
    let (program, args) = argv.split_first().ok_or("empty command")?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .envs(envelope.env_vars())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| {
        format!(
            "cannot start {program}: {e} (hint: it must exist and be executable by the \
                 agent's user, inside the unit's sandbox)"
        )
    })?;
    let pid = child.id();
    let mut stdin = child.stdin.take();
    let mut stderr = child.stderr.take();
    let body = envelope.to_json();
    let reader = tokio::spawn(async move {
        let mut buf = Vec::new();
        if let Some(s) = stderr.as_mut() {
            // Bounded: keep reading (so the program never blocks on a full pipe) but keep
            // only the tail.
            let mut chunk = [0u8; 4096];
            while let Ok(n) = s.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > 2 * STDERR_TAIL {
                    buf.drain(..buf.len() - STDERR_TAIL);
                }
            }
        }
        buf
    });
    let run = async {
        if let Some(mut s) = stdin.take() {
            // A program that does not read its stdin closes the pipe: not a failure.
            let _ = s.write_all(body.as_bytes()).await;
            let _ = s.write_all(b"\n").await;
            drop(s);
        }
        child.wait().await
    };
    let status = match tokio::time::timeout(timeout, run).await {
        Ok(Ok(status)) => Ok(status),
        Ok(Err(e)) => Err(format!("waiting for {program}: {e}")),
        Err(_) => {
            if let Some(pgid) = pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
                let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
            }
            let _ = child.kill().await;
            Err(format!(
                "{program} did not finish within {}; killed it (and its process group)",
                humantime::format_duration(timeout)
            ))
        }
    };
    // What the hook left running in its group (`notify-send &`, a forgotten `sleep`) ends
    // with it, as systemd ends a service's leftovers: a hook must not outlive its delivery.
    // Right after the wait, so the group id cannot have been taken by anyone else yet.
    if let Some(pgid) = pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
        let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
    }
    let abort = reader.abort_handle();
    let tail = match tokio::time::timeout(READER_GRACE, reader).await {
        Ok(Ok(buf)) => tail(&buf),
        _ => {
            abort.abort();
            String::new()
        }
    };
    let with_tail = |what: String| {
        if tail.is_empty() {
            what
        } else {
            format!("{what}; stderr: {tail}")
        }
    };
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(with_tail(format!("{program} failed: {s}"))),
        Err(e) => Err(with_tail(e)),
    }
}

/// The last [`STDERR_TAIL`] bytes as one line.
fn tail(buf: &[u8]) -> String {
    let start = buf.len().saturating_sub(STDERR_TAIL);
    let text = String::from_utf8_lossy(&buf[start..]);
    let text = text.trim();
    let joined: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let line = joined.join(" | ");
    if start > 0 {
        format!("…{line}")
    } else {
        line
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_stderr_tail_is_one_line_and_bounded() {
        assert_eq!(super::tail(b"  first\n\nsecond  \n"), "first | second");
        let long = vec![b'x'; 10_000];
        let t = super::tail(&long);
        assert!(t.starts_with('…') && t.len() < 2100, "{}", t.len());
    }
}
