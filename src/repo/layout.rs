//! The repository's keys (format version 2). Only this module knows them.
//!
//! ```text
//! repo.json
//! wal/<TLI>/<LOG>/<segment name>-<sha256>.zst  also <name>.partial-… and <name>.<off>.backup-…
//! wal/<TLI>.history-<sha256>.zst
//! blocks/<2 hex>/<block id>.zst                content-addressed base-backup blocks
//! backups/<label>/manifest.json.zst            a complete base backup (written last)
//! backups/<label>/in-progress.json             marker while a backup runs
//! locks/<name>.json                            leases (one backup at a time, …)
//! dumps/<label>/<db>.pgdump.zst                one database's `pg_dump -Fc` (logical backup)
//! dumps/<label>/globals.sql.zst                `pg_dumpall --globals-only`
//! dumps/<label>/manifest.json.zst              a complete dump (written last)
//! dumps/<label>/in-progress.json               marker while a dump runs
//! pins/<label>.json                            a pin: this backup or dump is never expired
//! verify/state.json.zst                        what `verify` has read, for rotating samples
//! locks/read/<label>-<nonce>.json              a reader's shared read lease
//! gc/<id>/mark.json.zst                        blocks marked by garbage collection
//! drills/<label>.json                          a restore drill's report (the only object a drill writes)
//! ```
//! A database name may hold any character, so in a dump key it is percent-encoded: every byte
//! outside `A-Z a-z 0-9 _ -` becomes `%XX` (a `.` too, so no name can make a hidden file or
//! clash with `globals.sql.zst` or `manifest.json.zst`).
//! The sha256 is of the original bytes, so two different files pushed under one WAL name can
//! never overwrite each other: they get different keys, and the conflict is detected by listing.
//!
//! WAL keys are sharded by log number (`<LOG>` is the 8 hex digits in the middle of a segment
//! name, the "xlogid"): at most 256 segments per directory with 16 MiB segments, as pgBackRest
//! files them. `wal-push` and `wal-fetch` list one name's prefix, so their cost no longer
//! grows with the archive (format 1 had one flat `wal/<TLI>/` directory, and every call read
//! all of it). Keys still sort in WAL order, so a listing of `wal/<TLI>/` is the timeline in
//! order and "is anything archived after this segment?" is one `start-after` request.
//! A format-1 repository is converted by `pgward init --upgrade` ([`v1_wal_key`] names its
//! keys); every other command refuses it until then.

use crate::codec::Sha256Digest;
use crate::pg::{Timeline, WalFileName, WalSegmentName};

pub const FORMAT_VERSION: u32 = 2;
pub const REPO_JSON: &str = "repo.json";
pub const WAL_PREFIX: &str = "wal/";
pub const BLOCKS_PREFIX: &str = "blocks/";
pub const BACKUPS_PREFIX: &str = "backups/";
pub const LOCKS_PREFIX: &str = "locks/";
/// Shared read leases: `locks/read/<unique>.json`.
pub const READ_LEASES_PREFIX: &str = "locks/read/";
/// Garbage-collection marks: `gc/<id>/mark.json.zst`.
pub const GC_PREFIX: &str = "gc/";
const GC_MARK_FILE: &str = "mark.json.zst";
pub const DUMPS_PREFIX: &str = "dumps/";
pub const PINS_PREFIX: &str = "pins/";
pub const DRILLS_PREFIX: &str = "drills/";
const JSON: &str = ".json";
const DUMP_SUFFIX: &str = ".pgdump.zst";
const GLOBALS_FILE: &str = "globals.sql.zst";
const MANIFEST_FILE: &str = "manifest.json.zst";
const IN_PROGRESS_FILE: &str = "in-progress.json";
pub const VERIFY_PREFIX: &str = "verify/";
const ZST: &str = ".zst";

/// Everything under `wal/` of one timeline's segments (not its history file).
pub fn wal_timeline_prefix(tli: Timeline) -> String {
    format!("{WAL_PREFIX}{tli}/")
}

