//! `[[notify]]` in pgward.toml: where the agent's job events go.
//!
//! Each entry is exactly one target — `command`, `webhook` or `ping` — with the common keys
//! `on`, `kinds` and `name`. Everything that can be checked without touching the outside world
//! is checked while parsing (every pgward command parses the configuration): the target's
//! shape, the values of `on` and `kinds`, durations. A webhook's `secret_file` is read only by
//! the agent, when it starts or reloads its notifier ([`crate::notify::Notifier::start`]):
//! `wal-push` runs as archive_command and must never fail because a notification secret is
//! unreadable.
//!
//! `Debug` never shows a URL's path or query (a healthchecks UUID, a Slack webhook path is a
//! credential) nor a secret: see [`redact_url`].

use crate::retention::policy::JobKind;
use serde::{Deserialize, Deserializer};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Which finished jobs an entry hears about (`on = [...]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum On {
    /// A job failed.
    Failure,
    /// A job succeeded (recoveries included).
    Success,
    /// A job succeeded right after a failed run.
    Recovered,
}

/// One `[[notify]]` entry, checked.
#[derive(Clone, PartialEq)]
pub struct NotifyConfig {
    /// For logs; default: the target's kind and host (`webhook hooks.example.com`).
    pub name: Option<String>,
    /// Default `["failure", "recovered"]`. Not used by a ping (see [`Target::Ping`]).
    pub on: Vec<On>,
    /// Job kinds; empty = all.
    pub kinds: Vec<JobKind>,
    pub target: Target,
}

#[derive(Clone, PartialEq)]
pub enum Target {
    /// A program run with the event as JSON on stdin and in `PGWARD_EVENT_*` variables.
    Command {
        /// Absolute program path, then its arguments (no shell).
        argv: Vec<String>,
        timeout: Duration,
    },
    /// A JSON POST, signed in the Standard Webhooks form when `secret_file` is set.
    Webhook {
        url: String,
        secret_file: Option<PathBuf>,
        retry: RetryConfig,
    },
    /// healthchecks.io style: `<url>/start`, `<url>`, `<url>/fail`. A ping follows its
    /// protocol — every start, success and failure of its kinds — so `on` is refused for it.
    Ping { url: String, retry: RetryConfig },
}

/// Retries of an HTTP target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryConfig {
    /// Attempts after the first one.
    pub retries: u32,
    /// Per attempt.
    pub timeout: Duration,
    /// The first backoff's upper bound; doubled per attempt up to [`MAX_BACKOFF`].
    pub backoff: Duration,
}

/// No wait between two attempts is longer than this, a server's `Retry-After` included.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

pub const DEFAULT_ON: [On; 2] = [On::Failure, On::Recovered];
const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_RETRIES: u32 = 3;
const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);

impl NotifyConfig {
    /// The name used in logs: `name`, else the target's kind and host (never a URL's path).
    pub fn display_name(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        match &self.target {
            Target::Command { argv, .. } => format!("command {}", argv[0]),
            Target::Webhook { url, .. } => format!("webhook {}", redact_url(url)),
            Target::Ping { url, .. } => format!("ping {}", redact_url(url)),
        }
    }
}

/// By hand: a URL shows as scheme://host[:port] only, a secret file by its path only.
impl fmt::Debug for NotifyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotifyConfig")
            .field("name", &self.name)
            .field("on", &self.on)
            .field("kinds", &self.kinds)
            .field("target", &self.target)
            .finish()
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Command { argv, timeout } => f
                .debug_struct("Command")
                .field("argv", argv)
                .field("timeout", timeout)
                .finish(),
            Target::Webhook {
                url,
                secret_file,
                retry,
            } => f
                .debug_struct("Webhook")
                .field("url", &redact_url(url))
                .field("secret_file", secret_file)
                .field("retry", retry)
                .finish(),
            Target::Ping { url, retry } => f
                .debug_struct("Ping")
                .field("url", &redact_url(url))
                .field("retry", retry)
                .finish(),
        }
    }
}

/// `scheme://host[:port]/…`: what of a URL may be logged. The path and query of a webhook or
/// ping URL are often the credential itself (a healthchecks UUID, a Slack hook path).
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    // Userinfo (`user:password@host`) is a credential too.
    let authority = &rest[..end];
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if end < rest.len() {
        format!("{scheme}{host}/…")
    } else {
        format!("{scheme}{host}")
    }
}

/// The entry as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotify {
    name: Option<String>,
    on: Option<Vec<On>>,
    kinds: Option<Vec<JobKind>>,
    command: Option<Vec<String>>,
    webhook: Option<String>,
    ping: Option<String>,
    secret_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    timeout: Option<Duration>,
    retries: Option<u32>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    backoff: Option<Duration>,
}

fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    let dur = crate::config::parse_duration(&s).map_err(serde::de::Error::custom)?;
    if dur.is_zero() {
        return Err(serde::de::Error::custom(
            "a duration of zero is not allowed",
        ));
    }
    Ok(Some(dur))
}

