//! Live state that outlives tables, per backend and frontend, and the [`Registry`] that keys
//! it by name. Only `control` writes to the maps; the data path holds `Arc`s to entries.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

use super::{Downtime, RateMax, ServerLive, TrafficStats};
use crate::balance::Cursor;

/// Live state of one backend, shared across tables.
#[derive(Debug, Default)]
pub struct BackendLive {
    /// Rotation position of the active servers' selector.
    pub cursor: Arc<Cursor>,
    /// Rotation position of the backup servers' selector.
    pub backup_cursor: Arc<Cursor>,
    /// Woken when a slot frees up or the table changes, for queued connections.
    pub slot_freed: Notify,
    /// Connections waiting in the queue.
    pub queued: AtomicU32,
    /// Sessions ever handled.
    pub total_sessions: AtomicU64,
    /// Connections refused because no server was available.
    pub no_server: AtomicU64,
    /// Set while more than one server of a `role primary` backend reports primary.
    pub role_conflict: AtomicBool,
    /// Connections refused because of a role conflict.
    pub conflict_refusals: AtomicU64,
    /// The server that last was the one primary of a `role primary` backend.
    pub(crate) writer: Mutex<Option<String>>,
    /// Sessions currently holding a server slot in this backend.
    pub sessions: AtomicU32,
    /// Most sessions ever open at once in this backend.
    pub max_sessions: AtomicU32,
    /// Most connections ever waiting in the queue at once.
    pub max_queued: AtomicU32,
    /// Session counters and timings of the whole backend.
    pub traffic: TrafficStats,
    /// Time spent with no usable server.
    pub downtime: Downtime,
}

/// Live state of one frontend, shared across tables.
#[derive(Debug, Default)]
pub struct FrontendLive {
    /// Client connections currently open.
    pub conns: AtomicU32,
    /// Client connections ever accepted.
    pub total_conns: AtomicU64,
    /// Most client connections ever open at once.
    pub max_conns: AtomicU32,
    /// Bytes received from clients.
    pub bytes_in: AtomicU64,
    /// Bytes sent to clients.
    pub bytes_out: AtomicU64,
    /// Connections accepted per second (for the highest rate seen).
    pub conn_rate: RateMax,
    /// Woken when a connection ends (for `maxconn`).
    pub conn_freed: Notify,
}

/// Live state that outlives tables, keyed by proxy and server names. Only `control` writes
/// to the maps; the data path holds `Arc`s to entries.
#[derive(Debug, Default)]
pub struct Registry {
    pub(crate) servers: Mutex<HashMap<(String, String), Arc<ServerLive>>>,
    backends: Mutex<HashMap<String, Arc<BackendLive>>>,
    frontends: Mutex<HashMap<String, Arc<FrontendLive>>>,
}

fn entry<K: Eq + Hash, V: Default>(map: &Mutex<HashMap<K, Arc<V>>>, key: K) -> (Arc<V>, bool) {
    let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
    let mut created = false;
    let value = map
        .entry(key)
        .or_insert_with(|| {
            created = true;
            Arc::default()
        })
        .clone();
    (value, created)
}

impl Registry {
    /// The live state of `backend/server`, and whether it was created now.
    pub fn server(&self, backend: &str, server: &str) -> (Arc<ServerLive>, bool) {
        entry(&self.servers, (backend.to_owned(), server.to_owned()))
    }

    /// The live state of a backend.
    pub fn backend(&self, name: &str) -> Arc<BackendLive> {
        entry(&self.backends, name.to_owned()).0
    }

    /// The live state of a frontend.
    pub fn frontend(&self, name: &str) -> Arc<FrontendLive> {
        entry(&self.frontends, name.to_owned()).0
    }

    /// Forgets the entries the predicates reject (their sessions keep their own `Arc`s); the
    /// table decides what is still there (`Table::retain_live`).
    pub fn retain(
        &self,
        server: impl Fn(&str, &str) -> bool,
        backend: impl Fn(&str) -> bool,
        frontend: impl Fn(&str) -> bool,
    ) {
        self.servers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(b, s), _| server(b, s));
        self.backends
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|b, _| backend(b));
        self.frontends
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|f, _| frontend(f));
    }
}
