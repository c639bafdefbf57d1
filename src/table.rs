//! The table: everything the data path reads, built whole from a [`Config`] plus live state
//! and swapped behind `ArcSwap` by `control`. A table never changes after it is built.
//!
//! Live per-proxy and per-server state (session counts, counters, admin and health state, the
//! rotation cursor) sits in [`Registry`], keyed by backend/server name, and is shared by
//! `Arc` into every table that still contains that server, so a swap never resets health nor
//! drops a connection.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::balance::{self, Candidate, Cursor, Live, Selector, WEIGHT_SCALE};
use crate::check::CheckResult;
use crate::config::{
    self, Config, EtcdRole, EtcdState, EtcdView, MaxLag, ProxyProtocol, Role, RoleSource,
};

/// The shared handle through which the data path reads the current table.
pub type TableHandle = Arc<ArcSwap<Table>>;

/// Administrative state of a server, set by config (`disabled`) and later by the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum AdminState {
    /// Takes traffic when healthy.
    Ready = 0,
    /// Takes no new connections; existing ones continue.
    Drain = 1,
    /// Maintenance: takes nothing and checks cannot bring it back.
    Maint = 2,
}

/// Health of a server as its checks see it (servers without `check` stay `Up`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Health {
    /// Passing.
    Up = 0,
    /// Failing.
    Down = 1,
}

/// Live state of one server, shared across tables.
#[derive(Debug)]
pub struct ServerLive {
    admin: AtomicU8,
    health: AtomicU8,
    /// Sessions currently established or connecting to this server.
    pub sessions: AtomicU32,
    /// Sessions ever assigned to this server.
    pub total_sessions: AtomicU64,
    /// Bytes received from clients and sent to this server.
    pub bytes_in: AtomicU64,
    /// Bytes received from this server and sent to clients.
    pub bytes_out: AtomicU64,
    /// Failed connection attempts.
    pub connect_errors: AtomicU64,
    /// When the server last became usable (for `slowstart`); `None` = since start.
    usable_since: Mutex<Option<Instant>>,
    /// Cancelled to close every session on this server (`shutdown-sessions`, role loss).
    kill: ArcSwap<CancellationToken>,
    /// The `disabled` flag of the last configuration applied, so a reload applies only a change.
    config_disabled: AtomicBool,
    /// Administrative state the agent asked for (`ready`/`drain`/`maint`), kept apart from
    /// the operator's so `ready` from the agent cannot cancel an operator's maintenance.
    agent_admin: AtomicU8,
    /// Operating state the agent reported (`up`, or `down`/`fail`/`stopped`).
    agent_health: AtomicU8,
    /// `N%` from the agent: the share of the configured weight to use.
    pub agent_weight_pct: AtomicU32,
    /// `maxconn:N` from the agent; 0 = not set.
    pub agent_maxconn: AtomicU32,
    /// The last health check's result.
    pub last_check: ArcSwapOption<CheckResult>,
    /// The last agent check's result.
    pub last_agent: ArcSwapOption<CheckResult>,
    /// Failed health checks.
    pub check_failures: AtomicU64,
    /// Transitions from UP to DOWN.
    pub down_transitions: AtomicU64,
    /// The role the node last reported (role checks or the agent's `#role=`).
    role: AtomicU8,
    /// The role etcd gives a discovered server (`Unknown` for `server` lines).
    etcd_role: AtomicU8,
    /// The administrative state etcd asks for (a member's `state`), kept apart like the
    /// agent's so etcd's `ready` cannot cancel an operator's maintenance.
    etcd_admin: AtomicU8,
    /// Replication lag in bytes; `u64::MAX` = unknown.
    pub lag_bytes: AtomicU64,
    /// Replication lag in milliseconds; `u64::MAX` = unknown.
    pub lag_ms: AtomicU64,
    /// Whether the lag is within `max-lag` (with hysteresis), kept by the role checker.
    lag_ok: AtomicBool,
    /// The last role check's outcome, for logs, the admin API and metrics.
    pub last_role_check: ArcSwapOption<RoleCheckState>,
    /// Where the role was learnt (the check destination of the last configuration applied).
    role_target: Mutex<Option<SocketAddr>>,
    /// Weight set by the operator (`set server B/S weight`), [`NO_WEIGHT`] when none; it
    /// replaces the configured weight and survives reloads.
    operator_weight: AtomicU32,
    /// The health check's rise/fall counter (HAProxy's `check_health`), [`NO_HEALTH`] until a
    /// check task publishes it.
    check_health: AtomicU32,
    /// Most sessions ever open at once on this server.
    pub max_sessions: AtomicU32,
    /// Session counters and timings beyond the basic ones (for metrics and reports).
    pub traffic: TrafficStats,
    /// How long checks of this server take.
    pub check_durations: CheckDurations,
    /// When the operating or administrative state last changed (`lastchg` in `show stat`).
    changed_at: Mutex<Instant>,
    /// Time spent stopped (down or in maintenance).
    downtime: Downtime,
}

/// The role a node reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum NodeRole {
    /// Not known yet, or the last role checks failed: never eligible where a role is required.
    Unknown = 0,
    /// Accepts writes.
    Primary = 1,
    /// In recovery / read-only.
    Replica = 2,
}

impl NodeRole {
    fn from_u8(v: u8) -> NodeRole {
        match v {
            1 => NodeRole::Primary,
            2 => NodeRole::Replica,
            _ => NodeRole::Unknown,
        }
    }

    /// Lower-case name (`primary`, `replica`, `unknown`).
    pub fn name(self) -> &'static str {
        match self {
            NodeRole::Unknown => "unknown",
            NodeRole::Primary => "primary",
            NodeRole::Replica => "replica",
        }
    }
}

/// Why a role check did not give a role, kept apart so a broken check transport never looks
/// like a demoted database, nor the reverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RoleProblem {
    /// The check port could not be reached in time (timeout, unreachable network).
    Unreachable,
    /// The connection was refused (nothing listens: the database is down).
    Refused,
    /// The database answered but refused us (authentication, permissions).
    Rejected,
    /// The answer was not what a database says (garbage, protocol error, hang mid-handshake).
    BadAnswer,
}

impl RoleProblem {
    /// Short name for logs and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            RoleProblem::Unreachable => "unreachable",
            RoleProblem::Refused => "refused",
            RoleProblem::Rejected => "rejected",
            RoleProblem::BadAnswer => "bad_answer",
        }
    }
}

/// The outcome of the last role check.
#[derive(Debug, Clone, PartialEq)]
pub struct RoleCheckState {
    /// The role reported, or `Unknown`.
    pub role: NodeRole,
    /// Why there is no role, when the check failed.
    pub problem: Option<RoleProblem>,
    /// Detail for humans (the driver's error, the lag numbers).
    pub detail: String,
    /// How long the check took.
    pub duration: Duration,
}

/// [`ServerLive::operator_weight`] when the operator has set no weight.
const NO_WEIGHT: u32 = u32::MAX;
/// [`ServerLive::check_health`] before any check task has published its counter.
const NO_HEALTH: u32 = u32::MAX;

impl Default for ServerLive {
    fn default() -> Self {
        ServerLive {
            admin: AtomicU8::new(AdminState::Ready as u8),
            health: AtomicU8::new(Health::Up as u8),
            sessions: AtomicU32::new(0),
            total_sessions: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            connect_errors: AtomicU64::new(0),
            usable_since: Mutex::new(None),
            kill: ArcSwap::from_pointee(CancellationToken::new()),
            config_disabled: AtomicBool::new(false),
            agent_admin: AtomicU8::new(AdminState::Ready as u8),
            agent_health: AtomicU8::new(Health::Up as u8),
            agent_weight_pct: AtomicU32::new(100),
            agent_maxconn: AtomicU32::new(0),
            last_check: ArcSwapOption::empty(),
            last_agent: ArcSwapOption::empty(),
            check_failures: AtomicU64::new(0),
            down_transitions: AtomicU64::new(0),
            role: AtomicU8::new(NodeRole::Unknown as u8),
            etcd_role: AtomicU8::new(NodeRole::Unknown as u8),
            etcd_admin: AtomicU8::new(AdminState::Ready as u8),
            lag_bytes: AtomicU64::new(u64::MAX),
            lag_ms: AtomicU64::new(u64::MAX),
            lag_ok: AtomicBool::new(false),
            last_role_check: ArcSwapOption::empty(),
            role_target: Mutex::new(None),
            operator_weight: AtomicU32::new(NO_WEIGHT),
            check_health: AtomicU32::new(NO_HEALTH),
            max_sessions: AtomicU32::new(0),
            traffic: TrafficStats::default(),
            check_durations: CheckDurations::default(),
            changed_at: Mutex::new(Instant::now()),
            downtime: Downtime::default(),
        }
    }
}