impl<'de> Deserialize<'de> for NotifyConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawNotify::deserialize(d)?;
        raw.check().map_err(serde::de::Error::custom)
    }
}

/// A URL a webhook or ping may use: http(s), with a host.
fn check_url(key: &str, url: &str) -> Result<(), String> {
    let shown = redact_url(url);
    let Ok(uri) = url.parse::<hyper::Uri>() else {
        return Err(format!(
            "[[notify]] {key} = \"{shown}\" is not a valid URL\nhint: write it as \
             https://host/path"
        ));
    };
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some_and(|h| !h.is_empty()) => Ok(()),
        _ => Err(format!(
            "[[notify]] {key} = \"{shown}\" is not an http:// or https:// URL with a host\n\
             hint: write it as https://host/path"
        )),
    }
}

impl RawNotify {
    fn check(self) -> Result<NotifyConfig, String> {
        let targets = [
            self.command.is_some(),
            self.webhook.is_some(),
            self.ping.is_some(),
        ]
        .iter()
        .filter(|t| **t)
        .count();
        if targets != 1 {
            return Err(format!(
                "a [[notify]] entry needs exactly one of `command`, `webhook` or `ping` \
                 (this one has {targets})\nhint: write one [[notify]] entry per target"
            ));
        }
        let retry = RetryConfig {
            retries: self.retries.unwrap_or(DEFAULT_RETRIES),
            timeout: self.timeout.unwrap_or(DEFAULT_HTTP_TIMEOUT),
            backoff: self.backoff.unwrap_or(DEFAULT_BACKOFF),
        };
        if retry.retries > 20 {
            return Err(format!(
                "[[notify]] retries = {} is too many (at most 20)",
                retry.retries
            ));
        }
        let target = if let Some(argv) = self.command {
            let Some(program) = argv.first() else {
                return Err(
                    "[[notify]] command = [] is empty\nhint: write the program's \
                            absolute path and its arguments, e.g. command = \
                            [\"/usr/local/bin/page-oncall\", \"--team\", \"db\"]"
                        .to_string(),
                );
            };
            if !program.starts_with('/') {
                return Err(format!(
                    "[[notify]] command = [\"{program}\", ...]: the program must be an absolute \
                     path (the agent runs without a shell and with systemd's PATH)\nhint: write \
                     e.g. \"/usr/bin/{program}\""
                ));
            }
            for (key, given) in [
                ("secret_file", self.secret_file.is_some()),
                ("retries", self.retries.is_some()),
                ("backoff", self.backoff.is_some()),
            ] {
                if given {
                    return Err(format!(
                        "[[notify]] `{key}` does not apply to a command\nhint: remove it (a \
                         command gets one attempt within `timeout`)"
                    ));
                }
            }
            Target::Command {
                argv,
                timeout: self.timeout.unwrap_or(DEFAULT_COMMAND_TIMEOUT),
            }
        } else if let Some(url) = self.webhook {
            check_url("webhook", &url)?;
            Target::Webhook {
                url,
                secret_file: self.secret_file,
                retry,
            }
        } else {
            let url = self.ping.unwrap_or_default();
            check_url("ping", &url)?;
            if self.on.is_some() {
                return Err(
                    "[[notify]] `on` does not apply to a ping: it is told of every start, \
                     success and failure of its kinds (that is the healthchecks protocol)\n\
                     hint: remove `on`, and use `kinds` to choose the jobs"
                        .to_string(),
                );
            }
            if self.secret_file.is_some() {
                return Err(
                    "[[notify]] `secret_file` is for a webhook, not for a ping\n\
                            hint: remove it (the ping URL itself is the credential)"
                        .to_string(),
                );
            }
            Target::Ping { url, retry }
        };
        Ok(NotifyConfig {
            name: self.name,
            on: self.on.unwrap_or_else(|| DEFAULT_ON.to_vec()),
            kinds: self.kinds.unwrap_or_default(),
            target,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const MINIMAL: &str = "[repo]\nurl = \"file:///tmp/repo\"\n";

    fn parse(entry: &str) -> Result<Vec<NotifyConfig>, String> {
        Config::parse(&format!("{MINIMAL}[[notify]]\n{entry}\n"), "t")
            .map(|c| c.notify)
            .map_err(|e| format!("{e:#}"))
    }

    #[test]
    fn entries_get_their_defaults() {
        let c = parse("command = [\"/bin/true\"]").unwrap();
        assert_eq!(c[0].on, [On::Failure, On::Recovered]);
        assert!(c[0].kinds.is_empty());
        assert_eq!(
            c[0].target,
            Target::Command {
                argv: vec!["/bin/true".into()],
                timeout: Duration::from_secs(30)
            }
        );
        let c = parse(
            "webhook = \"https://hooks.example.com/T0/B1/xyz\"\non = [\"success\"]\n\
             kinds = [\"backup\", \"drill\"]\nretries = 5\ntimeout = \"2s\"\nbackoff = \"10ms\"\n\
             name = \"chat\"",
        )
        .unwrap();
        assert_eq!(c[0].on, [On::Success]);
        assert_eq!(c[0].kinds, [JobKind::Backup, JobKind::Drill]);
        assert_eq!(c[0].display_name(), "chat");
        let Target::Webhook { retry, .. } = &c[0].target else {
            panic!("{c:?}")
        };
        assert_eq!(
            *retry,
            RetryConfig {
                retries: 5,
                timeout: Duration::from_secs(2),
                backoff: Duration::from_millis(10)
            }
        );
        let c = parse("ping = \"https://hc-ping.com/0b5e-uuid\"").unwrap();
        assert_eq!(c[0].display_name(), "ping https://hc-ping.com/…");
        assert!(matches!(
            c[0].target,
            Target::Ping {
                retry: RetryConfig { retries: 3, .. },
                ..
            }
        ));
        // No [[notify]] at all: an empty list.
        assert!(Config::parse(MINIMAL, "t").unwrap().notify.is_empty());
    }

    #[test]
    fn refusals_name_the_key_and_the_fix() {
        let cases: &[(&str, &[&str])] = &[
            (
                "command = [\"/bin/true\"]\non = [\"failed\"]",
                &["notify", "unknown variant `failed`", "failure"],
            ),
            (
                "command = [\"/bin/true\"]\nkinds = [\"bakup\"]",
                &["notify", "unknown variant `bakup`", "backup"],
            ),
            ("command = []", &["command = [] is empty", "hint: "]),
            (
                "command = [\"notify-send\"]",
                &["must be an absolute path", "hint: ", "/usr/bin/notify-send"],
            ),
            (
                "webhook = \"ftp://example.com/x\"",
                &["webhook = \"ftp://example.com/…\"", "http:// or https://"],
            ),
            (
                "webhook = \"example.com/SEKRET\"",
                &["webhook = \"example.com/…\"", "hint: "],
            ),
            ("ping = \"https://\"", &["ping = ", "hint: "]),
            (
                "webhook = \"https://a.example/x\"\nping = \"https://b.example/y\"",
                &["exactly one of `command`, `webhook` or `ping`", "has 2"],
            ),
            ("on = [\"failure\"]", &["exactly one of", "has 0"]),
            (
                "ping = \"https://hc.example/u\"\non = [\"failure\"]",
                &["`on` does not apply to a ping", "hint: remove `on`"],
            ),
            (
                "command = [\"/bin/true\"]\nsecret_file = \"/etc/s\"",
                &["`secret_file` does not apply to a command"],
            ),
            (
                "command = [\"/bin/true\"]\ntimeout = \"soon\"",
                &["notify", "not a duration"],
            ),
            (
                "webhook = \"https://a.example/x\"\nretrys = 2",
                &["unknown field `retrys`"],
            ),
            (
                "webhook = \"https://a.example/x\"\nretries = 99",
                &["retries = 99 is too many"],
            ),
        ];
        for (entry, wants) in cases {
            let err = parse(entry).unwrap_err();
            for want in *wants {
                assert!(err.contains(want), "{entry}: want `{want}`, got: {err}");
            }
        }
    }

    /// The commented examples in deploy/pgward.toml.example, uncommented, are valid entries.
    #[test]
    fn the_shipped_examples_parse() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/pgward.toml.example");
        let text = std::fs::read_to_string(path).unwrap();
        let start = text.find("# [[notify]]").expect("a [[notify]] example");
        let block: String = text[start..]
            .lines()
            .map(|l| l.strip_prefix("# ").unwrap_or(l.trim_start_matches('#')))
            .map(|l| format!("{l}\n"))
            .collect();
        let c =
            Config::parse(&format!("{MINIMAL}{block}"), path).unwrap_or_else(|e| panic!("{e:#}"));
        let kinds: Vec<&str> = c
            .notify
            .iter()
            .map(|n| match n.target {
                Target::Command { .. } => "command",
                Target::Webhook { .. } => "webhook",
                Target::Ping { .. } => "ping",
            })
            .collect();
        assert_eq!(kinds, ["command", "webhook", "ping"]);
    }

    #[test]
    fn debug_and_names_never_show_a_url_path_or_userinfo() {
        let c = parse(
            "webhook = \"https://user:pa55@hooks.example.com:8443/services/T0/SEKRETPATH?token=SEKRETQ\"\n\
             secret_file = \"/etc/pgward/hook.secret\"",
        )
        .unwrap();
        let dbg = format!("{c:?}");
        for leak in ["SEKRETPATH", "SEKRETQ", "pa55", "services"] {
            assert!(!dbg.contains(leak), "{leak} in {dbg}");
        }
        assert!(dbg.contains("https://hooks.example.com:8443/…"), "{dbg}");
        assert_eq!(
            c[0].display_name(),
            "webhook https://hooks.example.com:8443/…"
        );
        assert_eq!(redact_url("http://127.0.0.1:9"), "http://127.0.0.1:9");
        assert_eq!(redact_url("https://h.example?x=1"), "https://h.example/…");
    }
}
