//! The JSON documents of the HTTP admin API (`/api/v1/backends[/{backend}]`). Field names are
//! part of the contract (`docs/admin-api.md`): add fields, never rename or remove them.

use std::sync::atomic::Ordering;

use serde::Serialize;

use super::view::{self, ServerView};
use crate::table::{AdminState, BackendRt, Health, Table};

/// `GET /api/v1/backends`.
#[derive(Debug, Serialize)]
pub struct Backends {
    /// Generation of the table the report was read from.
    pub generation: u64,
    /// Every backend (and `listen`), in declaration order.
    pub backends: Vec<Backend>,
}

/// One backend.
#[derive(Debug, Serialize)]
pub struct Backend {
    /// Backend name.
    pub name: String,
    /// `UP` when at least one server may take new connections, else `DOWN`.
    pub status: &'static str,
    /// The `role` the backend requires (`primary`, `replica`, `any`).
    pub role: &'static str,
    /// Whether several servers report primary (new connections refused).
    pub role_conflict: bool,
    /// Sessions currently open.
    pub sessions: u32,
    /// Connections waiting in the queue.
    pub queued: u32,
    /// Sessions ever handled.
    pub sessions_total: u64,
    /// The servers, in declaration order.
    pub servers: Vec<Server>,
}

/// One server.
#[derive(Debug, Serialize)]
pub struct Server {
    /// Server name.
    pub name: String,
    /// Traffic address.
    pub address: String,
    /// `UP`, `DOWN`, `NOLB`, `DRAIN` or `MAINT`.
    pub state: &'static str,
    /// The operator's administrative state (`ready`, `drain`, `maint`), which survives reloads.
    pub admin_state: &'static str,
    /// `up` or `down` as checks and agent see it.
    pub health: &'static str,
    /// The role the node last reported (`primary`, `replica`, `unknown`).
    pub role: &'static str,
    /// Replication lag in bytes, when known.
    pub lag_bytes: Option<u64>,
    /// Replication lag in seconds, when known.
    pub lag_seconds: Option<f64>,
    /// Weight in force.
    pub weight: u32,
    /// Weight in the configuration.
    pub configured_weight: u32,
    /// Whether this is a `backup` server.
    pub backup: bool,
    /// Sessions currently open.
    pub sessions: u32,
    /// Sessions ever assigned.
    pub sessions_total: u64,
    /// The last health check, when the server has `check` and one ran.
    pub last_check: Option<Check>,
    /// The last role check, when one ran.
    pub last_role_check: Option<RoleCheck>,
}

/// A health check's result.
#[derive(Debug, Serialize)]
pub struct Check {
    /// HAProxy's status code (`L4OK`, `L4CON`, `L7STS`...).
    pub status: &'static str,
    /// Whether the check passed.
    pub passed: bool,
    /// The layer-7 code, when there is one.
    pub code: Option<String>,
    /// Detail for humans.
    pub info: String,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
}

/// A role check's result.
#[derive(Debug, Serialize)]
pub struct RoleCheck {
    /// The role reported (`unknown` when the check failed).
    pub role: &'static str,
    /// Why there is no role (`unreachable`, `refused`, `rejected`, `bad_answer`), if it failed.
    pub problem: Option<&'static str>,
    /// Detail for humans.
    pub detail: String,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
}

fn admin_word(state: AdminState) -> &'static str {
    match state {
        AdminState::Ready => "ready",
        AdminState::Drain => "drain",
        AdminState::Maint => "maint",
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The JSON view of one server of `backend`.
pub fn server(s: &ServerView<'_>, backend: &BackendRt) -> Server {
    let live = &s.rt.live;
    Server {
        name: s.cfg.name.to_string(),
        address: s.cfg.addr.to_string(),
        state: s.lb_state(backend).word(),
        admin_state: admin_word(live.admin()),
        health: match live.effective_health() {
            Health::Up => "up",
            Health::Down => "down",
        },
        role: live.role().name(),
        lag_bytes: s.lag_bytes(),
        #[allow(clippy::cast_precision_loss)]
        lag_seconds: s.lag_ms().map(|ms| ms as f64 / 1000.0),
        weight: s.user_weight(),
        configured_weight: s.cfg.weight,
        backup: s.cfg.backup,
        sessions: live.sessions.load(Ordering::Relaxed),
        sessions_total: live.total_sessions.load(Ordering::Relaxed),
        last_check: s.last_check().map(|r| Check {
            status: r.status.code(),
            passed: r.status.passed(),
            code: r.code.clone(),
            info: r.info.clone(),
            duration_ms: millis(r.duration),
        }),
        last_role_check: live.last_role_check.load_full().map(|r| RoleCheck {
            role: r.role.name(),
            problem: r.problem.map(|p| p.name()),
            detail: r.detail.clone(),
            duration_ms: millis(r.duration),
        }),
    }
}

/// The JSON view of every backend.
pub fn backends(table: &Table) -> Backends {
    let backends = view::proxies(table)
        .iter()
        .filter_map(view::Proxy::backend_view)
        .map(|be| {
            let rt = be.rt;
            let servers: Vec<Server> = be.servers.iter().map(|s| server(s, rt)).collect();
            Backend {
                name: be.cfg.name.clone(),
                status: be.status(),
                role: view::role_name(rt.role),
                role_conflict: rt.live.role_conflict.load(Ordering::Relaxed),
                sessions: rt.live.sessions.load(Ordering::Relaxed),
                queued: rt.live.queued.load(Ordering::Relaxed),
                sessions_total: rt.live.total_sessions.load(Ordering::Relaxed),
                servers,
            }
        })
        .collect();
    Backends {
        generation: table.generation,
        backends,
    }
}