impl AdminState {
    /// The word HAProxy prints for it (`READY`, `DRAIN`, `MAINT`).
    pub fn word(self) -> &'static str {
        match self {
            AdminState::Ready => "READY",
            AdminState::Drain => "DRAIN",
            AdminState::Maint => "MAINT",
        }
    }

    fn from_u8(v: u8) -> AdminState {
        match v {
            0 => AdminState::Ready,
            1 => AdminState::Drain,
            _ => AdminState::Maint,
        }
    }
}

impl Health {
    fn from_u8(v: u8) -> Health {
        match v {
            0 => Health::Up,
            _ => Health::Down,
        }
    }
}

impl ServerLive {
    /// Current administrative state set by the configuration or the operator.
    pub fn admin(&self) -> AdminState {
        AdminState::from_u8(self.admin.load(Ordering::Acquire))
    }

    /// Administrative state the agent asked for.
    pub fn agent_admin(&self) -> AdminState {
        AdminState::from_u8(self.agent_admin.load(Ordering::Acquire))
    }

    /// Sets the agent's administrative state; returns the previous one.
    pub fn set_agent_admin(&self, state: AdminState) -> AdminState {
        let prev = AdminState::from_u8(self.agent_admin.swap(state as u8, Ordering::AcqRel));
        self.note_change(prev != state);
        if prev != AdminState::Ready
            && state == AdminState::Ready
            && self.admin() == AdminState::Ready
        {
            self.mark_usable_now();
        }
        prev
    }

    /// Operating state the agent reported.
    pub fn agent_health(&self) -> Health {
        Health::from_u8(self.agent_health.load(Ordering::Acquire))
    }

    /// Sets the agent's operating state; returns the previous one.
    pub fn set_agent_health(&self, health: Health) -> Health {
        let prev = Health::from_u8(self.agent_health.swap(health as u8, Ordering::AcqRel));
        self.note_change(prev != health);
        if prev == Health::Down && health == Health::Up && self.health() == Health::Up {
            self.mark_usable_now();
        }
        prev
    }

    /// The administrative state in force: the strictest of the operator's, the agent's and
    /// etcd's.
    pub fn effective_admin(&self) -> AdminState {
        AdminState::from_u8(
            self.admin
                .load(Ordering::Acquire)
                .max(self.agent_admin.load(Ordering::Acquire))
                .max(self.etcd_admin.load(Ordering::Acquire)),
        )
    }

    /// The role etcd gives this server (`Unknown` when it was not discovered).
    pub fn etcd_role(&self) -> NodeRole {
        NodeRole::from_u8(self.etcd_role.load(Ordering::Acquire))
    }

    /// The administrative state etcd asks for.
    pub fn etcd_admin(&self) -> AdminState {
        AdminState::from_u8(self.etcd_admin.load(Ordering::Acquire))
    }

    /// Records what etcd says about this server (`None`: not discovered); returns the
    /// previous etcd role.
    pub fn apply_etcd(&self, view: Option<EtcdView>) -> NodeRole {
        let (role, admin) = match view {
            None => (NodeRole::Unknown, AdminState::Ready),
            Some(v) => (
                match v.role {
                    EtcdRole::Primary => NodeRole::Primary,
                    EtcdRole::Replica => NodeRole::Replica,
                },
                match v.state {
                    EtcdState::Ready => AdminState::Ready,
                    EtcdState::Drain => AdminState::Drain,
                    EtcdState::Maint => AdminState::Maint,
                },
            ),
        };
        let prev_admin = AdminState::from_u8(self.etcd_admin.swap(admin as u8, Ordering::AcqRel));
        self.note_change(prev_admin != admin);
        if prev_admin != AdminState::Ready
            && admin == AdminState::Ready
            && self.effective_admin() == AdminState::Ready
        {
            self.mark_usable_now();
        }
        NodeRole::from_u8(self.etcd_role.swap(role as u8, Ordering::AcqRel))
    }

    /// The health in force: DOWN when either the checks or the agent say so.
    pub fn effective_health(&self) -> Health {
        Health::from_u8(
            self.health
                .load(Ordering::Acquire)
                .max(self.agent_health.load(Ordering::Acquire)),
        )
    }

    /// Sets the administrative state; returns the previous one.
    pub fn set_admin(&self, state: AdminState) -> AdminState {
        let prev = AdminState::from_u8(self.admin.swap(state as u8, Ordering::AcqRel));
        self.note_change(prev != state);
        if prev != AdminState::Ready && state == AdminState::Ready {
            self.mark_usable_now();
        }
        prev
    }

    /// Applies the configuration's `disabled` flag when it differs from the last one seen, so
    /// a reload that adds or removes `disabled` takes effect while state set at run time
    /// (admin API) otherwise survives reloads.
    pub fn apply_config_disabled(&self, disabled: bool) {
        if self.config_disabled.swap(disabled, Ordering::AcqRel) != disabled {
            self.set_admin(if disabled {
                AdminState::Maint
            } else {
                AdminState::Ready
            });
        }
    }

    /// Current health as the health checks see it.
    pub fn health(&self) -> Health {
        Health::from_u8(self.health.load(Ordering::Acquire))
    }

    /// Sets the health; returns the previous one.
    pub fn set_health(&self, health: Health) -> Health {
        let prev = Health::from_u8(self.health.swap(health as u8, Ordering::AcqRel));
        self.note_change(prev != health);
        if prev == Health::Down && health == Health::Up {
            self.mark_usable_now();
        }
        prev
    }

    /// Whether the configuration applied last marks this server `disabled`.
    pub fn config_disabled(&self) -> bool {
        self.config_disabled.load(Ordering::Acquire)
    }

    /// The operator's weight, if one is set.
    pub fn operator_weight(&self) -> Option<u32> {
        match self.operator_weight.load(Ordering::Acquire) {
            NO_WEIGHT => None,
            w => Some(w),
        }
    }

    /// Sets (or with `None` clears) the operator's weight; the table must be rebuilt after.
    pub fn set_operator_weight(&self, weight: Option<u32>) {
        let w = weight.map_or(NO_WEIGHT, |w| w.min(NO_WEIGHT - 1));
        self.operator_weight.store(w, Ordering::Release);
    }

    /// The user weight (`srv_uweight`): the operator's weight, else the configured one,
    /// scaled by the agent's `N%`; `slowstart` is applied on top of it.
    pub fn user_weight(&self, configured: u32) -> u32 {
        self.agent_scaled_weight(self.operator_weight().unwrap_or(configured))
    }

    /// The health check's rise/fall counter, once a check task has published one.
    pub fn check_health(&self) -> Option<u32> {
        match self.check_health.load(Ordering::Acquire) {
            NO_HEALTH => None,
            h => Some(h),
        }
    }

    /// Publishes the health check's rise/fall counter (for `show stat` and `show servers state`).
    pub fn set_check_health(&self, counter: u32) {
        self.check_health
            .store(counter.min(NO_HEALTH - 1), Ordering::Release);
    }

