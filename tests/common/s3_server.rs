//! An S3 server inside the test process: `s3s-fs` (objects as files in a temp directory) behind
//! `s3s`'s S3 protocol layer, on `127.0.0.1:<free port>`.
//!
//! It speaks real HTTP, so both the in-process [`S3Storage`] and a `pgward` child process can
//! use it. Requests must be signed with [`S3Server::access_key`] / [`S3Server::secret_key`]
//! (without an auth provider s3s answers every signed request with 501). It is a test double:
//! its `If-None-Match` is check-then-write, so do not race conditional writes against it.
//! Dropping the server stops accepting and closes open connections; the directory goes with it.
//!
//! [`Faults`] let a test make the running server misbehave the way real stores do: go away
//! (every request dropped unanswered, new connections closed), optionally right after serving
//! a chosen object, and come back.
#![allow(dead_code)]

use futures::future::BoxFuture;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use pgward::config::{S3Config, Secret};
use pgward::storage::s3::S3Storage;
use s3s::auth::SimpleAuth;
use s3s::service::S3Service;
use s3s::service::S3ServiceBuilder;
use s3s::{HttpError, HttpResponse};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

pub struct S3Server {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    pub faults: Arc<Faults>,
    root: tempfile::TempDir,
    task: JoinHandle<()>,
}

/// Misbehaviour switched on while the server runs; shared with every connection.
#[derive(Debug, Default)]
pub struct Faults {
    down: AtomicBool,
    /// Go down right after answering a GET whose path contains this.
    down_after_get_of: Mutex<Option<String>>,
    /// While on, the first conditional PUT (`If-None-Match`) to each path is answered 409
    /// ConditionalRequestConflict and nothing is stored.
    conflict_first_conditional_put: AtomicBool,
    conflicted: Mutex<std::collections::HashSet<String>>,
    /// Added before every answer.
    latency: Mutex<Duration>,
    /// GETs whose path contains this wait (unanswered) until it is cleared.
    held_gets: Mutex<Option<String>>,
    /// How many GETs have been held so far.
    held: std::sync::atomic::AtomicUsize,
}

impl Faults {
    /// The store goes away: requests are dropped unanswered, new connections closed at once.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::SeqCst)
    }

    /// The first conditional PUT to each path gets 409 and stores nothing (what AWS answers
    /// while another conditional write to the key is in progress).
    pub fn conflict_first_conditional_puts(&self, on: bool) {
        self.conflict_first_conditional_put
            .store(on, Ordering::SeqCst);
    }

    /// Every request waits `d` before it is served (a distant store).
    pub fn set_latency(&self, d: Duration) {
        *self.latency.lock().unwrap() = d;
    }

    /// How many PUTs were answered 409 so far.
    pub fn conflicts(&self) -> usize {
        self.conflicted.lock().unwrap().len()
    }

    /// GETs whose path contains `needle` wait until `hold_gets_of(None)` (a reader stopped
    /// midway, deterministically); other requests are served.
    pub fn hold_gets_of(&self, needle: Option<&str>) {
        *self.held_gets.lock().unwrap() = needle.map(str::to_string);
    }

    /// How many GETs have been held so far.
    pub fn gets_held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }

    fn holds(&self, path: &str) -> bool {
        self.held_gets
            .lock()
            .unwrap()
            .as_deref()
            .is_some_and(|n| path.contains(n))
    }

    /// Serves the next GET whose path contains `needle`, then goes down.
    pub fn go_down_after_get_of(&self, needle: &str) {
        *self.down_after_get_of.lock().unwrap() = Some(needle.to_string());
    }
}

/// The S3 service with [`Faults`] in front of it.
#[derive(Clone)]
struct Faulty {
    inner: S3Service,
    faults: Arc<Faults>,
}

impl hyper::service::Service<http::Request<hyper::body::Incoming>> for Faulty {
    type Response = HttpResponse;
    type Error = HttpError;
    type Future = BoxFuture<'static, Result<HttpResponse, HttpError>>;