/// The directory of one log number's segments on a timeline: `wal/<TLI>/<LOG>/`.
pub fn wal_log_prefix(seg: &WalSegmentName) -> String {
    format!("{}{:08X}/", wal_timeline_prefix(seg.tli), seg.log)
}

/// The key prefix shared by every object stored for this WAL file name, whatever its hash.
pub fn wal_name_prefix(name: &WalFileName) -> String {
    match name.segment() {
        None => format!("{WAL_PREFIX}{name}-"),
        Some(seg) => format!("{}{name}-", wal_log_prefix(&seg)),
    }
}

/// Where a listing of the WAL archived after `seg` on its timeline starts: `(prefix,
/// start_after)`. Every key of `seg` itself (`<seg>-…`, `<seg>.partial-…`, `<seg>.<off>.backup-…`:
/// `-` and `.` sort before `~`) sorts before `start_after`, every key of a later segment after
/// it, in this log directory or a later one (log directories are fixed-width hex).
pub fn wal_after_segment(seg: &WalSegmentName) -> (String, String) {
    let prefix = wal_timeline_prefix(seg.tli);
    let start_after = format!("{}{seg}~", wal_log_prefix(seg));
    (prefix, start_after)
}

/// Where format 1 kept a WAL file (`wal/<TLI>/<name>-<sha256>.zst`, one flat directory per
/// timeline; history files were where they still are). Only `init --upgrade` uses it.
pub fn v1_wal_key(name: &WalFileName, sha: &Sha256Digest) -> String {
    match name {
        WalFileName::History(_) => wal_key(name, sha),
        other => format!(
            "{}{other}-{sha}{ZST}",
            wal_timeline_prefix(other.timeline())
        ),
    }
}

/// Parses a format-1 WAL key (`wal/<TLI>/<file>`, no log directory); `None` for anything else.
pub fn parse_v1_wal_key(key: &str) -> Option<(WalFileName, Sha256Digest)> {
    let rest = key.strip_prefix(WAL_PREFIX)?.strip_suffix(ZST)?;
    let (dir, file) = rest.split_once('/')?;
    let tli: Timeline = dir.parse().ok()?;
    let (name, sha) = split_name_sha(file)?;
    (name.timeline() == tli && name.segment().is_some()).then_some((name, sha))
}

/// The key of one stored WAL file.
pub fn wal_key(name: &WalFileName, sha: &Sha256Digest) -> String {
    format!("{}{}{ZST}", wal_name_prefix(name), sha)
}

/// Parses a key under `wal/` back into the WAL file name and hash; `None` for foreign keys
/// (format-1 keys included: see [`parse_v1_wal_key`]).
pub fn parse_wal_key(key: &str) -> Option<(WalFileName, Sha256Digest)> {
    let (name, sha) = split_name_sha(
        key.strip_prefix(WAL_PREFIX)?
            .strip_suffix(ZST)?
            .rsplit('/')
            .next()?,
    )?;
    (wal_key(&name, &sha) == key).then_some((name, sha))
}

/// The key of a base-backup block (its id is the sha256 of its bytes).
pub fn block_key(id: &Sha256Digest) -> String {
    let hex = id.to_hex();
    format!("{BLOCKS_PREFIX}{}/{hex}{ZST}", &hex[..2])
}

/// Parses a block key back into the block id.
pub fn parse_block_key(key: &str) -> Option<Sha256Digest> {
    let rest = key.strip_prefix(BLOCKS_PREFIX)?.strip_suffix(ZST)?;
    let (dir, id) = rest.split_once('/')?;
    let id = Sha256Digest::parse_hex(id)?;
    (id.to_hex().get(..2) == Some(dir)).then_some(id)
}

pub fn manifest_key(label: &str) -> String {
    format!("{BACKUPS_PREFIX}{label}/{MANIFEST_FILE}")
}

pub fn in_progress_key(label: &str) -> String {
    format!("{BACKUPS_PREFIX}{label}/{IN_PROGRESS_FILE}")
}

/// What a key under `backups/` is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupKey {
    Manifest(String),
    InProgress(String),
}

