//! One server's live state ([`ServerLive`]): administrative, health and role state, session
//! counts and the tokens that close sessions, shared by `Arc` across tables so a swap never
//! resets them. Also the administrative and health states' enums (the role ones are in
//! `role_state`).
//!
//! Kept small, as there is one per server and discovery may bring tens of thousands: what
//! only some servers use (session counters and timings, each kind of check histogram, the
//! token that closes sessions, the downtime record) is allocated on first use, and instants
//! are atomics.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

use super::{
    CheckDurations, CheckResult, Downtime, KillSwitch, LazyTraffic, NodeRole, Ramp, RoleCheckState,
};
use crate::config::{EtcdRole, EtcdState, EtcdView, Server};

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
    /// `stot`: connection attempts made to this server (HAProxy's `cum_sess`, counted
    /// each time a connect is started, retries and failed ones included).
    pub total_sessions: AtomicU64,
    /// `lbtot`: times the balancer chose this server (HAProxy's `cum_lbconn`): not for a
    /// session a stick table sent here, nor one served from the backend's queue.
    pub lb_total: AtomicU64,
    /// Bytes received from clients and sent to this server.
    pub bytes_in: AtomicU64,
    /// Bytes received from this server and sent to clients.
    pub bytes_out: AtomicU64,
    /// Failed connection attempts.
    pub connect_errors: AtomicU64,
    /// When the server last became usable (for `slowstart`), as an [`AtomicInstant`];
    /// [`NEVER`] = since start.
    usable_since: AtomicU64,
    /// Tripped to close every session on this server (`shutdown-sessions`, role loss);
    /// made when a session first asks for it.
    kill: ArcSwapOption<KillSwitch>,
    /// The `disabled` flag of the last configuration applied, so a reload applies only a change.
    config_disabled: AtomicBool,
    /// Administrative state the agent asked for (`ready`/`drain`/`maint`), kept apart from
    /// the operator's so `ready` from the agent cannot cancel an operator's maintenance.
    agent_admin: AtomicU8,
    /// Operating state the agent reported (`up`, or `down`/`fail`/`stopped`).
    agent_health: AtomicU8,
    /// `http-check disable-on-404`: a check got a 404 while the server ran, so it takes no
    /// new connections (HAProxy's `NOLB`) until a check passes plainly again.
    check_stopping: AtomicBool,
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
    /// DNS left the server without an address (HAProxy's MAINT (resolution)).
    dns_maint: AtomicBool,
    /// Replication lag in bytes; `u64::MAX` = unknown.
    pub lag_bytes: AtomicU64,
    /// Replication lag in milliseconds; `u64::MAX` = unknown.
    pub lag_ms: AtomicU64,
    /// Whether the lag is within `max-lag` (with hysteresis), kept by the role checker.
    lag_ok: AtomicBool,
    /// The last role check's outcome, for logs, the admin API and metrics.
    pub last_role_check: ArcSwapOption<RoleCheckState>,
    /// The configuration last applied: where the role was learnt (its check destination).
    role_target: ArcSwapOption<Server>,
    /// Weight set by the operator (`set server B/S weight`), [`NO_WEIGHT`] when none; it
    /// replaces the configured weight and survives reloads.
    operator_weight: AtomicU32,
    /// The health check's rise/fall counter (HAProxy's `check_health`), [`NO_HEALTH`] until a
    /// check task publishes it.
    check_health: AtomicU32,
    /// Most sessions ever open at once on this server.
    pub max_sessions: AtomicU32,
    /// Session counters and timings beyond the basic ones (for metrics and reports),
    /// allocated with the first session.
    pub traffic: LazyTraffic,
    /// How long checks of this server take.
    pub check_durations: CheckDurations,
    /// When the operating or administrative state last changed (`lastchg` in `show stat`),
    /// as an [`AtomicInstant`].
    changed_at: AtomicU64,
    /// Time spent stopped (down or in maintenance), kept from the first state change on.
    downtime: OnceLock<Box<Downtime>>,
}

/// [`ServerLive::operator_weight`] when the operator has set no weight.
const NO_WEIGHT: u32 = u32::MAX;
/// [`ServerLive::check_health`] before any check task has published its counter.
const NO_HEALTH: u32 = u32::MAX;
/// [`ServerLive::usable_since`] when the server has been usable since it was created.
const NEVER: u64 = u64::MAX;

/// An `Instant` kept in an `AtomicU64`: nanoseconds since the first one stored in the process
/// (8 bytes and no lock, where a `Mutex<Instant>` takes 24).
struct AtomicInstant;

impl AtomicInstant {
    fn base() -> Instant {
        static BASE: OnceLock<Instant> = OnceLock::new();
        *BASE.get_or_init(Instant::now)
    }

