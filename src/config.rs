//! The TOML configuration: schema, defaults, validation and secret redaction.
//!
//! Unknown keys and bad values are refused while parsing, so the error names the key and the
//! line (`toml` reports the span) but never quotes the source line, which may hold a secret.
//! Secrets are wrapped in [`Secret`], whose `Debug` and `Display` never print the value, and
//! `Debug` shows the conninfo with its password redacted.

use anyhow::{Context, Result};
use serde::{Deserialize, Deserializer};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the configuration is looked for when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/pgward/pgward.toml";
pub const CONFIG_ENV: &str = "PGWARD_CONFIG";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub postgres: PostgresConfig,
    pub repo: RepoConfig,
    #[serde(default)]
    pub wal: WalConfig,
    #[serde(default)]
    pub backup: BackupConfig,
    #[serde(default)]
    pub dump: DumpConfig,
    #[serde(default)]
    pub drill: DrillConfig,
    #[serde(default)]
    pub agent: AgentConfig,
    /// The retention and schedule policy file, relative to the configuration file's directory
    /// (see [`Config::policy_path`]); none means the built-in `policies/default.toml`.
    pub policy: Option<PathBuf>,
    /// `[[notify]]`: where the agent's job events go (see [`crate::notify`]).
    #[serde(default)]
    pub notify: Vec<crate::notify::NotifyConfig>,
}

#[derive(Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    pub pgdata: Option<PathBuf>,
    pub conninfo: Option<String>,
    pub bindir: Option<PathBuf>,
}

/// By hand so the conninfo's password never reaches a log through `{:?}`.
impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("pgdata", &self.pgdata)
            .field(
                "conninfo",
                &self
                    .conninfo
                    .as_deref()
                    .map(crate::pg::conn::redact_conninfo),
            )
            .field("bindir", &self.bindir)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    pub url: RepoUrl,
    #[serde(default = "default_compression_level")]
    pub compression_level: CompressionLevel,
    pub s3: Option<S3Config>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub endpoint: Option<String>,
    #[serde(default = "default_region")]
    pub region: String,
    #[serde(default)]
    pub force_path_style: bool,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalConfig {
    #[serde(default = "default_push_ahead")]
    pub push_ahead: usize,
    #[serde(default = "default_prefetch")]
    pub prefetch: usize,
    #[serde(default = "default_spool_dir")]
    pub spool_dir: PathBuf,
    #[serde(default = "default_wal_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            push_ahead: default_push_ahead(),
            prefetch: default_prefetch(),
            spool_dir: default_spool_dir(),
            timeout: default_wal_timeout(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    /// Parallel workers for reading/hashing/compressing (backup) and writing (restore).
    #[serde(default = "default_jobs", deserialize_with = "de_jobs")]
    pub jobs: usize,
    /// How long `pg_backup_stop()` and the check that the backup's WAL reached the repository
    /// may wait for archiving before the backup fails.
    #[serde(default = "default_wal_wait_timeout", deserialize_with = "de_duration")]
    pub wal_wait_timeout: Duration,
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            jobs: default_jobs(),
            wal_wait_timeout: default_wal_wait_timeout(),
        }
    }
}

/// `[dump]`: logical backups with `pg_dump` (`pgward dump`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DumpConfig {
    /// Databases dumped at once.
    #[serde(default = "default_dump_jobs", deserialize_with = "de_jobs")]
    pub jobs: usize,
    /// Passed to pg_dump as `--lock-wait-timeout`: a dump fails instead of queueing behind a
    /// long DDL lock forever.
    #[serde(
        default = "default_lock_wait_timeout",
        deserialize_with = "de_duration"
    )]
    pub lock_wait_timeout: Duration,
    /// Whether `globals.sql` holds the roles' password hashes (`false` adds
    /// `--no-role-passwords` to pg_dumpall).
    #[serde(default = "default_role_passwords")]
    pub role_passwords: bool,
}

