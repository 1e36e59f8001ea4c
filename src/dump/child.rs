//! A program whose standard output is the data to store (`pg_dump`, `pg_dumpall`), as a
//! [`ByteStream`] that only ends cleanly when the program exited 0.
//!
//! This is what a shell pipeline gets wrong: `pg_dump | zstd > file` reports zstd's status,
//! and a pg_dump that died midway leaves a truncated file that looks fine. Here the stream's
//! last step waits for the program's exit, and any status but 0 — an error exit, a signal —
//! ends the stream with an error instead of an end, so [`put_stream`](crate::storage::put_stream)
//! never makes such an object visible. The exit (status and the last lines of standard error)
//! is handed to the caller separately, so its error can quote what the program said.
//!
//! Memory: one read buffer ([`CHUNK`]) here, and the last [`STDERR_LINES`] lines of standard
//! error. The program is killed when the stream is dropped (a failed upload, a cancelled dump).

use crate::storage::ByteStream;
use anyhow::{Context as _, Result};
use futures::StreamExt;
use std::collections::VecDeque;
use std::io;
use std::os::unix::process::ExitStatusExt as _;
use std::process::{ExitStatus, Stdio};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::sync::oneshot;
use tokio_util::io::ReaderStream;

/// Bytes read from the program's standard output at a time.
const CHUNK: usize = 256 << 10;
/// Lines of standard error kept for the error message.
pub const STDERR_LINES: usize = 20;
/// Longest line kept.
const LINE_MAX: usize = 1000;

/// How a program ended.
#[derive(Debug, Clone)]
pub struct Exit {
    pub status: ExitStatus,
    /// Its last lines of standard error.
    pub stderr: String,
}

impl Exit {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// `exit status 1` or `killed by signal 9`.
    pub fn describe_status(&self) -> String {
        describe_status(&self.status)
    }

    /// `<what> failed (exit status 1): <stderr>`, for errors.
    pub fn failure(&self, what: &str) -> String {
        let said = self.stderr.trim();
        if said.is_empty() {
            format!(
                "{what} failed ({}) and wrote nothing on standard error",
                self.describe_status()
            )
        } else {
            format!("{what} failed ({}): {said}", self.describe_status())
        }
    }
}

pub fn describe_status(status: &ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => format!("{status}"),
    }
}

/// A running producer: its output, and its exit once the output has been read to the end.
pub struct Producer {
    pub output: ByteStream,
    pub exit: oneshot::Receiver<Exit>,
}

/// Starts `cmd` (standard input closed) with its output as a stream; `what` names it in the
/// stream's error (`pg_dump of database app`).
pub fn spawn(cmd: std::process::Command, what: &str) -> Result<Producer> {
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {what} ({:?})", cmd.as_std().get_program()))?;
    let stdout = child.stdout.take().context("no pipe for standard output")?;
    let stderr = tokio::spawn(tail_lines(
        child.stderr.take().context("no pipe for standard error")?,
    ));
    let (exit_tx, exit_rx) = oneshot::channel();
    let what = what.to_string();
    let end = futures::stream::once(async move {
        let status = match child.wait().await {
            Ok(s) => s,
            Err(e) => return Some(Err(e)),
        };
        let exit = Exit {
            status,
            stderr: stderr.await.unwrap_or_default(),
        };
        let failed = (!exit.success()).then(|| io::Error::other(exit.failure(&what)));
        let _ = exit_tx.send(exit);
        failed.map(Err)
    })
    .filter_map(futures::future::ready);
    Ok(Producer {
        output: ReaderStream::with_capacity(stdout, CHUNK)
            .chain(end)
            .boxed(),
        exit: exit_rx,
    })
}

/// The last [`STDERR_LINES`] lines of `r`, each cut at [`LINE_MAX`] bytes.
pub async fn tail_lines(r: impl AsyncRead + Unpin) -> String {
    let mut lines = BufReader::new(r).lines();
    let mut kept: VecDeque<String> = VecDeque::new();
    // A line that is not UTF-8 ends the reading; what was kept still tells the story.
    while let Ok(Some(mut line)) = lines.next_line().await {
        if line.len() > LINE_MAX {
            let mut cut = LINE_MAX;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push('…');
        }
        if kept.len() == STDERR_LINES {
            kept.pop_front();
        }
        kept.push_back(line);
    }
    Vec::from(kept).join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::stream::collect;

    fn sh(script: &str) -> std::process::Command {
        let mut c = std::process::Command::new("sh");
        c.args(["-c", script]);
        c
    }

    #[tokio::test]
    async fn only_exit_zero_ends_the_stream_cleanly() {
        let p = spawn(sh("printf hello; echo note >&2"), "greeter").unwrap();
        assert_eq!(&collect(p.output).await.unwrap()[..], b"hello");
        let exit = p.exit.await.unwrap();
        assert!(exit.success() && exit.stderr == "note", "{exit:?}");

        let p = spawn(
            sh("printf partial; for i in $(seq 30); do echo line $i >&2; done; exit 3"),
            "pg_dump of database app",
        )
        .unwrap();
        let e = collect(p.output).await.unwrap_err().to_string();
        assert!(
            e.starts_with("pg_dump of database app failed (exit status 3): line 11"),
            "{e}"
        );
        assert!(e.ends_with("line 30") && !e.contains("line 10\n"), "{e}");
        assert!(!p.exit.await.unwrap().success());

        let p = spawn(sh("printf x; kill -9 $$"), "victim").unwrap();
        let e = collect(p.output).await.unwrap_err().to_string();
        assert!(e.contains("killed by signal 9"), "{e}");
    }
}