    fn call(&self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        if self.faults.is_down() {
            // An error from the service makes hyper drop the connection without an answer.
            return Box::pin(async { Err(HttpError::new("the test S3 server is down".into())) });
        }
        if req.method() == http::Method::PUT
            && req.headers().contains_key(http::header::IF_NONE_MATCH)
            && self
                .faults
                .conflict_first_conditional_put
                .load(Ordering::SeqCst)
            && self
                .faults
                .conflicted
                .lock()
                .unwrap()
                .insert(req.uri().path().to_string())
        {
            let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>\
                        ConditionalRequestConflict</Code><Message>A conflicting conditional \
                        operation is currently in progress against this resource.</Message>\
                        </Error>";
            let answer = http::Response::builder()
                .status(409)
                .header(http::header::CONTENT_TYPE, "application/xml")
                .body(s3s::Body::from(body.to_string()))
                .expect("a valid response");
            return Box::pin(async move { Ok(answer) });
        }
        let last_before_down = req.method() == http::Method::GET && {
            let mut trigger = self.faults.down_after_get_of.lock().unwrap();
            let hit = trigger
                .as_deref()
                .is_some_and(|n| req.uri().path().contains(n));
            if hit {
                *trigger = None;
            }
            hit
        };
        let latency = *self.faults.latency.lock().unwrap();
        let held_path = (req.method() == http::Method::GET).then(|| req.uri().path().to_string());
        let answer = hyper::service::Service::call(&self.inner, req);
        let faults = self.faults.clone();
        Box::pin(async move {
            if let Some(path) = held_path
                && faults.holds(&path)
            {
                faults.held.fetch_add(1, Ordering::SeqCst);
                while faults.holds(&path) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            tokio::time::sleep(latency).await;
            let r = answer.await;
            if last_before_down {
                faults.set_down(true);
            }
            r
        })
    }
}

impl S3Server {
    /// Starts serving on a free local port. Must be called inside a tokio runtime, which then
    /// runs the server; use a multi-threaded runtime when the test also blocks.
    pub async fn start() -> S3Server {
        let root = tempfile::Builder::new()
            .prefix("pgward-s3-")
            .tempdir()
            .expect("cannot create a temp directory for the test S3 server");
        let fs = s3s_fs::FileSystem::new(root.path())
            .unwrap_or_else(|e| panic!("cannot serve {} over S3: {e:?}", root.path().display()));
        let access_key = "pgward-test-access-key".to_string();
        let secret_key = format!("pgward-test-secret-{:016x}", rand::random::<u64>());
        let faults = Arc::new(Faults::default());
        let service = {
            let mut b = S3ServiceBuilder::new(fs);
            b.set_auth(SimpleAuth::from_single(
                access_key.clone(),
                secret_key.clone(),
            ));
            Faulty {
                inner: b.build(),
                faults: faults.clone(),
            }
        };
        let accept_faults = faults.clone();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("cannot bind the test S3 server to 127.0.0.1");
        let addr = listener
            .local_addr()
            .expect("bound listener has an address");
        let task = tokio::spawn(async move {
            // Connections live in the set, so aborting this task (on drop) closes them too.
            let mut connections = JoinSet::new();
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        // Out of file descriptors or similar: back off instead of spinning.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                if accept_faults.is_down() {
                    drop(stream);
                    continue;
                }
                let service = service.clone();
                connections.spawn(async move {
                    // A client hanging up mid-request is not the server's problem.
                    let _ = ConnBuilder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                // Reap finished connections so the set does not grow with every request.
                while connections.try_join_next().is_some() {}
            }
        });
        S3Server {
            endpoint: format!("http://{addr}"),
            access_key,
            secret_key,
            faults,
            root,
            task,
        }
    }

    /// Where the objects are kept (`<root>/<bucket>/<key>`).
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The `[repo.s3]` section that reaches this server.
    pub fn s3_config(&self) -> S3Config {
        S3Config {
            endpoint: Some(self.endpoint.clone()),
            region: "us-east-1".to_string(),
            force_path_style: true,
            access_key_id: Some(self.access_key.clone()),
            secret_access_key: Some(Secret::new(self.secret_key.clone())),
        }
    }

    /// A storage for `s3://bucket/prefix` on this server, creating the bucket if needed.
    pub async fn storage(&self, bucket: &str, prefix: &str) -> S3Storage {
        let s = S3Storage::connect(
            bucket.to_string(),
            prefix.to_string(),
            Some(&self.s3_config()),
        )
        .await
        .expect("cannot configure the S3 client");
        s.create_bucket_if_missing()
            .await
            .unwrap_or_else(|e| panic!("cannot create bucket {bucket}: {e:#}"));
        s
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs `body` against a fresh S3 server and a repository under `bucket`/`tag`. The server
/// runs on the runtime's workers; the scenario blocks on subprocesses, so it runs on a
/// blocking thread (a panic in it is the test's).
pub async fn with_s3_repo(
    bucket: &str,
    tag: &'static str,
    body: fn(&super::pg::TestDir, super::pg::RepoSpec),
) {
    let server = S3Server::start().await;
    server.storage(bucket, tag).await;
    let repo = super::pg::RepoSpec::S3 {
        endpoint: server.endpoint.clone(),
        bucket: bucket.to_string(),
        prefix: tag.to_string(),
        access_key: server.access_key.clone(),
        secret_key: server.secret_key.clone(),
    };
    let result = tokio::task::spawn_blocking(move || {
        let dir = super::pg::TestDir::new(tag);
        body(&dir, repo);
    })
    .await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
    drop(server);
}
