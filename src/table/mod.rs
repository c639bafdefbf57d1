//! The table: everything the data path reads, built whole from a [`Config`] plus live state
//! and swapped behind `ArcSwap` by `control`. A table never changes after it is built.
//!
//! Live per-proxy and per-server state (session counts, counters, admin and health state, the
//! rotation cursor) sits in [`crate::live`]'s [`Registry`], keyed by backend/server name, and
//! is shared by `Arc` into every table that still contains that server, so a swap never resets
//! health nor drops a connection. The single-writer guard is [`crate::roles`].
//!
//! A table is made in three steps, all run by `control`: [`prepare()`] applies the
//! configuration and etcd's view to live state (`prepare.rs`); [`Table::build`], a pure
//! function of the configuration and those live entries, makes the table (`build.rs` builds
//! one backend); after the swap, [`Table::after_swap`] makes the changes the new table
//! decided (the writer hand-over, the role-conflict flag, downtime).
//!
//! Here: the snapshot types and [`Table`] (this file), the build of one backend (`build.rs`),
//! picking a server for a new connection (`pick.rs`). `live` and `roles` are re-exported, so
//! `crate::table::ServerLive` keeps working for the code that reads both.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::balance::{Selector, WEIGHT_SCALE};
use crate::config::{self, Config, LogOptions, MaxLag, Role, RoleSource};

pub use crate::live::*;
pub use crate::roles::*;

mod build;
mod pick;
mod prepare;
mod stick;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

use build::build_backend;
pub use pick::*;
pub use prepare::{Prepared, prepare};
pub use stick::{MAX_STICK_RULES, StickRt, StickRuleRt};

/// The shared handle through which the data path reads the current table.
pub type TableHandle = Arc<ArcSwap<Table>>;

/// A server as the data path sees it in one table: its configuration (shared, not copied)
/// and what this table makes of it.
#[derive(Debug)]
pub struct ServerRt {
    /// Its `server` line (or the etcd member it was made from), with `name`, `addr`,
    /// `maxqueue`, `send_proxy` (`send-proxy`/`send-proxy-v2`), `backup`, `slowstart`.
    pub config: Arc<config::Server>,
    /// `maxconn` in force: the configured one or the agent's, ramped under `slowstart`.
    /// With `minconn` the limit moves with the backend's load instead: see
    /// [`BackendRt::limit`].
    pub maxconn: Option<u32>,
    /// `minconn` and the `maxconn` in force, not ramped, when the limit is dynamic (they
    /// differ).
    pub dynamic: Option<DynamicLimit>,
    /// Weight in force: the configured one scaled by the agent's `N%` (0 takes no traffic).
    pub weight: u32,
    /// Where the server stood in its `slowstart` ramp when this table was built.
    pub ramp: Option<Ramp>,
    /// Effective weight on HAProxy's scale (`weight * 16`, ramped under `slowstart`): what
    /// the balancer shares connections by.
    pub eweight: u32,
    /// Live state shared across tables.
    pub live: Arc<ServerLive>,
    /// Its id in the backend (HAProxy's `puid`: `id N`, else numbered by
    /// [`config::server_ids`]): `sid` in `show stat`, the key of its consistent-hash points.
    pub puid: u32,
}

impl ServerRt {
    /// The server's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The weight HAProxy shows (`show stat` `weight`): the effective weight back on the
    /// user scale, rounded up.
    pub fn shown_weight(&self) -> u32 {
        self.eweight.div_ceil(WEIGHT_SCALE)
    }

    /// HAProxy's `throttle` column (`server_throttle_rate`): the percentage of its weight a
    /// starting server gets; `None` when the server is not ramping, or down or draining
    /// (HAProxy shows it only in the STARTING state, not while draining).
    pub fn throttle(&self) -> Option<u32> {
        self.ramp?;
        if !self.live.eligible() {
            return None;
        }
        if self.weight == 0 {
            return Some(100);
        }
        let pct = (100 * u64::from(self.eweight) + u64::from(WEIGHT_SCALE) - 1)
            / (u64::from(WEIGHT_SCALE) * u64::from(self.weight));
        Some(u32::try_from(pct).unwrap_or(100))
    }
}