    /// When the operating or administrative state last changed.
    pub fn changed_at(&self) -> Instant {
        *self
            .changed_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn note_change(&self, changed: bool) {
        if changed {
            let now = Instant::now();
            *self
                .changed_at
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = now;
            let stopped = self.effective_admin() == AdminState::Maint
                || self.effective_health() == Health::Down;
            self.downtime.set(stopped, now);
        }
    }

    /// Time spent stopped (down or in maintenance) since the process started.
    pub fn downtime(&self, now: Instant) -> Duration {
        self.downtime.total(now)
    }

    fn mark_usable_now(&self) {
        *self
            .usable_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
    }

    /// Whether the server may take new connections at all (before role and limits).
    pub fn eligible(&self) -> bool {
        self.effective_admin() == AdminState::Ready && self.effective_health() == Health::Up
    }

    /// The role the node last reported.
    pub fn role(&self) -> NodeRole {
        NodeRole::from_u8(self.role.load(Ordering::Acquire))
    }

    /// Records the node's role; returns the previous one.
    pub fn set_role(&self, role: NodeRole) -> NodeRole {
        NodeRole::from_u8(self.role.swap(role as u8, Ordering::AcqRel))
    }

    /// Notes the server's check destination from the configuration being applied; when a
    /// reload moved the name to another node, what was known of the old node's role no longer
    /// holds: the role becomes unknown until a role check of the new node answers.
    pub fn apply_role_target(&self, target: SocketAddr) {
        let mut seen = self
            .role_target
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if seen.is_some_and(|old| old != target) {
            self.set_role(NodeRole::Unknown);
            self.set_lag_ok(false);
            self.lag_bytes.store(u64::MAX, Ordering::Relaxed);
            self.lag_ms.store(u64::MAX, Ordering::Relaxed);
        }
        *seen = Some(target);
    }

    /// Whether the lag is within `max-lag` (as last decided by the role checker).
    pub fn lag_ok(&self) -> bool {
        self.lag_ok.load(Ordering::Acquire)
    }

    /// Records whether the lag is within `max-lag`; returns the previous value.
    pub fn set_lag_ok(&self, ok: bool) -> bool {
        self.lag_ok.swap(ok, Ordering::AcqRel)
    }

    /// The configured weight scaled by the agent's `N%`.
    pub fn agent_scaled_weight(&self, weight: u32) -> u32 {
        let pct = self.agent_weight_pct.load(Ordering::Acquire);
        // HAProxy caps the resulting weight, not the percentage, at 256.
        let scaled = u64::from(weight) * u64::from(pct) / 100;
        u32::try_from(scaled.min(256)).unwrap_or(256)
    }

    /// `maxconn` in force: the agent's `maxconn:N` when set, else the configured one.
    pub fn maxconn(&self, configured: Option<u32>) -> Option<u32> {
        match self.agent_maxconn.load(Ordering::Acquire) {
            0 => configured,
            n => Some(n),
        }
    }

    /// Takes a session slot unless `maxconn` is reached.
    pub fn try_acquire(&self, maxconn: Option<u32>) -> bool {
        let limit = match maxconn {
            Some(m) if m > 0 => m,
            _ => u32::MAX,
        };
        match self
            .sessions
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            }) {
            Ok(prev) => {
                self.max_sessions.fetch_max(prev + 1, Ordering::Relaxed);
                true
            }
            Err(_) => false,
        }
    }

    /// Gives back a slot taken by [`ServerLive::try_acquire`].
    pub fn release(&self) {
        self.sessions.fetch_sub(1, Ordering::AcqRel);
    }

    /// The token a new session watches: cancelled when the server's sessions must close.
    pub fn kill_token(&self) -> CancellationToken {
        (**self.kill.load()).clone()
    }

    /// Closes every session currently open on this server.
    pub fn shutdown_sessions(&self) {
        let old = self.kill.swap(Arc::new(CancellationToken::new()));
        old.cancel();
    }

    /// Where the server stands in its `slowstart` ramp now; `None` when it is not ramping
    /// (no `slowstart`, never went down since start, or the ramp is over).
    pub fn ramp(&self, slowstart: Option<Duration>, now: Instant) -> Option<Ramp> {
        // The config keeps `slowstart` in whole seconds, as HAProxy does.
        let length = slowstart?.as_secs();
        let since = (*self
            .usable_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner))?;
        let elapsed = now.saturating_duration_since(since).as_secs();
        (elapsed < length).then_some(Ramp { elapsed, length })
    }

    /// Whether this server is still ramping up under `slowstart` (HAProxy's STARTING state).
    pub fn in_slowstart(&self, slowstart: Option<Duration>, now: Instant) -> bool {
        self.ramp(slowstart, now).is_some()
    }
}

/// A server's place in its `slowstart` ramp, in the whole seconds HAProxy counts it in
/// (`server_recalc_eweight`): it steps once a second after the server came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ramp {
    /// Whole seconds since the server came back.
    elapsed: u64,
    /// `slowstart` in seconds (more than `elapsed`).
    length: u64,
}

impl Ramp {
    /// The effective weight of a server with user weight `uweight` on HAProxy's scale
    /// (`uweight * 16` at full throttle): `uweight * ((16 * elapsed + length) / length)`,
    /// so a weight-1 server starts at 1/16 of its share and gains a step every second.
    pub fn eweight(self, uweight: u32) -> u32 {
        let step = (u64::from(WEIGHT_SCALE) * self.elapsed + self.length) / self.length;
        u32::try_from(u64::from(uweight) * step).unwrap_or(u32::MAX)
    }

    /// `maxconn` throttled as HAProxy's `srv_dynamic_maxconn` does while starting: the
    /// whole percentage of the ramp done, at least one session.
    pub fn maxconn(self, maxconn: u32) -> u32 {
        let ratio = 100 * self.elapsed / self.length;
        u32::try_from(u64::from(maxconn) * ratio / 100)
            .unwrap_or(maxconn)
            .max(1)
    }
}

/// Whether HAProxy ramps the weight of `balance` under `slowstart` (its "dynamic"
/// algorithms); `static-rr` and map-based hashing keep full weights, only `maxconn` ramps.
pub fn ramps_weight(balance: config::Balance, hash_type: config::HashType) -> bool {
    use config::{Balance, HashType};
    match balance {
        Balance::RoundRobin | Balance::LeastConn | Balance::First => true,
        Balance::StaticRr => false,
        Balance::Source => hash_type == HashType::Consistent,
    }
}

/// Samples in the sliding average of session times (HAProxy's `TIME_STATS_SAMPLES`).
const TIME_SAMPLES: u64 = 1024;

/// A lock-free average of the last [`TIME_SAMPLES`] values (a true average before that many),
/// in HAProxy's sliding-window style: adding `v` takes `sum / n` out and puts `v` in.
#[derive(Debug, Default)]
pub struct SlidingAverage {
    count: AtomicU64,
    sum: AtomicU64,
}

impl SlidingAverage {
    /// Adds one sample.
    pub fn add(&self, value: u64) {
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |sum| {
                Some(if n <= TIME_SAMPLES {
                    sum.saturating_add(value)
                } else {
                    (sum - sum / TIME_SAMPLES).saturating_add(value)
                })
            });
    }

    /// The current average; 0 before the first sample.
    pub fn get(&self) -> u64 {
        let n = self.count.load(Ordering::Relaxed).min(TIME_SAMPLES);
        if n == 0 {
            return 0;
        }
        self.sum.load(Ordering::Relaxed) / n
    }
}

/// Per-server (and per-backend) session counters beyond the basic ones, all atomics so the
/// data path counts without a lock. Times are in milliseconds.
#[derive(Debug, Default)]
pub struct TrafficStats {
    /// Connection attempts (first tries and retries).
    pub connect_attempts: AtomicU64,
    /// Retries after a failed connection attempt.
    pub retries: AtomicU64,
    /// Sessions moved to another server after failed attempts (`option redispatch`).
    pub redispatches: AtomicU64,
    /// Sessions ended by a client reset or error.
    pub client_aborts: AtomicU64,
    /// Sessions ended by a server reset or error.
    pub server_aborts: AtomicU64,
    /// Average time spent queued.
    pub queue_ms: SlidingAverage,
    /// Average time to connect.
    pub connect_ms: SlidingAverage,
    /// Average total session time.
    pub total_ms: SlidingAverage,
    /// Longest time spent queued.
    pub max_queue_ms: AtomicU64,
    /// Longest time to connect.
    pub max_connect_ms: AtomicU64,
    /// Longest total session time.
    pub max_total_ms: AtomicU64,
    /// Unix time in seconds of the last session started; 0 = never.
    pub last_session: AtomicU64,
    /// Sessions started per second (for the highest rate seen).
    pub session_rate: RateMax,
}

