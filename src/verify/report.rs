//! What `verify` found, as values: every problem with its kind, the object, and what it
//! breaks (backups that cannot be restored, dumps, and recoverable ranges cut short). The
//! `--json` form is this struct serialised: a stable format, fields only ever added.

use crate::units;
use serde::Serialize;
use std::fmt::Write as _;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct VerifyReport {
    pub repository: String,
    /// The number of this run (1 for the first run, or after unreadable state).
    pub run: u64,
    /// `sampled` or `full`.
    pub mode: Mode,
    /// No problem found.
    pub ok: bool,
    pub checked: Checked,
    pub problems: Vec<Problem>,
    pub orphans: Orphans,
    pub read: ReadSummary,
    pub warnings: Vec<String>,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Sampled,
    Full,
}

/// What the listing checks looked at.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Checked {
    pub backups: u64,
    pub dumps: u64,
    /// Distinct blocks referenced by the complete backups.
    pub blocks: u64,
    pub wal_files: u64,
    pub timelines: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    pub kind: ProblemKind,
    /// The object's key, or the WAL range / timeline the problem is about.
    pub object: String,
    pub detail: String,
    pub breaks: Breaks,
}

/// Why an object is a problem. Reasons are values; the sentence is made when printing.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// The repository's catalog (a manifest, a listing) could not be loaded at all.
    CatalogUnreadable,
    ManifestUnreadable,
    BlockMissing,
    BlockCorrupt,
    WalMissing,
    WalCorrupt,
    /// One WAL name archived twice with different content.
    WalConflict,
    /// A history file that cannot be used (corrupt, unparsable, stored twice).
    HistoryUnusable,
    /// A history file whose parent timeline's history is missing or disagrees.
    HistoryBroken,
    DumpManifestUnreadable,
    DumpObjectMissing,
    DumpObjectWrongSize,
    DumpObjectCorrupt,
    /// A read failed for a reason other than the content (the store): not checked.
    ObjectUnreadable,
}

impl ProblemKind {
    fn describe(self) -> &'static str {
        match self {
            ProblemKind::CatalogUnreadable => "catalog unreadable",
            ProblemKind::ManifestUnreadable => "manifest unreadable",
            ProblemKind::BlockMissing => "block missing",
            ProblemKind::BlockCorrupt => "block corrupt",
            ProblemKind::WalMissing => "WAL missing",
            ProblemKind::WalCorrupt => "WAL corrupt",
            ProblemKind::WalConflict => "WAL conflict",
            ProblemKind::HistoryUnusable => "history unusable",
            ProblemKind::HistoryBroken => "history chain broken",
            ProblemKind::DumpManifestUnreadable => "dump manifest unreadable",
            ProblemKind::DumpObjectMissing => "dump object missing",
            ProblemKind::DumpObjectWrongSize => "dump object has the wrong size",
            ProblemKind::DumpObjectCorrupt => "dump object corrupt",
            ProblemKind::ObjectUnreadable => "object could not be read",
        }
    }
}

/// What one bad or missing object breaks.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Breaks {
    /// Backups that can no longer be restored (not even to their consistency point).
    pub backups: Vec<String>,
    /// Dumps (`<label>` for the whole dump's globals, `<label>/<database>` for one database).
    pub dumps: Vec<String>,
    /// Recoverable ranges that end early because of it.
    pub recoverable_ranges: Vec<BrokenRange>,
}

impl Breaks {
    pub fn is_empty(&self) -> bool {
        self.backups.is_empty() && self.dumps.is_empty() && self.recoverable_ranges.is_empty()
    }
}

/// Recovery along `timeline` stops before `first_missing`: no point after `recovery_stops_at`
/// can be reached from the backups in `cut_backups`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BrokenRange {
    pub timeline: u32,
    pub first_missing: String,
    pub last_missing: String,
    pub recovery_stops_at: String,
    pub cut_backups: Vec<String>,
}

