//! The changes an operator can make, shared by the runtime socket (`cli`) and the HTTP API
//! (`http`), so both take one code path: find a server, change its live state (which
//! outlives tables and reloads), ask `control` for a new table and wait until it is in force.

use std::sync::Arc;
use std::time::Duration;

use super::Env;
use crate::table::{AdminState, ServerLive};

/// How long a change waits for `control` to publish the rebuilt table.
const REBUILD_WAIT: Duration = Duration::from_secs(2);

/// Why a `backend/server` could not be found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// No backend of that name.
    #[error("no such backend")]
    NoBackend,
    /// The backend has no server of that name.
    #[error("no such server")]
    NoServer,
}

/// A server found by name: its name, configured weight and live state (held by `Arc`, so the
/// table may change meanwhile).
#[derive(Debug, Clone)]
pub struct Found {
    /// `backend/server`.
    pub name: String,
    /// The configured weight.
    pub initial: u32,
    /// Its live state.
    pub live: Arc<ServerLive>,
}

/// Finds `backend/server` in the current table.
pub fn lookup(env: &Env, backend: &str, server: &str) -> Result<Found, LookupError> {
    let table = env.table().load();
    let be_cfg = table
        .config
        .backends
        .iter()
        .find(|b| b.name == backend)
        .ok_or(LookupError::NoBackend)?;
    let s_cfg = be_cfg
        .servers
        .iter()
        .find(|s| &*s.name == server)
        .ok_or(LookupError::NoServer)?;
    let rt = table
        .backends
        .get(backend)
        .and_then(|b| b.servers.iter().find(|s| s.name() == server))
        .ok_or(LookupError::NoServer)?;
    Ok(Found {
        name: format!("{backend}/{server}"),
        initial: s_cfg.weight,
        live: rt.live.clone(),
    })
}

/// Asks `control` for a new table and waits (briefly) until it is published.
pub async fn rebuild(env: &Env) {
    // Past the wait, or when `control` is gone, the change stays in live state: the next
    // table takes it in.
    let _ = tokio::time::timeout(REBUILD_WAIT, env.control.rebuild_and_wait()).await;
}

/// Sets the operator's administrative state of `found` (`origin` names who asked, for the log).
pub async fn set_state(env: &Env, found: &Found, state: AdminState, origin: &str) {
    let prev = found.live.set_admin(state);
    if prev != state {
        tracing::warn!(
            "Server {} is {} (set by {origin}).",
            found.name,
            state.word()
        );
        rebuild(env).await;
    }
}

/// Sets the operator's weight of `found`.
pub async fn set_weight(env: &Env, found: &Found, weight: u32, origin: &str) {
    if found.live.operator_weight() != Some(weight) {
        found.live.set_operator_weight(Some(weight));
        tracing::warn!(
            "Server {} weight set to {weight} (initial {}) by {origin}.",
            found.name,
            found.initial
        );
        rebuild(env).await;
    }
}
