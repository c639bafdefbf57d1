//! The Patroni-compatible HTTP side on `listen.http`: `GET`, `HEAD` or `OPTIONS` on an
//! [`Endpoint`] path answers 200 or 503 with a JSON body, so the stock HAProxy template
//! (`option httpchk OPTIONS /primary`, `http-check expect status 200`) works without Patroni.
//!
//! Every answer comes from the cached [`Status`]; hyper does the parsing (malformed requests
//! get its 400), and each connection is bounded by a header-read timeout and a lifetime.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::endpoint::{Endpoint, EndpointError};
use crate::status::{DbState, Snapshot, Status};
use crate::units::LagLimit;

/// A client must send its request headers within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A keep-alive connection is closed after this, whatever it does.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// The methods every endpoint takes.
const ALLOWED: &str = "GET, HEAD, OPTIONS";

/// Serves HTTP health endpoints from the shared status.
#[derive(Debug, Clone)]
pub struct Http {
    /// The cache every reply reads.
    pub status: Arc<Status>,
    /// The config's `max_lag`, for `/replica` and `/read-only` without `?lag=`.
    pub max_lag: Option<LagLimit>,
}

impl Http {
    /// Serves one connection (HTTP/1.1, keep-alive) until the client closes or a bound hits.
    pub async fn handle(self, stream: TcpStream) {
        let io = TokioIo::new(stream);
        let service = service_fn(move |req: Request<Incoming>| {
            let response = self.respond(&req);
            async move { Ok::<_, Infallible>(response) }
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .serve_connection(io, service);
        if let Ok(Err(e)) = tokio::time::timeout(CONNECTION_LIFETIME, conn).await {
            tracing::debug!("http connection: {e}");
        }
    }

    fn respond(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let reply = decide(
            req.method(),
            req.uri().path(),
            req.uri().query(),
            &self.status.snapshot(),
            self.max_lag,
        );
        let body = if req.method() == Method::HEAD {
            Bytes::new()
        } else {
            Bytes::from(reply.body)
        };
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = reply.status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if reply.status == StatusCode::METHOD_NOT_ALLOWED {
            headers.insert(ALLOW, HeaderValue::from_static(ALLOWED));
        }
        response
    }
}

/// What to answer: the status code and the JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// 200, 503, or 400/404/405 for a bad request.
    pub status: StatusCode,
    /// `{"role", "state", "admin", "lag", "lag_s", "reason"}`.
    pub body: String,
}

/// The answer to `method path?query` given `snap`.
pub fn decide(
    method: &Method,
    path: &str,
    query: Option<&str>,
    snap: &Snapshot,
    max_lag: Option<LagLimit>,
) -> Reply {
    if !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Reply {
            status: StatusCode::METHOD_NOT_ALLOWED,
            body: body(
                snap,
                Some(format!("method {method} not allowed; use {ALLOWED}")),
            ),
        };
    }
    let (status, reason) = match Endpoint::parse(path, query) {
        Err(e @ EndpointError::Unknown(_)) => (StatusCode::NOT_FOUND, Some(e.to_string())),
        Err(e @ EndpointError::BadLag(_)) => (StatusCode::BAD_REQUEST, Some(e.to_string())),
        Ok(endpoint) => match endpoint.answer(snap, max_lag) {
            Ok(()) => (StatusCode::OK, None),
            Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, Some(reason)),
        },
    };
    Reply {
        status,
        body: body(snap, reason),
    }
}

/// The JSON body: the node's state as the agent sees it, and why the answer is no.
fn body(snap: &Snapshot, reason: Option<String>) -> String {
    let lag = snap.lag();
    serde_json::json!({
        "role": snap.role().map_or("unknown", |r| r.as_str()),
        "state": match snap.db { DbState::Up { .. } => "up", DbState::Down { .. } => "down" },
        "admin": snap.admin.as_str(),
        "lag": lag.bytes,
        "lag_s": lag.time.map(|t| t.as_secs_f64()),
        "reason": reason,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{AdminState, Lag, Role};

    fn snap(db: DbState, admin: AdminState) -> Snapshot {
        Snapshot { db, admin }
    }

    fn replica() -> DbState {
        DbState::Up {
            role: Role::Replica,
            lag: Lag {
                bytes: Some(100),
                time: Some(std::time::Duration::from_millis(500)),
            },
        }
    }

    fn json(reply: &Reply) -> serde_json::Value {
        serde_json::from_str(&reply.body).unwrap()
    }

    #[test]
    fn replica_answers_with_json() {
        let s = snap(replica(), AdminState::Ready);
        let r = decide(&Method::GET, "/replica", None, &s, None);
        assert_eq!(r.status, StatusCode::OK);
        let j = json(&r);
        assert_eq!(j["role"], "replica");
        assert_eq!(j["state"], "up");
        assert_eq!(j["admin"], "ready");
        assert_eq!(j["lag"], 100);
        assert_eq!(j["lag_s"], 0.5);
        assert!(j["reason"].is_null());
        let r = decide(&Method::OPTIONS, "/primary", None, &s, None);
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(json(&r)["reason"], "node is a replica");
    }

    #[test]
    fn drain_and_maint_fail_role_endpoints_only() {
        for admin in [AdminState::Drain, AdminState::Maint] {
            let s = snap(replica(), admin);
            for path in ["/replica", "/read-only"] {
                let r = decide(&Method::GET, path, None, &s, None);
                assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{admin} {path}");
            }
            assert_eq!(
                decide(&Method::GET, "/health", None, &s, None).status,
                StatusCode::OK
            );
            assert_eq!(
                decide(&Method::GET, "/liveness", None, &s, None).status,
                StatusCode::OK
            );
        }
        let drained = snap(replica(), AdminState::Drain);
        assert_eq!(
            decide(&Method::GET, "/readiness", None, &drained, None).status,
            StatusCode::OK
        );
        let maint = snap(replica(), AdminState::Maint);
        assert_eq!(
            decide(&Method::GET, "/readiness", None, &maint, None).status,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn down_database_gives_503_with_reason() {
        let s = snap(
            DbState::Down {
                reason: "no answer from 127.0.0.1:5432 within 500ms".into(),
            },
            AdminState::Ready,
        );
        let r = decide(&Method::GET, "/health", None, &s, None);
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        let j = json(&r);
        assert_eq!(j["state"], "down");
        assert_eq!(j["role"], "unknown");
        assert!(j["lag"].is_null());
        assert_eq!(j["reason"], "no answer from 127.0.0.1:5432 within 500ms");
        assert_eq!(
            decide(&Method::GET, "/liveness", None, &s, None).status,
            StatusCode::OK
        );
    }

    #[test]
    fn bad_requests() {
        let s = snap(replica(), AdminState::Ready);
        assert_eq!(
            decide(&Method::GET, "/nope", None, &s, None).status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            decide(&Method::GET, "/replica", Some("lag=much"), &s, None).status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            decide(&Method::POST, "/replica", None, &s, None).status,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[test]
    fn lag_query_is_applied() {
        let s = snap(replica(), AdminState::Ready);
        let code = |q| decide(&Method::GET, "/replica", Some(q), &s, None).status;
        assert_eq!(code("lag=100"), StatusCode::OK);
        assert_eq!(code("lag=99"), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(code("lag=1kB"), StatusCode::OK);
        assert_eq!(code("lag=1s"), StatusCode::OK);
        assert_eq!(code("lag=100ms"), StatusCode::SERVICE_UNAVAILABLE);
    }
}
