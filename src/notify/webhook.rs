//! Webhook and ping delivery over HTTP(S): Standard Webhooks signatures, and retries.
//!
//! Signing follows the Standard Webhooks specification
//! (<https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md>):
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed with the
//! base64-decoded part of a `whsec_…` secret. A secret without the prefix is decoded as
//! base64 too, as the reference libraries do, so the same string configured on both ends gives
//! the same key; a secret that is not base64 is refused when the agent loads it.
//!
//! Retries ([`next_step`], pure): network errors, timeouts, 408, 429 and 5xx are retried with
//! exponential backoff and full jitter (a wait drawn uniformly from 0 up to `backoff · 2^n`,
//! capped at [`MAX_BACKOFF`]); a `Retry-After: <seconds>` is honoured up to the same cap. Any
//! other status is final. Each attempt is signed afresh (new timestamp, same id).
//!
//! Nothing here logs a URL's path or query, a secret or a signature: errors are scrubbed of
//! the URL ([`scrub`]) before they leave this module.

use super::config::{MAX_BACKOFF, RetryConfig, redact_url};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The key a webhook's signatures are made with. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey(Vec<u8>);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

impl SigningKey {
    /// A secret as Standard Webhooks writes it, `whsec_<base64>` (surrounding whitespace, such
    /// as a file's final newline, ignored); without the prefix the text is decoded as base64 as
    /// well. The error never quotes the secret.
    pub fn parse(text: &str) -> Result<SigningKey, String> {
        let text = text.trim();
        let b64 = text.strip_prefix("whsec_").unwrap_or(text);
        match B64.decode(b64) {
            Ok(key) if !key.is_empty() => Ok(SigningKey(key)),
            Ok(_) => Err("the secret is empty".to_string()),
            Err(_) => Err(
                "the secret is not `whsec_` followed by base64 (its content is not shown)"
                    .to_string(),
            ),
        }
    }

    /// Reads and parses a `secret_file`.
    pub fn load(path: &Path) -> anyhow::Result<SigningKey> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!(
                "[[notify]] secret_file {}: cannot read it: {e}\nhint: make it readable by the \
                 agent's user (chown postgres, chmod 600) or fix the path",
                path.display()
            )
        })?;
        SigningKey::parse(&text).map_err(|why| {
            anyhow::anyhow!(
                "[[notify]] secret_file {}: {why}\nhint: write the secret your receiver gave \
                 you, e.g. whsec_ followed by 24 to 64 random bytes in base64 (openssl rand \
                 -base64 32)",
                path.display()
            )
        })
    }

    /// The `webhook-signature` header's value for one attempt.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &self.0);
        let mut ctx = aws_lc_rs::hmac::Context::with_key(&key);
        ctx.update(id.as_bytes());
        ctx.update(b".");
        ctx.update(timestamp.to_string().as_bytes());
        ctx.update(b".");
        ctx.update(body);
        format!("v1,{}", B64.encode(ctx.sign().as_ref()))
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The server answered.
    Status {
        code: u16,
        /// `Retry-After` in seconds, when the server sent one in that form.
        retry_after: Option<Duration>,
    },
    /// No answer: connection refused, reset, TLS, DNS (scrubbed of the URL).
    Network(String),
    /// No answer within the per-attempt timeout.
    TimedOut(Duration),
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attempt::Status { code, .. } => {
                let reason = hyper::StatusCode::from_u16(*code)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("");
                write!(f, "HTTP {code} {reason}")?;
                // The receiver's answers that an operator fixes on this side.
                match code {
                    401 | 403 => write!(
                        f,
                        " (hint: the receiver refuses the signature or the URL's token: check \
                         secret_file and the URL)"
                    ),
                    404 | 410 => write!(f, " (hint: the URL names no hook: check it)"),
                    _ => Ok(()),
                }
            }
            Attempt::Network(e) => write!(f, "{e}"),
            Attempt::TimedOut(d) => {
                write!(f, "no answer within {}", humantime::format_duration(*d))
            }
        }
    }
}

/// What to do after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Delivered,
    /// Try again after this wait.
    Retry(Duration),
    /// The last failure is final: not retryable, or no attempts left.
    GiveUp(GiveUp),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    /// A status a retry cannot change (400, 401, 404, a redirect…).
    NotRetryable,
    /// Retryable, but `retries` are used up.
    Exhausted,
}

/// Whether an attempt's outcome is worth another try.
pub fn retryable(a: &Attempt) -> bool {
    match a {
        Attempt::Status { code, .. } => matches!(code, 408 | 429 | 500..=599),
        Attempt::Network(_) | Attempt::TimedOut(_) => true,
    }
}

