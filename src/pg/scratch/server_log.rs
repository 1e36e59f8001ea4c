//! Reading a scratch server's log file (`pg_ctl -l`), which is appended to across restarts.
//!
//! `pg_ctl start -w` returns as soon as a server in recovery accepts read-only connections, so a
//! recovery that fails later shows only here: a `FATAL` or `PANIC` line, then the postmaster
//! exits. Callers read what one start wrote from the log's length at that start on.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// The log from byte `offset` on (empty if the file does not exist yet).
pub fn read_from(path: &Path, offset: u64) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path)
        && f.seek(SeekFrom::Start(offset)).is_ok()
    {
        let _ = f.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The current length of the log, where the next start's lines will begin.
pub fn len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Lines logged at FATAL or PANIC level.
pub fn fatal_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.contains("FATAL:") || l.contains("PANIC:"))
        .map(str::to_string)
        .collect()
}

/// The last `n` lines, labelled with the file, for error messages.
pub fn tail(path: &Path, text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    format!(
        "--- last {n} lines of {} ---\n{}",
        path.display(),
        lines[lines.len().saturating_sub(n)..].join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fatal_lines_and_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("s.log");
        assert_eq!((len(&log), read_from(&log, 0).as_str()), (0, ""));
        std::fs::write(&log, "a FATAL:  old\n").unwrap();
        let offset = len(&log);
        std::fs::write(&log, "a FATAL:  old\nLOG:  ok\nb PANIC:  new\n").unwrap();
        let text = read_from(&log, offset);
        assert_eq!(fatal_lines(&text), vec!["b PANIC:  new".to_string()]);
        assert!(tail(&log, &text, 1).ends_with("\nb PANIC:  new"));
    }
}