pub fn parse_backup_key(key: &str) -> Option<BackupKey> {
    let rest = key.strip_prefix(BACKUPS_PREFIX)?;
    let (label, file) = rest.split_once('/')?;
    if label.is_empty() || file.contains('/') {
        return None;
    }
    match file {
        MANIFEST_FILE => Some(BackupKey::Manifest(label.to_string())),
        IN_PROGRESS_FILE => Some(BackupKey::InProgress(label.to_string())),
        _ => None,
    }
}

/// Everything stored for one dump: `dumps/<label>/`.
pub fn dump_prefix(label: &str) -> String {
    format!("{DUMPS_PREFIX}{label}/")
}

/// The `pg_dump -Fc` archive of database `db` in dump `label`.
pub fn dump_database_key(label: &str, db: &str) -> String {
    format!("{}{}{DUMP_SUFFIX}", dump_prefix(label), encode_db_name(db))
}

pub fn dump_globals_key(label: &str) -> String {
    format!("{}{GLOBALS_FILE}", dump_prefix(label))
}

pub fn dump_manifest_key(label: &str) -> String {
    format!("{}{MANIFEST_FILE}", dump_prefix(label))
}

pub fn dump_in_progress_key(label: &str) -> String {
    format!("{}{IN_PROGRESS_FILE}", dump_prefix(label))
}

/// What a key under `dumps/` is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DumpKey {
    Database { label: String, db: String },
    Globals(String),
    Manifest(String),
    InProgress(String),
}

pub fn parse_dump_key(key: &str) -> Option<DumpKey> {
    let rest = key.strip_prefix(DUMPS_PREFIX)?;
    let (label, file) = rest.split_once('/')?;
    if label.is_empty() || file.contains('/') {
        return None;
    }
    let label = label.to_string();
    match file {
        MANIFEST_FILE => Some(DumpKey::Manifest(label)),
        IN_PROGRESS_FILE => Some(DumpKey::InProgress(label)),
        GLOBALS_FILE => Some(DumpKey::Globals(label)),
        _ => {
            let db = decode_db_name(file.strip_suffix(DUMP_SUFFIX)?)?;
            Some(DumpKey::Database { label, db })
        }
    }
}

