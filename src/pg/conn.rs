//! Connections to the running server (`[postgres] conninfo`), over tokio-postgres without TLS.
//!
//! The conninfo string is libpq's `key=value` or `postgresql://` form; `host=/a/dir` names the
//! directory of a Unix socket, as in libpq. Where libpq would fill in a default (socket
//! directory, user), the same default is applied here so a conninfo that works with `psql`
//! works with pgward. Every connection attempt has a deadline: an unreachable server must fail
//! the command, not hang it.

use anyhow::{Context, Result, anyhow};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;
use tokio_postgres::config::Host;
use tokio_postgres::{Client, Config, NoTls};

/// Debian's (and PostgreSQL's common packaged) default socket directory, libpq's default when
/// no host is given.
const DEFAULT_SOCKET_DIR: &str = "/var/run/postgresql";

/// Parses a conninfo string and applies libpq's defaults for what it leaves out.
pub fn parse_conninfo(conninfo: &str) -> Result<Config> {
    let mut config = Config::from_str(conninfo).map_err(|e| {
        anyhow!(
            "[postgres] conninfo is not a valid connection string: {e}\n\
             hint: write it as for psql, e.g. \"host=/var/run/postgresql port=5432 user=postgres dbname=postgres\""
        )
    })?;
    if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
        config.host_path(DEFAULT_SOCKET_DIR);
    }
    if config.get_user().is_none() {
        let user = std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "postgres".to_string());
        config.user(user);
    }
    if config.get_application_name().is_none() {
        config.application_name("pgward");
    }
    Ok(config)
}

/// The configuration's hosts as libpq's `host` reads them: names, and socket directories.
pub fn host_names(config: &Config) -> Vec<String> {
    config
        .get_hosts()
        .iter()
        .map(|h| match h {
            Host::Tcp(name) => name.clone(),
            Host::Unix(dir) => dir.display().to_string(),
        })
        .collect()
}

/// Where a configuration connects, for messages (never includes the password).
pub fn describe(config: &Config) -> String {
    let hosts: Vec<String> = host_names(config)
        .into_iter()
        .chain(config.get_hostaddrs().iter().map(|a| a.to_string()))
        .collect();
    let port = config
        .get_ports()
        .first()
        .map(|p| p.to_string())
        .unwrap_or_else(|| "5432".to_string());
    format!(
        "host={} port={port} user={} dbname={}",
        hosts.join(","),
        config.get_user().unwrap_or("?"),
        config
            .get_dbname()
            .or(config.get_user())
            .unwrap_or("postgres"),
    )
}

/// The conninfo with its password replaced by `<redacted>`, for `Debug` of the configuration.
///
/// Keyword/value text is tokenised as libpq's `conninfo_parse` does (quotes, backslash escapes),
/// so whatever libpq would take as the password is what is hidden; an unterminated value runs to
/// the end and is hidden whole. A `dbname` that is itself a connection string (libpq expands it)
/// is hidden whole. In the URL form the userinfo's password and any `password=` query parameter
/// are hidden.
pub fn redact_conninfo(conninfo: &str) -> String {
    const REDACTED: &str = "<redacted>";
    for scheme in ["postgresql://", "postgres://"] {
        if let Some(rest) = conninfo.strip_prefix(scheme) {
            return format!("{scheme}{}", redact_uri_rest(rest, REDACTED));
        }
    }
    let mut out = String::with_capacity(conninfo.len());
    let mut rest = conninfo;
    while !rest.is_empty() {
        let trimmed = rest.trim_start();
        if trimmed.len() != rest.len() {
            out.push_str(&rest[..rest.len() - trimmed.len()]);
            rest = trimmed;
            continue;
        }
        let keyword_len = rest
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(rest.len());
        let after_keyword = &rest[keyword_len..];
        let value = after_keyword.trim_start_matches(|c: char| c == '=' || c.is_whitespace());
        let value_len = conninfo_value_len(value);
        let head_len = rest.len() - value.len();
        out.push_str(&rest[..head_len]);
        let value_text = &value[..value_len];
        out.push_str(if hide_value(&rest[..keyword_len], value_text) {
            REDACTED
        } else {
            value_text
        });
        rest = &value[value_len..];
    }
    out
}

/// The length of the value at the start of `text`: a quoted value through its closing quote,
/// else up to whitespace; a backslash escapes the next character either way.
fn conninfo_value_len(text: &str) -> usize {
    let quoted = text.starts_with('\'');
    let mut escaped = false;
    for (i, c) in text.char_indices().skip(usize::from(quoted)) {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '\'' if quoted => return i + 1,
            c if !quoted && c.is_whitespace() => return i,
            _ => {}
        }
    }
    text.len()
}

fn hide_value(keyword: &str, value: &str) -> bool {
    keyword == "password" || (keyword == "dbname" && (value.contains('=') || value.contains("://")))
}

