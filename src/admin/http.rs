//! The HTTP side of the operator interfaces (hyper, HTTP/1.1): the admin API on
//! `admin bind` and the stats page of a `listen` or `frontend` with `stats enable`. Both are
//! bound at startup, before privileges are dropped, and served by their own accept loops
//! with a cap on connections and on header and body size and time, so a flood of requests
//! cannot hold memory or starve the data path (which never waits on anything here). Idle or
//! slow clients cannot starve `/healthz` either: `http_conn` holds the accept loop, the
//! connection cap and its eviction of idle connections.
//!
//! Admin API routes (`docs/admin-api.md`):
//! `GET /metrics`, `GET /healthz`, `GET /api/v1/backends`, `GET /api/v1/backends/{backend}`,
//! `PUT /api/v1/backends/{backend}/servers/{server}/state` `{"state":"ready|drain|maint"}`,
//! `PUT /api/v1/backends/{backend}/servers/{server}/weight` `{"weight":N}`,
//! `POST /api/v1/reload`. Mutating calls need `Authorization: Bearer TOKEN` when a token file
//! is configured. Stats listeners serve `/metrics`, the HTML page at `stats uri` and its CSV
//! at `stats uri;csv`, behind their access rules (`stats_auth`), and take the page's POSTed
//! server actions where `stats admin` allows them.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::ops::{self, LookupError};
use super::{Env, api, http_conn, metrics, page, stats, stats_auth};
use crate::config::{AdminBind, Loc, StatsListener};
use crate::control::ReloadError;
use crate::table::AdminState;

pub use super::http_conn::MAX_CONNECTIONS;
/// Largest request body accepted (the API's bodies are a few bytes).
const MAX_BODY: usize = 64 * 1024;
/// Time a client has to send a request's body.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Listen backlog of the HTTP sockets.
const BACKLOG: i32 = 1024;
/// How long a reload through the API may take before the caller is told it is still running.
const RELOAD_WAIT: Duration = Duration::from_secs(30);
/// The highest weight accepted (as HAProxy's runtime API).
const MAX_WEIGHT: u32 = 256;

