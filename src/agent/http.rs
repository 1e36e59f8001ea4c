//! The agent's HTTP endpoints on `[agent] listen`: `/` (the recovery report, as `pgward report
//! --html` writes it, rendered after every refresh), `/metrics` (Prometheus, OpenMetrics text),
//! `/healthz` (200 while the agent runs, whatever the repository says) and `/readyz` (200 only
//! when the repository answered at the last refresh and no job is failing or overdue; else 503
//! with the reasons as JSON). HTTP/1 only, one task per connection, no TLS: it listens on
//! loopback unless `[agent] allow_remote` says otherwise.

use crate::agent::metrics::Metrics;
use anyhow::{Context as _, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What `/readyz` judges, kept up to date by the agent loop.
#[derive(Debug, Default)]
pub struct Readiness {
    /// Why the agent is not ready (empty = ready).
    pub reasons: Vec<String>,
}

#[derive(Clone)]
pub struct Endpoints {
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Mutex<Readiness>>,
    /// The recovery report (`pgward report --html`'s page), rendered at each refresh; `None`
    /// until the first one.
    pub page: Arc<Mutex<Option<Arc<String>>>>,
}

/// Binds `addr` (so a taken port fails the agent's start, not a later request).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr}\nhint: another agent runs, or set [agent] listen")
    })
}

/// Serves until `stop` fires.
pub async fn serve(listener: TcpListener, endpoints: Endpoints, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else { continue };
        let e = endpoints.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let e = e.clone();
                async move { Ok::<_, std::convert::Infallible>(respond(&e, &req)) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}

fn respond(e: &Endpoints, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, kind: &str, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", kind)
            .body(Full::new(Bytes::from(body)))
            .expect("a valid response")
    };
    if req.method() != Method::GET {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            e.metrics.encode(),
        ),
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => {
            let reasons = e
                .readiness
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .reasons
                .clone();
            let ready = reasons.is_empty();
            let body = serde_json::json!({ "ready": ready, "reasons": reasons }).to_string() + "\n";
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            reply(status, "application/json", body)
        }
        "/" => {
            let page = e.page.lock().unwrap_or_else(|p| p.into_inner()).clone();
            match page {
                Some(html) => reply(StatusCode::OK, "text/html; charset=utf-8", html.to_string()),
                None => reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "the recovery report is not rendered yet; try again in a minute\n".into(),
                ),
            }
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}
