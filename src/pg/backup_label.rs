//! The `backup_label` file that `pg_backup_stop()` returns for a non-exclusive backup.
//!
//! pgward stores the text verbatim in the manifest (restore writes it into the data directory,
//! where recovery reads it) and parses it here for the facts the backup itself needs: where
//! WAL replay must start and on which timeline. The format is written by
//! `build_backup_content()` in `src/backend/access/transam/xlogbackup.c` (PostgreSQL 15+;
//! `do_pg_stop_backup` in `xlog.c` before), one `KEY: value` line each:
//!
//! ```text
//! START WAL LOCATION: 0/2000028 (file 000000010000000000000002)
//! CHECKPOINT LOCATION: 0/2000060
//! BACKUP METHOD: streamed
//! BACKUP FROM: primary
//! START TIME: 2026-11-22 01:30:00 UTC
//! LABEL: 20261122T013000Z
//! START TIMELINE: 1
//! ```
//!
//! Lines pgward does not know (newer versions add some) are ignored.

use super::{Lsn, Timeline, WalSegmentName};
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupLabel {
    /// Where WAL replay starts (the REDO point of the backup's checkpoint).
    pub start_lsn: Lsn,
    /// The segment holding `start_lsn`, as PostgreSQL named it.
    pub start_wal: WalSegmentName,
    pub checkpoint_lsn: Lsn,
    /// `streamed` (or `pg_start_backup` from PostgreSQL before 15).
    pub backup_method: Option<String>,
    /// `primary` or `standby`.
    pub backup_from: Option<String>,
    /// As the server printed it, in its own time zone.
    pub start_time: Option<String>,
    pub label: Option<String>,
    /// The timeline the backup started on. Written since PostgreSQL 11; older labels only
    /// have it in the segment name, which [`BackupLabel::timeline`] falls back to.
    pub start_timeline: Option<Timeline>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BackupLabelError {
    #[error("backup_label has no `{0}` line")]
    Missing(&'static str),
    #[error("backup_label line `{line}` is not valid: {why}")]
    Invalid { line: String, why: String },
}

impl BackupLabel {
    pub fn parse(text: &str) -> Result<BackupLabel, BackupLabelError> {
        let mut start = None;
        let mut checkpoint = None;
        let mut label = BackupLabel {
            start_lsn: Lsn::INVALID,
            start_wal: WalSegmentName {
                tli: Timeline(0),
                log: 0,
                seg: 0,
            },
            checkpoint_lsn: Lsn::INVALID,
            backup_method: None,
            backup_from: None,
            start_time: None,
            label: None,
            start_timeline: None,
        };
        for line in text.lines() {
            let Some((key, value)) = line.split_once(": ") else {
                continue;
            };
            let invalid = |why: String| BackupLabelError::Invalid {
                line: line.to_string(),
                why,
            };
            match key {
                "START WAL LOCATION" => {
                    // `0/2000028 (file 000000010000000000000002)`
                    let (lsn, rest) = value
                        .split_once(" (file ")
                        .ok_or_else(|| invalid("expected `<lsn> (file <segment>)`".into()))?;
                    let file = rest
                        .strip_suffix(')')
                        .ok_or_else(|| invalid("expected `<lsn> (file <segment>)`".into()))?;
                    let lsn: Lsn = lsn.parse().map_err(|e| invalid(format!("{e}")))?;
                    let seg = WalSegmentName::parse(file).map_err(|e| invalid(format!("{e}")))?;
                    start = Some((lsn, seg));
                }
                "CHECKPOINT LOCATION" => {
                    checkpoint = Some(value.parse().map_err(|e| invalid(format!("{e}")))?);
                }
                "BACKUP METHOD" => label.backup_method = Some(value.to_string()),
                "BACKUP FROM" => label.backup_from = Some(value.to_string()),
                "START TIME" => label.start_time = Some(value.to_string()),
                "LABEL" => label.label = Some(value.to_string()),
                "START TIMELINE" => {
                    // Printed with %u: decimal, unlike the hex in file names.
                    let tli: u32 = value
                        .parse()
                        .map_err(|_| invalid("expected a decimal timeline number".into()))?;
                    if tli == 0 {
                        return Err(invalid("timeline 0 does not exist".into()));
                    }
                    label.start_timeline = Some(Timeline(tli));
                }
                _ => {}
            }
        }
        let (start_lsn, start_wal) =
            start.ok_or(BackupLabelError::Missing("START WAL LOCATION"))?;
        label.start_lsn = start_lsn;
        label.start_wal = start_wal;
        label.checkpoint_lsn =
            checkpoint.ok_or(BackupLabelError::Missing("CHECKPOINT LOCATION"))?;
        if let Some(tli) = label.start_timeline
            && tli != start_wal.tli
        {
            return Err(BackupLabelError::Invalid {
                line: format!("START TIMELINE: {}", tli.0),
                why: format!("the start segment {start_wal} is on another timeline"),
            });
        }
        Ok(label)
    }

    /// The timeline the backup started on.
    pub fn timeline(&self) -> Timeline {
        self.start_timeline.unwrap_or(self.start_wal.tli)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PG15: &str = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
                        CHECKPOINT LOCATION: 0/2000060\n\
                        BACKUP METHOD: streamed\n\
                        BACKUP FROM: primary\n\
                        START TIME: 2026-11-22 01:30:00 UTC\n\
                        LABEL: 20261122T013000Z\n\
                        START TIMELINE: 1\n";

    #[test]
    fn parses_a_pg15_label() {
        let l = BackupLabel::parse(PG15).unwrap();
        assert_eq!(l.start_lsn, "0/2000028".parse().unwrap());
        assert_eq!(l.start_wal.to_string(), "000000010000000000000002");
        assert_eq!(l.checkpoint_lsn, "0/2000060".parse().unwrap());
        assert_eq!(l.backup_method.as_deref(), Some("streamed"));
        assert_eq!(l.backup_from.as_deref(), Some("primary"));
        assert_eq!(l.start_time.as_deref(), Some("2026-11-22 01:30:00 UTC"));
        assert_eq!(l.label.as_deref(), Some("20261122T013000Z"));
        assert_eq!(l.start_timeline, Some(Timeline(1)));
        assert_eq!(l.timeline(), Timeline(1));
    }

    #[test]
    fn timeline_is_decimal_and_falls_back_to_the_segment() {
        let text = PG15
            .replace("START TIMELINE: 1", "START TIMELINE: 16")
            .replace("(file 00000001", "(file 00000010");
        assert_eq!(BackupLabel::parse(&text).unwrap().timeline(), Timeline(16));

        let old: String = PG15
            .lines()
            .filter(|l| !l.starts_with("START TIMELINE"))
            .map(|l| format!("{l}\n"))
            .collect();
        let l = BackupLabel::parse(&old).unwrap();
        assert_eq!(l.start_timeline, None);
        assert_eq!(l.timeline(), Timeline(1));
    }

    #[test]
    fn unknown_lines_are_ignored_and_labels_may_contain_colons() {
        let text = format!("{PG15}INCREMENTAL FROM LSN: 0/1000000\nLABEL: a: b\n");
        let l = BackupLabel::parse(&text).unwrap();
        assert_eq!(l.label.as_deref(), Some("a: b"));
    }

    #[test]
    fn broken_labels_are_refused_with_the_line() {
        let err = BackupLabel::parse("CHECKPOINT LOCATION: 0/2000060\n").unwrap_err();
        assert_eq!(err, BackupLabelError::Missing("START WAL LOCATION"));
        let err =
            BackupLabel::parse("START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n")
                .unwrap_err();
        assert_eq!(err, BackupLabelError::Missing("CHECKPOINT LOCATION"));
        for bad in [
            "START WAL LOCATION: 0/2000028\n",
            "START WAL LOCATION: zz (file 000000010000000000000002)\n",
            "START WAL LOCATION: 0/2000028 (file 00000001000000000000002)\n",
            "START TIMELINE: 0x1\n",
            "START TIMELINE: 0\n",
        ] {
            let text = format!("{PG15}{bad}");
            let err = BackupLabel::parse(&text).unwrap_err();
            assert!(
                matches!(&err, BackupLabelError::Invalid { line, .. } if bad.starts_with(line.as_str())),
                "{bad}: {err}"
            );
        }
        let text = PG15.replace("START TIMELINE: 1", "START TIMELINE: 2");
        assert!(BackupLabel::parse(&text).is_err());
    }
}