impl TrafficStats {
    /// Records that a session got connected after `queue` waiting and `connect` connecting.
    pub fn record_start(&self, queue: Duration, connect: Duration) {
        let (q, c) = (millis(queue), millis(connect));
        self.queue_ms.add(q);
        self.connect_ms.add(c);
        self.max_queue_ms.fetch_max(q, Ordering::Relaxed);
        self.max_connect_ms.fetch_max(c, Ordering::Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.last_session.store(now, Ordering::Relaxed);
        self.session_rate.tick();
    }

    /// Records that a session ended after `total` in all.
    pub fn record_end(&self, total: Duration) {
        let t = millis(total);
        self.total_ms.add(t);
        self.max_total_ms.fetch_max(t, Ordering::Relaxed);
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Time accumulated in a "stopped" state (a server down or in maintenance, a backend with
/// no usable server). Written only by the control plane, so a mutex is fine here.
#[derive(Debug, Default)]
pub struct Downtime {
    state: Mutex<DowntimeState>,
}

#[derive(Debug, Default)]
struct DowntimeState {
    total: Duration,
    since: Option<Instant>,
    /// Whether a state was recorded yet (the first one is where it starts, not a transition).
    seen: bool,
    /// Transitions from running to stopped.
    downs: u64,
}

impl Downtime {
    /// Records whether the object is stopped from `now` on.
    pub fn set(&self, stopped: bool, now: Instant) {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let first = !std::mem::replace(&mut st.seen, true);
        match (st.since, stopped) {
            (None, true) => {
                st.since = Some(now);
                if !first {
                    st.downs += 1;
                }
            }
            (Some(since), false) => {
                st.total += now.saturating_duration_since(since);
                st.since = None;
            }
            _ => {}
        }
    }

    /// How many times it went from running to stopped (its first state aside).
    pub fn transitions(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .downs
    }

    /// The time spent stopped up to `now`.
    pub fn total(&self, now: Instant) -> Duration {
        let st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        st.total
            + st.since
                .map_or(Duration::ZERO, |s| now.saturating_duration_since(s))
    }
}

/// Events per wall-clock second and the highest such count seen, lock-free: the current
/// second and its count share one atomic word.
#[derive(Debug, Default)]
pub struct RateMax {
    current: AtomicU64,
    max: AtomicU64,
}

impl RateMax {
    /// Counts one event now.
    pub fn tick(&self) {
        let sec = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            & 0xffff_ffff;
        let mut count = 1;
        let _ = self
            .current
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |word| {
                count = if word >> 32 == sec {
                    (word & 0xffff_ffff) + 1
                } else {
                    1
                };
                Some(sec << 32 | count)
            });
        self.max.fetch_max(count, Ordering::Relaxed);
    }

    /// Events so far in the current second (0 when the last one is older).
    pub fn current(&self) -> u64 {
        let sec = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            & 0xffff_ffff;
        let word = self.current.load(Ordering::Relaxed);
        if word >> 32 == sec {
            word & 0xffff_ffff
        } else {
            0
        }
    }

    /// The highest count seen in one second.
    pub fn max(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }
}

/// Upper bounds (seconds) of the check duration histogram's buckets.
pub const CHECK_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A lock-free histogram of durations over [`CHECK_BUCKETS`].
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; CHECK_BUCKETS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    /// Adds one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = CHECK_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Cumulative counts per bucket (as Prometheus wants them), the total count and the sum
    /// in seconds.
    pub fn snapshot(&self) -> ([u64; CHECK_BUCKETS.len()], u64, f64) {
        let mut out = [0; CHECK_BUCKETS.len()];
        let mut acc = 0;
        for (o, b) in out.iter_mut().zip(&self.buckets) {
            acc += b.load(Ordering::Relaxed);
            *o = acc;
        }
        let count = self.count.load(Ordering::Relaxed).max(acc);
        #[allow(clippy::cast_precision_loss)]
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        (out, count, sum)
    }
}

/// How long each kind of check of one server takes.
#[derive(Debug, Default)]
pub struct CheckDurations {
    /// Health checks (`check`).
    pub health: Histogram,
    /// Agent checks (`agent-check`).
    pub agent: Histogram,
    /// Role checks (`role-check`).
    pub role: Histogram,
}

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
    writer: Mutex<Option<String>>,
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
    servers: Mutex<HashMap<(String, String), Arc<ServerLive>>>,
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

    /// Forgets entries no longer in `table` (their sessions keep their own `Arc`s).
    pub fn retain(&self, table: &Table) {
        // One lookup per entry, not a scan of the backend: backends may have 10,000 servers.
        let present: HashSet<(&str, &str)> = table
            .backends
            .values()
            .flat_map(|be| {
                be.servers
                    .iter()
                    .map(|s| (be.name.as_str(), s.name.as_str()))
            })
            .collect();
        self.servers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(b, s), _| present.contains(&(b.as_str(), s.as_str())));
        self.backends
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|b, _| table.backends.contains_key(b));
        self.frontends
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|f, _| table.frontends.iter().any(|fe| &fe.name == f));
    }
}

/// A server as the data path sees it in one table.
#[derive(Debug)]
pub struct ServerRt {
    /// Server name.
    pub name: String,
    /// Traffic address.
    pub addr: SocketAddr,
    /// `maxconn`.
    pub maxconn: Option<u32>,
    /// `maxqueue`.
    pub maxqueue: Option<u32>,
    /// `send-proxy` / `send-proxy-v2`.
    pub send_proxy: Option<ProxyProtocol>,
    /// `backup`.
    pub backup: bool,
    /// Weight in force: the configured one scaled by the agent's `N%` (0 takes no traffic).
    pub weight: u32,
    /// `slowstart`.
    pub slowstart: Option<Duration>,
    /// Where the server stood in its `slowstart` ramp when this table was built.
    pub ramp: Option<Ramp>,
    /// Effective weight on HAProxy's scale (`weight * 16`, ramped under `slowstart`): what
    /// the balancer shares connections by.
    pub eweight: u32,
    /// Live state shared across tables.
    pub live: Arc<ServerLive>,
}

impl ServerRt {
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
}

impl Pool {
    fn empty() -> Pool {
        Pool {
            members: Vec::new(),
            selector: None,
        }
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
    /// `option redispatch`.
    pub redispatch: bool,
    /// `option srvtcpka`.
    pub srvtcpka: bool,
    /// `balance source`: HAProxy queues each client on its hashed server, up to `maxqueue`.
    pub queue_per_server: bool,
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
    /// Live state shared across tables.
    pub live: Arc<BackendLive>,
}

/// The rules that decide which servers of a backend may take traffic by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleRule {
    /// `role`.
    pub role: Role,
    /// `max-lag` (with `role replica`).
    pub max_lag: Option<MaxLag>,
    /// `role-source`: who decides each server's role.
    pub source: RoleSource,
}

/// The role of a server as `source` decides it: the role checks', etcd's, or, with `both`,
/// the role both agree on (`Unknown` while they disagree or either does not know).
pub fn role_in_force(source: RoleSource, live: &ServerLive) -> NodeRole {
    match source {
        RoleSource::Check => live.role(),
        RoleSource::Etcd => live.etcd_role(),
        RoleSource::Both if live.role() == live.etcd_role() => live.role(),
        RoleSource::Both => NodeRole::Unknown,
    }
}

/// Whether `s` may take a new connection under `rule`: eligible (admin, health) and having
/// the role the backend needs. Backups of a `role replica` backend (typically the primary,
/// the read fallback) need a known role, not `replica`.
pub fn admits(rule: RoleRule, s: &ServerRt) -> bool {
    if !s.live.eligible() {
        return false;
    }
    let role = role_in_force(rule.source, &s.live);
    match rule.role {
        Role::Any => true,
        Role::Primary => role == NodeRole::Primary,
        Role::Replica if s.backup => role != NodeRole::Unknown,
        Role::Replica => role == NodeRole::Replica && (rule.max_lag.is_none() || s.live.lag_ok()),
    }
}

/// The servers of a `role primary` backend whose role under `source` is primary, leaving
/// out those in maintenance.
pub fn primaries(source: RoleSource, servers: &[ServerRt]) -> Vec<&ServerRt> {
    servers
        .iter()
        .filter(|s| {
            role_in_force(source, &s.live) == NodeRole::Primary
                && s.live.effective_admin() != AdminState::Maint
        })
        .collect()
}

