//! Live state that outlives tables, per backend and frontend, and the [`Registry`] that keys
//! it by name. Only `control` writes to the maps; the data path holds `Arc`s to entries.
//!
//! Servers are keyed backend first, then server name, so a backend's name is stored once and
//! a lookup allocates nothing; maps that a removal left mostly empty give their room back
//! (a `HashMap` never shrinks on its own, and one etcd burst may grow them to 10,000s).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

use super::{Downtime, FreqCtr, RateMax, ServerLive, StickEntries, TrafficStats};
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
    /// `stot`: sessions ever routed to this backend, whether or not a server took them
    /// (HAProxy's `cum_conn`).
    pub total_sessions: AtomicU64,
    /// `lbtot`: times the balancer chose one of its servers (HAProxy's `cum_lbconn`).
    pub lb_total: AtomicU64,
    /// `econ`: sessions that got no server connection (HAProxy's `failed_conns`): no
    /// server, the queue's timeout or limit, or the last connect failed.
    pub connect_errors: AtomicU64,
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
    /// The entries of the backend's `stick-table`.
    pub stick: StickEntries,
}

/// Live state of one frontend, shared across tables.
#[derive(Debug, Default)]
pub struct FrontendLive {
    /// Client connections currently open.
    pub conns: AtomicU32,
    /// Client connections ever accepted (`conn_tot`).
    pub total_conns: AtomicU64,
    /// Sessions ever started (`stot`): accepted connections that passed the `tcp-request
    /// connection` rules and, on an `accept-proxy` bind, sent a valid PROXY header.
    pub total_sessions: AtomicU64,
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
    /// Sessions per second, for `rate-limit sessions` (counted only while it is set).
    pub session_freq: Arc<FreqCtr>,
    /// Connections a `tcp-request connection reject` refused (`dcon`).
    pub denied_conns: AtomicU64,
    /// Sessions a `tcp-request content reject` refused (`dreq`, as HAProxy counts them).
    pub denied_reqs: AtomicU64,
}

/// Live state that outlives tables, keyed by proxy and server names. Only `control` writes
/// to the maps; the data path holds `Arc`s to entries.
#[derive(Debug, Default)]
pub struct Registry {
    /// Per backend name, per server name.
    pub(crate) servers: Mutex<Names<Names<Arc<ServerLive>>>>,
    backends: Mutex<Names<Arc<BackendLive>>>,
    frontends: Mutex<Names<Arc<FrontendLive>>>,
}

/// A map keyed by name (a server's key is its configuration's name, shared, not copied).
type Names<V> = HashMap<Arc<str>, V>;

/// `map[key]`, made with `Default` when missing (keyed by `owned()`), and whether it was made
/// now.
fn entry<V: Default + Clone>(
    map: &mut Names<V>,
    key: &str,
    owned: impl FnOnce() -> Arc<str>,
) -> (V, bool) {
    if let Some(v) = map.get(key) {
        return (v.clone(), false);
    }
    let v = V::default();
    map.insert(owned(), v.clone());
    (v, true)
}

/// Keeps the entries `keep` accepts, then gives back the map's room if it is now mostly empty.
fn retain_and_shrink<V>(map: &mut Names<V>, mut keep: impl FnMut(&str, &mut V) -> bool) {
    map.retain(|k, v| keep(k, v));
    shrink_if_sparse(map);
}

/// Shrinks `map` to its length when it uses under a quarter of its capacity.
fn shrink_if_sparse<K: Eq + Hash, V>(map: &mut HashMap<K, V>) {
    if map.len() < map.capacity() / 4 {
        map.shrink_to_fit();
    }
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Registry {
    /// The live state of `backend/server`, and whether it was created now.
    pub fn server(&self, backend: &str, server: &Arc<str>) -> (Arc<ServerLive>, bool) {
        let mut servers = locked(&self.servers);
        match servers.get_mut(backend) {
            Some(of_backend) => entry(of_backend, server, || server.clone()),
            None => {
                let mut of_backend = Names::default();
                let made = entry(&mut of_backend, server, || server.clone());
                servers.insert(backend.into(), of_backend);
                made
            }
        }
    }

    /// How many servers have live state.
    pub fn server_count(&self) -> usize {
        locked(&self.servers).values().map(HashMap::len).sum()
    }

    /// The live state of a backend.
    pub fn backend(&self, name: &str) -> Arc<BackendLive> {
        entry(&mut locked(&self.backends), name, || name.into()).0
    }

    /// The live state of a frontend.
    pub fn frontend(&self, name: &str) -> Arc<FrontendLive> {
        entry(&mut locked(&self.frontends), name, || name.into()).0
    }

    /// Forgets the entries the predicates reject (their sessions keep their own `Arc`s); the
    /// table decides what is still there (`Table::retain_live`).
    pub fn retain(
        &self,
        server: impl Fn(&str, &str) -> bool,
        backend: impl Fn(&str) -> bool,
        frontend: impl Fn(&str) -> bool,
    ) {
        retain_and_shrink(&mut locked(&self.servers), |b, of_backend| {
            retain_and_shrink(of_backend, |s, _| server(b, s));
            !of_backend.is_empty()
        });
        retain_and_shrink(&mut locked(&self.backends), |b, _| backend(b));
        retain_and_shrink(&mut locked(&self.frontends), |f, _| frontend(f));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_entries_are_kept_per_backend_and_found_again() {
        let reg = Registry::default();
        let (a, made) = reg.server("be", &"a".into());
        assert!(made);
        let (again, made) = reg.server("be", &"a".into());
        assert!(!made && Arc::ptr_eq(&a, &again));
        let (other, made) = reg.server("other", &"a".into());
        assert!(made && !Arc::ptr_eq(&a, &other), "same name, other backend");
        assert_eq!(reg.server_count(), 2);
        reg.retain(|b, _| b == "other", |_| true, |_| true);
        assert_eq!(reg.server_count(), 1);
        assert!(reg.server("be", &"a".into()).1, "forgotten, so made anew");
    }

    #[test]
    fn a_big_removal_gives_the_maps_room_back() {
        let reg = Registry::default();
        for i in 0..10_000 {
            reg.server("pool", &format!("m{i:05}").into());
        }
        reg.server("echo", &"e".into());
        let room = |reg: &Registry| locked(&reg.servers).get("pool").map(HashMap::capacity);
        assert!(room(&reg).is_some_and(|c| c >= 10_000));
        reg.retain(|b, s| b == "echo" || s < "m00010", |_| true, |_| true);
        assert_eq!(reg.server_count(), 11);
        assert!(room(&reg).is_some_and(|c| c < 100), "{:?}", room(&reg));
        reg.retain(|b, _| b == "echo", |_| true, |_| true);
        assert_eq!(room(&reg), None, "an emptied backend leaves the map");
        assert_eq!(reg.server_count(), 1);
    }
}