/// The servers a selector chooses among, as indexes into [`BackendRt::servers`].
#[derive(Debug)]
pub struct Pool {
    /// Member servers, in declaration order.
    pub members: Vec<usize>,
    /// The balancing algorithm over `members`; `None` when the pool is empty.
    pub selector: Option<Box<dyn Selector>>,
    /// The backup pool without `option allbackups`: HAProxy counts its first member alone
    /// (`fbck`) in `nbsrv` and the backend's weight, even where a map-based algorithm spreads
    /// it over every member.
    pub first_only: bool,
}

impl Pool {
    fn empty() -> Pool {
        Pool {
            members: Vec::new(),
            selector: None,
            first_only: false,
        }
    }

    /// The members HAProxy counts as in use (`nbsrv`, backend weight): all, or the first.
    pub fn counted(&self) -> &[usize] {
        let n = if self.first_only {
            1
        } else {
            self.members.len()
        };
        &self.members[..n.min(self.members.len())]
    }
}

/// Timeouts and retry policy of a backend, as the data path applies them.
#[derive(Debug, Clone)]
pub struct BackendSettings {
    /// `timeout connect`.
    pub timeout_connect: Option<Duration>,
    /// `timeout server`.
    pub timeout_server: Option<Duration>,
    /// `timeout server-fin`.
    pub timeout_server_fin: Option<Duration>,
    /// `timeout queue` (falls back to `timeout connect` as in HAProxy).
    pub timeout_queue: Option<Duration>,
    /// `timeout tunnel`.
    pub timeout_tunnel: Option<Duration>,
    /// `retries`.
    pub retries: u32,
    /// `option redispatch` with its interval (HAProxy's `redispatch_after`), `None` without.
    pub redispatch: Option<i32>,
    /// `retry-on` includes `conn-failure`: failed connects are retried.
    pub retry_on_conn_failure: bool,
    /// `balance source`: a hashed pick, which a retry leaves only on a redispatch by count
    /// (or when the server is down), never because other servers exist.
    pub hashed: bool,
    /// A redispatch pick avoids the server that failed (HAProxy's map-based source hash
    /// does not avoid it, so the same client lands on the same server again).
    pub redispatch_avoids: bool,
    /// `option srvtcpka`.
    pub srvtcpka: bool,
    /// `option nolinger`.
    pub nolinger: bool,
    /// `option abortonclose`.
    pub abortonclose: bool,
    /// `option independent-streams`.
    pub independent_streams: bool,
    /// `option tcp-smart-connect`.
    pub smart_connect: bool,
    /// `option splice-*`.
    pub splice: config::Splice,
    /// `balance source`: HAProxy queues each client on its hashed server, up to `maxqueue`.
    pub queue_per_server: bool,
    /// `stick-table` and `stick` rules, each rule with the table it uses.
    pub stick: Option<Arc<StickRt>>,
}

/// A backend as the data path sees it in one table.
#[derive(Debug)]
pub struct BackendRt {
    /// Backend name.
    pub name: String,
    /// Timeouts and retries.
    pub settings: BackendSettings,
    /// Every server of the backend, eligible or not, in declaration order.
    pub servers: Vec<ServerRt>,
    /// Eligible active servers.
    pub active: Pool,
    /// Eligible backup servers (only the first unless `option allbackups`).
    pub backup: Pool,
    /// `role`: the role a server must have to take traffic here.
    pub role: Role,
    /// `max-lag` (with `role replica`).
    pub max_lag: Option<MaxLag>,
    /// `role-source`: who decides each server's role.
    pub role_source: RoleSource,
    /// With `role primary`: the servers in a role conflict when this table was built, as
    /// indexes into `servers` (empty: none). The pick re-checks the live roles every time.
    pub conflict: Vec<usize>,
    /// With `role primary`: the one primary when this table was built (an index into
    /// `servers`), which takes the writes over after the swap.
    pub writer: Option<usize>,
    /// `fullconn`: given, else a tenth (rounded up, at least 1) of the `maxconn` of the
    /// frontends that may route here, as HAProxy 2.6 computes it.
    pub fullconn: u32,
    /// Some server has a dynamic limit (`minconn`): picks read the backend's load.
    pub dynamic: bool,
    /// Live state shared across tables.
    pub live: Arc<BackendLive>,
}

