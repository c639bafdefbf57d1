//! Picking a server of a backend for a new connection: the stick tables' match
//! ([`super::stick`]), the pools, the balance algorithm, the single-writer check on every
//! pick, and why nothing could be picked.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{BackendRt, Pool};
use crate::balance::Live;
use crate::config::Role;
use crate::live::ServerLive;
use crate::roles::{RoleRule, admits, in_role_conflict};

/// What picks read of a connection: `src` for `balance source` and stick rules, `dst` for
/// stick rules, and which stick rules apply to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnAddrs {
    /// The client's address.
    pub src: IpAddr,
    /// The address the client connected to.
    pub dst: IpAddr,
    /// The backend's stick rules whose `if|unless` condition held, bit `i` for rule `i`
    /// (see [`super::stick`]).
    pub stick_rules: u64,
}

/// Who chose the server of a pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A stick table's entry.
    Stick,
    /// The balance algorithm.
    Balance,
}

/// Why no server could be picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoServer {
    /// No server is eligible at all: refuse at once.
    NoneAvailable,
    /// Eligible servers exist but all are at `maxconn`: queue.
    AllFull,
    /// Several servers of a `role primary` backend report primary: refuse at once.
    RoleConflict,
}

struct PoolLive<'a> {
    backend: &'a BackendRt,
    pool: &'a Pool,
    exclude: Option<usize>,
    /// Sessions in the backend, for dynamic limits ([`BackendRt::limit`]).
    beconn: u32,
}

impl Live for PoolLive<'_> {
    fn usable(&self, i: usize) -> bool {
        let idx = self.pool.members[i];
        if self.exclude == Some(idx) {
            return false;
        }
        let s = &self.backend.servers[idx];
        if !admits(self.backend.rule(), s) {
            return false;
        }
        match self.backend.limit(s, self.beconn) {
            Some(m) if m > 0 => s.live.sessions.load(Ordering::Acquire) < m,
            _ => true,
        }
    }

    fn sessions(&self, i: usize) -> u32 {
        self.backend.servers[self.pool.members[i]]
            .live
            .sessions
            .load(Ordering::Acquire)
    }
}

impl BackendRt {
    /// The backend's role settings, as [`admits`] takes them.
    pub fn rule(&self) -> RoleRule {
        RoleRule {
            role: self.role,
            max_lag: self.max_lag,
            source: self.role_source,
        }
    }

    /// Picks a server for a new connection `conn` and takes a slot on it; `exclude` skips
    /// one server (the one a redispatch moves away from). Returns the server's index.
    pub fn pick(&self, conn: Option<ConnAddrs>, exclude: Option<usize>) -> Result<usize, NoServer> {
        self.pick_via(conn, exclude, false).map(|(idx, _)| idx)
    }

    /// The limit in force on server `s` when the backend has `beconn` sessions: its
    /// `maxconn` in force, or with `minconn` HAProxy 2.6's dynamic limit
    /// (`srv_dynamic_maxconn`): `maxconn` once the backend has `fullconn` sessions, else
    /// `maxconn * beconn / fullconn` but at least `minconn`, then ramped under `slowstart`.
    pub fn limit(&self, s: &super::ServerRt, beconn: u32) -> Option<u32> {
        let Some(d) = s.dynamic else {
            return s.maxconn;
        };
        let max = if beconn >= self.fullconn {
            d.maxconn
        } else {
            let share = u64::from(beconn) * u64::from(d.maxconn) / u64::from(self.fullconn.max(1));
            d.minconn.max(u32::try_from(share).unwrap_or(d.maxconn))
        };
        Some(s.ramp.map_or(max, |r| r.maxconn(max)))
    }

    /// The backend's sessions as HAProxy's dynamic limits count them (its `beconn`): those
    /// holding a server, those waiting in the queue, and the one picking unless it is one
    /// of the waiting (`waiting`). 0 when no server has a dynamic limit (not read then).
    fn beconn(&self, waiting: bool) -> u32 {
        if !self.dynamic {
            return 0;
        }
        let live = &self.live;
        live.sessions
            .load(Ordering::Acquire)
            .saturating_add(live.queued.load(Ordering::Acquire))
            .saturating_add(u32::from(!waiting))
    }

