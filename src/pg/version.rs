//! The PostgreSQL major version of a data directory, from its `PG_VERSION` file.
//!
//! `initdb` writes the major version followed by a newline: `15\n` since PostgreSQL 10, and
//! `9.6\n` style before that. pgward does not support the pre-10 numbering (those releases
//! also name their WAL directory `pg_xlog`), so a dotted version is refused here, clearly,
//! instead of failing later on a missing `pg_wal`.

use std::path::Path;

use anyhow::{Context, bail};

/// File name of the version file inside a data directory.
pub const PG_VERSION_FILE: &str = "PG_VERSION";

/// Reads `<pgdata>/PG_VERSION` and returns the major version (for example 15).
pub fn read_major_version(pgdata: &Path) -> anyhow::Result<u32> {
    let path = pgdata.join(PG_VERSION_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| {
                format!(
                    "could not read {}: hint: is {} a PostgreSQL data directory?",
                    path.display(),
                    pgdata.display()
                )
            });
        }
        Err(e) => return Err(e).with_context(|| format!("could not read {}", path.display())),
    };
    parse_major_version(&text).with_context(|| format!("invalid {}", path.display()))
}

/// Parses the contents of a `PG_VERSION` file.
pub fn parse_major_version(text: &str) -> anyhow::Result<u32> {
    let version = text.trim();
    if version.is_empty() {
        bail!("the file is empty; expected a PostgreSQL major version such as 15");
    }
    if let Some((major, minor)) = version.split_once('.')
        && !major.is_empty()
        && major.bytes().all(|b| b.is_ascii_digit())
        && !minor.is_empty()
        && minor.bytes().all(|b| b.is_ascii_digit())
    {
        bail!(
            "PostgreSQL {version} is not supported: pgward supports PostgreSQL 10 and later \
             (upgrade the cluster first)"
        );
    }
    if !version.bytes().all(|b| b.is_ascii_digit()) {
        bail!(
            "`{}` is not a PostgreSQL major version; expected a number such as 15",
            version.escape_debug()
        );
    }
    let major: u32 = version.parse().with_context(|| {
        format!(
            "`{}` is not a PostgreSQL major version; expected a number such as 15",
            version.escape_debug()
        )
    })?;
    if major < 10 {
        bail!("PostgreSQL {major} is not supported: pgward supports PostgreSQL 10 and later");
    }
    Ok(major)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_modern_versions() {
        assert_eq!(parse_major_version("15\n").unwrap(), 15);
        assert_eq!(parse_major_version("17").unwrap(), 17);
        assert_eq!(parse_major_version("10\r\n").unwrap(), 10);
    }

    #[test]
    fn refuses_old_and_malformed_versions() {
        let cases: &[(&str, &str)] = &[
            ("9.6\n", "PostgreSQL 9.6 is not supported"),
            ("8.4", "PostgreSQL 8.4 is not supported"),
            ("9", "PostgreSQL 9 is not supported"),
            ("", "empty"),
            ("\n", "empty"),
            ("fifteen", "not a PostgreSQL major version"),
            ("15beta1", "not a PostgreSQL major version"),
            ("1.x", "not a PostgreSQL major version"),
            ("99999999999999", "not a PostgreSQL major version"),
            ("１５", "not a PostgreSQL major version"),
        ];
        for (text, want) in cases {
            let msg = format!("{:#}", parse_major_version(text).unwrap_err());
            assert!(msg.contains(want), "{text:?}: {msg}");
        }
    }

    #[test]
    fn reads_the_file_and_names_it_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let msg = format!("{:#}", read_major_version(dir.path()).unwrap_err());
        assert!(msg.contains("PG_VERSION"), "{msg}");
        assert!(msg.contains("a PostgreSQL data directory?"), "{msg}");

        std::fs::write(dir.path().join(PG_VERSION_FILE), "9.6\n").unwrap();
        let msg = format!("{:#}", read_major_version(dir.path()).unwrap_err());
        assert!(
            msg.contains("PG_VERSION") && msg.contains("not supported"),
            "{msg}"
        );

        std::fs::write(dir.path().join(PG_VERSION_FILE), "16\n").unwrap();
        assert_eq!(read_major_version(dir.path()).unwrap(), 16);
    }
}