/// A server's dynamic limit: `minconn` with an idle backend, up to `maxconn` as the backend
/// nears `fullconn` sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DynamicLimit {
    /// `minconn`.
    pub minconn: u32,
    /// `maxconn` in force (the configured one or the agent's).
    pub maxconn: u32,
}

/// A frontend as the data path sees it in one table.
#[derive(Debug)]
pub struct FrontendRt {
    /// Frontend name.
    pub name: String,
    /// The backend that serves it.
    pub backend: Arc<BackendRt>,
    /// `maxconn` (defaults to the global one).
    pub maxconn: Option<u32>,
    /// `timeout client`.
    pub timeout_client: Option<Duration>,
    /// `timeout client-fin`.
    pub timeout_client_fin: Option<Duration>,
    /// `option tcplog`.
    pub tcplog: bool,
    /// The session lines show the server connection's local address (`%bi`, `%bp`): only
    /// then is it read from the kernel (a `getsockname` per session).
    pub log_shows_source: bool,
    /// The logging `option`s.
    pub log_options: LogOptions,
    /// `option clitcpka`.
    pub clitcpka: bool,
    /// `option nolinger`.
    pub nolinger: bool,
    /// `option independent-streams`.
    pub independent_streams: bool,
    /// `option splice-*`.
    pub splice: config::Splice,
    /// The rate limits its listeners accept under.
    pub rates: RateLimits,
    /// The addresses it listens on, with their `bind` options.
    pub binds: Vec<ListenerRt>,
    /// Live state shared across tables.
    pub live: Arc<FrontendLive>,
    /// `tcp-request connection` rules, run before an `accept-proxy` header is read.
    pub tcp_request_connection: Vec<config::acl::TcpRule>,
    /// `tcp-request content` rules, run after it.
    pub tcp_request_content: Vec<config::acl::TcpRule>,
    /// Conditional `use_backend` lines, in order; the first whose condition holds routes the
    /// session, else `backend` serves it.
    pub routes: Vec<Route>,
}

/// A conditional `use_backend` line as the data path reads it.
#[derive(Debug)]
pub struct Route {
    /// When it applies.
    pub cond: config::acl::Cond,
    /// The frontend as a session routed here sees it: the same but for `backend` (and no
    /// rules of its own).
    pub frontend: Arc<FrontendRt>,
}

impl FrontendRt {
    /// This frontend serving `backend`, for a [`Route`].
    fn routed_to(&self, backend: Arc<BackendRt>) -> FrontendRt {
        FrontendRt {
            name: self.name.clone(),
            backend,
            maxconn: self.maxconn,
            timeout_client: self.timeout_client,
            timeout_client_fin: self.timeout_client_fin,
            tcplog: self.tcplog,
            log_shows_source: self.log_shows_source,
            log_options: self.log_options,
            clitcpka: self.clitcpka,
            nolinger: self.nolinger,
            independent_streams: self.independent_streams,
            splice: self.splice,
            rates: self.rates,
            binds: self.binds.clone(),
            live: self.live.clone(),
            tcp_request_connection: Vec::new(),
            tcp_request_content: Vec::new(),
            routes: Vec::new(),
        }
    }

    /// The `bind` address `addr` of this frontend.
    pub fn bind(&self, addr: SocketAddr) -> Option<&ListenerRt> {
        self.binds.iter().find(|b| b.addr == addr)
    }
}

/// The rate limits a frontend's listeners accept under (each `None` when not set).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimits {
    /// `rate-limit sessions`: this frontend's sessions per second.
    pub sessions: Option<u32>,
    /// `maxsessrate`: sessions per second, every frontend together.
    pub global_sessions: Option<u32>,
    /// `maxconnrate`: connections per second, every frontend together.
    pub global_conns: Option<u32>,
}