/// Why an HTTP listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Binding the address failed.
    #[error("{loc}: cannot bind {what} {addr}: {source}")]
    Bind {
        /// Where the address is configured.
        loc: Loc,
        /// `admin` or `stats`.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The system's error.
        source: io::Error,
    },
    /// The token file could not be read or is empty.
    #[error("{loc}: admin bind token-file {}: {why}", path.display())]
    Token {
        /// Where `admin bind` is.
        loc: Loc,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// What one listener serves.
#[derive(Debug, Clone)]
enum Site {
    /// The admin API.
    Admin {
        /// The bearer token mutating calls must present.
        token: Option<String>,
    },
    /// A stats listener.
    Stats(Arc<StatsListener>),
}

/// One bound socket, not yet serving.
struct Bound {
    listener: std::net::TcpListener,
    addr: SocketAddr,
    site: Site,
}

/// The HTTP listeners of a configuration, bound and ready to serve.
pub struct HttpListeners {
    bound: Vec<Bound>,
}

fn bind_socket(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

fn read_token(admin: &AdminBind) -> Result<Option<String>, HttpError> {
    let Some(path) = &admin.token_file else {
        return Ok(None);
    };
    let err = |why: String| HttpError::Token {
        loc: admin.loc.clone(),
        path: path.clone(),
        why,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(err("the file is empty".into()));
    }
    if token.contains(char::is_whitespace) {
        return Err(err("the token must be one word".into()));
    }
    Ok(Some(token.to_owned()))
}

/// Binds the admin API (if configured) and every stats listener; the first failure names its
/// configuration line.
pub fn bind(
    admin: Option<&AdminBind>,
    stats: &[StatsListener],
) -> Result<HttpListeners, HttpError> {
    let mut bound = Vec::new();
    if let Some(a) = admin {
        let token = read_token(a)?;
        let listener = bind_socket(a.addr).map_err(|source| HttpError::Bind {
            loc: a.loc.clone(),
            what: "admin",
            addr: a.addr,
            source,
        })?;
        bound.push(Bound {
            listener,
            addr: a.addr,
            site: Site::Admin { token },
        });
    }
    for s in stats {
        let site = Site::Stats(Arc::new(s.clone()));
        for b in &s.binds {
            let listener = bind_socket(b.addr).map_err(|source| HttpError::Bind {
                loc: b.loc.clone(),
                what: "stats",
                addr: b.addr,
                source,
            })?;
            bound.push(Bound {
                listener,
                addr: b.addr,
                site: site.clone(),
            });
        }
    }
    Ok(HttpListeners { bound })
}

/// The serving listeners; dropping this stops them.
pub struct Running {
    stop: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// What every request handler shares.
pub(super) struct Ctx {
    env: Env,
    site: Site,
}

/// Niceness of the thread that serves HTTP: under CPU contention the data path's workers win.
const ADMIN_NICE: libc::c_int = 10;

impl HttpListeners {
    /// Starts serving on a thread of its own (a one-thread runtime at a lower CPU priority),
    /// so rendering `/metrics` or answering a flood of API calls never takes a data-path
    /// worker.
    pub fn serve(self, env: Env) -> Running {
        let stop = CancellationToken::new();
        if self.bound.is_empty() {
            return Running { stop };
        }
        let thread_stop = stop.clone();
        let spawned = std::thread::Builder::new()
            .name("rolelb-http".into())
            .spawn(move || {
                crate::sched::background_thread(ADMIN_NICE, "the HTTP thread");
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!("HTTP listeners: cannot start their runtime: {e}");
                        return;
                    }
                };
                runtime.block_on(async move {
                    for b in self.bound {
                        start_listener(b, &env, &thread_stop);
                    }
                    thread_stop.cancelled().await;
                });
            });
        if let Err(e) = spawned {
            tracing::error!("HTTP listeners: cannot start their thread: {e}");
        }
        Running { stop }
    }
}

fn start_listener(b: Bound, env: &Env, stop: &CancellationToken) {
    match TcpListener::from_std(b.listener) {
        Ok(listener) => {
            let what = match b.site {
                Site::Admin { .. } => "admin API",
                Site::Stats(_) => "stats page",
            };
            tracing::info!(addr = %b.addr, "{what} listening");
            let ctx = Arc::new(Ctx {
                env: env.clone(),
                site: b.site,
            });
            tokio::spawn(http_conn::accept_loop(listener, ctx, stop.clone()));
        }
        Err(e) => tracing::error!(addr = %b.addr, "HTTP listener: {e}"),
    }
}

/// A response with its whole body.
pub(super) type Resp = Response<Full<Bytes>>;

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Resp {
    match serde_json::to_vec(value) {
        Ok(body) => respond(status, "application/json", body),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn error(status: StatusCode, message: &str) -> Resp {
    // Messages quote the request (a path segment, a state word): escaped and shortened, so a
    // script printing `.error` shows one line.
    let message = crate::text::message(message);
    json(status, &serde_json::json!({ "error": message }))
}

/// Compares without stopping at the first difference, so timing does not leak the token.
pub(super) fn same_token(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn authorized(req: &Request<Incoming>, token: Option<&str>) -> bool {
    let Some(token) = token else {
        return true;
    };
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_credentials)
        .is_some_and(|given| same_token(given.as_bytes(), token.as_bytes()))
}

/// The token of an `Authorization: Bearer TOKEN` value; the scheme's name is
/// case-insensitive (RFC 7235 section 2.1).
fn bearer_credentials(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once([' ', '\t'])?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Answers one request from `peer` on the site `ctx` serves.
pub(super) async fn handle(ctx: &Ctx, req: Request<Incoming>, peer: Option<SocketAddr>) -> Resp {
    match &ctx.site {
        Site::Admin { token } => admin(ctx, token.as_deref(), req).await,
        Site::Stats(listener) => stats_site(ctx, listener, req, peer).await,
    }
}

/// `/metrics`, with the scopes its query string asks for.
fn metrics_response(env: &Env, query: Option<&str>) -> Resp {
    match metrics::Scrape::from_query(query) {
        Ok(scrape) => respond(
            StatusCode::OK,
            metrics::CONTENT_TYPE,
            metrics::render(env, &scrape),
        ),
        Err(e) => error(StatusCode::BAD_REQUEST, &e),
    }
}

/// A request to a stats listener: `/metrics`, or the page (HTML, `;csv`) at any path that
/// starts with `stats uri`, as HAProxy matches it. The access rules come first (401, 403);
/// a POST is a server action, done when `stats admin` allows it and answered, as HAProxy
/// does, with a 303 to the page carrying the outcome (`;st=DONE`, `;st=DENY`, ...).
async fn stats_site(
    ctx: &Ctx,
    listener: &StatsListener,
    req: Request<Incoming>,
    peer: Option<SocketAddr>,
) -> Resp {
    let path = req.uri().path().to_owned();
    let metrics = path == "/metrics";
    if !metrics && !path.starts_with(&listener.uri) {
        return error(StatusCode::NOT_FOUND, "not found");
    }
    let allowed: &[Method] = if metrics {
        &[Method::GET, Method::HEAD]
    } else {
        &[Method::GET, Method::HEAD, Method::POST]
    };
    if !allowed.contains(req.method()) {
        return method_not_allowed(req.method(), &path, allowed);
    }
    let access = stats_auth::Request::new(
        listener,
        peer.map(|p| p.ip()),
        req.headers()
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes),
    );
    match access.verdict() {
        stats_auth::Verdict::Allow => {}
        stats_auth::Verdict::Deny => return page::forbidden(),
        stats_auth::Verdict::Auth(realm) => return page::unauthorized(&realm),
    }
    if metrics {
        return metrics_response(&ctx.env, req.uri().query());
    }
    // The options HAProxy reads anywhere after the prefix, query string included.
    let rest = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().get(listener.uri.len()..).unwrap_or_default())
        .unwrap_or_default()
        .to_owned();
    if *req.method() == Method::POST {
        let outcome = if access.admin() {
            match read_body(req).await {
                Ok(body) => page::post_action(&ctx.env, &body).await,
                Err(resp) => return resp,
            }
        } else {
            page::Outcome::Deny
        };
        return page::redirect(listener, outcome, &rest);
    }
    if rest.contains(";csv")
        || req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|w| w == "csv"))
    {
        return respond(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            stats::show_stat(&ctx.env, &stats::StatFilter::default()),
        );
    }
    let view = page::PageView {
        listener,
        admin: access.admin(),
        refresh: listener.refresh.filter(|_| !rest.contains(";norefresh")),
        status: page::Outcome::from_query(&rest),
    };
    respond(
        StatusCode::OK,
        "text/html; charset=utf-8",
        page::render(&ctx.env, &view),
    )
}