/// The servers in a role conflict in a `role primary` backend (empty when there is none),
/// leaving out those in maintenance: more than one primary by the checks (split brain) or by
/// etcd; with `role-source both` also a disagreement, i.e. the checks and etcd naming
/// different primaries, or one calling a server primary that the other calls replica.
pub fn role_conflict(source: RoleSource, servers: &[ServerRt]) -> Vec<&ServerRt> {
    if !in_role_conflict(source, servers) {
        return Vec::new();
    }
    servers
        .iter()
        .filter(|s| claims_primary(source, &s.live))
        .collect()
}

/// Whether [`role_conflict`] would name anyone; allocation-free, for the data path's check on
/// every pick.
pub fn in_role_conflict(source: RoleSource, servers: &[ServerRt]) -> bool {
    let mut claimed = 0;
    for s in servers.iter().filter(|s| claims_primary(source, &s.live)) {
        claimed += 1;
        // With `both`, one side says primary and the other replica (not merely "unknown").
        let (check, etcd) = (s.live.role(), s.live.etcd_role());
        let contradicted = source == RoleSource::Both
            && check != etcd
            && check != NodeRole::Unknown
            && etcd != NodeRole::Unknown;
        if claimed > 1 || contradicted {
            return true;
        }
    }
    false
}

/// Whether a server out of maintenance is called primary by the role source (by either side
/// with `both`).
fn claims_primary(source: RoleSource, live: &ServerLive) -> bool {
    let by_check = live.role() == NodeRole::Primary;
    let by_etcd = live.etcd_role() == NodeRole::Primary;
    let claims = match source {
        RoleSource::Check => by_check,
        RoleSource::Etcd => by_etcd,
        RoleSource::Both => by_check || by_etcd,
    };
    claims && live.effective_admin() != AdminState::Maint
}

/// Says who claims what in a conflict, for the log: `a (check primary, etcd replica)`.
fn describe_conflict(source: RoleSource, servers: &[&ServerRt]) -> String {
    let names: Vec<String> = servers
        .iter()
        .map(|s| match source {
            RoleSource::Check | RoleSource::Etcd => s.name.clone(),
            RoleSource::Both => format!(
                "{} (check {}, etcd {})",
                s.name,
                s.live.role().name(),
                s.live.etcd_role().name()
            ),
        })
        .collect();
    names.join(" and ")
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
        match s.maxconn {
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

    /// Picks a server for a new connection from `client` and takes a slot on it; `exclude`
    /// skips one server (the one a redispatch moves away from). Returns the server's index.
    pub fn pick(&self, client: Option<IpAddr>, exclude: Option<usize>) -> Result<usize, NoServer> {
        // The single-writer guard, re-checked on every pick from the live roles so that the
        // window between a role report and the next table is closed too.
        if self.role == Role::Primary && in_role_conflict(self.role_source, &self.servers) {
            self.live.conflict_refusals.fetch_add(1, Ordering::Relaxed);
            return Err(NoServer::RoleConflict);
        }
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
        };
        // A pick can race with other sessions for the last slot; try a few times.
        for _ in 0..4 {
            let Some(i) = selector.pick(&live, client) else {
                return Err(NoServer::AllFull);
            };
            let idx = pool.members[i];
            let server = &self.servers[idx];
            if server.live.try_acquire(server.maxconn) {
                let open = self.live.sessions.fetch_add(1, Ordering::AcqRel) + 1;
                self.live.max_sessions.fetch_max(open, Ordering::Relaxed);
                return Ok(idx);
            }
        }
        Err(NoServer::AllFull)
    }

    /// Gives back the slot of server `idx` and wakes one queued connection.
    pub fn release(&self, idx: usize) {
        if let Some(s) = self.servers.get(idx) {
            s.live.release();
            self.live.sessions.fetch_sub(1, Ordering::AcqRel);
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
            match s.maxqueue {
                Some(q) if q > 0 => total = total.saturating_add(q),
                _ => return None,
            }
        }
        Some(total)
    }
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
    /// `option dontlognull`.
    pub dontlognull: bool,
    /// `option clitcpka`.
    pub clitcpka: bool,
    /// Live state shared across tables.
    pub live: Arc<FrontendLive>,
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
}

impl Table {
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
                warnings: Vec::new(),
            }),
        }
    }

    /// Builds generation `generation` from `config`, taking live state from `registry`.
    /// Servers seen for the first time start as `disabled` says.
    pub fn build(config: &Config, registry: &Registry, generation: u64, now: Instant) -> Table {
        Table::build_shared(Arc::new(config.clone()), registry, generation, now)
    }

    /// [`Table::build`] from a configuration the caller shares (no copy of it is made).
    pub fn build_shared(
        config: Arc<Config>,
        registry: &Registry,
        generation: u64,
        now: Instant,
    ) -> Table {
        let mut backends = HashMap::new();
        for be in &config.backends {
            backends.insert(be.name.clone(), Arc::new(build_backend(be, registry, now)));
        }
        let mut frontends = Vec::new();
        let mut listeners = HashMap::new();
        for fe in &config.frontends {
            let Some(backend) = backends.get(&fe.backend).cloned() else {
                // config::load guarantees the reference; a missing one would be a parser bug.
                tracing::error!(frontend = %fe.name, backend = %fe.backend, "frontend refers to an unknown backend; not serving it");
                continue;
            };
            let rt = Arc::new(FrontendRt {
                name: fe.name.clone(),
                backend,
                maxconn: fe.maxconn.or(config.global.maxconn),
                timeout_client: fe.timeout_client,
                timeout_client_fin: fe.timeout_client_fin,
                tcplog: fe.tcplog,
                dontlognull: fe.dontlognull,
                clitcpka: fe.clitcpka,
                live: registry.frontend(&fe.name),
            });
            if !fe.disabled {
                for bind in &fe.binds {
                    listeners.insert(bind.addr, rt.clone());
                }
            }
            frontends.push(rt);
        }
        Table {
            generation,
            maxconn: config.global.maxconn,
            frontends,
            listeners,
            backends,
            config,
        }
    }

    /// Whether a server's `slowstart` ramp moved to another step since this table was built
    /// (the table must then be rebuilt, so weights and `maxconn` follow the ramp).
    pub fn ramping(&self, now: Instant) -> bool {
        self.backends.values().any(|b| {
            b.servers
                .iter()
                .any(|s| s.live.eligible() && s.live.ramp(s.slowstart, now) != s.ramp)
        })
    }
}

/// Closes the sessions of servers that a swap from `old` to `new` removes from a `role
/// primary` backend while they were its primary. A removed server otherwise drains (its
/// sessions run to their end), but writes must not go on to a node that lost the writer's
/// place. A backend removed whole is left alone, as any removed backend.
pub fn close_removed_writers(old: &Table, new: &Table) {
    for (name, before) in &old.backends {
        let Some(after) = new.backends.get(name) else {
            continue;
        };
        if before.role != Role::Primary {
            continue;
        }
        for s in primaries(before.role_source, &before.servers) {
            if !after.servers.iter().any(|x| x.name == s.name) {
                tracing::warn!(
                    backend = %name,
                    "the primary {} was removed: closing its sessions",
                    s.name
                );
                s.live.shutdown_sessions();
            }
        }
    }
}

/// Records `primary` as the one writer of `backend`; when it differs from the previous one,
/// closes every session on the other servers, so that writes opened before a failover cannot
/// keep going to the old primary (even one that stayed reachable through a pooler).
fn hand_over_writes(backend: &str, servers: &[ServerRt], live: &BackendLive, primary: &str) {
    let mut writer = live.writer.lock().unwrap_or_else(PoisonError::into_inner);
    match writer.as_deref() {
        Some(prev) if prev != primary => {
            tracing::warn!(
                backend,
                "{primary} is now the primary (was {prev}): closing sessions to every other server"
            );
            for s in servers.iter().filter(|s| s.name != primary) {
                s.live.shutdown_sessions();
            }
        }
        Some(_) => return,
        None => {}
    }
    *writer = Some(primary.to_owned());
}

fn server_key(backend: &str, server: &str) -> u64 {
    let mut h = DefaultHasher::new();
    backend.hash(&mut h);
    server.hash(&mut h);
    h.finish()
}