/// Objects nothing refers to. Not errors: garbage collection and expire remove them.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Orphans {
    /// Blocks no complete manifest references (a running backup's new blocks are among them).
    pub blocks: u64,
    pub block_bytes: u64,
    /// Backup labels with an in-progress marker whose writer is known to be gone.
    pub backups: Vec<String>,
    /// Dump labels without a manifest, and without a marker or whose writer is gone.
    pub dumps: Vec<String>,
    /// Keys under `wal/` that are not WAL keys of this repository format.
    pub wal_keys: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ReadSummary {
    /// Objects read and hashed in this run.
    pub objects: u64,
    /// Their stored (compressed) bytes.
    pub bytes: u64,
    /// Of them, objects that no earlier run had verified.
    pub new_objects: u64,
    /// Objects that would have been read but did not fit `max_bytes` (read by a later run).
    pub deferred_objects: u64,
    /// Objects that can be read (referenced blocks, WAL, dump objects).
    pub candidates: u64,
    pub rotation: u32,
    pub max_bytes: Option<u64>,
}

impl VerifyReport {
    pub fn text(&self) -> String {
        let mut s = String::new();
        let c = &self.checked;
        let _ = writeln!(
            s,
            "verify run {} ({}) of {}: {}",
            self.run,
            match self.mode {
                Mode::Sampled => "sampled",
                Mode::Full => "full",
            },
            self.repository,
            if self.ok {
                "ok".to_string()
            } else {
                units::count(self.problems.len() as u64, "problem", "problems")
            }
        );
        let _ = writeln!(
            s,
            "  listing checks: {}, {}, {} referenced, {} on {}",
            units::count(c.backups, "backup", "backups"),
            units::count(c.dumps, "dump", "dumps"),
            units::count(c.blocks, "block", "blocks"),
            units::count(c.wal_files, "WAL file", "WAL files"),
            units::count(c.timelines, "timeline", "timelines"),
        );
        let r = &self.read;
        let _ = writeln!(
            s,
            "  read and hashed: {} ({}) of {}, {} new{}; rotation {}",
            units::count(r.objects, "object", "objects"),
            units::bytes(r.bytes),
            r.candidates,
            r.new_objects,
            if r.deferred_objects > 0 {
                format!(
                    ", {} deferred by --max-bytes",
                    units::count(r.deferred_objects, "object", "objects")
                )
            } else {
                String::new()
            },
            r.rotation
        );
        let o = &self.orphans;
        let _ = writeln!(
            s,
            "  orphans (not errors): {} ({}), {} backup and {} dump directories, {} foreign WAL keys",
            units::count(o.blocks, "block", "blocks"),
            units::bytes(o.block_bytes),
            o.backups.len(),
            o.dumps.len(),
            o.wal_keys.len()
        );
        for w in &self.warnings {
            let _ = writeln!(s, "  warning: {w}");
        }
        for p in &self.problems {
            let _ = writeln!(s, "PROBLEM {}: {}", p.kind.describe(), p.object);
            let _ = writeln!(s, "  {}", p.detail);
            let b = &p.breaks;
            if !b.backups.is_empty() {
                let _ = writeln!(s, "  breaks backups: {}", b.backups.join(", "));
            }
            if !b.dumps.is_empty() {
                let _ = writeln!(s, "  breaks dumps: {}", b.dumps.join(", "));
            }
            for range in &b.recoverable_ranges {
                let _ = writeln!(
                    s,
                    "  breaks the recoverable range on timeline {}: recovery stops at {} \
                     ({} to {} missing) for backups {}",
                    range.timeline,
                    range.recovery_stops_at,
                    range.first_missing,
                    range.last_missing,
                    range.cut_backups.join(", ")
                );
            }
            if b.is_empty() {
                let _ = writeln!(s, "  breaks no backup, dump or recoverable range");
            }
        }
        s
    }
}