/// One address a frontend listens on, as its sessions see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerRt {
    /// The bound address.
    pub addr: SocketAddr,
    /// What HAProxy's log lines call it: its `name`, or else its number in the frontend
    /// (from 1, in declaration order).
    pub label: String,
    /// `accept-proxy`: connections start with a PROXY protocol header.
    pub accept_proxy: bool,
    /// A negative `mss` on its line: by how much each accepted connection's MSS is
    /// lowered (0: not at all).
    pub lower_mss: u32,
    /// `maxconn` on its line: connections open at once on this address (none of its own
    /// when unset or 0, as in HAProxy).
    pub maxconn: Option<u32>,
}

/// One immutable generation of everything the data path reads.
#[derive(Debug)]
pub struct Table {
    /// Increases by one with every swap.
    pub generation: u64,
    /// Global `maxconn`.
    pub maxconn: Option<u32>,
    /// Frontends in config order.
    pub frontends: Vec<Arc<FrontendRt>>,
    /// Which frontend serves each bound address.
    pub listeners: HashMap<SocketAddr, Arc<FrontendRt>>,
    /// Backends by name.
    pub backends: HashMap<String, Arc<BackendRt>>,
    /// The configuration this table was built from (for reports: declaration order, ids,
    /// check settings).
    pub config: Arc<Config>,
    /// The servers with a `slowstart`, as (backend, index in its `servers`): the only ones
    /// [`Table::ramping`] looks at, ten times a second, so that a table of 10,000 etcd
    /// members without `slowstart` costs the control task nothing between changes.
    slowstart: Vec<(Arc<BackendRt>, usize)>,
}

impl Table {
    /// This table's version of `backend` (the one with its name), or `backend` itself when
    /// this table no longer has it: what a session that started under an older table uses.
    pub fn current(&self, backend: &Arc<BackendRt>) -> Arc<BackendRt> {
        self.backends
            .get(&backend.name)
            .cloned()
            .unwrap_or_else(|| backend.clone())
    }

    /// An empty table (before the first config is loaded).
    pub fn empty() -> Table {
        Table {
            generation: 0,
            maxconn: None,
            frontends: Vec::new(),
            listeners: HashMap::new(),
            backends: HashMap::new(),
            config: Arc::new(Config {
                global: config::Global::default(),
                frontends: Vec::new(),
                backends: Vec::new(),
                stats: Vec::new(),
                etcd: Vec::new(),
                resolvers: Vec::new(),
                warnings: Vec::new(),
            }),
            slowstart: Vec::new(),
        }
    }