    /// [`BackendRt::pick`], also saying whether a stick table or the balancer chose;
    /// `waiting`: the session picking waits in the queue (it is counted there already).
    pub fn pick_via(
        &self,
        conn: Option<ConnAddrs>,
        exclude: Option<usize>,
        waiting: bool,
    ) -> Result<(usize, Via), NoServer> {
        // The single-writer guard, re-checked on every pick from the live roles so that the
        // window between a role report and the next table is closed too.
        if self.role == Role::Primary && in_role_conflict(self.role_source, &self.servers) {
            self.live.conflict_refusals.fetch_add(1, Ordering::Relaxed);
            return Err(NoServer::RoleConflict);
        }
        let beconn = self.beconn(waiting);
        if let Some(idx) = conn.and_then(|c| self.stuck(c, exclude)) {
            let server = &self.servers[idx];
            // As HAProxy: a stuck connection waits for its server rather than going elsewhere.
            if !server.live.try_acquire(self.limit(server, beconn)) {
                return Err(NoServer::AllFull);
            }
            let open = self.live.sessions.fetch_add(1, Ordering::AcqRel) + 1;
            self.live.max_sessions.fetch_max(open, Ordering::Relaxed);
            return Ok((idx, Via::Stick));
        }
        let client = conn.map(|c| c.src);
        // Backups serve only when no active server is eligible, as in HAProxy.
        let pool = if self.active.members.is_empty() {
            &self.backup
        } else {
            &self.active
        };
        let Some(selector) = &pool.selector else {
            return Err(NoServer::NoneAvailable);
        };
        if exclude.is_some() && pool.members.iter().all(|&m| Some(m) == exclude) {
            return Err(NoServer::NoneAvailable);
        }
        let live = PoolLive {
            backend: self,
            pool,
            exclude,
            beconn,
        };
        // A pick can race with other sessions for the last slot; try a few times.
        for _ in 0..4 {
            let Some(i) = selector.pick(&live, client) else {
                return Err(NoServer::AllFull);
            };
            let idx = pool.members[i];
            let server = &self.servers[idx];
            if server.live.try_acquire(self.limit(server, beconn)) {
                let open = self.live.sessions.fetch_add(1, Ordering::AcqRel) + 1;
                self.live.max_sessions.fetch_max(open, Ordering::Relaxed);
                return Ok((idx, Via::Balance));
            }
        }
        Err(NoServer::AllFull)
    }

    /// Counts in `lbtot` that the balancer chose server `idx` for a session (HAProxy's
    /// `cum_lbconn`, in `assign_server`): not when it chose again the server the session
    /// had before a redispatch (`prev`).
    pub fn count_balanced(&self, idx: usize, prev: Option<&Arc<ServerLive>>) {
        let Some(server) = self.servers.get(idx) else {
            return;
        };
        if prev.is_some_and(|p| Arc::ptr_eq(p, &server.live)) {
            return;
        }
        server.live.lb_total.fetch_add(1, Ordering::Relaxed);
        self.live.lb_total.fetch_add(1, Ordering::Relaxed);
    }

    /// Gives back the slot of server `idx` and wakes one queued connection.
    pub fn release(&self, idx: usize) {
        if let Some(s) = self.servers.get(idx) {
            s.live.release();
            self.live.sessions.fetch_sub(1, Ordering::AcqRel);
            let pool = if s.config.backup {
                &self.backup
            } else {
                &self.active
            };
            if let Some(selector) = &pool.selector {
                selector.released(u64::from(s.puid), s.live.sessions.load(Ordering::Acquire));
            }
        }
        self.live.slot_freed.notify_one();
    }

    /// How many connections may wait in the queue. Unlimited, as in HAProxy, except with
    /// `balance source`, where HAProxy queues a client on its hashed server and refuses it
    /// past that server's `maxqueue`: there the sum of the eligible servers' `maxqueue` when
    /// every one of them sets it (rolelb keeps one queue per backend).
    pub fn queue_limit(&self) -> Option<u32> {
        if !self.settings.queue_per_server {
            return None;
        }
        let mut total: u32 = 0;
        for s in self.servers.iter().filter(|s| s.live.eligible()) {
            match s.config.maxqueue {
                Some(q) if q > 0 => total = total.saturating_add(q),
                _ => return None,
            }
        }
        Some(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::{NodeRole, Registry};
    use crate::table::testing::{build, parse};

    fn conn(src: u8) -> Option<ConnAddrs> {
        Some(ConnAddrs {
            src: IpAddr::from([127, 0, 0, src]),
            dst: IpAddr::from([127, 0, 0, 1]),
            stick_rules: u64::MAX,
        })
    }

    #[test]
    fn a_stuck_server_that_lost_the_primary_role_is_never_picked() {
        let c = parse(
            "backend be\n    role primary\n    role-check pgsql user monitor\n    \
             stick-table type ip size 1\n    stick on dst\n    \
             server a 127.0.0.1:1\n    server b 127.0.0.1:2\n",
        );
        let reg = Registry::default();
        let t = build(&c, &reg, 1);
        let be = &t.backends["be"];
        be.servers[0].live.set_role(NodeRole::Primary);
        be.servers[1].live.set_role(NodeRole::Replica);
        let t = build(&c, &reg, 2);
        let be = &t.backends["be"];
        let idx = be.pick(conn(2), None).expect("the primary");
        be.stick_store(conn(2).expect("addrs"), idx);
        be.release(idx);
        assert_eq!(be.servers[idx].name(), "a");
        // a steps down and b is promoted: the entry still names a, the guard wins at once
        // (before any new table) and the store moves the entry to b.
        be.servers[0].live.set_role(NodeRole::Replica);
        assert!(be.pick(conn(3), None).is_err(), "a is no primary any more");
        be.servers[1].live.set_role(NodeRole::Primary);
        let t = build(&c, &reg, 3);
        let be = &t.backends["be"];
        let idx = be.pick(conn(3), None).expect("the new primary");
        assert_eq!(be.servers[idx].name(), "b");
        be.stick_store(conn(3).expect("addrs"), idx);
        be.release(idx);
        // a comes back as a replica: still never picked for this role primary backend.
        let t = build(&c, &reg, 4);
        let be = &t.backends["be"];
        let idx = be.pick(conn(4), None).expect("b");
        assert_eq!(be.servers[idx].name(), "b");
    }
}
