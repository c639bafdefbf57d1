//! One backend and one frontend as every report shows them: the counts of usable servers
//! (`act`, `bck`), the status, the weight sum, the last change, sums over the servers, and
//! the session limits (`slim`: a frontend's `maxconn`, a backend's `fullconn`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::server::{ServerView, servers};
use crate::balance::WEIGHT_SCALE;
use crate::config;
use crate::table::{self, BackendRt, ServerLive, Table};

/// One backend with its servers, as the reports see it.
#[derive(Debug)]
pub struct BackendView<'a> {
    /// Its configuration.
    pub cfg: &'a config::Backend,
    /// Its runtime entry.
    pub rt: &'a BackendRt,
    /// Its servers, in declaration order, with their ids.
    pub servers: Vec<ServerView<'a>>,
}

impl<'a> BackendView<'a> {
    /// The view of a backend.
    pub fn new(cfg: &'a config::Backend, rt: &'a BackendRt) -> BackendView<'a> {
        BackendView {
            cfg,
            rt,
            servers: servers(rt),
        }
    }

    /// Whether `s` may take this backend's new connections (HAProxy's `srv_is_usable`, with
    /// the role rule): the backend enabled and free of a role conflict, the server with a
    /// weight and admitted by the role rule (up, ready, the right role and lag).
    fn usable(&self, s: &ServerView<'_>) -> bool {
        !self.cfg.disabled
            && !self.rt.live.role_conflict.load(Ordering::Relaxed)
            && s.rt.weight > 0
            && table::admits(self.rt.rule(), s.rt)
    }

    /// `act`: usable active servers.
    pub fn active(&self) -> usize {
        self.servers
            .iter()
            .filter(|s| !s.cfg.backup && self.usable(s))
            .count()
    }

    /// `bck`: usable backup servers (all of them, as HAProxy counts, even when only the first
    /// takes traffic).
    pub fn backup(&self) -> usize {
        self.servers
            .iter()
            .filter(|s| s.cfg.backup && self.usable(s))
            .count()
    }

    /// Whether some server may take new connections.
    pub fn up(&self) -> bool {
        self.servers.iter().any(|s| self.usable(s))
    }

    /// The status word: `UP` or `DOWN`.
    pub fn status(&self) -> &'static str {
        if self.up() { "UP" } else { "DOWN" }
    }

    /// `weight`: the effective weights (ramped under `slowstart`) of the servers taking
    /// traffic (the active ones, else the backups in use), back on the user scale.
    pub fn weight(&self) -> u64 {
        let pool = if self.rt.active.members.is_empty() {
            &self.rt.backup
        } else {
            &self.rt.active
        };
        pool.counted()
            .iter()
            .filter_map(|&i| self.rt.servers.get(i))
            .map(|s| u64::from(s.eweight))
            .sum::<u64>()
            .div_ceil(u64::from(WEIGHT_SCALE))
    }

    /// `lastchg`: seconds since a server's state last changed; `None` without servers.
    pub fn last_change(&self, now: Instant) -> Option<u64> {
        self.servers
            .iter()
            .map(|s| s.rt.live.changed_at())
            .max()
            .map(|t| now.saturating_duration_since(t).as_secs())
    }

    /// The sum of `f` over the servers.
    pub fn sum(&self, f: impl Fn(&ServerView<'_>) -> u64) -> u64 {
        self.servers.iter().map(f).sum()
    }

    /// The sum of one of the servers' counters.
    fn sum_live(&self, f: impl Fn(&ServerLive) -> &AtomicU64) -> u64 {
        self.sum(|s| f(&s.rt.live).load(Ordering::Relaxed))
    }

    /// `scur`: sessions holding a server slot in this backend (HAProxy's `beconn`).
    pub fn sessions(&self) -> u32 {
        self.rt.live.sessions.load(Ordering::Relaxed)
    }

    /// `lbtot`: times the balancer chose one of its servers (not a stick table, not the
    /// queue).
    pub fn lb_total(&self) -> u64 {
        self.rt.live.lb_total.load(Ordering::Relaxed)
    }

    /// `bin`: bytes its servers received.
    pub fn bytes_in(&self) -> u64 {
        self.sum_live(|l| &l.bytes_in)
    }

    /// `bout`: bytes its servers sent.
    pub fn bytes_out(&self) -> u64 {
        self.sum_live(|l| &l.bytes_out)
    }

    /// `econ`: sessions that got no server connection (no server, queue, failed connect).
    pub fn connect_errors(&self) -> u64 {
        self.rt.live.connect_errors.load(Ordering::Relaxed)
    }

    /// `wretr`: connection retries on the same server.
    pub fn retries(&self) -> u64 {
        self.sum_live(|l| &l.traffic.get().retries)
    }

    /// `wredis`: sessions redispatched away from its servers.
    pub fn redispatches(&self) -> u64 {
        self.sum_live(|l| &l.traffic.get().redispatches)
    }

    /// `chkdown`: times the backend went down (no usable server), as HAProxy counts it.
    pub fn down_transitions(&self) -> u64 {
        self.rt.live.downtime.transitions()
    }

    /// `slim` of a backend: its `fullconn` (given, or HAProxy's default: see
    /// [`BackendRt::fullconn`]).
    pub fn fullconn(&self) -> u32 {
        self.rt.fullconn
    }
}

/// `slim` of a frontend: its `maxconn`, else the global one, else the process default.
pub fn frontend_limit(table: &Table, cfg: &config::Frontend, default_maxconn: u32) -> u32 {
    cfg.maxconn.or(table.maxconn).unwrap_or(default_maxconn)
}
