//! Timeline history files (`00000002.history`): which timelines a timeline descends from and
//! where each ancestor ended.
//!
//! Restore uses this to decide which WAL belongs on the way to a target: WAL of an ancestor
//! timeline past its switch point belongs to a different history and must not be replayed.
//! The format and the checks follow `readTimeLineHistory` in
//! `src/backend/access/transam/timeline.c`: one line per ancestor,
//! `parentTLI<TAB>switchpoint<TAB>reason`, the parent TLI in decimal, the switch point as an
//! LSN; blank lines and lines starting with `#` are ignored; parent TLIs strictly increase and
//! are all below the file's own timeline.

use super::lsn::LsnParseError;
use super::{Lsn, Timeline};

/// One ancestor: timeline `tli` ended at `switch_lsn`, where its child took over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The parent timeline that ended at `switch_lsn`.
    pub tli: Timeline,
    pub switch_lsn: Lsn,
    /// Free text PostgreSQL writes (for example "no recovery target specified"); informational.
    pub reason: String,
}

/// The parsed history of `timeline`: its ancestors, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineHistory {
    pub timeline: Timeline,
    pub entries: Vec<HistoryEntry>,
}

/// Why a history file was refused. Line numbers start at 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    #[error(
        "history file of timeline {timeline}, line {line}: `{}` does not start with a numeric \
         parent timeline ID",
        .text.escape_debug()
    )]
    BadTimeline {
        timeline: Timeline,
        line: usize,
        text: String,
    },
    #[error(
        "history file of timeline {timeline}, line {line}: `{}` has no switch point LSN after \
         the parent timeline ID",
        .text.escape_debug()
    )]
    MissingSwitchPoint {
        timeline: Timeline,
        line: usize,
        text: String,
    },
    #[error("history file of timeline {timeline}, line {line}: bad switch point: {source}")]
    BadSwitchPoint {
        timeline: Timeline,
        line: usize,
        #[source]
        source: LsnParseError,
    },
    #[error(
        "history file of timeline {timeline}, line {line}: parent timeline {tli} does not come \
         after {previous}: timeline IDs must be in increasing order (corrupt or hand-edited file?)"
    )]
    NotIncreasing {
        timeline: Timeline,
        line: usize,
        tli: u32,
        previous: u32,
    },
    #[error(
        "history file of timeline {timeline}, line {line}: parent timeline {tli} is not below \
         the file's own timeline {}: the file belongs to another timeline (renamed file?)",
        .timeline.0
    )]
    NotAnAncestor {
        timeline: Timeline,
        line: usize,
        tli: u32,
    },
}

impl TimelineHistory {
    /// Parses the text of `timeline`'s history file.
    pub fn parse(timeline: Timeline, text: &str) -> Result<Self, HistoryError> {
        let mut entries: Vec<HistoryEntry> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let content = raw.trim_start();
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            // PostgreSQL reads the line with sscanf("%u\t%X/%X"), where the tab matches any
            // run of whitespace; the reason after the LSN is free text.
            let digits_end = content
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(content.len());
            let (digits, rest) = content.split_at(digits_end);
            let tli: u32 = digits.parse().map_err(|_| HistoryError::BadTimeline {
                timeline,
                line,
                text: raw.to_owned(),
            })?;
            let rest = rest.trim_start();
            let (lsn_text, reason) = match rest.find(char::is_whitespace) {
                Some(at) => rest.split_at(at),
                None => (rest, ""),
            };
            if lsn_text.is_empty() || !digits_end_at_whitespace(content, digits_end) {
                return Err(HistoryError::MissingSwitchPoint {
                    timeline,
                    line,
                    text: raw.to_owned(),
                });
            }
            let switch_lsn: Lsn =
                lsn_text
                    .parse()
                    .map_err(|source| HistoryError::BadSwitchPoint {
                        timeline,
                        line,
                        source,
                    })?;
            if let Some(previous) = entries.last()
                && tli <= previous.tli.0
            {
                return Err(HistoryError::NotIncreasing {
                    timeline,
                    line,
                    tli,
                    previous: previous.tli.0,
                });
            }
            if tli >= timeline.0 {
                return Err(HistoryError::NotAnAncestor {
                    timeline,
                    line,
                    tli,
                });
            }
            entries.push(HistoryEntry {
                tli: Timeline(tli),
                switch_lsn,
                reason: reason.trim().to_owned(),
            });
        }
        Ok(TimelineHistory { timeline, entries })
    }

    /// The ancestor timelines, oldest first (not including `self.timeline`).
    pub fn ancestors(&self) -> Vec<Timeline> {
        self.entries.iter().map(|e| e.tli).collect()
    }

    /// Where `tli` ended on the way to this timeline; `None` if it is not an ancestor
    /// (including `self.timeline` itself, which has not ended).
    pub fn switch_point_of(&self, tli: Timeline) -> Option<Lsn> {
        self.entries
            .iter()
            .find(|e| e.tli == tli)
            .map(|e| e.switch_lsn)
    }

    /// Is the point `(tli, lsn)` on the path that leads to this timeline: on this timeline, or
    /// on an ancestor no later than where that ancestor ended. The switch point itself counts
    /// as on the path: a backup that stopped exactly there can still be rolled forward onto
    /// the child timeline.
    pub fn contains(&self, tli: Timeline, lsn: Lsn) -> bool {
        tli == self.timeline || self.switch_point_of(tli).is_some_and(|end| lsn <= end)
    }
}

