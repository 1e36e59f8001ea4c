//! PostgreSQL configuration files: quoting a value for `postgresql.conf` (and a word of an
//! `archive_command` or `restore_command`), and setting values in a data directory's
//! `postgresql.auto.conf`.
//!
//! The one place that knows how PostgreSQL's configuration parser reads a quoted value
//! (`src/backend/utils/misc/guc-file.l`): inside single quotes `''` is a quote and a backslash
//! starts an escape (`\\`, `\n`, `\r`, `\t`, `\b`, `\f`, octal `\ooo`, any other `\x` is `x`);
//! a raw line break ends the line and is a syntax error. [`quote`] writes exactly what that
//! parser reads back as the original string.
//!
//! `postgresql.auto.conf` is read after `postgresql.conf`, and for a setting given several times
//! the last one wins, so values set there beat whatever `postgresql.conf` (or a restored
//! directory's history) says. [`set_in_auto_conf`] replaces earlier lines for the same names, as
//! `ALTER SYSTEM` does, so the file keeps one line per setting.
//! See <https://www.postgresql.org/docs/15/config-setting.html>.

use crate::pg::binaries::RunAs;
use anyhow::{Context, Result};
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The file PostgreSQL reads last (and `ALTER SYSTEM` writes).
pub const AUTO_CONF: &str = "postgresql.auto.conf";

/// A configuration string literal: single-quoted, with `'` doubled and `\`, line feed and
/// carriage return written as backslash escapes.
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str(r"\\"),
            '\n' => out.push_str(r"\n"),
            '\r' => out.push_str(r"\r"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// `name = 'value'`. Every setting accepts a quoted value, whatever its type (`port = '5432'`,
/// `archive_mode = 'off'`), which is how `ALTER SYSTEM` writes them too.
pub fn setting_line(name: &str, value: &str) -> String {
    format!("{name} = {}", quote(value))
}

/// A word of an `archive_command` or `restore_command` line: PostgreSQL replaces `%p`, `%f`
/// and `%%` in it, then runs it with `/bin/sh`, so the word is shell-quoted when it needs to be
/// and a literal `%` is doubled.
pub fn command_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:,@=".contains(&b));
    let word = if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    };
    word.replace('%', "%%")
}

/// The setting a line assigns (`name = value` or `name value`), lowercased as PostgreSQL
/// compares names; `None` for blank lines, comments and `include` directives.
fn assigned_name(line: &str) -> Option<String> {
    let line = line.trim_start();
    let end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .unwrap_or(line.len());
    let name = &line[..end];
    let include = matches!(name, "include" | "include_if_exists" | "include_dir");
    (!name.is_empty() && !include).then(|| name.to_ascii_lowercase())
}

/// `text` with every line that assigns one of `settings` removed and the settings appended
/// under `# <comment>` (a name given twice in `settings` gets its last value).
pub fn with_settings(text: &str, settings: &[(String, String)], comment: &str) -> String {
    let replaced: Vec<String> = settings
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .collect();
    let mut out: String = text
        .lines()
        .filter(|l| assigned_name(l).is_none_or(|n| !replaced.contains(&n)))
        .flat_map(|l| [l, "\n"])
        .collect();
    out.push_str(&format!("# {comment}\n"));
    // One line per name: a name given twice keeps its last value.
    for (i, (name, value)) in settings.iter().enumerate() {
        if !replaced[i + 1..].contains(&replaced[i]) {
            out.push_str(&setting_line(name, value));
            out.push('\n');
        }
    }
    out
}

/// Sets `settings` in `<datadir>/postgresql.auto.conf` (see [`with_settings`]), replacing the
/// file atomically. The file stays readable by the server: it is owned by `run_as`, mode 0600.
pub fn set_in_auto_conf(
    datadir: &Path,
    settings: &[(String, String)],
    comment: &str,
    run_as: &RunAs,
) -> Result<()> {
    let path = datadir.join(AUTO_CONF);
    let old = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let text = with_settings(&old, settings, comment);
    let write = || -> std::io::Result<crate::fsutil::TempFile> {
        let mut tmp = crate::fsutil::TempFile::create_beside(&path)?;
        tmp.write_all(text.as_bytes(), None)?;
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o600))?;
        Ok(tmp)
    };
    let tmp = write().with_context(|| format!("cannot write {}", path.display()))?;
    run_as.chown(tmp.path())?;
    tmp.sync()
        .and_then(|()| tmp.rename_to(&path))
        .with_context(|| format!("cannot replace {}", path.display()))
}

/// Appends `lines` as they are (each a complete setting line) to a configuration file, under
/// `# <comment>`. A file this creates is given to `run_as`.
pub fn append_lines(path: &Path, lines: &[String], comment: &str, run_as: &RunAs) -> Result<()> {
    let existed = path.exists();
    let mut text = format!("\n# {comment}\n");
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .with_context(|| format!("cannot append to {}", path.display()))?;
    if !existed {
        run_as.chown(path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn quoting_escapes_what_the_parser_unescapes() {
        assert_eq!(quote("plain"), "'plain'");
        assert_eq!(quote("a 'b' %p"), "'a ''b'' %p'");
        assert_eq!(quote(r"C:\dir\"), r"'C:\\dir\\'");
        assert_eq!(quote("two\nlines\r"), r"'two\nlines\r'");
        assert_eq!(quote(""), "''");
        assert_eq!(setting_line("port", "5432"), "port = '5432'");
    }

    #[test]
    fn command_words() {
        let plain = "/tmp/pgward-demo-x/bin/pgward";
        assert_eq!(command_word(plain), plain);
        assert_eq!(command_word("/tmp/a b"), "'/tmp/a b'");
        assert_eq!(command_word("/tmp/it's"), r"'/tmp/it'\''s'");
        assert_eq!(command_word("/tmp/100%"), "'/tmp/100%%'");
        assert_eq!(command_word(""), "''");
    }

    #[test]
    fn settings_replace_earlier_lines_of_the_same_name() {
        let old = "# Do not edit this file manually!\n\
                   port = '5432'\n\
                   Archive_Mode = on\n\
                   archive_command='cp %p /x'\n\
                   include 'other.conf'\n\
                   portable = 1\n\
                   restore_command = 'x'\n";
        let text = with_settings(
            old,
            &pairs(&[("PORT", "1"), ("archive_mode", "off"), ("port", "6000")]),
            "scratch server",
        );
        assert_eq!(
            text,
            "# Do not edit this file manually!\n\
             archive_command='cp %p /x'\n\
             include 'other.conf'\n\
             portable = 1\n\
             restore_command = 'x'\n\
             # scratch server\n\
             archive_mode = 'off'\n\
             port = '6000'\n"
        );
        assert_eq!(with_settings("", &[], "c"), "# c\n");
    }

    #[test]
    fn auto_conf_is_created_then_updated() {
        let dir = tempfile::tempdir().unwrap();
        let me = RunAs::CurrentUser;
        set_in_auto_conf(dir.path(), &pairs(&[("port", "1")]), "a", &me).unwrap();
        set_in_auto_conf(dir.path(), &pairs(&[("port", "2"), ("x.y", "z")]), "b", &me).unwrap();
        let path = dir.path().join(AUTO_CONF);
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "# a\n# b\nport = '2'\nx.y = 'z'\n"
        );
        use std::os::unix::fs::MetadataExt;
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        append_lines(&path, &["wal_level = replica".into()], "c", &me).unwrap();
        assert!(
            fs::read_to_string(&path)
                .unwrap()
                .ends_with("x.y = 'z'\n\n# c\nwal_level = replica\n")
        );
    }
}