/// The full-jitter backoff before retry number `n` (0 = the first retry): uniform in
/// `[0, min(MAX_BACKOFF, base · 2^n))`, `jitter` being the uniform draw in `[0, 1)`.
pub fn backoff(n: u32, base: Duration, jitter: f64) -> Duration {
    let ceiling = base
        .checked_mul(1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX))
        .unwrap_or(MAX_BACKOFF)
        .min(MAX_BACKOFF);
    ceiling.mul_f64(jitter.clamp(0.0, 1.0))
}

/// After attempt number `done` (1 = the first) ended with `a`: deliver, wait and retry, or
/// give up. `jitter` is the uniform draw in `[0, 1)` for this wait.
pub fn next_step(a: &Attempt, done: u32, retry: &RetryConfig, jitter: f64) -> Step {
    if let Attempt::Status {
        code: 200..=299, ..
    } = a
    {
        return Step::Delivered;
    }
    if !retryable(a) {
        return Step::GiveUp(GiveUp::NotRetryable);
    }
    if done > retry.retries {
        return Step::GiveUp(GiveUp::Exhausted);
    }
    let wait = match a {
        Attempt::Status {
            retry_after: Some(after),
            ..
        } => (*after).min(MAX_BACKOFF),
        _ => backoff(done - 1, retry.backoff, jitter),
    };
    Step::Retry(wait)
}

/// An error's text with every occurrence of the URL, and of its path, replaced by the
/// loggable form: a library error may quote the URI it was given.
pub fn scrub(text: &str, url: &str) -> String {
    let shown = redact_url(url);
    let mut out = text.replace(url, &shown);
    if let Some((_, rest)) = url.split_once("://")
        && let Some(i) = rest.find(['/', '?'])
        && rest.len() - i > 1
    {
        out = out.replace(&rest[i..], "/…");
    }
    out
}

pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// One client for every target: HTTP/1.1, http or https, the system's root certificates
/// (`rustls-native-certs`: /etc/ssl/certs on Debian, what curl trusts). Without any (no
/// ca-certificates installed) it still serves http:// and https fails with a certificate
/// error naming the cause.
pub fn client() -> HttpClient {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = match hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(provider.clone())
    {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(
                "no system root certificates ({e}); https notifications will fail\nhint: install \
                 the ca-certificates package"
            );
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("the provider supports the default TLS versions")
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
        }
    };
    let https = builder.https_or_http().enable_http1().build();
    Client::builder(hyper_util::rt::TokioExecutor::new()).build(https)
}

/// One POST request.
pub struct Post<'a> {
    pub url: &'a str,
    pub content_type: &'static str,
    pub body: Bytes,
    /// Extra headers for this attempt (a webhook's id, timestamp and signature).
    pub headers: Vec<(&'static str, String)>,
}

