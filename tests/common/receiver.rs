//! A loopback HTTP receiver for notification tests: records every request and answers what
//! the test scripts (status and headers by request number).
//!
//! Listens on 127.0.0.1:0, HTTP/1.1, one task per connection; stops when dropped.

#![allow(dead_code)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Lower-case names.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
}

/// The answer to request number `n` (0 = the first): status and extra headers.
pub type Script = dyn Fn(usize) -> (u16, Vec<(&'static str, String)>) + Send + Sync;

pub struct Receiver {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    /// Answers 200 to everything.
    pub async fn ok() -> Receiver {
        Receiver::start(Arc::new(|_| (200, Vec::new()))).await
    }

    /// Answers these statuses in turn, then 200.
    pub async fn statuses(list: &[u16]) -> Receiver {
        let list = list.to_vec();
        Receiver::start(Arc::new(move |n| {
            (list.get(n).copied().unwrap_or(200), Vec::new())
        }))
        .await
    }

    pub async fn start(script: Arc<Script>) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Received>>> = Arc::default();
        let seen2 = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let seen = seen2.clone();
                let script = script.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let seen = seen.clone();
                        let script = script.clone();
                        async move {
                            let method = req.method().to_string();
                            let path = req
                                .uri()
                                .path_and_query()
                                .map(|p| p.to_string())
                                .unwrap_or_default();
                            let headers = req
                                .headers()
                                .iter()
                                .map(|(k, v)| {
                                    (
                                        k.as_str().to_ascii_lowercase(),
                                        v.to_str().unwrap_or("").to_string(),
                                    )
                                })
                                .collect();
                            let body = req.into_body().collect().await?.to_bytes().to_vec();
                            let n = {
                                let mut seen = seen.lock().unwrap();
                                seen.push(Received {
                                    method,
                                    path,
                                    headers,
                                    body,
                                    at: Instant::now(),
                                });
                                seen.len() - 1
                            };
                            let (status, extra) = script(n);
                            let mut resp = hyper::Response::builder().status(status);
                            for (k, v) in extra {
                                resp = resp.header(k, v);
                            }
                            Ok::<_, hyper::Error>(resp.body(Full::new(Bytes::new())).unwrap())
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver { addr, seen, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn requests(&self) -> Vec<Received> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until `n` requests arrived (or `within` passed) and returns what arrived.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        while self.requests().len() < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.requests()
    }
}

/// Verifies a Standard Webhooks signature independently of pgward's signer.
pub fn verify_signature(secret: &str, id: &str, ts: &str, body: &[u8], header: &str) -> bool {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key);
    let mut signed = format!("{id}.{ts}.").into_bytes();
    signed.extend_from_slice(body);
    let want = STANDARD.encode(aws_lc_rs::hmac::sign(&key, &signed).as_ref());
    header
        .split(' ')
        .any(|s| s.strip_prefix("v1,") == Some(want.as_str()))
}