    fn encode(at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(Self::base()).as_nanos();
        u64::try_from(nanos).unwrap_or(NEVER - 1).min(NEVER - 1)
    }

    fn decode(nanos: u64) -> Instant {
        Self::base() + Duration::from_nanos(nanos)
    }
}

impl Default for ServerLive {
    fn default() -> Self {
        ServerLive {
            admin: AtomicU8::new(AdminState::Ready as u8),
            health: AtomicU8::new(Health::Up as u8),
            sessions: AtomicU32::new(0),
            total_sessions: AtomicU64::new(0),
            lb_total: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            connect_errors: AtomicU64::new(0),
            usable_since: AtomicU64::new(NEVER),
            kill: ArcSwapOption::empty(),
            config_disabled: AtomicBool::new(false),
            agent_admin: AtomicU8::new(AdminState::Ready as u8),
            agent_health: AtomicU8::new(Health::Up as u8),
            check_stopping: AtomicBool::new(false),
            agent_weight_pct: AtomicU32::new(100),
            agent_maxconn: AtomicU32::new(0),
            last_check: ArcSwapOption::empty(),
            last_agent: ArcSwapOption::empty(),
            check_failures: AtomicU64::new(0),
            down_transitions: AtomicU64::new(0),
            role: AtomicU8::new(NodeRole::Unknown as u8),
            etcd_role: AtomicU8::new(NodeRole::Unknown as u8),
            etcd_admin: AtomicU8::new(AdminState::Ready as u8),
            dns_maint: AtomicBool::new(false),
            lag_bytes: AtomicU64::new(u64::MAX),
            lag_ms: AtomicU64::new(u64::MAX),
            lag_ok: AtomicBool::new(false),
            last_role_check: ArcSwapOption::empty(),
            role_target: ArcSwapOption::empty(),
            operator_weight: AtomicU32::new(NO_WEIGHT),
            check_health: AtomicU32::new(NO_HEALTH),
            max_sessions: AtomicU32::new(0),
            traffic: LazyTraffic::default(),
            check_durations: CheckDurations::default(),
            changed_at: AtomicU64::new(AtomicInstant::encode(Instant::now())),
            downtime: OnceLock::new(),
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

    /// The administrative state in force: the strictest of the operator's, the agent's,
    /// etcd's and DNS's.
    pub fn effective_admin(&self) -> AdminState {
        if self.dns_maint() {
            return AdminState::Maint;
        }
        AdminState::from_u8(
            self.admin
                .load(Ordering::Acquire)
                .max(self.agent_admin.load(Ordering::Acquire))
                .max(self.etcd_admin.load(Ordering::Acquire)),
        )
    }

    /// Whether DNS left the server without an address (MAINT (resolution)).
    pub fn dns_maint(&self) -> bool {
        self.dns_maint.load(Ordering::Acquire)
    }

    /// Records whether DNS gives the server an address (`Server::dns_maint`).
    pub fn apply_dns_maint(&self, maint: bool) {
        let prev = self.dns_maint.swap(maint, Ordering::AcqRel);
        self.note_change(prev != maint);
        if prev && !maint && self.effective_admin() == AdminState::Ready {
            self.mark_usable_now();
        }
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
        AtomicInstant::decode(self.changed_at.load(Ordering::Acquire))
    }

    fn note_change(&self, changed: bool) {
        if changed {
            let now = Instant::now();
            self.changed_at
                .store(AtomicInstant::encode(now), Ordering::Release);
            let stopped = self.effective_admin() == AdminState::Maint
                || self.effective_health() == Health::Down;
            self.downtime.get_or_init(Box::default).set(stopped, now);
        }
    }

    /// Time spent stopped (down or in maintenance) since the process started.
    pub fn downtime(&self, now: Instant) -> Duration {
        self.downtime.get().map_or(Duration::ZERO, |d| d.total(now))
    }

    fn mark_usable_now(&self) {
        self.usable_since
            .store(AtomicInstant::encode(Instant::now()), Ordering::Release);
    }

    /// Whether the server may take new connections at all (before role and limits).
    pub fn eligible(&self) -> bool {
        self.effective_admin() == AdminState::Ready
            && self.effective_health() == Health::Up
            && !self.check_stopping()
    }

    /// Whether `http-check disable-on-404` holds the server out (`NOLB`).
    pub fn check_stopping(&self) -> bool {
        self.check_stopping.load(Ordering::Acquire)
    }

    /// Sets or clears the `disable-on-404` stop; returns the previous value.
    pub fn set_check_stopping(&self, on: bool) -> bool {
        let prev = self.check_stopping.swap(on, Ordering::AcqRel);
        self.note_change(prev != on);
        if prev && !on {
            self.mark_usable_now();
        }
        prev
    }

    /// The role the node last reported.
    pub fn role(&self) -> NodeRole {
        NodeRole::from_u8(self.role.load(Ordering::Acquire))
    }

    /// Records the node's role; returns the previous one.
    pub fn set_role(&self, role: NodeRole) -> NodeRole {
        NodeRole::from_u8(self.role.swap(role as u8, Ordering::AcqRel))
    }

    /// Notes the configuration being applied to the server (shared, not copied); when a
    /// reload moved the name to another node (another check destination), what was known of
    /// the old node's role no longer holds: the role becomes unknown until a role check of the
    /// new node answers.
    pub fn apply_role_target(&self, server: &Arc<Server>) {
        let old = self.role_target.swap(Some(server.clone()));
        if old.is_some_and(|old| old.check_target() != server.check_target()) {
            self.set_role(NodeRole::Unknown);
            self.set_lag_ok(false);
            self.lag_bytes.store(u64::MAX, Ordering::Relaxed);
            self.lag_ms.store(u64::MAX, Ordering::Relaxed);
        }
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

    /// The switch a new session watches: tripped when the server's sessions must close.
    pub fn kill_switch(&self) -> Arc<KillSwitch> {
        loop {
            if let Some(switch) = &*self.kill.load() {
                return switch.clone();
            }
            // The first session since start or since the last shutdown makes the switch; a
            // session racing it takes whichever was stored first.
            let fresh = Arc::new(KillSwitch::new());
            let prev = self
                .kill
                .compare_and_swap(&None::<Arc<KillSwitch>>, Some(fresh.clone()));
            if prev.is_none() {
                return fresh;
            }
        }
    }

    /// Closes every session currently open on this server.
    pub fn shutdown_sessions(&self) {
        if let Some(old) = self.kill.swap(None) {
            old.trip();
        }
    }

    /// Where the server stands in its `slowstart` ramp now; `None` when it is not ramping
    /// (no `slowstart`, never went down since start, or the ramp is over).
    pub fn ramp(&self, slowstart: Option<Duration>, now: Instant) -> Option<Ramp> {
        // The config keeps `slowstart` in whole seconds, as HAProxy does.
        let length = slowstart?.as_secs();
        let since = match self.usable_since.load(Ordering::Acquire) {
            NEVER => return None,
            at => AtomicInstant::decode(at),
        };
        let elapsed = now.saturating_duration_since(since).as_secs();
        (elapsed < length).then_some(Ramp { elapsed, length })
    }

    /// Whether this server is still ramping up under `slowstart` (HAProxy's STARTING state).
    pub fn in_slowstart(&self, slowstart: Option<Duration>, now: Instant) -> bool {
        self.ramp(slowstart, now).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_server_allocates_no_extras_and_stays_small() {
        let size = std::mem::size_of::<ServerLive>();
        println!("size_of::<ServerLive>() = {size}");
        // 752 bytes when the session counters and check histograms were inline.
        assert!(size <= 256, "ServerLive grew to {size} bytes");
        let s = ServerLive::default();
        assert!(!s.traffic.is_allocated());
        for h in [
            &s.check_durations.health,
            &s.check_durations.agent,
            &s.check_durations.role,
        ] {
            assert!(!h.is_allocated());
        }
        assert!(s.kill.load().is_none());
        assert!(s.downtime.get().is_none());
        assert_eq!(s.downtime(Instant::now()), Duration::ZERO);
        assert_eq!(s.ramp(Some(Duration::from_secs(10)), Instant::now()), None);
    }

    #[test]
    fn the_kill_switch_is_made_by_the_first_session_and_renewed_by_a_shutdown() {
        let s = ServerLive::default();
        s.shutdown_sessions(); // nothing to close yet
        let a = s.kill_switch();
        let b = s.kill_switch();
        s.shutdown_sessions();
        assert!(a.is_tripped() && b.is_tripped(), "both sessions closed");
        let c = s.kill_switch();
        assert!(!c.is_tripped(), "a session after the shutdown is not");
    }

    #[test]
    fn state_changes_and_slowstart_keep_their_instants() {
        let s = ServerLive::default();
        let before = Instant::now();
        assert!(s.changed_at() <= before + Duration::from_millis(1));
        s.set_health(Health::Down);
        let changed = s.changed_at();
        assert!(changed >= before);
        assert!(
            s.downtime.get().is_some(),
            "a change starts the downtime record"
        );
        s.set_health(Health::Up);
        let slow = Some(Duration::from_secs(10));
        let ramp = s.ramp(slow, Instant::now() + Duration::from_secs(3));
        assert_eq!(ramp.map(|r| (r.elapsed, r.length)), Some((3, 10)));
        assert_eq!(s.ramp(slow, Instant::now() + Duration::from_secs(11)), None);
        assert!(s.changed_at() >= changed);
    }
}