impl Default for DumpConfig {
    fn default() -> Self {
        DumpConfig {
            jobs: default_dump_jobs(),
            lock_wait_timeout: default_lock_wait_timeout(),
            role_passwords: default_role_passwords(),
        }
    }
}

/// `[drill]`: restore drills (`pgward drill`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillConfig {
    /// The directory of drill files, relative to pgward.toml's directory; default
    /// `restore-tests` beside it.
    pub tests: Option<PathBuf>,
    /// Where drills put their scratch copies (a drill file's `scratch_dir` overrides it). Run
    /// as root, it must be reachable by the `postgres` user.
    #[serde(default = "default_drill_scratch_dir")]
    pub scratch_dir: PathBuf,
}

fn default_drill_scratch_dir() -> PathBuf {
    PathBuf::from("/var/tmp/pgward-drill")
}

impl Default for DrillConfig {
    fn default() -> Self {
        DrillConfig {
            tests: None,
            scratch_dir: default_drill_scratch_dir(),
        }
    }
}

/// `[agent]`: `pgward agent`, the scheduler with its HTTP endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    #[serde(default = "default_agent_listen")]
    pub listen: std::net::SocketAddr,
    /// Whether `listen` may be a non-loopback address (the endpoint has no authentication).
    #[serde(default)]
    pub allow_remote: bool,
    /// Where the per-job state (`jobs.json`: last runs, counters) persists across restarts.
    #[serde(default = "default_agent_state_dir")]
    pub state_dir: PathBuf,
    /// How long a running job may go on after SIGTERM before it is cancelled.
    #[serde(
        default = "default_agent_stop_timeout",
        deserialize_with = "de_duration"
    )]
    pub stop_timeout: Duration,
    /// How long a job waits for a lease held by another run of its kind (a backup or an
    /// expire started by hand) before it fails.
    #[serde(default = "default_agent_lease_wait", deserialize_with = "de_duration")]
    pub lease_wait: Duration,
    /// Whether a run missed while the agent was down runs once at start.
    #[serde(default = "default_agent_catch_up")]
    pub catch_up: bool,
}

fn default_agent_listen() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 9847))
}
fn default_agent_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/pgward/agent")
}
fn default_agent_stop_timeout() -> Duration {
    Duration::from_secs(120)
}
fn default_agent_lease_wait() -> Duration {
    Duration::from_secs(600)
}
fn default_agent_catch_up() -> bool {
    true
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            listen: default_agent_listen(),
            allow_remote: false,
            state_dir: default_agent_state_dir(),
            stop_timeout: default_agent_stop_timeout(),
            lease_wait: default_agent_lease_wait(),
            catch_up: default_agent_catch_up(),
        }
    }
}

impl AgentConfig {
    fn validate(&self) -> Result<()> {
        if !self.listen.ip().is_loopback() && !self.allow_remote {
            anyhow::bail!(
                "[agent] listen = \"{}\" is not a loopback address, and the agent's HTTP \
                 endpoint (/metrics, /readyz) has no authentication\nhint: listen on \
                 127.0.0.1 (or [::1]) and let Prometheus scrape through a proxy, or set \
                 [agent] allow_remote = true to serve it on that address",
                self.listen
            );
        }
        if self.state_dir.is_relative() {
            anyhow::bail!(
                "[agent] state_dir `{}` is relative; the agent's working directory is no place \
                 for its job state\nhint: write an absolute path (default \
                 /var/lib/pgward/agent)",
                self.state_dir.display()
            );
        }
        Ok(())
    }
}

/// Where the repository lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoUrl {
    Local(PathBuf),
    S3 { bucket: String, prefix: String },
}