/// After the scheme: `[user[:password]@]host.../db?params`. As in libpq, the userinfo ends at
/// the first `@` when no `/` comes before it.
fn redact_uri_rest(rest: &str, redacted: &str) -> String {
    let mut out = String::with_capacity(rest.len());
    let mut rest = rest;
    if let Some(at) = rest
        .find(['@', '/'])
        .filter(|&i| rest[i..].starts_with('@'))
    {
        let userinfo = &rest[..at];
        match userinfo.split_once(':') {
            Some((user, _)) => {
                out.push_str(user);
                out.push(':');
                out.push_str(redacted);
            }
            None => out.push_str(userinfo),
        }
        out.push('@');
        rest = &rest[at + 1..];
    }
    let Some((before, query)) = rest.split_once('?') else {
        out.push_str(rest);
        return out;
    };
    out.push_str(before);
    out.push('?');
    let params: Vec<String> = query
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((key, value)) if hide_value(key, value) => format!("{key}={redacted}"),
            _ => param.to_string(),
        })
        .collect();
    out.push_str(&params.join("&"));
    out
}

/// Connects within `timeout` and spawns the connection task on the current runtime. The
/// session lives as long as the returned client (and the task ends when it is dropped).
pub async fn connect(conninfo: &str, timeout: Duration) -> Result<Client> {
    let mut config = parse_conninfo(conninfo)?;
    config.connect_timeout(timeout);
    let target = describe(&config);
    let (client, connection) = match tokio::time::timeout(timeout, config.connect(NoTls)).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => {
            return Err(anyhow!(
                "cannot connect to PostgreSQL ({target}): {}\nhint: {}",
                pg_error(&e),
                connect_hint(&e)
            ));
        }
        Err(_) => {
            return Err(anyhow!(
                "cannot connect to PostgreSQL ({target}): no answer within {}\nhint: {GENERIC_HINT}",
                humantime::format_duration(timeout)
            ));
        }
    };
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "PostgreSQL connection ended");
        }
    });
    Ok(client)
}

const GENERIC_HINT: &str = "check that the server is running and that [postgres] conninfo names \
                            it (host is the socket directory or host name, port, user, dbname)";

/// What tokio-postgres knows about a failure, which its `Display` leaves out: the server's
/// message with its detail (`role "x" does not exist`), or the system error under the
/// connection error (`No such file or directory`, `Connection refused`). A server's own hint
/// is not included: the caller's `hint:` line comes last.
pub fn pg_error(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = db.message().to_string();
        if let Some(d) = db.detail() {
            s += &format!(" ({d})");
        }
        if let Some(h) = db.hint() {
            s += &format!("; the server suggests: {h}");
        }
        return s;
    }
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        s += &format!(": {cause}");
        source = cause.source();
    }
    s
}

/// The likeliest fix for a failed connection, from the server's SQLSTATE or the system error.
fn connect_hint(e: &tokio_postgres::Error) -> String {
    use tokio_postgres::error::SqlState;
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        return if *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            && db.message().starts_with("role")
        {
            "set user= in [postgres] conninfo to a role that exists (pgward needs a superuser or a \
             role with pg_read_all_settings and backup rights), or create that role"
                .to_string()
        } else if *code == SqlState::INVALID_CATALOG_NAME {
            "set dbname= in [postgres] conninfo to a database that exists (postgres, say)"
                .to_string()
        } else if *code == SqlState::INVALID_PASSWORD
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        {
            "the server refused this role: check pg_hba.conf and the password (a password= in \
             conninfo or ~/.pgpass)"
                .to_string()
        } else {
            GENERIC_HINT.to_string()
        };
    }
    let io_kind = std::iter::successors(std::error::Error::source(e), |c| c.source())
        .find_map(|c| c.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind);
    match io_kind {
        Some(std::io::ErrorKind::NotFound) => {
            "no server socket there: the server is not running, or host= (the socket directory, \
             unix_socket_directories) or port= in [postgres] conninfo differ from the server's"
                .to_string()
        }
        Some(std::io::ErrorKind::ConnectionRefused) => {
            "nothing listens there: the server is not running, or host= or port= in [postgres] \
             conninfo differ from the server's (listen_addresses, port)"
                .to_string()
        }
        Some(std::io::ErrorKind::PermissionDenied) => {
            "this user may not open the server's socket: run pgward as the postgres user"
                .to_string()
        }
        _ => GENERIC_HINT.to_string(),
    }
}

/// `server_version_num`, e.g. 150004.
pub async fn server_version_num(client: &Client) -> Result<u32> {
    let row = client
        .query_one("select current_setting('server_version_num')", &[])
        .await
        .context("cannot read server_version_num")?;
    let text: String = row.get(0);
    text.trim()
        .parse()
        .with_context(|| format!("server_version_num `{text}` is not a number"))
}

