//! The marker drill's proof of point-in-time recovery, on the source side: commit marker A,
//! create the restore point `pgward-drill-<label>`, commit marker B, switch WAL and wait until
//! that WAL is in the repository. A copy recovered to the restore point must then hold A and
//! not B, and its replay position must be the restore point's — anything else means recovery
//! stopped somewhere else than asked, whatever PostgreSQL's log says.
//!
//! The markers are rows `(label, marker)` of a small table in the drill's database
//! (`pgward_drill`, created by pgward when missing, or the drill file's `marker_table` with the
//! same columns). Each is its own transaction, so each has its own commit record on either side
//! of the restore point. Rows of drills older than [`KEEP_ROWS`] are deleted as new ones are
//! written, so the table stays small.

use crate::drill::checks::table_sql;
use crate::drill::report::Markers;
use crate::drill::source::SourceDb;
use crate::pg::Lsn;
use anyhow::{Context as _, Result, bail};

pub const DEFAULT_TABLE: &str = "pgward_drill";
/// How long marker rows stay on the source.
const KEEP_ROWS: &str = "90 days";

/// The restore point of the drill labelled `label`.
pub fn restore_point_name(label: &str) -> String {
    format!("pgward-drill-{label}")
}

/// An SQL string literal.
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Places the markers on the source and returns them with the restore point's LSN and the WAL
/// segment the switch finished (which the caller waits for in the repository).
pub fn place(
    source: &SourceDb,
    database: &str,
    table: &str,
    label: &str,
) -> Result<(Markers, String)> {
    let t = table_sql(table);
    let l = literal(label);
    source
        .psql(
            database,
            &format!(
                "create table if not exists {t} (label text not null, marker text not null, \
                 created_at timestamptz not null default now(), primary key (label, marker)); \
                 delete from {t} where created_at < now() - interval '{KEEP_ROWS}'"
            ),
        )
        .with_context(|| format!("cannot prepare the marker table {table}"))?;
    source.psql(
        database,
        &format!("insert into {t} (label, marker) values ({l}, 'A')"),
    )?;
    let point = restore_point_name(label);
    let lsn: Lsn = source
        .psql(
            database,
            &format!("select pg_create_restore_point({})", literal(&point)),
        )?
        .parse()
        .map_err(|e| anyhow::anyhow!("pg_create_restore_point returned no LSN: {e}"))?;
    source.psql(
        database,
        &format!("insert into {t} (label, marker) values ({l}, 'B')"),
    )?;
    let segment = source.psql(database, "select pg_walfile_name(pg_switch_wal())")?;
    if segment.len() != 24 {
        bail!("pg_switch_wal gave no WAL file name (got `{segment}`)");
    }
    Ok((
        Markers {
            database: database.to_string(),
            table: table.to_string(),
            restore_point: point,
            restore_point_lsn: lsn,
            a: "A".into(),
            b: "B".into(),
            a_present: None,
            b_present: None,
        },
        segment,
    ))
}

/// The SQL telling whether the marker table exists in the copy (`t`/`f`): recovery stopped
/// before its creation leaves it out, and every marker is then absent.
pub fn table_exists_sql(table: &str) -> String {
    format!(
        "select to_regclass({}) is not null",
        literal(&table_sql(table))
    )
}

/// The SQL counting one marker of `label` in the copy.
pub fn count_sql(table: &str, label: &str, marker: &str) -> String {
    format!(
        "select count(*) from {} where label = {} and marker = {}",
        table_sql(table),
        literal(label),
        literal(marker)
    )
}

/// The verdict on what the copy held, paused at the restore point: `Ok` only with A present, B
/// absent and the replay position at the restore point.
pub fn judge(m: &Markers, replay_lsn: Lsn) -> Result<(), String> {
    let mut wrong = Vec::new();
    if m.a_present != Some(true) {
        wrong.push(format!(
            "marker A (committed before the restore point) is missing: recovery stopped before \
             {}",
            m.restore_point
        ));
    }
    if m.b_present != Some(false) {
        wrong.push(format!(
            "marker B (committed after the restore point) is present: recovery went past {}",
            m.restore_point
        ));
    }
    if replay_lsn != m.restore_point_lsn {
        wrong.push(format!(
            "recovery paused at {replay_lsn}, not at the restore point's {}",
            m.restore_point_lsn
        ));
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(wrong.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn markers(a: Option<bool>, b: Option<bool>) -> Markers {
        Markers {
            database: "app".into(),
            table: "pgward_drill".into(),
            restore_point: "pgward-drill-L".into(),
            restore_point_lsn: "0/5000090".parse().unwrap(),
            a: "A".into(),
            b: "B".into(),
            a_present: a,
            b_present: b,
        }
    }

    #[test]
    fn only_a_without_b_at_the_point_passes() {
        let at: Lsn = "0/5000090".parse().unwrap();
        let later: Lsn = "0/5000100".parse().unwrap();
        for (a, b, lsn, reasons) in [
            (Some(true), Some(false), at, vec![]),
            (Some(false), Some(false), at, vec!["marker A"]),
            (Some(true), Some(true), at, vec!["marker B", "went past"]),
            (Some(true), Some(false), later, vec!["paused at 0/5000100"]),
            (None, None, at, vec!["marker A", "marker B"]),
        ] {
            let got = judge(&markers(a, b), lsn);
            if reasons.is_empty() {
                assert_eq!(got, Ok(()));
            } else {
                let e = got.unwrap_err();
                for r in reasons {
                    assert!(e.contains(r), "{e} lacks {r}");
                }
            }
        }
    }

    #[test]
    fn names_are_quoted() {
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(
            count_sql("pgward_drill", "L", "A"),
            "select count(*) from \"pgward_drill\" where label = 'L' and marker = 'A'"
        );
    }
}
