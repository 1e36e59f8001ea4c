//! Writing to standard output and standard error so that a reader going away cannot stop pgward.
//!
//! `println!` and `eprintln!` panic when the write fails, and a closed pipe makes every write
//! fail: Rust's runtime ignores SIGPIPE (and restores the default only in children it spawns),
//! so a reader that exits (`backup | head -1`) turns the next print into EPIPE, and the print
//! into a panic — part-way through a backup, leaving its lease and in-progress marker. So
//! nothing in pgward uses them: reports go through [`stdout`], chatter through [`say!`], and
//! logs through [`Stderr`], tracing's writer. The invariant: a failed write to either stream
//! never changes what a command does or its exit status, except for a report that is the whole
//! point of the command (`info`), whose caller may fail on an error other than a closed pipe.

use std::fmt;
use std::io::{self, Write};

/// Writes `text` to standard output and flushes. A closed pipe is not an error: nobody is left
/// to read the text, and the work it describes is done.
pub fn stdout(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Writes the report of work that is done (`what`: "backup 2026…" names it in the warning). A
/// report nobody can read does not undo the work, so a failed write is a warning, not an error.
pub fn report_done(what: &str, text: &str) {
    if let Err(e) = stdout(text) {
        tracing::warn!(
            "{what} is done, but its report could not be written to standard output: {e}"
        );
    }
}

/// One line of progress chatter on standard output; a failure to write it is ignored.
pub fn say_line(args: fmt::Arguments<'_>) {
    let mut out = io::stdout().lock();
    let _ = out.write_fmt(args).and_then(|()| out.write_all(b"\n"));
    let _ = out.flush();
}

/// `println!` for progress chatter, which a closed or failing stdout cannot turn into a panic.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::output::say_line(format_args!($($arg)*))
    };
}

/// Standard error for tracing: a write that fails (a closed pipe, a full disk under the server
/// log) is reported as done, so the event is dropped instead of reaching tracing-subscriber's
/// fallback, which reports it with `eprintln!` — a panic when stderr is the closed pipe.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = io::stderr().write_all(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        let _ = io::stderr().flush();
        Ok(())
    }
}

/// An error chain as one message: each cause after the one it explains (`a: b: c`, as
/// anyhow's `{:#}`), and every `hint:` line moved to the end as one hint. A context added
/// above an error with a hint (`cannot push X` over `permission denied …\nhint: …`) would
/// otherwise leave that hint in the middle of the message, before the cause it is about.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    let mut hints: Vec<String> = Vec::new();
    for (i, cause) in e.chain().enumerate() {
        let shown = cause.to_string();
        let mut lines = Vec::new();
        for line in shown.lines() {
            match line.strip_prefix("hint: ") {
                Some(h) if !hints.iter().any(|known| known == h) => hints.push(h.to_string()),
                Some(_) => {}
                None => lines.push(line),
            }
        }
        if lines.is_empty() {
            continue;
        }
        if i > 0 && !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&lines.join("\n"));
    }
    if !hints.is_empty() {
        text.push_str("\nhint: ");
        text.push_str(&hints.join("; "));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::anyhow;

    #[test]
    fn hints_come_last_as_one() {
        let e = anyhow!("permission denied on /repo/wal\nhint: run pgward as postgres")
            .context("cannot store 000000010000000000000003")
            .context("wal-push failed\nhint: PostgreSQL retries the push");
        assert_eq!(
            error_text(&e),
            "wal-push failed: cannot store 000000010000000000000003: permission denied on \
             /repo/wal\nhint: PostgreSQL retries the push; run pgward as postgres"
        );
        // A hint repeated at two levels is said once; a message without one is unchanged.
        let e = anyhow!("a\nhint: h").context("b\nhint: h");
        assert_eq!(error_text(&e), "b: a\nhint: h");
        let e = anyhow!("x").context("y");
        assert_eq!(error_text(&e), format!("{e:#}"));
        // Lines that are not hints keep their place.
        let e = anyhow!("cause").context("what\nconsequence");
        assert_eq!(error_text(&e), "what\nconsequence: cause");
    }
}
