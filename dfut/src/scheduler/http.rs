//! The scheduler's web server (opt-in): the dashboard page, the JSON it
//! polls, and Prometheus metrics.
//!
//! Every request must show the server's token, as `Authorization: Bearer
//! <token>` (what a Prometheus scrape config sends) or as `?token=<token>`
//! in the URL (what the dashboard link carries); others get 401. HTTP is
//! not encrypted: serve it on a local or private address.
//!
//! Bounds: at most [`MAX_CONNECTIONS`] connections are served at once
//! (more wait in the kernel's backlog); each is closed after
//! [`CONNECTION_LIFETIME`], or after [`HEADER_PATIENCE`] without a
//! request's headers; request bodies are never read.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{Notify, Semaphore};

use super::service::Cluster;
use crate::{Error, Result};

/// Connections served at once.
const MAX_CONNECTIONS: usize = 64;
/// How long one connection is kept (a polling page reconnects).
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// How long a connection may take to send a request's headers (a
/// connection that sends none is closed: it cannot hold a place).
const HEADER_PATIENCE: Duration = Duration::from_secs(5);

/// A running web server.
#[derive(Debug)]
pub(crate) struct Server {
    addr: SocketAddr,
    token: String,
    stop: Arc<Notify>,
}

impl Server {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// The dashboard's URL with its token.
    pub fn url(&self) -> String {
        format!("http://{}/?token={}", self.addr, self.token)
    }

    /// Stops accepting connections.
    pub fn shutdown(&self) {
        self.stop.notify_one();
    }
}

/// A fresh random token: 128 bits, in hex.
pub(crate) fn new_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Shortest token accepted.
const MIN_TOKEN: usize = 16;

/// Refuses a token too short to guess hard, or with characters a URL
/// would have to escape.
fn check_token(token: &str) -> Result<()> {
    let url_safe = |c: char| c.is_ascii_alphanumeric() || "-._~".contains(c);
    if token.len() < MIN_TOKEN || !token.chars().all(url_safe) {
        return Err(Error::Config(
            format!(
                "the dashboard token must be at least {MIN_TOKEN} characters of \
                 A-Z, a-z, 0-9, `-`, `.`, `_`, `~` (leave it unset for a random one)"
            )
            .into(),
        ));
    }
    Ok(())
}

/// Starts serving on `addr` (on the current runtime).
pub(crate) fn serve(addr: SocketAddr, token: String, cluster: Cluster) -> Result<Server> {
    check_token(&token)?;
    let bind = |e: std::io::Error| Error::Io {
        context: format!("cannot serve the dashboard on {addr}"),
        source: crate::Cause::new(e),
    };
    let listener = std::net::TcpListener::bind(addr).map_err(bind)?;
    listener.set_nonblocking(true).map_err(bind)?;
    let listener = tokio::net::TcpListener::from_std(listener).map_err(bind)?;
    let local = listener.local_addr().map_err(bind)?;
    let stop = Arc::new(Notify::new());
    let site = Arc::new(Site {
        token: token.clone(),
        cluster,
        extras: tokio::sync::Mutex::new(None),
    });
    let stopped = stop.clone();
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = stopped.notified() => return,
            };
            let Ok((stream, _)) = accepted else {
                // Out of file descriptors, say: try again in a moment
                // rather than spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let site = site.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let site = site.clone();
                    async move { Ok::<_, Infallible>(site.answer(req).await) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_PATIENCE)
                    .serve_connection(TokioIo::new(stream), service);
                let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
                drop(permit);
            });
        }
    });
    Ok(Server {
        addr: local,
        token,
        stop,
    })
}

/// What the server serves from.
pub(super) struct Site {
    token: String,
    pub cluster: Cluster,
    /// The dashboard's costlier parts (largest objects, recent failures,
    /// asked of every worker), kept a moment so many open pages ask once.
    pub extras: tokio::sync::Mutex<Option<(std::time::Instant, serde_json::Value)>>,
}

impl Site {
    async fn answer(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET is served\n");
        }
        if !self.allowed(&req) {
            return text(
                StatusCode::UNAUTHORIZED,
                "a token is needed: `Authorization: Bearer <token>` or `?token=<token>` \
                 (the scheduler printed its dashboard URL with the token when it started)\n",
            );
        }
        match req.uri().path() {
            "/" | "/index.html" => respond(
                StatusCode::OK,
                "text/html; charset=utf-8",
                super::dashboard::PAGE,
            ),
            "/api/state" => {
                let state = super::dashboard::state(self).await;
                respond(StatusCode::OK, "application/json", state.to_string())
            }
            "/metrics" => {
                let body = super::metrics::scrape(&self.cluster).await;
                respond(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    body,
                )
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "no such page: try /, /metrics or /api/state\n",
            ),
        }
    }

    /// Whether `req` shows the token, in a header or in the query.
    fn allowed(&self, req: &Request<Incoming>) -> bool {
        let bearer = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let query = req
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("token=")));
        [bearer, query]
            .into_iter()
            .flatten()
            .any(|shown| same(shown.trim().as_bytes(), self.token.as_bytes()))
    }
}

/// Compares in time independent of where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    respond(status, "text/plain; charset=utf-8", body)
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    headers.insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn short_or_url_unsafe_tokens_are_refused() {
        assert!(super::check_token(&super::new_token()).is_ok());
        assert!(super::check_token("").is_err());
        assert!(super::check_token("short").is_err());
        assert!(super::check_token("a-long-enough-token-but with a space").is_err());
        assert!(super::check_token("0123456789abcdef").is_ok());
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"ab", b"abc"));
        assert!(!same(b"", b"a"));
    }
}
