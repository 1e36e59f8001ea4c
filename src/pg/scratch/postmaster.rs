//! A postmaster process, named so that it can be signalled safely after a while.
//!
//! A PID alone is not enough: once the server exits its PID can be reused by any process, and
//! SIGKILL to a reused PID kills a stranger. So a [`Postmaster`] is the PID together with the
//! process's start time (field 22 of `/proc/<pid>/stat`, clock ticks since boot), and it is
//! signalled only while `/proc/<pid>/stat` still shows that start time. A zombie (state `Z`)
//! counts as gone: `pg_ctl` detaches the server, so it is reaped by init, not by us.
//! Signals go through `rustix` (no `unsafe`).

use crate::pg::postmaster_pid::PostmasterPid;
use rustix::process::{Pid, Signal};
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Postmaster {
    pid: u32,
    start_ticks: u64,
}

/// `(state, start time)` from the text of `/proc/<pid>/stat`. The command name (field 2) is in
/// parentheses and may itself hold spaces and parentheses, so fields are counted after the last
/// `)`.
fn parse_stat(text: &str) -> Option<(char, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    // Field 3 (state) is fields[0], so field 22 (starttime) is fields[19].
    Some((state, fields.get(19)?.parse().ok()?))
}

fn stat_of(pid: u32) -> Option<(char, u64)> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

impl Postmaster {
    /// The live process that runs as `pid` now, if there is one.
    pub fn find(pid: u32) -> Option<Postmaster> {
        match stat_of(pid)? {
            ('Z' | 'X', _) => None,
            (_, start_ticks) => Some(Postmaster { pid, start_ticks }),
        }
    }

    /// The live postmaster named by `<datadir>/postmaster.pid`, if any. A stale file whose
    /// process is gone gives `None`, and so does one whose PID now belongs to another process
    /// (after a crash and a reboot, or PID reuse, it can be anything — even a production
    /// server): the process must be running in `datadir` (a postmaster changes into its data
    /// directory before it writes the file). A process whose working directory cannot be read
    /// (another user's) is not taken for ours either.
    pub fn of_datadir(datadir: &Path) -> Option<Postmaster> {
        let text = std::fs::read_to_string(datadir.join("postmaster.pid")).ok()?;
        let pm = Postmaster::find(PostmasterPid::parse(&text).pid?)?;
        pm.runs_in(datadir).then_some(pm)
    }

    /// Whether the process's working directory is `dir` (false when it cannot be read).
    pub fn runs_in(&self, dir: &Path) -> bool {
        let cwd = std::fs::read_link(format!("/proc/{}/cwd", self.pid));
        matches!((cwd, std::fs::canonicalize(dir)), (Ok(c), Ok(d)) if c == d)
    }

    /// The process named by a PID and start time recorded earlier (a marker file); whether it
    /// still runs is [`Postmaster::is_alive`]'s question.
    pub fn from_parts(pid: u32, start_ticks: u64) -> Postmaster {
        Postmaster { pid, start_ticks }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The process's start time, clock ticks since boot (field 22 of `/proc/<pid>/stat`).
    pub fn start_ticks(&self) -> u64 {
        self.start_ticks
    }

    /// Whether this very process (same PID, same start time) still runs.
    pub fn is_alive(&self) -> bool {
        Postmaster::find(self.pid) == Some(*self)
    }

    /// Polls until the process is gone; false if it still runs after `timeout`.
    pub fn wait_gone(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.is_alive() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// SIGKILL, if this process still runs. The identity is checked right before the signal;
    /// the window between the check and the signal is a few microseconds, against PID reuse
    /// that needs the server to exit and the PID space to wrap first.
    pub fn kill(&self) -> std::io::Result<()> {
        self.signal(Signal::KILL)
    }

    /// SIGQUIT, if this process still runs: to a postmaster, an immediate shutdown (what
    /// `pg_ctl stop -m immediate` sends), for callers that have no `pg_ctl` at hand.
    pub fn quit(&self) -> std::io::Result<()> {
        self.signal(Signal::QUIT)
    }

    fn signal(&self, signal: Signal) -> std::io::Result<()> {
        if !self.is_alive() {
            return Ok(());
        }
        let pid = i32::try_from(self.pid)
            .ok()
            .and_then(Pid::from_raw)
            .ok_or_else(|| std::io::Error::other(format!("invalid pid {}", self.pid)))?;
        match rustix::process::kill_process(pid, signal) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines() {
        let line = "4374 (cat) R 4370 4370 26791 0 -1 4194304 98 0 0 0 0 0 0 0 20 0 1 0 543568 \
                    3133440 390 18446744073709551615";
        assert_eq!(parse_stat(line), Some(('R', 543568)));
        let odd = "77 (a) b) (c) S 1 77 77 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 99 1 2";
        assert_eq!(parse_stat(odd), Some(('S', 99)));
        assert_eq!(parse_stat("77 (short) S 1 2"), None);
        assert_eq!(parse_stat(""), None);
    }

    #[test]
    fn this_process_is_alive_and_a_changed_start_time_is_not() {
        let me = Postmaster::find(std::process::id()).unwrap();
        assert!(me.is_alive());
        let reused = Postmaster {
            start_ticks: me.start_ticks + 1,
            ..me
        };
        assert!(!reused.is_alive());
        // Not alive: kill does nothing (it would otherwise kill the test process).
        reused.kill().unwrap();
    }

    #[test]
    fn a_pid_file_naming_a_stranger_names_no_postmaster() {
        let dir = tempfile::tempdir().unwrap();
        // A stale pid file whose PID is now this test process (running elsewhere).
        std::fs::write(
            dir.path().join("postmaster.pid"),
            format!("{}\n{}\n", std::process::id(), dir.path().display()),
        )
        .unwrap();
        assert_eq!(Postmaster::of_datadir(dir.path()), None);
        // A process that does run in the directory is found.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .current_dir(dir.path())
            .spawn()
            .unwrap();
        std::fs::write(
            dir.path().join("postmaster.pid"),
            format!("{}\n{}\n", child.id(), dir.path().display()),
        )
        .unwrap();
        let found = Postmaster::of_datadir(dir.path()).expect("the process in the directory");
        assert_eq!(found.pid(), child.id());
        found.kill().unwrap();
        let _ = child.wait();
    }

    #[test]
    fn a_killed_child_is_gone() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let p = Postmaster::find(child.id()).unwrap();
        p.kill().unwrap();
        // Our own child stays a zombie until waited for; a zombie counts as gone.
        assert!(p.wait_gone(Duration::from_secs(5)));
        let _ = child.wait();
    }
}
