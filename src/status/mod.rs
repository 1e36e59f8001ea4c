//! `pgward status`: one verdict (OK / WARNING / CRITICAL, or UNKNOWN when the state cannot be
//! read) with its reasons, from the repository catalog, the agent's state and the server.
//! The HTML report and the agent's `/` page show the same verdict.
//!
//! [`facts::gather`] reads every source once into a [`facts::StatusInput`] (never failing: an
//! unreadable source is a reason string in its place); [`verdict::judge`] is the pure rule
//! book over it. `commands/status.rs` prints them; the report draws them.

pub mod facts;
pub mod verdict;

pub use facts::{StatusInput, gather};
pub use verdict::judge;

use serde::Serialize;

/// How bad it is, worst last (a plugin's exit code is [`Level::nagios_code`]). CRITICAL
/// outranks UNKNOWN, as monitoring plugins rank states: when the store is down, archiving
/// fails too, and that page must not be hidden behind "cannot read the state" (the UNKNOWN
/// reason is still listed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    Ok,
    Warning,
    /// The state could not be read (the repository unreachable, a corrupt catalog).
    Unknown,
    Critical,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "OK",
            Level::Warning => "WARNING",
            Level::Critical => "CRITICAL",
            Level::Unknown => "UNKNOWN",
        }
    }

    /// 0 / 1 / 2 / 3, as Nagios and Icinga plugins exit.
    pub fn nagios_code(self) -> i32 {
        match self {
            Level::Ok => 0,
            Level::Warning => 1,
            Level::Critical => 2,
            Level::Unknown => 3,
        }
    }
}

/// One reason for the verdict: how bad, and what an operator reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    pub level: Level,
    pub text: String,
}

/// The verdict: the worst reason's level (OK without reasons), and every reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub level: Level,
    pub reasons: Vec<Reason>,
}

impl Verdict {
    pub fn from_reasons(reasons: Vec<Reason>) -> Verdict {
        let level = reasons.iter().map(|r| r.level).max().unwrap_or(Level::Ok);
        Verdict { level, reasons }
    }
}