impl RepoUrl {
    pub fn parse(s: &str) -> std::result::Result<RepoUrl, String> {
        if let Some(path) = s.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(format!(
                    "repository url `{s}` must name an absolute path (file:///var/lib/pgward/repo)"
                ));
            }
            return Ok(RepoUrl::Local(PathBuf::from(path)));
        }
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.len() < 3 {
                return Err(format!(
                    "repository url `{s}` needs a bucket name of at least 3 characters (s3://bucket/prefix)"
                ));
            }
            let prefix = prefix.trim_matches('/');
            return Ok(RepoUrl::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
            });
        }
        if s.starts_with('/') {
            return Ok(RepoUrl::Local(PathBuf::from(s)));
        }
        Err(format!(
            "repository url `{s}` is neither file:///path nor s3://bucket/prefix"
        ))
    }
}

impl fmt::Display for RepoUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RepoUrl::Local(p) => write!(f, "file://{}", p.display()),
            RepoUrl::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

impl<'de> Deserialize<'de> for RepoUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RepoUrl::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// zstd level, 1..=19 (higher levels cost far more CPU than WAL archiving can afford).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressionLevel(pub i32);

impl<'de> Deserialize<'de> for CompressionLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let v = i64::deserialize(d)?;
        if !(1..=19).contains(&v) {
            return Err(serde::de::Error::custom(format!(
                "compression_level must be between 1 and 19, got {v}"
            )));
        }
        Ok(CompressionLevel(v as i32))
    }
}

/// A secret value: never printed by `Debug` or `Display`, nor by a parse error.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        // serde's own message would quote a mistyped value (`invalid type: integer `1234``).
        String::deserialize(d).map(Secret).map_err(|_| {
            serde::de::Error::custom("a secret must be a quoted string (the value is not shown)")
        })
    }
}

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The value itself, for handing to the SDK. Never log the result.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

fn default_compression_level() -> CompressionLevel {
    CompressionLevel(3)
}
fn default_region() -> String {
    "us-east-1".to_string()
}
fn default_push_ahead() -> usize {
    4
}
fn default_prefetch() -> usize {
    8
}
fn default_spool_dir() -> PathBuf {
    PathBuf::from("/var/spool/pgward")
}
fn default_wal_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_wal_wait_timeout() -> Duration {
    Duration::from_secs(600)
}
fn default_dump_jobs() -> usize {
    1
}
fn default_lock_wait_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_role_passwords() -> bool {
    true
}
fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

/// A duration as pgward's files write them (`"60s"`, `"2m"`, `"7d"`: humantime), or why not.
pub(crate) fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration ({e}); write e.g. \"60s\", \"2m\" or \"7d\""))
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    let dur = parse_duration(&s).map_err(serde::de::Error::custom)?;
    if dur.is_zero() {
        return Err(serde::de::Error::custom(
            "a timeout of zero would fail every call",
        ));
    }
    Ok(dur)
}

fn de_jobs<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<usize, D::Error> {
    let v = i64::deserialize(d)?;
    if !(1..=256).contains(&v) {
        return Err(serde::de::Error::custom(format!(
            "jobs must be between 1 and 256, got {v}"
        )));
    }
    Ok(v as usize)
}