/// The whole body of a request, within [`MAX_BODY`] and [`BODY_TIMEOUT`].
async fn read_body(req: Request<Incoming>) -> Result<Bytes, Resp> {
    Ok(
        tokio::time::timeout(BODY_TIMEOUT, Limited::new(req, MAX_BODY).collect())
            .await
            .map_err(|_| error(StatusCode::REQUEST_TIMEOUT, "request body too slow"))?
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        &format!("request body over {MAX_BODY} bytes"),
                    )
                } else {
                    error(StatusCode::BAD_REQUEST, &format!("reading the body: {e}"))
                }
            })?
            .to_bytes(),
    )
}

/// `{"state": "ready|drain|maint"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateBody {
    state: String,
}

/// `{"weight": N}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightBody {
    weight: i64,
}

async fn read_json<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, Resp> {
    let body = read_body(req).await?;
    serde_json::from_slice(&body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, &format!("malformed JSON: {e}")))
}

/// The methods an admin API path takes (`Allow`), or `None` for a path it does not serve.
fn allowed_methods(parts: &[&str]) -> Option<&'static [Method]> {
    const READ: &[Method] = &[Method::GET, Method::HEAD];
    match parts {
        ["metrics" | "healthz"] | ["api", "v1", "backends"] | ["api", "v1", "backends", _] => {
            Some(READ)
        }
        ["api", "v1", "backends", _, "servers", _, "state" | "weight"] => Some(&[Method::PUT]),
        ["api", "v1", "reload"] => Some(&[Method::POST]),
        _ => None,
    }
}