/// The parent TLI must be followed by whitespace (or nothing), not glued to other text such
/// as `1x 0/3000000`.
fn digits_end_at_whitespace(content: &str, digits_end: usize) -> bool {
    content
        .get(digits_end..)
        .and_then(|rest| rest.chars().next())
        .is_none_or(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lsn(s: &str) -> Lsn {
        s.parse().unwrap()
    }

    /// What PostgreSQL writes after two promotions.
    const TLI3: &str = "1\t0/3000158\tno recovery target specified\n\
                        \n\
                        2\t0/5000060\tbefore 2024-05-01 10:00:00+00\n";

    #[test]
    fn parses_postgres_output() {
        let h = TimelineHistory::parse(Timeline(3), TLI3).unwrap();
        assert_eq!(h.timeline, Timeline(3));
        assert_eq!(
            h.entries,
            vec![
                HistoryEntry {
                    tli: Timeline(1),
                    switch_lsn: lsn("0/3000158"),
                    reason: "no recovery target specified".into(),
                },
                HistoryEntry {
                    tli: Timeline(2),
                    switch_lsn: lsn("0/5000060"),
                    reason: "before 2024-05-01 10:00:00+00".into(),
                },
            ]
        );
        assert_eq!(h.ancestors(), vec![Timeline(1), Timeline(2)]);
    }

    #[test]
    fn ignores_comments_blank_lines_and_extra_whitespace() {
        let text =
            "# created by hand\n  \n   # indented comment\r\n1   0/3000158\r\n\t2 0/5000060\n";
        let h = TimelineHistory::parse(Timeline(3), text).unwrap();
        assert_eq!(h.ancestors(), vec![Timeline(1), Timeline(2)]);
        assert_eq!(h.entries[0].reason, "");
        assert_eq!(h.entries[1].switch_lsn, lsn("0/5000060"));
    }

    #[test]
    fn empty_history_has_no_ancestors() {
        let h = TimelineHistory::parse(Timeline(1), "").unwrap();
        assert!(h.entries.is_empty());
        assert!(h.contains(Timeline(1), lsn("5/0")));
        assert!(!h.contains(Timeline(2), lsn("0/0")));
    }

    #[test]
    fn errors_name_the_line() {
        let cases: &[(&str, usize, &str)] = &[
            ("x\t0/1\n", 1, "numeric parent timeline"),
            ("\n# c\n-1\t0/1\n", 3, "numeric parent timeline"),
            ("99999999999\t0/1\n", 1, "numeric parent timeline"),
            ("1\n", 1, "no switch point"),
            ("1x 0/1\n", 1, "no switch point"),
            ("1\t\t\n", 1, "no switch point"),
            ("1\t0/3000158\n2\tnope\n", 2, "not an LSN"),
            ("1\t0-3000158\n", 1, "not an LSN"),
            ("2\t0/1\n1\t0/2\n", 2, "increasing order"),
            ("1\t0/1\n1\t0/2\n", 2, "increasing order"),
            ("1\t0/1\n3\t0/2\n", 2, "not below"),
            ("é\t0/1\n", 1, "numeric parent timeline"),
        ];
        for (text, line, want) in cases {
            let err = TimelineHistory::parse(Timeline(3), text).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(&format!("line {line}:")), "{text:?}: {msg}");
            assert!(msg.contains(want), "{text:?}: {msg}");
            assert!(msg.contains("timeline 00000003"), "{text:?}: {msg}");
        }
    }

    #[test]
    fn switch_points_and_path_membership() {
        let h = TimelineHistory::parse(Timeline(3), TLI3).unwrap();
        assert_eq!(h.switch_point_of(Timeline(1)), Some(lsn("0/3000158")));
        assert_eq!(h.switch_point_of(Timeline(2)), Some(lsn("0/5000060")));
        assert_eq!(h.switch_point_of(Timeline(3)), None);
        assert_eq!(h.switch_point_of(Timeline(4)), None);

        assert!(h.contains(Timeline(1), lsn("0/1000000")));
        assert!(h.contains(Timeline(1), lsn("0/3000158")));
        assert!(!h.contains(Timeline(1), lsn("0/3000159")));
        assert!(h.contains(Timeline(2), lsn("0/4000000")));
        assert!(!h.contains(Timeline(2), lsn("0/6000000")));
        assert!(h.contains(Timeline(3), lsn("FF/0")));
        assert!(!h.contains(Timeline(4), lsn("0/1")));
    }
}