/// The server's database system identifier (`pg_control_system()`).
pub async fn system_identifier(client: &Client) -> Result<u64> {
    let row = client
        .query_one(
            "select system_identifier::text from pg_control_system()",
            &[],
        )
        .await
        .context("cannot read the system identifier (pg_control_system())")?;
    let text: String = row.get(0);
    text.parse()
        .with_context(|| format!("system identifier `{text}` is not a number"))
}

/// The value of a setting as `show` prints it.
pub async fn show(client: &Client, name: &str) -> Result<String> {
    let row = client
        .query_one("select current_setting($1)", &[&name])
        .await
        .with_context(|| format!("cannot read setting {name}"))?;
    Ok(row.get(0))
}

/// `name` as an SQL identifier: in double quotes, inner quotes doubled (as `quote_ident`).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The server's data directory, when this role may see it (superuser or
/// `pg_read_all_settings`); `None` otherwise.
pub async fn data_directory(client: &Client) -> Option<PathBuf> {
    show(client, "data_directory").await.ok().map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_libpq() {
        let c = parse_conninfo("port=5433").unwrap();
        assert_eq!(c.get_hosts(), &[Host::Unix(DEFAULT_SOCKET_DIR.into())]);
        assert!(c.get_user().is_some());
        assert_eq!(c.get_application_name(), Some("pgward"));

        let c =
            parse_conninfo("host=/tmp/s port=6000 user=alice dbname=x password=secret").unwrap();
        let d = describe(&c);
        assert_eq!(d, "host=/tmp/s port=6000 user=alice dbname=x");
        assert!(!d.contains("secret"));
    }

    #[test]
    fn redaction_hides_what_libpq_takes_as_the_password() {
        for (conninfo, redacted) in [
            (
                "host=/tmp password=SEKRET user=x",
                "host=/tmp password=<redacted> user=x",
            ),
            (
                "password = 'SEK RET\\' SEKRET' user=x",
                "password = <redacted> user=x",
            ),
            ("user=x password=SEK\\ RET", "user=x password=<redacted>"),
            ("password='unterminated SEKRET", "password=<redacted>"),
            ("host=/tmp password=", "host=/tmp password=<redacted>"),
            (
                "dbname='host=/tmp password=SEKRET' user=x",
                "dbname=<redacted> user=x",
            ),
            ("dbname=app user=x", "dbname=app user=x"),
            (
                "postgresql://alice:SEKRET@localhost:5432/db",
                "postgresql://alice:<redacted>@localhost:5432/db",
            ),
            (
                "postgres://alice@h/db?password=SEKRET&sslmode=disable",
                "postgres://alice@h/db?password=<redacted>&sslmode=disable",
            ),
            (
                "postgresql://h/db?application_name=a@b",
                "postgresql://h/db?application_name=a@b",
            ),
        ] {
            assert_eq!(redact_conninfo(conninfo), redacted, "{conninfo}");
        }
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("app"), "\"app\"");
        assert_eq!(quote_ident("my \"db\""), "\"my \"\"db\"\"\"");
    }

    #[test]
    fn bad_conninfo_names_the_setting() {
        let err = format!("{:#}", parse_conninfo("host='unterminated").unwrap_err());
        assert!(err.contains("[postgres] conninfo"), "{err}");
    }

    #[tokio::test]
    async fn unreachable_server_fails_fast_naming_the_cause() {
        let dir = tempfile::tempdir().unwrap();
        let conninfo = format!("host={} port=1 user=x dbname=x", dir.path().display());
        let start = std::time::Instant::now();
        let err = format!(
            "{:#}",
            connect(&conninfo, Duration::from_secs(5))
                .await
                .unwrap_err()
        );
        assert!(start.elapsed() < Duration::from_secs(5));
        let (what, hint) = err.split_once("\nhint: ").unwrap();
        assert_eq!(
            what,
            format!(
                "cannot connect to PostgreSQL (host={} port=1 user=x dbname=x): error connecting \
                 to server: No such file or directory (os error 2)",
                dir.path().display()
            )
        );
        assert!(hint.starts_with("no server socket there"), "{err}");
        assert!(
            hint.contains("host=") && hint.contains("[postgres] conninfo"),
            "{err}"
        );

        // Nothing listens on a port just freed on loopback.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conninfo = format!("host=127.0.0.1 port={port} user=x dbname=x");
        let err = format!(
            "{:#}",
            connect(&conninfo, Duration::from_secs(5))
                .await
                .unwrap_err()
        );
        let (what, hint) = err.split_once("\nhint: ").unwrap();
        assert!(
            what.ends_with("error connecting to server: Connection refused (os error 111)"),
            "{err}"
        );
        assert!(hint.starts_with("nothing listens there"), "{err}");
    }
}