fn build_backend(be: &config::Backend, registry: &Registry, now: Instant) -> BackendRt {
    let live = registry.backend(&be.name);
    let rule = RoleRule {
        role: be.role,
        max_lag: be.max_lag,
        source: be.role_source,
    };
    let servers: Vec<ServerRt> = be
        .servers
        .iter()
        .map(|s| {
            let (slive, _) = registry.server(&be.name, &s.name);
            slive.apply_config_disabled(s.disabled);
            slive.apply_role_target(SocketAddr::new(
                s.check_addr.unwrap_or(s.addr.ip()),
                s.check_port.unwrap_or(s.addr.port()),
            ));
            let etcd_was = slive.apply_etcd(s.etcd);
            if etcd_was == NodeRole::Primary
                && slive.etcd_role() != NodeRole::Primary
                && be.role == Role::Primary
                && be.role_source != RoleSource::Check
            {
                tracing::warn!(
                    backend = %be.name,
                    "etcd no longer names {} the primary: closing its sessions",
                    s.name
                );
                slive.shutdown_sessions();
            }
            let weight = slive.user_weight(s.weight);
            let ramp = slive.ramp(s.slowstart, now);
            let eweight = match ramp {
                Some(r) if ramps_weight(be.balance, be.hash_type) => r.eweight(weight),
                _ => weight * WEIGHT_SCALE,
            };
            let maxconn = slive.maxconn(s.maxconn).map(|m| match ramp {
                Some(r) if m > 0 => r.maxconn(m),
                _ => m,
            });
            ServerRt {
                name: s.name.clone(),
                addr: s.addr,
                maxconn,
                maxqueue: s.maxqueue,
                send_proxy: s.send_proxy,
                backup: s.backup,
                weight,
                slowstart: s.slowstart,
                ramp,
                eweight,
                live: slive,
            }
        })
        .collect();
    let is_writer = be.role == Role::Primary;
    let conflicting = if is_writer {
        role_conflict(rule.source, &servers)
    } else {
        Vec::new()
    };
    let conflict = !conflicting.is_empty();
    let was = live.role_conflict.swap(conflict, Ordering::AcqRel);
    if conflict && !was {
        let who = describe_conflict(rule.source, &conflicting);
        let what = match rule.source {
            RoleSource::Check => format!("servers {who} all report primary"),
            RoleSource::Etcd => format!("etcd names servers {who} primary"),
            RoleSource::Both => format!("etcd and the role checks disagree on the primary: {who}"),
        };
        tracing::error!(
            backend = %be.name,
            "role conflict: {what}; refusing new connections until it is resolved"
        );
    } else if was && !conflict {
        tracing::warn!(backend = %be.name, "role conflict resolved; routing resumes");
    }
    let usable = |s: &ServerRt| !be.disabled && !conflict && s.weight > 0 && admits(rule, s);
    let writers: Vec<String> = if is_writer && !conflict {
        primaries(rule.source, &servers)
            .iter()
            .map(|s| s.name.clone())
            .collect()
    } else {
        Vec::new()
    };
    if let [only] = writers.as_slice() {
        hand_over_writes(&be.name, &servers, &live, only);
    }
    let members = |backup: bool| -> Vec<usize> {
        servers
            .iter()
            .enumerate()
            .filter(|(_, s)| s.backup == backup && usable(s))
            .map(|(i, _)| i)
            .collect()
    };
    let active_members = members(false);
    let mut backup_members = members(true);
    if !be.allbackups {
        backup_members.truncate(1);
    }
    let pool = |members: Vec<usize>, cursor: &Arc<Cursor>| -> Pool {
        if members.is_empty() {
            return Pool::empty();
        }
        let candidates: Vec<Candidate> = members
            .iter()
            .map(|&i| {
                let s = &servers[i];
                Candidate {
                    weight: s.eweight.max(1),
                    key: server_key(&be.name, &s.name),
                }
            })
            .collect();
        let selector = balance::build(be.balance, be.hash_type, &candidates, cursor.clone());
        Pool {
            members,
            selector: Some(selector),
        }
    };
    live.downtime.set(
        active_members.is_empty() && backup_members.is_empty(),
        Instant::now(),
    );
    let active = pool(active_members, &live.cursor);
    let backup = pool(backup_members, &live.backup_cursor);
    BackendRt {
        name: be.name.clone(),
        settings: BackendSettings {
            timeout_connect: be.timeout_connect,
            timeout_server: be.timeout_server,
            timeout_server_fin: be.timeout_server_fin,
            timeout_queue: be.timeout_queue.or(be.timeout_connect),
            timeout_tunnel: be.timeout_tunnel,
            retries: be.retries,
            redispatch: be.redispatch,
            srvtcpka: be.srvtcpka,
            queue_per_server: be.balance == config::Balance::Source,
        },
        servers,
        active,
        backup,
        role: rule.role,
        max_lag: rule.max_lag,
        role_source: rule.source,
        live,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Backend, Balance, CheckMethod, Global, HashType, Loc, Server};

    fn loc() -> Loc {
        Loc {
            file: Arc::from("test.cfg"),
            line: 1,
        }
    }

    fn server(name: &str, port: u16) -> Server {
        Server {
            name: name.to_owned(),
            loc: loc(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            check: false,
            inter: Duration::from_secs(2),
            fastinter: None,
            downinter: None,
            rise: 2,
            fall: 3,
            check_port: None,
            check_addr: None,
            weight: 1,
            backup: false,
            disabled: false,
            maxconn: None,
            maxqueue: None,
            slowstart: None,
            shutdown_sessions_on_down: false,
            shutdown_backup_sessions_on_up: false,
            agent: None,
            send_proxy: None,
            etcd: None,
        }
    }

    fn config(servers: Vec<Server>, allbackups: bool) -> Config {
        Config {
            global: Global::default(),
            frontends: Vec::new(),
            backends: vec![Backend {
                name: "be".to_owned(),
                loc: loc(),
                balance: Balance::RoundRobin,
                hash_type: HashType::MapBased,
                timeout_connect: None,
                timeout_server: None,
                timeout_server_fin: None,
                timeout_queue: None,
                timeout_tunnel: None,
                timeout_check: None,
                retries: 3,
                redispatch: false,
                allbackups,
                srvtcpka: false,
                check: CheckMethod::Tcp,
                servers,
                disabled: false,
                role: crate::config::Role::Any,
                role_check: None,
                max_lag: None,
                role_source: crate::config::RoleSource::Check,
                discover: None,
                default_server: server("", 0),
            }],
            stats: Vec::new(),
            etcd: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn names(be: &BackendRt, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| {
                let idx = be.pick(None, None).expect("a server");
                be.release(idx);
                be.servers[idx].name.clone()
            })
            .collect()
    }

    #[test]
    fn live_state_survives_a_rebuild_and_is_dropped_with_its_server() {
        let reg = Registry::default();
        let now = Instant::now();
        let t1 = Table::build(
            &config(vec![server("a", 1), server("b", 2)], false),
            &reg,
            1,
            now,
        );
        let be1 = &t1.backends["be"];
        let idx = be1.pick(None, None).expect("pick");
        let live = be1.servers[idx].live.clone();
        assert_eq!(live.sessions.load(Ordering::Relaxed), 1);
        let t2 = Table::build(
            &config(vec![server("a", 1), server("b", 2)], false),
            &reg,
            2,
            now,
        );
        let same = t2.backends["be"]
            .servers
            .iter()
            .find(|s| s.name == be1.servers[idx].name);
        assert!(Arc::ptr_eq(&same.expect("still there").live, &live));
        let t3 = Table::build(&config(vec![server("c", 3)], false), &reg, 3, now);
        reg.retain(&t3);
        assert_eq!(reg.servers.lock().expect("lock").len(), 1);
        // The session still holds its state after its server left the table.
        be1.release(idx);
        assert_eq!(live.sessions.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn maxconn_full_servers_are_skipped_then_all_full_is_reported() {
        let reg = Registry::default();
        let mut a = server("a", 1);
        a.maxconn = Some(1);
        let mut b = server("b", 2);
        b.maxconn = Some(1);
        let t = Table::build(&config(vec![a, b], false), &reg, 1, Instant::now());
        let be = &t.backends["be"];
        let first = be.pick(None, None).expect("one");
        let second = be.pick(None, None).expect("two");
        assert_ne!(first, second);
        assert_eq!(be.pick(None, None), Err(NoServer::AllFull));
        be.release(first);
        assert_eq!(be.pick(None, None), Ok(first));
    }

    #[test]
    fn backups_serve_only_without_active_servers_first_one_unless_allbackups() {
        let reg = Registry::default();
        let mut c = server("c", 3);
        c.backup = true;
        let mut d = server("d", 4);
        d.backup = true;
        let mut a = server("a", 1);
        a.disabled = true;
        let servers = vec![a, c, d];
        let t = Table::build(&config(servers.clone(), false), &reg, 1, Instant::now());
        assert_eq!(names(&t.backends["be"], 4), ["c", "c", "c", "c"]);
        let t = Table::build(&config(servers.clone(), true), &reg, 2, Instant::now());
        let got = names(&t.backends["be"], 4);
        assert!(
            got.contains(&"c".to_owned()) && got.contains(&"d".to_owned()),
            "{got:?}"
        );
        // Re-enabling `a` by config (a reload dropping `disabled`) takes it back.
        let mut enabled = servers;
        enabled[0].disabled = false;
        let t = Table::build(&config(enabled, false), &reg, 3, Instant::now());
        assert_eq!(names(&t.backends["be"], 3), ["a", "a", "a"]);
    }

    #[test]
    fn drained_and_down_servers_take_no_new_connections() {
        let reg = Registry::default();
        let t = Table::build(
            &config(vec![server("a", 1), server("b", 2)], false),
            &reg,
            1,
            Instant::now(),
        );
        t.backends["be"].servers[0]
            .live
            .set_admin(AdminState::Drain);
        assert_eq!(names(&t.backends["be"], 3), ["b", "b", "b"]);
        t.backends["be"].servers[1].live.set_health(Health::Down);
        assert_eq!(t.backends["be"].pick(None, None), Err(NoServer::AllFull));
        let t = Table::build(
            &config(vec![server("a", 1), server("b", 2)], false),
            &reg,
            2,
            Instant::now(),
        );
        assert_eq!(
            t.backends["be"].pick(None, None),
            Err(NoServer::NoneAvailable)
        );
    }

    #[test]
    fn slowstart_ramps_like_haproxy_even_at_weight_one() {
        let live = ServerLive::default();
        let slowstart = Some(Duration::from_secs(10));
        assert_eq!(
            live.ramp(slowstart, Instant::now()),
            None,
            "no ramp at first start"
        );
        live.set_health(Health::Down);
        live.set_health(Health::Up);
        let back = Instant::now();
        let at = |secs: u64| back + Duration::from_millis(secs * 1000 + 500);
        // HAProxy's eweight of a weight-1 server each second of a 10 s slowstart (out of 16).
        let expected = [1, 2, 4, 5, 7, 9, 10, 12, 13, 15];
        for (sec, want) in expected.into_iter().enumerate() {
            let ramp = live.ramp(slowstart, at(sec as u64)).expect("ramping");
            assert_eq!(ramp.eweight(1), want, "second {sec}");
            assert_eq!(ramp.eweight(3), 3 * want, "second {sec}");
        }
        assert_eq!(
            live.ramp(slowstart, at(10)),
            None,
            "full throttle after 10 s"
        );
        let first = live.ramp(slowstart, at(0)).expect("ramping");
        assert_eq!(first.maxconn(10), 1, "at least one session");
        let half = live.ramp(slowstart, at(5)).expect("ramping");
        assert_eq!(half.maxconn(10), 5);
    }

    #[test]
    fn throttle_and_weight_columns_follow_haproxy() {
        let live = Arc::new(ServerLive::default());
        let rt = |weight: u32, ramp: Option<Ramp>| ServerRt {
            name: "s".into(),
            addr: SocketAddr::from(([127, 0, 0, 1], 1)),
            maxconn: None,
            maxqueue: None,
            send_proxy: None,
            backup: false,
            weight,
            slowstart: Some(Duration::from_secs(10)),
            ramp,
            eweight: ramp.map_or(weight * WEIGHT_SCALE, |r| r.eweight(weight)),
            live: live.clone(),
        };
        assert_eq!(rt(1, None).throttle(), None);
        assert_eq!(rt(1, None).shown_weight(), 1);
        let step = |elapsed| {
            Some(Ramp {
                elapsed,
                length: 10,
            })
        };
        // server_throttle_rate: (100 * eweight + 15) / (16 * uweight), rounded as HAProxy does.
        assert_eq!(rt(1, step(0)).throttle(), Some(7));
        assert_eq!(rt(1, step(0)).shown_weight(), 1);
        assert_eq!(rt(1, step(5)).throttle(), Some(57));
        assert_eq!(rt(100, step(5)).throttle(), Some(56));
        assert_eq!(rt(100, step(5)).shown_weight(), 57);
        assert_eq!(rt(1, step(9)).throttle(), Some(94));
        live.set_health(Health::Down);
        assert_eq!(rt(1, step(5)).throttle(), None, "not shown while down");
    }

    fn role_config(
        servers: Vec<Server>,
        role: crate::config::Role,
        max_lag: Option<MaxLag>,
    ) -> Config {
        let mut c = config(servers, false);
        c.backends[0].role = role;
        c.backends[0].max_lag = max_lag;
        c
    }

    #[test]
    fn role_primary_admits_only_a_reported_primary_and_unknown_is_never_eligible() {
        let reg = Registry::default();
        let c = role_config(vec![server("a", 1), server("b", 2)], Role::Primary, None);
        let t = Table::build(&c, &reg, 1, Instant::now());
        assert_eq!(
            t.backends["be"].pick(None, None),
            Err(NoServer::NoneAvailable),
            "no role answer yet"
        );
        t.backends["be"].servers[1].live.set_role(NodeRole::Primary);
        t.backends["be"].servers[0].live.set_role(NodeRole::Replica);
        let t = Table::build(&c, &reg, 2, Instant::now());
        assert_eq!(names(&t.backends["be"], 3), ["b", "b", "b"]);
    }

    #[test]
    fn two_primaries_refuse_every_new_connection_until_one_steps_down() {
        let reg = Registry::default();
        let c = role_config(vec![server("a", 1), server("b", 2)], Role::Primary, None);
        let t = Table::build(&c, &reg, 1, Instant::now());
        t.backends["be"].servers[0].live.set_role(NodeRole::Primary);
        // Even before the next table: the guard reads the live roles on every pick.
        t.backends["be"].servers[1].live.set_role(NodeRole::Primary);
        assert_eq!(
            t.backends["be"].pick(None, None),
            Err(NoServer::RoleConflict)
        );
        let t = Table::build(&c, &reg, 2, Instant::now());
        assert!(t.backends["be"].live.role_conflict.load(Ordering::Relaxed));
        assert!(t.backends["be"].active.members.is_empty());
        // An operator's maintenance on one of them resolves it.
        t.backends["be"].servers[0]
            .live
            .set_admin(AdminState::Maint);
        let t = Table::build(&c, &reg, 3, Instant::now());
        assert!(!t.backends["be"].live.role_conflict.load(Ordering::Relaxed));
        assert_eq!(names(&t.backends["be"], 2), ["b", "b"]);
    }

    #[test]
    fn a_new_sole_primary_closes_the_sessions_of_the_old_one() {
        let reg = Registry::default();
        let c = role_config(vec![server("a", 1), server("b", 2)], Role::Primary, None);
        let t = Table::build(&c, &reg, 1, Instant::now());
        let (a, b) = (
            t.backends["be"].servers[0].live.clone(),
            t.backends["be"].servers[1].live.clone(),
        );
        a.set_role(NodeRole::Primary);
        b.set_role(NodeRole::Replica);
        Table::build(&c, &reg, 2, Instant::now());
        let a_session = a.kill_token();
        // a goes silent (unknown): its sessions stay until another primary exists.
        a.set_role(NodeRole::Unknown);
        Table::build(&c, &reg, 3, Instant::now());
        assert!(!a_session.is_cancelled());
        b.set_role(NodeRole::Primary);
        Table::build(&c, &reg, 4, Instant::now());
        assert!(
            a_session.is_cancelled(),
            "old writer's sessions closed once b is the primary"
        );
        assert!(!b.kill_token().is_cancelled());
    }

    #[test]
    fn role_replica_needs_replicas_within_max_lag_and_backups_fall_back() {
        let reg = Registry::default();
        let mut p = server("p", 3);
        p.backup = true;
        let c = role_config(
            vec![server("r1", 1), server("r2", 2), p],
            Role::Replica,
            Some(MaxLag::Bytes(1024)),
        );
        let t = Table::build(&c, &reg, 1, Instant::now());
        let s = |i: usize| t.backends["be"].servers[i].live.clone();
        s(0).set_role(NodeRole::Replica);
        s(1).set_role(NodeRole::Replica);
        s(2).set_role(NodeRole::Primary);
        s(0).set_lag_ok(true);
        let t = Table::build(&c, &reg, 2, Instant::now());
        assert_eq!(
            names(&t.backends["be"], 2),
            ["r1", "r1"],
            "r2's lag is not known to be within max-lag"
        );
        s(0).set_lag_ok(false);
        let t = Table::build(&c, &reg, 3, Instant::now());
        assert_eq!(
            names(&t.backends["be"], 2),
            ["p", "p"],
            "no replica eligible: the backup primary takes reads"
        );
    }

    #[test]
    fn a_reload_that_moves_a_server_to_another_node_forgets_its_role() {
        let reg = Registry::default();
        let c = role_config(vec![server("a", 1)], Role::Primary, None);
        let t = Table::build(&c, &reg, 1, Instant::now());
        t.backends["be"].servers[0].live.set_role(NodeRole::Primary);
        let t = Table::build(&c, &reg, 2, Instant::now());
        assert_eq!(
            t.backends["be"].servers[0].live.role(),
            NodeRole::Primary,
            "same node: kept"
        );
        let moved = role_config(vec![server("a", 9)], Role::Primary, None);
        let t = Table::build(&moved, &reg, 3, Instant::now());
        assert_eq!(t.backends["be"].servers[0].live.role(), NodeRole::Unknown);
        assert_eq!(
            t.backends["be"].pick(None, None),
            Err(NoServer::NoneAvailable)
        );
    }

    #[test]
    fn shutdown_sessions_cancels_current_tokens_only() {
        let live = ServerLive::default();
        let old = live.kill_token();
        live.shutdown_sessions();
        assert!(old.is_cancelled());
        assert!(!live.kill_token().is_cancelled());
    }

    fn etcd(role: EtcdRole, state: EtcdState) -> Option<EtcdView> {
        Some(EtcdView { role, state })
    }

    /// A `role primary` backend whose servers a and b were discovered, with their etcd views.
    fn etcd_config(source: RoleSource, a: Option<EtcdView>, b: Option<EtcdView>) -> Config {
        let (mut sa, mut sb) = (server("a", 1), server("b", 2));
        sa.etcd = a;
        sb.etcd = b;
        let mut c = role_config(vec![sa, sb], Role::Primary, None);
        c.backends[0].role_source = source;
        c
    }

    const P: EtcdRole = EtcdRole::Primary;
    const R: EtcdRole = EtcdRole::Replica;
    const READY: EtcdState = EtcdState::Ready;

    #[test]
    fn role_source_etcd_routes_to_etcds_primary_whatever_the_checks_say() {
        let reg = Registry::default();
        let c = etcd_config(RoleSource::Etcd, etcd(P, READY), etcd(R, READY));
        let t = Table::build(&c, &reg, 1, Instant::now());
        t.backends["be"].servers[1].live.set_role(NodeRole::Primary);
        assert_eq!(names(&t.backends["be"], 2), ["a", "a"]);
        // The leader moves: b takes the writes, a's sessions are closed.
        let a_session = t.backends["be"].servers[0].live.kill_token();
        let c = etcd_config(RoleSource::Etcd, etcd(R, READY), etcd(P, READY));
        let t = Table::build(&c, &reg, 2, Instant::now());
        assert!(a_session.is_cancelled());
        assert_eq!(names(&t.backends["be"], 2), ["b", "b"]);
        // etcd naming two primaries is a conflict.
        let c = etcd_config(RoleSource::Etcd, etcd(P, READY), etcd(P, READY));
        let t = Table::build(&c, &reg, 3, Instant::now());
        assert_eq!(
            t.backends["be"].pick(None, None),
            Err(NoServer::RoleConflict)
        );
    }

    #[test]
    fn role_source_both_needs_agreement_and_a_disagreement_is_a_conflict() {
        let reg = Registry::default();
        let c = etcd_config(RoleSource::Both, etcd(P, READY), etcd(R, READY));
        let t = Table::build(&c, &reg, 1, Instant::now());
        let (a, b) = (
            t.backends["be"].servers[0].live.clone(),
            t.backends["be"].servers[1].live.clone(),
        );
        // Checks not answered yet: nobody is the primary, and it is no conflict.
        assert_eq!(
            t.backends["be"].pick(None, None),
            Err(NoServer::NoneAvailable)
        );
        a.set_role(NodeRole::Primary);
        b.set_role(NodeRole::Replica);
        let t = Table::build(&c, &reg, 2, Instant::now());
        assert_eq!(names(&t.backends["be"], 2), ["a", "a"]);
        // The checks see b promoted while etcd still names a: refuse, both are named.
        a.set_role(NodeRole::Replica);
        b.set_role(NodeRole::Primary);
        assert_eq!(
            t.backends["be"].pick(None, None),
            Err(NoServer::RoleConflict)
        );
        let conflict = role_conflict(RoleSource::Both, &t.backends["be"].servers);
        assert_eq!(
            describe_conflict(RoleSource::Both, &conflict),
            "a (check replica, etcd primary) and b (check primary, etcd replica)"
        );
        let t = Table::build(&c, &reg, 3, Instant::now());
        assert!(t.backends["be"].live.role_conflict.load(Ordering::Relaxed));
        // etcd catches up: resolved, b takes the writes.
        let c = etcd_config(RoleSource::Both, etcd(R, READY), etcd(P, READY));
        let t = Table::build(&c, &reg, 4, Instant::now());
        assert!(!t.backends["be"].live.role_conflict.load(Ordering::Relaxed));
        assert_eq!(names(&t.backends["be"], 2), ["b", "b"]);
        // One server that etcd calls primary and its check calls replica is a conflict too.
        let c = etcd_config(RoleSource::Both, etcd(P, READY), etcd(R, READY));
        b.set_role(NodeRole::Replica);
        let t = Table::build(&c, &reg, 5, Instant::now());
        assert_eq!(
            t.backends["be"].pick(None, None),
            Err(NoServer::RoleConflict)
        );
    }

    #[test]
    fn etcd_state_drains_and_maints_and_cannot_lift_an_operators_maint() {
        let live = ServerLive::default();
        live.apply_etcd(etcd(R, EtcdState::Drain));
        assert_eq!(live.effective_admin(), AdminState::Drain);
        live.apply_etcd(etcd(R, EtcdState::Maint));
        assert_eq!(live.effective_admin(), AdminState::Maint);
        live.set_admin(AdminState::Maint);
        live.apply_etcd(etcd(R, READY));
        assert_eq!(live.effective_admin(), AdminState::Maint);
        live.set_admin(AdminState::Ready);
        assert!(live.eligible());
        assert_eq!(live.apply_etcd(None), NodeRole::Replica);
        assert_eq!(live.etcd_role(), NodeRole::Unknown);
    }

    #[test]
    fn removing_the_primary_closes_its_sessions_and_removing_a_replica_drains_it() {
        let reg = Registry::default();
        let c = etcd_config(RoleSource::Etcd, etcd(P, READY), etcd(R, READY));
        let old = Table::build(&c, &reg, 1, Instant::now());
        let (a, b) = (
            old.backends["be"].servers[0].live.kill_token(),
            old.backends["be"].servers[1].live.kill_token(),
        );
        let mut without_b = c.clone();
        without_b.backends[0].servers.truncate(1);
        let new = Table::build(&without_b, &reg, 2, Instant::now());
        close_removed_writers(&old, &new);
        assert!(!b.is_cancelled(), "a removed replica drains");
        let mut without_a = c.clone();
        without_a.backends[0].servers.remove(0);
        let newer = Table::build(&without_a, &reg, 3, Instant::now());
        close_removed_writers(&old, &newer);
        assert!(a.is_cancelled(), "a removed primary's sessions are closed");
    }
}
