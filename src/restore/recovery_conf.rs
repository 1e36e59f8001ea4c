//! The recovery settings a restore appends to `postgresql.auto.conf`.
//!
//! PostgreSQL reads `postgresql.auto.conf` after `postgresql.conf`, and for a setting given
//! several times the last one wins, so an appended block overrides whatever the restored
//! cluster inherited. One catch: PostgreSQL refuses to start with two *different* recovery
//! target settings ("multiple recovery targets specified"), and a backup of a cluster that was
//! itself restored still carries the old block. So every target setting is reset first, then
//! the one wanted is set (the order matters: the resets must come before it).
//! Values are quoted by [`crate::pg::conf::quote`] (single quotes doubled, backslashes escaped).
//! See <https://www.postgresql.org/docs/15/runtime-config-wal.html#RUNTIME-CONFIG-WAL-ARCHIVE-RECOVERY>.

use crate::pg::conf::{command_word, quote};
use crate::restore::target::{RecoveryTarget, TargetAction};
use std::fmt::Write as _;
use std::path::Path;

/// Every recovery target setting; exactly one may be non-empty.
const TARGET_SETTINGS: &[&str] = &[
    "recovery_target",
    "recovery_target_lsn",
    "recovery_target_name",
    "recovery_target_time",
    "recovery_target_xid",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoverySettings {
    pub restore_command: String,
    pub target: RecoveryTarget,
    /// `recovery_target_inclusive`; PostgreSQL's default is on.
    pub inclusive: bool,
    /// `recovery_target_timeline` as planned (`latest`, `current` or a number).
    pub timeline: String,
    /// Only written when a target is set.
    pub action: TargetAction,
    /// The first missing segment of a hole past the target, if the archive has one. Recovery
    /// then must not read WAL ahead of replay: PostgreSQL's read-ahead (`recovery_prefetch`)
    /// asks `restore_command` for the segment after the one holding the target before replay
    /// reaches it, and `wal-fetch` answers a hole with a failure that stops recovery.
    pub hole_after_target: Option<String>,
}

/// `<exe> --config <config> wal-fetch %f %p`, as a shell command line. PostgreSQL runs it with
/// `/bin/sh` after replacing `%f`, `%p` and `%%`, so paths are shell-quoted when they need it
/// and a literal `%` is doubled.
pub fn restore_command(exe: &Path, config: &Path) -> String {
    format!(
        "{} --config {} wal-fetch %f %p",
        command_word(&exe.to_string_lossy()),
        command_word(&config.to_string_lossy())
    )
}

/// The block appended to `postgresql.auto.conf`. `label` and `when` go into the comment.
pub fn render(s: &RecoverySettings, label: &str, when: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "# Recovery settings added by pgward restore of backup {label} at {when}."
    );
    let _ = writeln!(
        out,
        "# They override earlier lines; every recovery target is reset first because"
    );
    let _ = writeln!(
        out,
        "# PostgreSQL refuses more than one. Remove this block once recovery is done."
    );
    let _ = writeln!(out, "restore_command = {}", quote(&s.restore_command));
    let chosen = s.target.setting();
    for name in TARGET_SETTINGS {
        if chosen.as_ref().is_none_or(|(n, _)| n != name) {
            let _ = writeln!(out, "{name} = ''");
        }
    }
    if let Some((name, value)) = &chosen {
        let _ = writeln!(out, "{name} = {}", quote(value));
    }
    let _ = writeln!(
        out,
        "recovery_target_inclusive = {}",
        if s.inclusive { "on" } else { "off" }
    );
    let _ = writeln!(out, "recovery_target_timeline = {}", quote(&s.timeline));
    if chosen.is_some() {
        let _ = writeln!(out, "recovery_target_action = {}", quote(s.action.as_str()));
    }
    if let Some(missing) = &s.hole_after_target {
        let _ = writeln!(
            out,
            "# The archive has a hole at {missing}, after the target: no WAL read-ahead past it."
        );
        let _ = writeln!(out, "recovery_prefetch = off");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::restore::target::parse_time;

    fn settings(target: RecoveryTarget) -> RecoverySettings {
        RecoverySettings {
            restore_command: restore_command(
                Path::new("/usr/bin/pgward"),
                Path::new("/etc/pgward/pgward.toml"),
            ),
            target,
            inclusive: true,
            timeline: "latest".into(),
            action: TargetAction::Promote,
            hole_after_target: None,
        }
    }

    fn settings_lines(text: &str) -> Vec<&str> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .collect()
    }

    #[test]
    fn renders_each_target() {
        let time = RecoveryTarget::Time(parse_time("2026-11-22 14:30:00.5+05:30").unwrap());
        let cases: Vec<(RecoveryTarget, &str, bool)> = vec![
            (
                time,
                "recovery_target_time = '2026-11-22 14:30:00.500000+05:30'",
                true,
            ),
            (
                RecoveryTarget::Lsn("0/3000060".parse().unwrap()),
                "recovery_target_lsn = '0/3000060'",
                true,
            ),
            (
                RecoveryTarget::Xid(1234),
                "recovery_target_xid = '1234'",
                true,
            ),
            (
                RecoveryTarget::Name("it's \\ here".into()),
                r"recovery_target_name = 'it''s \\ here'",
                true,
            ),
            (
                RecoveryTarget::Immediate,
                "recovery_target = 'immediate'",
                true,
            ),
            (
                RecoveryTarget::EndOfArchive,
                "recovery_target_timeline = 'latest'",
                false,
            ),
        ];
        for (target, want, has_action) in cases {
            let text = render(
                &settings(target.clone()),
                "20261122T013000Z",
                "2026-11-22T15:00:00Z",
            );
            let lines = settings_lines(&text);
            assert!(
                text.starts_with(
                    "\n# Recovery settings added by pgward restore of backup 20261122T013000Z"
                ),
                "{text}"
            );
            assert_eq!(
                lines[0],
                "restore_command = '/usr/bin/pgward --config /etc/pgward/pgward.toml wal-fetch %f %p'"
            );
            assert!(lines.contains(&want), "{target:?}:\n{text}");
            // Each target setting appears exactly once, the chosen one after the resets.
            for name in TARGET_SETTINGS {
                let n = lines
                    .iter()
                    .filter(|l| l.starts_with(&format!("{name} =")))
                    .count();
                assert_eq!(n, 1, "{name} in\n{text}");
            }
            let resets = lines.iter().rposition(|l| l.ends_with("= ''")).unwrap();
            if let Some((name, _)) = target.setting() {
                let at = lines
                    .iter()
                    .position(|l| l.starts_with(&format!("{name} =")))
                    .unwrap();
                assert!(at > resets, "{text}");
            }
            assert!(lines.contains(&"recovery_target_inclusive = on"));
            assert_eq!(
                lines.contains(&"recovery_target_action = 'promote'"),
                has_action,
                "{text}"
            );
        }
    }

    #[test]
    fn exclusive_timeline_and_action() {
        let mut s = settings(RecoveryTarget::Xid(7));
        s.inclusive = false;
        s.timeline = "3".into();
        s.action = TargetAction::Pause;
        let text = render(&s, "L", "now");
        let lines = settings_lines(&text);
        assert!(lines.contains(&"recovery_target_inclusive = off"), "{text}");
        assert!(lines.contains(&"recovery_target_timeline = '3'"), "{text}");
        assert!(
            lines.contains(&"recovery_target_action = 'pause'"),
            "{text}"
        );
    }

    #[test]
    fn restore_command_quoting() {
        assert_eq!(
            restore_command(
                Path::new("/opt/my pgward/pgward"),
                Path::new("/etc/it's 100%.toml")
            ),
            r"'/opt/my pgward/pgward' --config '/etc/it'\''s 100%%.toml' wal-fetch %f %p"
        );
        // In the config file: quotes and backslashes doubled.
        assert_eq!(
            quote(r"'/a b' --config '/it'\''s'"),
            r"'''/a b'' --config ''/it''\\''''s'''"
        );
    }
}