/// A TOML error as its position, the key it concerns and its message. `toml`'s `Display` quotes
/// the offending source line, which may hold a secret (a misspelt `secret_access_key`, a bad
/// escape in a conninfo with a password) and would then reach stderr — for archive_command, the
/// server log. The messages themselves name keys and types, not values (a `Secret` hides even a
/// mistyped one). `T` is the document's type (the configuration, the policy file).
pub(crate) fn describe<T: serde::de::DeserializeOwned>(e: &toml::de::Error, text: &str) -> String {
    let message = e.message().trim_end().replace('\n', "; ");
    let key = key_path::<T>(text)
        .map(|k| format!(" (in `{k}`)"))
        .unwrap_or_default();
    match e.span() {
        Some(span) => {
            let start = span.start.min(text.len());
            let before = text.get(..start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
            format!("line {line}, column {column}{key}: {message}")
        }
        None => format!("{}{message}", key.trim_start()),
    }
}

/// The dotted key a deserialisation error concerns. `toml::de::Error` keeps it private and
/// shows it only in `Display`, and only for an error without source text, so the document is
/// deserialised again from its parsed table; only that `in `key`` line is taken from it.
fn key_path<T: serde::de::DeserializeOwned>(text: &str) -> Option<String> {
    let table: toml::Table = text.parse().ok()?;
    let e = T::deserialize(toml::Value::Table(table)).err()?;
    e.to_string()
        .lines()
        .filter_map(|l| l.strip_prefix("in `")?.strip_suffix('`'))
        .next_back()
        .map(str::to_string)
}

/// Why the configuration file cannot be read, with the fix that fits: a missing file wants
/// `--config`, an unreadable one a different user or its permissions.
fn unreadable(path: &Path, e: &std::io::Error) -> anyhow::Error {
    let hint = match e.kind() {
        std::io::ErrorKind::NotFound => format!("pass --config FILE or set {CONFIG_ENV}"),
        std::io::ErrorKind::PermissionDenied => format!(
            "run pgward as a user that may read it (PostgreSQL runs it as the server's user: \
             `sudo -u postgres pgward ...`), or make it readable by that user (chmod/chown {})",
            path.display()
        ),
        _ => "check the file and its directory".to_string(),
    };
    anyhow::anyhow!(
        "cannot read configuration file {}: {e}\nhint: {hint}",
        path.display()
    )
}

impl Config {
    /// Parses configuration text; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config> {
        let cfg: Config = toml::from_str(text).map_err(|e| {
            anyhow::anyhow!(
                "invalid configuration in {origin}: {}",
                describe::<Config>(&e, text)
            )
        })?;
        cfg.validate()
            .with_context(|| format!("invalid configuration in {origin}"))?;
        Ok(cfg)
    }

    /// Loads from `explicit`, else `$PGWARD_CONFIG`, else the default path.
    pub fn load(explicit: Option<&Path>) -> Result<(Config, PathBuf)> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None => match std::env::var_os(CONFIG_ENV) {
                Some(p) if !p.is_empty() => PathBuf::from(p),
                _ => PathBuf::from(DEFAULT_CONFIG_PATH),
            },
        };
        let text = std::fs::read_to_string(&path).map_err(|e| unreadable(&path, &e))?;
        let cfg = Config::parse(&text, &path.display().to_string())?;
        Ok((cfg, path))
    }

    fn validate(&self) -> Result<()> {
        match (&self.repo.url, &self.repo.s3) {
            (RepoUrl::Local(_), Some(_)) => {
                anyhow::bail!("[repo.s3] is set but repo.url is not an s3:// url")
            }
            (RepoUrl::S3 { .. }, Some(s3)) => {
                if s3.access_key_id.is_some() != s3.secret_access_key.is_some() {
                    anyhow::bail!(
                        "[repo.s3] access_key_id and secret_access_key must be given together \
                         (or neither, to use the standard AWS credential chain)"
                    );
                }
                if let Some(ep) = &s3.endpoint
                    && !(ep.starts_with("http://") || ep.starts_with("https://"))
                {
                    anyhow::bail!("[repo.s3] endpoint `{ep}` must start with http:// or https://");
                }
            }
            _ => {}
        }
        if self.wal.push_ahead > 64 {
            anyhow::bail!(
                "wal.push_ahead must be at most 64, got {}",
                self.wal.push_ahead
            );
        }
        if self.wal.prefetch > 64 {
            anyhow::bail!("wal.prefetch must be at most 64, got {}", self.wal.prefetch);
        }
        self.agent.validate()?;
        Ok(())
    }

    /// The policy file named by `policy = "..."`, made absolute: a relative path is taken
    /// from the directory of the configuration file at `config_path` (itself made absolute
    /// from the working directory). `None` when no policy is configured.
    pub fn policy_path(&self, config_path: &Path) -> Option<PathBuf> {
        let policy = self.policy.as_deref()?;
        if policy.is_absolute() {
            return Some(policy.to_path_buf());
        }
        let config = std::path::absolute(config_path).unwrap_or_else(|_| config_path.into());
        let dir = config.parent().unwrap_or(Path::new("/"));
        Some(dir.join(policy))
    }

    /// The data directory, or an error saying which key to set.
    pub fn pgdata(&self) -> Result<&Path> {
        self.postgres
            .pgdata
            .as_deref()
            .context("[postgres] pgdata is not set in the configuration")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[repo]\nurl = \"file:///tmp/repo\"\n";

    #[test]
    fn an_unreadable_configuration_gets_the_hint_that_fits() {
        let path = Path::new("/etc/pgward/pgward.toml");
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let err = unreadable(path, &denied).to_string();
        let (what, hint) = err.split_once("\nhint: ").unwrap();
        assert_eq!(
            what,
            format!("cannot read configuration file /etc/pgward/pgward.toml: {denied}")
        );
        assert!(
            hint.contains("sudo -u postgres pgward") && !hint.contains("--config"),
            "{err}"
        );
        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        let err = unreadable(path, &missing).to_string();
        assert!(
            err.ends_with("hint: pass --config FILE or set PGWARD_CONFIG"),
            "{err}"
        );
    }

    #[test]
    fn agent_section_has_defaults() {
        let c = Config::parse(MINIMAL, "t").unwrap();
        assert_eq!(c.agent.listen, "127.0.0.1:9847".parse().unwrap());
        assert!(!c.agent.allow_remote);
        assert_eq!(c.agent.state_dir, PathBuf::from("/var/lib/pgward/agent"));
        assert_eq!(c.agent.stop_timeout, Duration::from_secs(120));
        assert!(c.agent.catch_up);
        let text = format!(
            "{MINIMAL}[agent]\nlisten = \"[::1]:9000\"\nstate_dir = \"/srv/agent\"\n\
             stop_timeout = \"30s\"\ncatch_up = false\n"
        );
        let c = Config::parse(&text, "t").unwrap();
        assert_eq!(c.agent.listen, "[::1]:9000".parse().unwrap());
        assert_eq!(c.agent.state_dir, PathBuf::from("/srv/agent"));
        assert_eq!(c.agent.stop_timeout, Duration::from_secs(30));
        assert!(!c.agent.catch_up);
    }

    #[test]
    fn agent_refusals_name_the_key_and_the_fix() {
        let cases: &[(&str, &str)] = &[
            (
                "listen = \"0.0.0.0:9847\"",
                "[agent] listen = \"0.0.0.0:9847\" is not a loopback address",
            ),
            (
                "listen = \"192.0.2.7:9847\"",
                "[agent] listen = \"192.0.2.7:9847\" is not a loopback address",
            ),
            ("listen = \"[::]:9847\"", "is not a loopback address"),
            ("listen = \"localhost:9847\"", "(in `agent.listen`)"),
            ("listen = \"127.0.0.1\"", "(in `agent.listen`)"),
            (
                "state_dir = \"agent\"",
                "[agent] state_dir `agent` is relative",
            ),
            ("stop_timeout = \"soon\"", "(in `agent.stop_timeout`)"),
            ("stop_timeout = \"0s\"", "(in `agent.stop_timeout`)"),
            ("catch_up = \"yes\"", "(in `agent.catch_up`)"),
            ("allow_remote = 1", "(in `agent.allow_remote`)"),
            ("listn = \"127.0.0.1:9847\"", "unknown field `listn`"),
        ];
        for (line, want) in cases {
            let text = format!("{MINIMAL}[agent]\n{line}\n");
            let err = format!("{:#}", Config::parse(&text, "t").unwrap_err());
            assert!(err.contains(want), "{line}: want `{want}`, got: {err}");
        }
        let err = format!(
            "{:#}",
            Config::parse(
                &format!("{MINIMAL}[agent]\nlisten = \"0.0.0.0:9847\"\n"),
                "t"
            )
            .unwrap_err()
        );
        assert!(
            err.contains("hint: ") && err.contains("allow_remote = true"),
            "{err}"
        );
        // allow_remote lets it through.
        let text = format!("{MINIMAL}[agent]\nlisten = \"0.0.0.0:9847\"\nallow_remote = true\n");
        let c = Config::parse(&text, "t").unwrap();
        assert_eq!(c.agent.listen, "0.0.0.0:9847".parse().unwrap());
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(MINIMAL, "t").unwrap();
        assert_eq!(c.repo.url, RepoUrl::Local("/tmp/repo".into()));
        assert_eq!(c.repo.compression_level, CompressionLevel(3));
        assert_eq!(c.wal.push_ahead, 4);
        assert_eq!(c.wal.timeout, Duration::from_secs(60));
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let text = "[repo]\nurl = \"file:///tmp/repo\"\n\n[wal]\npush_ahed = 3\n";
        let err = format!("{:#}", Config::parse(text, "cfg.toml").unwrap_err());
        assert!(err.contains("push_ahed"), "{err}");
        assert!(err.contains("line 5"), "{err}");
        assert!(err.contains("cfg.toml"), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        let text = "[repo]\nurl = \"file:///tmp/repo\"\ncompression_level = 40\n";
        let err = format!("{:#}", Config::parse(text, "c").unwrap_err());
        assert!(
            err.contains("compression_level") && err.contains("line 3"),
            "{err}"
        );

        let text = "[repo]\nurl = \"file:///tmp/repo\"\n[wal]\ntimeout = \"soon\"\n";
        let err = format!("{:#}", Config::parse(text, "c").unwrap_err());
        assert!(err.contains("timeout") && err.contains("line 4"), "{err}");

        let text = "[repo]\nurl = \"ftp://x\"\n";
        let err = format!("{:#}", Config::parse(text, "c").unwrap_err());
        assert!(err.contains("ftp://x"), "{err}");
    }

    #[test]
    fn s3_url_and_secret_redaction() {
        let text = "[repo]\nurl = \"s3://bucket/some/prefix/\"\n[repo.s3]\nendpoint = \"http://127.0.0.1:9000\"\nforce_path_style = true\naccess_key_id = \"AK\"\nsecret_access_key = \"supersecret\"\n";
        let c = Config::parse(text, "c").unwrap();
        assert_eq!(
            c.repo.url,
            RepoUrl::S3 {
                bucket: "bucket".into(),
                prefix: "some/prefix".into()
            }
        );
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("supersecret"), "{dbg}");
        assert_eq!(
            c.repo.s3.unwrap().secret_access_key.unwrap().expose(),
            "supersecret"
        );
    }

    /// A typo in a secret's key, or a bad escape in a line holding a password, is reported by
    /// key, line and column; the line itself (the toml crate's snippet) would put the secret in
    /// the server log when pgward runs as archive_command.
    #[test]
    fn parse_errors_never_echo_the_offending_line() {
        let typo = "[repo]\nurl = \"s3://bucket/p\"\n[repo.s3]\naccess_key_id = \"AK\"\nsecret_acess_key = \"SEKRET\"\n";
        let err = format!("{:#}", Config::parse(typo, "c").unwrap_err());
        assert!(!err.contains("SEKRET"), "{err}");
        assert!(err.contains("secret_acess_key"), "{err}");
        assert!(err.contains("line 5"), "{err}");

        let escape = "[postgres]\nconninfo = \"host=/tmp password=SEKRET \\q\"\n[repo]\nurl = \"file:///tmp/repo\"\n";
        let err = format!("{:#}", Config::parse(escape, "c").unwrap_err());
        assert!(!err.contains("SEKRET"), "{err}");
        assert!(err.contains("line 2"), "{err}");

        let wrong_type = "[repo]\nurl = \"s3://bucket/p\"\n[repo.s3]\naccess_key_id = \"AK\"\nsecret_access_key = 7357\n";
        let err = format!("{:#}", Config::parse(wrong_type, "c").unwrap_err());
        assert!(!err.contains("7357"), "{err}");
        assert!(
            err.contains("secret_access_key") && err.contains("line 5"),
            "{err}"
        );
    }

    #[test]
    fn debug_redacts_conninfo_passwords() {
        for conninfo in [
            "host=/tmp password=SEKRET user=x",
            "host=/tmp password = 'SEK RET\\'SEKRET' user=x",
            "postgresql://alice:SEKRET@localhost:5432/db",
            "postgres://alice:SEKRET@localhost/db?password=SEKRET&sslmode=disable",
        ] {
            let text = format!(
                "[postgres]\nconninfo = {}\n[repo]\nurl = \"file:///tmp/repo\"\n",
                toml::Value::String(conninfo.to_string())
            );
            let c = Config::parse(&text, "c").unwrap();
            assert_eq!(c.postgres.conninfo.as_deref(), Some(conninfo));
            let dbg = format!("{c:?}");
            assert!(!dbg.contains("SEKRET") && !dbg.contains("RET"), "{dbg}");
            assert!(dbg.contains("<redacted>"), "{dbg}");
            assert!(dbg.contains("user") || dbg.contains("alice"), "{dbg}");
        }
    }

    #[test]
    fn dump_section_has_defaults_and_is_strict() {
        let c = Config::parse(MINIMAL, "t").unwrap();
        assert_eq!(c.dump.jobs, 1);
        assert_eq!(c.dump.lock_wait_timeout, Duration::from_secs(300));
        assert!(c.dump.role_passwords);
        let text = format!(
            "{MINIMAL}[dump]\njobs = 2\nlock_wait_timeout = \"30s\"\nrole_passwords = false\n"
        );
        let c = Config::parse(&text, "t").unwrap();
        assert_eq!(c.dump.jobs, 2);
        assert_eq!(c.dump.lock_wait_timeout, Duration::from_secs(30));
        assert!(!c.dump.role_passwords);
        let text = format!("{MINIMAL}[dump]\njob = 2\n");
        let err = format!("{:#}", Config::parse(&text, "t").unwrap_err());
        assert!(err.contains("job") && err.contains("line 4"), "{err}");
    }

    #[test]
    fn the_policy_path_is_relative_to_the_configuration_file() {
        let c = Config::parse(MINIMAL, "t").unwrap();
        assert_eq!(c.policy_path(Path::new("/etc/pgward/pgward.toml")), None);
        let text = format!("policy = \"policies/hourly.toml\"\n{MINIMAL}");
        let c = Config::parse(&text, "t").unwrap();
        assert_eq!(
            c.policy_path(Path::new("/etc/pgward/pgward.toml")),
            Some(PathBuf::from("/etc/pgward/policies/hourly.toml"))
        );
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            c.policy_path(Path::new("pgward.toml")),
            Some(cwd.join("policies/hourly.toml"))
        );
        let text = format!("policy = \"/srv/p.toml\"\n{MINIMAL}");
        let c = Config::parse(&text, "t").unwrap();
        assert_eq!(
            c.policy_path(Path::new("/etc/pgward/pgward.toml")),
            Some(PathBuf::from("/srv/p.toml"))
        );
    }

    #[test]
    fn half_credentials_are_refused() {
        let text = "[repo]\nurl = \"s3://bucket/p\"\n[repo.s3]\naccess_key_id = \"AK\"\n";
        let err = format!("{:#}", Config::parse(text, "c").unwrap_err());
        assert!(err.contains("secret_access_key"), "{err}");
    }
}