/// 405 with the `Allow` header listing `allowed`.
fn method_not_allowed(method: &Method, path: &str, allowed: &[Method]) -> Resp {
    let allow: Vec<&str> = allowed.iter().map(Method::as_str).collect();
    let allow = allow.join(", ");
    let mut resp = error(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("{method} is not allowed on {path} (allowed: {allow})"),
    );
    if let Ok(v) = HeaderValue::from_str(&allow) {
        resp.headers_mut().insert(header::ALLOW, v);
    }
    resp
}

async fn admin(ctx: &Ctx, token: Option<&str>, req: Request<Incoming>) -> Resp {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let Some(allowed) = allowed_methods(&parts) else {
        return error(StatusCode::NOT_FOUND, &format!("no such endpoint {path}"));
    };
    if !allowed.contains(&method) {
        return method_not_allowed(&method, &path, allowed);
    }
    let mutating = !matches!(method, Method::GET | Method::HEAD);
    if mutating && !authorized(&req, token) {
        let mut resp = error(
            StatusCode::UNAUTHORIZED,
            "this call needs 'Authorization: Bearer TOKEN'",
        );
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return resp;
    }
    match parts.as_slice() {
        ["metrics"] => metrics_response(&ctx.env, req.uri().query()),
        ["healthz"] if ctx.env.stopping.is_cancelled() => respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain; charset=utf-8",
            "stopping\n",
        ),
        ["healthz"] => respond(StatusCode::OK, "text/plain; charset=utf-8", "ok\n"),
        ["api", "v1", "backends"] => json(StatusCode::OK, &api::backends(&ctx.env.table().load())),
        ["api", "v1", "backends", backend] => {
            let table = ctx.env.table().load();
            match api::backends(&table)
                .backends
                .into_iter()
                .find(|b| b.name == *backend)
            {
                Some(b) => json(StatusCode::OK, &b),
                None => error(
                    StatusCode::NOT_FOUND,
                    &format!("no such backend '{backend}'"),
                ),
            }
        }
        ["api", "v1", "backends", backend, "servers", server, what] => {
            let (backend, server, what) = (
                (*backend).to_owned(),
                (*server).to_owned(),
                (*what).to_owned(),
            );
            put_server(ctx, &backend, &server, &what, req).await
        }
        ["api", "v1", "reload"] => reload(ctx).await,
        _ => error(StatusCode::NOT_FOUND, &format!("no such endpoint {path}")),
    }
}