/// One attempt, under `timeout`.
pub async fn attempt(client: &HttpClient, post: &Post<'_>, timeout: Duration) -> Attempt {
    let mut req = hyper::Request::post(post.url)
        .header(hyper::header::CONTENT_TYPE, post.content_type)
        .header(
            hyper::header::USER_AGENT,
            concat!("pgward/", env!("CARGO_PKG_VERSION")),
        );
    for (name, value) in &post.headers {
        req = req.header(*name, value);
    }
    let req = match req.body(Full::new(post.body.clone())) {
        Ok(r) => r,
        Err(e) => return Attempt::Network(scrub(&format!("bad request: {e}"), post.url)),
    };
    let exchange = async {
        let resp = client.request(req).await?;
        let code = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(hyper::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        // Read the (small) answer so the connection can be reused; its content is not used.
        let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
        Ok::<_, hyper_util::client::legacy::Error>(Attempt::Status { code, retry_after })
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => Attempt::Network(scrub(&error_chain(&e), post.url)),
        Err(_) => Attempt::TimedOut(timeout),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

/// Sends with retries; `headers` makes each attempt's extra headers (fresh timestamp and
/// signature). `Ok(attempts)` when delivered, else the final cause (already scrubbed).
pub async fn send(
    client: &HttpClient,
    mut post: Post<'_>,
    retry: &RetryConfig,
    headers: &(dyn Fn() -> Vec<(&'static str, String)> + Send + Sync),
) -> Result<u32, String> {
    let mut done = 0;
    loop {
        post.headers = headers();
        let a = attempt(client, &post, retry.timeout).await;
        done += 1;
        match next_step(&a, done, retry, rand::random::<f64>()) {
            Step::Delivered => return Ok(done),
            Step::Retry(wait) => {
                tracing::debug!(
                    attempt = done,
                    wait_ms = wait.as_millis() as u64,
                    "{a}; retrying"
                );
                tokio::time::sleep(wait).await;
            }
            Step::GiveUp(GiveUp::NotRetryable) => {
                return Err(format!(
                    "{a} (not retried: a retry would get the same answer)"
                ));
            }
            Step::GiveUp(GiveUp::Exhausted) => {
                return Err(format!("{a} after {done} attempts"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector published with the Standard Webhooks reference libraries (their
    /// `sign` tests): getting the delimiter, the base64 alphabet or the key decoding wrong
    /// would make every receiver's library refuse ours.
    #[test]
    fn the_standard_webhooks_test_vector() {
        let key = SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            key.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        // Without the prefix, the same base64 gives the same key (the reference libraries'
        // rule), and a file's newline does not count.
        assert_eq!(
            SigningKey::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").unwrap(),
            key
        );
        assert!(!format!("{key:?}").contains("MfKQ"));
        for bad in ["whsec_", "", "not base64!", "whsec_***"] {
            let err = SigningKey::parse(bad).unwrap_err();
            assert!(
                !err.contains("***") && !err.contains("not base64!"),
                "{err}"
            );
        }
    }

    #[test]
    fn which_outcomes_are_retried() {
        let status = |code| Attempt::Status {
            code,
            retry_after: None,
        };
        let cases = [
            (status(200), None, "2xx is delivered"),
            (status(204), None, "2xx is delivered"),
            (status(408), Some(true), "request timeout"),
            (status(429), Some(true), "too many requests"),
            (status(500), Some(true), "5xx"),
            (status(503), Some(true), "5xx"),
            (status(599), Some(true), "5xx"),
            (
                status(400),
                Some(false),
                "bad request: the same body fails again",
            ),
            (status(401), Some(false), "a wrong credential stays wrong"),
            (status(404), Some(false), "not found"),
            (status(410), Some(false), "gone"),
            (status(301), Some(false), "redirects are not followed"),
            (
                Attempt::Network("connection refused".into()),
                Some(true),
                "network",
            ),
            (
                Attempt::TimedOut(Duration::from_secs(1)),
                Some(true),
                "timeout",
            ),
        ];
        let retry = RetryConfig {
            retries: 3,
            timeout: Duration::from_secs(1),
            backoff: Duration::from_millis(100),
        };
        for (a, want, why) in cases {
            let step = next_step(&a, 1, &retry, 0.5);
            match want {
                None => assert_eq!(step, Step::Delivered, "{why}"),
                Some(true) => assert!(matches!(step, Step::Retry(_)), "{why}: {step:?}"),
                Some(false) => {
                    assert_eq!(step, Step::GiveUp(GiveUp::NotRetryable), "{why}")
                }
            }
        }
        // retries = 3: attempts 1..=3 are followed by a retry, the 4th is the last.
        let a = status(503);
        for done in 1..=3 {
            assert!(matches!(next_step(&a, done, &retry, 0.5), Step::Retry(_)));
        }
        assert_eq!(
            next_step(&a, 4, &retry, 0.5),
            Step::GiveUp(GiveUp::Exhausted)
        );
        // Retry-After seconds are honoured, up to the cap.
        let after = |s| Attempt::Status {
            code: 429,
            retry_after: Some(Duration::from_secs(s)),
        };
        assert_eq!(
            next_step(&after(7), 1, &retry, 0.0),
            Step::Retry(Duration::from_secs(7))
        );
        assert_eq!(
            next_step(&after(3600), 1, &retry, 0.0),
            Step::Retry(MAX_BACKOFF)
        );
    }

    #[test]
    fn backoff_is_full_jitter_under_a_doubling_ceiling() {
        let base = Duration::from_millis(100);
        // (retry number, jitter draw, expected wait)
        let cases = [
            (0, 0.0, Duration::ZERO),
            (0, 0.5, Duration::from_millis(50)),
            (0, 0.999, Duration::from_micros(99_900)),
            (1, 0.5, Duration::from_millis(100)),
            (2, 0.5, Duration::from_millis(200)),
            (3, 1.0, Duration::from_millis(800)),
            // The ceiling stops at MAX_BACKOFF however many retries came before.
            (12, 1.0, MAX_BACKOFF),
            (40, 1.0, MAX_BACKOFF),
            (40, 0.25, MAX_BACKOFF / 4),
        ];
        for (n, jitter, want) in cases {
            assert_eq!(backoff(n, base, jitter), want, "n={n} jitter={jitter}");
        }
        // Random draws stay within [0, ceiling).
        for n in 0..8 {
            let ceiling = (base * (1 << n)).min(MAX_BACKOFF);
            for _ in 0..100 {
                assert!(backoff(n, base, rand::random::<f64>()) < ceiling);
            }
        }
    }

    #[test]
    fn scrub_removes_the_url_path_from_error_text() {
        let url = "https://hc-ping.com/0b5e6c0a-uuid-SEKRET";
        let text = format!("error sending request for url ({url}): connection refused");
        let s = scrub(&text, url);
        assert!(
            !s.contains("SEKRET") && s.contains("https://hc-ping.com/…"),
            "{s}"
        );
        let s = scrub("uri /0b5e6c0a-uuid-SEKRET/fail refused", url);
        assert!(!s.contains("SEKRET"), "{s}");
    }
}