fn encode_db_name(db: &str) -> String {
    let mut out = String::with_capacity(db.len());
    for b in db.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode_db_name(encoded: &str) -> Option<String> {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = encoded.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let db = String::from_utf8(out).ok()?;
    // Only the one spelling pgward writes is ours.
    (encode_db_name(&db) == encoded).then_some(db)
}

/// Everything stored for one backup: `backups/<label>/`.
pub fn backup_prefix(label: &str) -> String {
    format!("{BACKUPS_PREFIX}{label}/")
}

/// The pin of a backup or dump label.
pub fn pin_key(label: &str) -> String {
    format!("{PINS_PREFIX}{label}{JSON}")
}

/// A drill report: `drills/<label>.json`.
pub fn drill_report_key(label: &str) -> String {
    format!("{DRILLS_PREFIX}{label}{JSON}")
}

/// The label of a key under `drills/`; `None` for foreign keys.
pub fn parse_drill_report_key(key: &str) -> Option<String> {
    let label = key.strip_prefix(DRILLS_PREFIX)?.strip_suffix(JSON)?;
    (!label.is_empty() && !label.contains('/')).then(|| label.to_string())
}

/// The label a key under `pins/` pins; `None` for foreign keys.
pub fn parse_pin_key(key: &str) -> Option<String> {
    let label = key.strip_prefix(PINS_PREFIX)?.strip_suffix(JSON)?;
    (!label.is_empty() && !label.contains('/')).then(|| label.to_string())
}

/// The one object of `verify`'s state (which objects it read, and when), written whole.
pub fn verify_state_key() -> String {
    format!("{VERIFY_PREFIX}state.json{ZST}")
}

pub fn lock_key(name: &str) -> String {
    format!("{LOCKS_PREFIX}{name}.json")
}

/// One reader's read lease (`unique` names it: label and nonce).
pub fn read_lease_key(unique: &str) -> String {
    format!("{READ_LEASES_PREFIX}{unique}.json")
}

/// The mark of garbage-collection run `id` (a sortable time and a random suffix).
pub fn gc_mark_key(id: &str) -> String {
    format!("{GC_PREFIX}{id}/{GC_MARK_FILE}")
}

/// The id of a key made by [`gc_mark_key`].
pub fn parse_gc_mark_key(key: &str) -> Option<String> {
    let rest = key.strip_prefix(GC_PREFIX)?;
    let (id, file) = rest.split_once('/')?;
    (file == GC_MARK_FILE && !id.is_empty()).then(|| id.to_string())
}

/// The marker the one taker of a stale lease creates; named after the stale lease's bytes.
pub fn lock_takeover_key(name: &str, stale: &Sha256Digest) -> String {
    format!("{LOCKS_PREFIX}{name}.takeover-{stale}.json")
}

fn split_name_sha(file: &str) -> Option<(WalFileName, Sha256Digest)> {
    let (name, sha) = file.rsplit_once('-')?;
    Some((
        WalFileName::parse(name).ok()?,
        Sha256Digest::parse_hex(sha)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha() -> Sha256Digest {
        Sha256Digest::of(b"x")
    }

    #[test]
    fn keys_round_trip() {
        for n in [
            "000000010000000000000003",
            "000000010000000000000003.partial",
            "000000010000000000000003.00000028.backup",
            "00000002.history",
        ] {
            let name = WalFileName::parse(n).unwrap();
            let key = wal_key(&name, &sha());
            assert!(key.starts_with(&wal_name_prefix(&name)));
            assert_eq!(parse_wal_key(&key), Some((name, sha())), "{key}");
        }
        let seg = WalFileName::parse("0000000200000001000000FE").unwrap();
        assert_eq!(
            wal_key(&seg, &sha()),
            format!(
                "wal/00000002/00000001/0000000200000001000000FE-{}.zst",
                sha()
            )
        );
        let backup = WalFileName::parse("000000020000000A00000003.00000028.backup").unwrap();
        assert_eq!(
            wal_key(&backup, &sha()),
            format!(
                "wal/00000002/0000000A/000000020000000A00000003.00000028.backup-{}.zst",
                sha()
            )
        );
        let hist = WalFileName::parse("00000002.history").unwrap();
        assert_eq!(
            wal_key(&hist, &sha()),
            format!("wal/00000002.history-{}.zst", sha())
        );
    }

    #[test]
    fn format_1_keys_are_recognised_only_as_such() {
        let seg = WalFileName::parse("000000010000000200000003").unwrap();
        let v1 = v1_wal_key(&seg, &sha());
        assert_eq!(
            v1,
            format!("wal/00000001/000000010000000200000003-{}.zst", sha())
        );
        assert_eq!(parse_v1_wal_key(&v1), Some((seg.clone(), sha())));
        assert_eq!(
            parse_wal_key(&v1),
            None,
            "a format-1 key is not a format-2 key"
        );
        assert_eq!(parse_v1_wal_key(&wal_key(&seg, &sha())), None);
        let hist = WalFileName::parse("00000002.history").unwrap();
        assert_eq!(v1_wal_key(&hist, &sha()), wal_key(&hist, &sha()));
        assert_eq!(
            parse_v1_wal_key(&wal_key(&hist, &sha())),
            None,
            "nothing to move"
        );
    }

    #[test]
    fn keys_sort_in_wal_order_across_log_directories() {
        let names = [
            "0000000100000000000000FF",
            "0000000100000000000000FF.partial",
            "000000010000000100000000",
            "000000010000000100000000.00000028.backup",
            "000000010000000100000001",
            "00000001000000100000000F",
        ];
        let keys: Vec<String> = names
            .iter()
            .map(|n| wal_key(&WalFileName::parse(n).unwrap(), &sha()))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        let last_of_log_0 = WalFileName::parse("0000000100000000000000FF").unwrap();
        let (prefix, after) = wal_after_segment(&last_of_log_0.segment().unwrap());
        assert_eq!(prefix, "wal/00000001/");
        assert!(
            keys[0] < after && keys[1] < after && keys[2] > after,
            "{after}"
        );
    }

    #[test]
    fn segment_prefix_does_not_match_partial_or_backup() {
        let seg = WalFileName::parse("000000010000000000000003").unwrap();
        let partial = WalFileName::parse("000000010000000000000003.partial").unwrap();
        assert!(!wal_key(&partial, &sha()).starts_with(&wal_name_prefix(&seg)));
    }

    #[test]
    fn block_and_backup_keys_round_trip() {
        let id = sha();
        let key = block_key(&id);
        assert!(key.starts_with(&format!("blocks/{}/", &id.to_hex()[..2])));
        assert_eq!(parse_block_key(&key), Some(id));
        assert_eq!(parse_block_key("blocks/zz/abc.zst"), None);
        assert_eq!(
            parse_backup_key(&manifest_key("20261122T013000Z")),
            Some(BackupKey::Manifest("20261122T013000Z".into()))
        );
        assert_eq!(
            parse_backup_key(&in_progress_key("20261122T013000Z")),
            Some(BackupKey::InProgress("20261122T013000Z".into()))
        );
        assert_eq!(parse_backup_key("backups/x/other.json"), None);
    }

    #[test]
    fn dump_keys_round_trip_any_database_name() {
        let l = "20261201T120000Z";
        assert_eq!(
            dump_database_key(l, "bookedbarber"),
            "dumps/20261201T120000Z/bookedbarber.pgdump.zst"
        );
        for db in [
            "app", "my db", "a/b", ".hidden", "globals", "manifest", "ünï", "x%41",
        ] {
            let key = dump_database_key(l, db);
            assert!(!key[l.len() + 7..].contains('/'), "{key}");
            assert_eq!(
                parse_dump_key(&key),
                Some(DumpKey::Database {
                    label: l.into(),
                    db: db.into()
                }),
                "{key}"
            );
        }
        assert_eq!(
            parse_dump_key(&dump_globals_key(l)),
            Some(DumpKey::Globals(l.into()))
        );
        assert_eq!(
            parse_dump_key(&dump_manifest_key(l)),
            Some(DumpKey::Manifest(l.into()))
        );
        assert_eq!(
            parse_dump_key(&dump_in_progress_key(l)),
            Some(DumpKey::InProgress(l.into()))
        );
        for foreign in [
            "dumps/x/other.json",
            "dumps/x/a%4.pgdump.zst",
            "dumps/x/a%61.pgdump.zst",
            "dumps//a.pgdump.zst",
            "dumps/x/y/a.pgdump.zst",
        ] {
            assert_eq!(parse_dump_key(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn pin_keys_round_trip() {
        assert_eq!(pin_key("20261201T120000Z"), "pins/20261201T120000Z.json");
        assert_eq!(
            parse_pin_key(&pin_key("20261201T120000Z-2")).as_deref(),
            Some("20261201T120000Z-2")
        );
        for foreign in ["pins/.json", "pins/a/b.json", "pins/a.txt", "locks/a.json"] {
            assert_eq!(parse_pin_key(foreign), None, "{foreign}");
        }
        assert_eq!(backup_prefix("L"), "backups/L/");
    }

    #[test]
    fn foreign_keys_are_ignored() {
        for k in [
            "wal/00000001/garbage.zst",
            "wal/00000001/000000010000000000000003-abc.zst",
            "wal/00000002/000000010000000000000003-"
                .to_string()
                .as_str(),
            "blocks/aa/bb.zst",
            "wal/00000001.history-0000.zst",
        ] {
            assert_eq!(parse_wal_key(k), None, "{k}");
        }
        // A segment filed under the wrong timeline or log directory is not ours.
        let seg = WalFileName::parse("000000010000000000000003").unwrap();
        for wrong in [
            format!("wal/00000002/00000000/{seg}-{}.zst", sha()),
            format!("wal/00000001/00000001/{seg}-{}.zst", sha()),
            format!("wal/00000001/{seg}-{}.zst", sha()),
        ] {
            assert_eq!(parse_wal_key(&wrong), None, "{wrong}");
        }
    }
}