async fn put_server(
    ctx: &Ctx,
    backend: &str,
    server: &str,
    what: &str,
    req: Request<Incoming>,
) -> Resp {
    let found = match ops::lookup(&ctx.env, backend, server) {
        Ok(f) => f,
        Err(LookupError::NoBackend) => {
            return error(
                StatusCode::NOT_FOUND,
                &format!("no such backend '{backend}'"),
            );
        }
        Err(LookupError::NoServer) => {
            return error(
                StatusCode::NOT_FOUND,
                &format!("backend '{backend}' has no server '{server}'"),
            );
        }
    };
    let origin = "the admin API";
    match what {
        "state" => {
            let body: StateBody = match read_json(req).await {
                Ok(b) => b,
                Err(resp) => return resp,
            };
            let state = match body.state.as_str() {
                "ready" => AdminState::Ready,
                "drain" => AdminState::Drain,
                "maint" => AdminState::Maint,
                other => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        &format!("state '{other}' is not one of ready, drain, maint"),
                    );
                }
            };
            ops::set_state(&ctx.env, &found, state, origin).await;
        }
        _ => {
            let body: WeightBody = match read_json(req).await {
                Ok(b) => b,
                Err(resp) => return resp,
            };
            let Some(weight) = u32::try_from(body.weight).ok().filter(|w| *w <= MAX_WEIGHT) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("weight {} is out of range (0 to {MAX_WEIGHT})", body.weight),
                );
            };
            ops::set_weight(&ctx.env, &found, weight, origin).await;
        }
    }
    server_json(ctx, backend, server)
}

fn server_json(ctx: &Ctx, backend: &str, server: &str) -> Resp {
    let table = ctx.env.table().load();
    let found = super::view::proxies(&table)
        .iter()
        .filter_map(|px| px.backend)
        .find(|(cfg, _)| cfg.name == backend)
        .and_then(|(_, rt)| {
            super::view::servers(rt)
                .iter()
                .find(|s| &*s.cfg.name == server)
                .map(|s| api::server(s, rt))
        });
    match found {
        Some(s) => json(StatusCode::OK, &s),
        None => error(
            StatusCode::NOT_FOUND,
            &format!("backend '{backend}' has no server '{server}'"),
        ),
    }
}

async fn reload(ctx: &Ctx) -> Resp {
    match tokio::time::timeout(RELOAD_WAIT, ctx.env.control.reload()).await {
        Err(_) => error(
            StatusCode::GATEWAY_TIMEOUT,
            "the reload is still running; check the logs",
        ),
        Ok(Err(ReloadError::Stopped)) => {
            error(StatusCode::SERVICE_UNAVAILABLE, "rolelb is stopping")
        }
        Ok(Ok(generation)) => json(
            StatusCode::OK,
            &serde_json::json!({ "reloaded": true, "generation": generation }),
        ),
        Ok(Err(ReloadError::Config(errors))) => {
            let list: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
            json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({
                    "error": "the configuration has errors; nothing was changed",
                    "errors": list,
                }),
            )
        }
        Ok(Err(e)) => json(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({
                "error": "the reload failed; nothing was changed",
                "errors": [e.to_string()],
            }),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_credentials("Bearer abc"), Some("abc"));
        assert_eq!(bearer_credentials("bearer abc"), Some("abc"));
        assert_eq!(bearer_credentials("BEARER   abc "), Some("abc"));
        assert_eq!(bearer_credentials("Basic abc"), None);
        assert_eq!(bearer_credentials("Bearer"), None);
        assert_eq!(bearer_credentials("Bearer "), None);
    }

    #[test]
    fn unknown_paths_are_not_found_and_known_ones_list_their_methods() {
        assert_eq!(allowed_methods(&["nope"]), None);
        assert_eq!(
            allowed_methods(&["api", "v1", "backends", "b", "servers", "s"]),
            None
        );
        assert_eq!(allowed_methods(&["api", "v1", "backends", "b", "x"]), None);
        assert_eq!(
            allowed_methods(&["api", "v1", "reload"]),
            Some(&[Method::POST][..])
        );
        assert_eq!(
            allowed_methods(&["api", "v1", "backends", "b", "servers", "s", "weight"]),
            Some(&[Method::PUT][..])
        );
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token(b"abc", b"abc"));
        assert!(!same_token(b"abd", b"abc"));
        assert!(!same_token(b"ab", b"abc"));
        assert!(!same_token(b"", b"abc"));
    }
}