    /// Builds generation `generation` from a configuration and its live entries
    /// ([`prepare()`] made them and applied the configuration to live state). A pure function
    /// of its inputs: it reads live state and changes nothing, closes no session and logs no
    /// transition; what a swap to it changes is done by [`Table::after_swap`].
    pub fn build(prepared: &Prepared, generation: u64, now: Instant) -> Table {
        let config = prepared.config().clone();
        let mut backends = HashMap::new();
        // A stick rule may use another backend's table: its entries live with that backend.
        let tables: HashMap<&str, (&config::stick::StickTable, &Arc<BackendLive>)> = config
            .backends
            .iter()
            .zip(&prepared.backends)
            .filter_map(|(be, entries)| {
                let table = be.stick.as_ref()?.table.as_ref()?;
                Some((be.name.as_str(), (table, &entries.live)))
            })
            .collect();
        for (be, entries) in config.backends.iter().zip(&prepared.backends) {
            let stick = StickRt::resolve(be, |name| {
                tables
                    .get(name)
                    .map(|(table, live)| ((*table).clone(), Arc::clone(live)))
            });
            backends.insert(
                be.name.clone(),
                Arc::new(build_backend(
                    be,
                    build::fullconn(&config, be, prepared.default_maxconn),
                    entries,
                    stick.map(Arc::new),
                    now,
                )),
            );
        }
        let mut frontends = Vec::new();
        let mut listeners = HashMap::new();
        for (fe, live) in config.frontends.iter().zip(&prepared.frontends) {
            let Some(backend) = backends.get(&fe.backend).cloned() else {
                // config::load guarantees the reference; a missing one would be a parser bug.
                tracing::error!(frontend = %fe.name, backend = %fe.backend, "frontend refers to an unknown backend; not serving it");
                continue;
            };
            let mut rt = FrontendRt {
                name: fe.name.clone(),
                backend,
                maxconn: fe.maxconn.or(config.global.maxconn),
                rates: RateLimits {
                    sessions: fe.rate_limit_sessions,
                    global_sessions: config.global.maxsessrate,
                    global_conns: config.global.maxconnrate,
                },
                timeout_client: fe.timeout_client,
                timeout_client_fin: fe.timeout_client_fin,
                tcplog: fe.tcplog,
                log_shows_source: fe.tcplog
                    && fe.log_format.as_ref().is_some_and(|f| {
                        f.shows(&[
                            config::LogVar::BackendSourceIp,
                            config::LogVar::BackendSourcePort,
                        ])
                    }),
                log_options: fe.log_options,
                clitcpka: fe.clitcpka,
                nolinger: fe.nolinger,
                independent_streams: fe.independent_streams,
                splice: fe.splice,
                binds: fe
                    .binds
                    .iter()
                    .zip(1..)
                    .map(|(b, number): (_, u32)| ListenerRt {
                        addr: b.addr,
                        label: b.name.clone().unwrap_or_else(|| number.to_string()),
                        accept_proxy: b.accept_proxy,
                        lower_mss: b.socket.mss.filter(|&m| m < 0).map_or(0, i32::unsigned_abs),
                        maxconn: b.maxconn,
                    })
                    .collect(),
                live: live.clone(),
                tcp_request_connection: fe.tcp_request_connection.clone(),
                tcp_request_content: fe.tcp_request_content.clone(),
                routes: Vec::new(),
            };
            rt.routes = fe
                .use_backend_rules
                .iter()
                .filter_map(|rule| {
                    let backend = backends.get(&rule.backend)?.clone();
                    Some(Route {
                        cond: rule.cond.clone(),
                        frontend: Arc::new(rt.routed_to(backend)),
                    })
                })
                .collect();
            let rt = Arc::new(rt);
            if !fe.disabled {
                for bind in &fe.binds {
                    listeners.insert(bind.addr, rt.clone());
                }
            }
            frontends.push(rt);
        }
        let slowstart = backends
            .values()
            .flat_map(|b: &Arc<BackendRt>| {
                b.servers
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.config.slowstart.is_some())
                    .map(move |(i, _)| (b.clone(), i))
            })
            .collect();
        Table {
            generation,
            maxconn: config.global.maxconn,
            frontends,
            listeners,
            backends,
            config,
            slowstart,
        }
    }

    /// Makes the changes a swap from `old` to this table brings, right after the swap
    /// (`control` calls it): the single-writer guard's ([`take_over`]: the sessions of a
    /// demoted writer closed, the role-conflict flag, the writer hand-over), then each
    /// backend's downtime, counted while it has no usable server.
    pub fn after_swap(&self, old: &Table) {
        take_over(old, self);
        let now = Instant::now();
        for be in self.backends.values() {
            let stopped = be.active.members.is_empty() && be.backup.members.is_empty();
            be.live.downtime.set(stopped, now);
        }
    }

    /// Whether a server's `slowstart` ramp moved to another step since this table was built
    /// (the table must then be rebuilt, so weights and `maxconn` follow the ramp).
    pub fn ramping(&self, now: Instant) -> bool {
        self.slowstart.iter().any(|(b, i)| {
            b.servers.get(*i).is_some_and(|s| {
                s.live.eligible() && s.live.ramp(s.config.slowstart, now) != s.ramp
            })
        })
    }

    /// Forgets the live state of the servers, backends and frontends this table no longer has.
    pub fn retain_live(&self, registry: &Registry) {
        // One lookup per entry, not a scan of the backend: backends may have 10,000 servers.
        let servers: HashSet<(&str, &str)> = self
            .backends
            .values()
            .flat_map(|be| be.servers.iter().map(|s| (be.name.as_str(), s.name())))
            .collect();
        registry.retain(
            |b, s| servers.contains(&(b, s)),
            |b| self.backends.contains_key(b),
            |f| self.frontends.iter().any(|fe| fe.name == f),
        );
    }
}
