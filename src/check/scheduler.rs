//! One task per checked server: runs its health check (and its agent check) on schedule,
//! keeps HAProxy's rise/fall state machine, writes the verdict into the server's live state,
//! and asks `control` for a new table when eligibility changes. Here: what decides how a
//! server is checked (the specs), the timing helpers, and the [`Scheduler`] that starts and
//! stops tasks; the task loops are in `tasks.rs`, the rise/fall machine in `rise_fall.rs`.
//!
//! Intervals as HAProxy: `inter` while steady UP, `fastinter` while a state change is under
//! way (some failures while UP, some successes while DOWN), `downinter` while steady DOWN;
//! each defaults to `inter`, and counts from the end of the previous check. The connect part of a check is bounded by `timeout connect`
//! (at most `inter`) when `timeout check` is set, which bounds the rest; else `inter` bounds
//! both. First checks are spread as HAProxy spreads them ([`first_delays`], bounded by
//! `max-spread-checks`) so hundreds of servers do not fire at once, and `spread-checks`
//! moves each later interval at random ([`spread`]). A server in MAINT is not checked.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{CheckResult, Target, external, http, mysql, pgsql, tcp, tcp_check};
use crate::config::{
    AgentCheck, Backend, CheckMethod, CheckTls, Config, MaxLag, Role, RoleCheck, Server,
};
use crate::table::{AdminState, ServerLive};

pub use super::rise_fall::{RiseFall, Transition};
use super::tasks::{agent_loop, health_loop, role_loop};
/// Everything that decides how one server is checked; a task is restarted when it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSpec {
    /// Backend name.
    pub backend: String,
    /// Server name.
    pub server: String,
    /// The health check, if `check` is set.
    pub health: Option<HealthSpec>,
    /// The agent check, if `agent-check` is set.
    pub agent: Option<AgentSpec>,
    /// The role check, when the backend has `role-check`.
    pub role: Option<RoleSpec>,
    /// `on-marked-down shutdown-sessions`.
    pub on_marked_down_shutdown_sessions: bool,
    /// `on-marked-up shutdown-backup-sessions` (only meaningful on an active server).
    pub on_marked_up_shutdown_backup_sessions: bool,
    /// `option log-health-checks` of the backend.
    pub log_health_checks: bool,
    /// `backup`: named so in the check log lines.
    pub backup: bool,
}

/// The health-check half of a [`CheckSpec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSpec {
    /// What to run.
    pub method: CheckMethod,
    /// Where and with which timeouts (for `inter`; see [`HealthSpec::target_for`]).
    pub addr: SocketAddr,
    /// `timeout connect` of the backend.
    pub timeout_connect: Option<Duration>,
    /// `timeout check` of the backend.
    pub timeout_check: Option<Duration>,
    /// `inter`.
    pub inter: Duration,
    /// `fastinter` (default `inter`).
    pub fastinter: Duration,
    /// `downinter` (default `inter`).
    pub downinter: Duration,
    /// `rise`.
    pub rise: u32,
    /// `fall`.
    pub fall: u32,
    /// `check-ssl` and its settings.
    pub tls: Option<Arc<CheckTls>>,
    /// `spread-checks` of `global`: each interval moved by up to this many percent.
    pub spread: u32,
    /// The PROXY header each check sends first ([`Server::check_proxy_header`]).
    pub proxy_header: Option<crate::config::ProxyProtocol>,
    /// The server's `source`.
    pub source: Option<crate::config::model::Source>,
}

impl HealthSpec {
    /// The interval the check starts with: a server starts UP but not settled (its counter
    /// at `rise`, not `rise + fall - 1`), so `fastinter` unless `fall` is 1, as HAProxy's
    /// `srv_getinter` gives at its start.
    pub(crate) fn first_interval(&self) -> Duration {
        if self.fall <= 1 {
            self.inter
        } else {
            self.fastinter
        }
    }
}

/// The agent-check half of a [`CheckSpec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSpec {
    /// Agent address: `agent-addr` (else the server's address) and `agent-port`.
    pub addr: SocketAddr,
    /// `agent-inter`.
    pub agent_inter: Duration,
    /// `agent-send`.
    pub agent_send: Option<Vec<u8>>,
    /// `timeout connect` of the backend.
    pub timeout_connect: Option<Duration>,
    /// `timeout check` of the backend.
    pub timeout_check: Option<Duration>,
    /// `spread-checks` of `global`: each interval moved by up to this many percent.
    pub spread: u32,
    /// The server's `source`.
    pub source: Option<crate::config::model::Source>,
}

/// The role-check part of a [`CheckSpec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleSpec {
    /// How to ask.
    pub check: RoleCheck,
    /// Where (the server's check address and port).
    pub addr: SocketAddr,
    /// `inter`.
    pub inter: Duration,
    /// `fastinter` (default `inter`): used while the role is unknown or checks fail.
    pub fastinter: Duration,
    /// `rise`: good lag readings needed to come back from over `max-lag`.
    pub rise: u32,
    /// `fall`: failed role checks before the role is unknown.
    pub fall: u32,
    /// `timeout connect` of the backend.
    pub timeout_connect: Option<Duration>,
    /// `timeout check` of the backend.
    pub timeout_check: Option<Duration>,
    /// The backend's `role`.
    pub backend_role: Role,
    /// The backend's `max-lag`.
    pub max_lag: Option<MaxLag>,
    /// The PROXY header the server's health checks send ([`Server::check_proxy_header`]).
    pub proxy_header: Option<crate::config::ProxyProtocol>,
    /// The server's `source`.
    pub source: Option<crate::config::model::Source>,
}

/// The target of a check run every `inter`, with HAProxy's use of `timeout check`.
pub(crate) fn target(
    addr: SocketAddr,
    inter: Duration,
    connect: Option<Duration>,
    check: Option<Duration>,
) -> Target {
    match check {
        Some(read) => Target {
            addr,
            connect_timeout: connect.unwrap_or(inter).min(inter),
            read_timeout: read,
            tls: None,
            proxy_header: None,
            source: None,
        },
        None => Target {
            addr,
            connect_timeout: inter,
            read_timeout: inter,
            tls: None,
            proxy_header: None,
            source: None,
        },
    }
}

impl CheckSpec {
    /// The checks `server` of `backend` asks for; `None` when it has neither `check` nor
    /// `agent-check`. `spread`: `spread-checks` of `global`.
    pub fn of(backend: &Backend, server: &Server, spread: u32) -> Option<CheckSpec> {
        let health = server.check.then(|| HealthSpec {
            method: backend.check.clone(),
            addr: server.check_target(),
            timeout_connect: backend.timeout_connect,
            timeout_check: backend.timeout_check,
            inter: server.inter,
            fastinter: server.fastinter.unwrap_or(server.inter),
            downinter: server.downinter.unwrap_or(server.inter),
            rise: server.rise.max(1),
            fall: server.fall.max(1),
            tls: server.check_tls.clone(),
            spread,
            proxy_header: server.check_proxy_header,
            source: server.source.clone(),
        });
        let agent = server.agent.as_deref().map(|a: &AgentCheck| AgentSpec {
            addr: SocketAddr::new(a.agent_addr.unwrap_or(server.addr.ip()), a.agent_port),
            agent_inter: a.agent_inter,
            agent_send: a.agent_send.clone(),
            timeout_connect: backend.timeout_connect,
            timeout_check: backend.timeout_check,
            spread,
            source: server.source.clone(),
        });
        let role = backend.role_check.clone().map(|check| RoleSpec {
            check,
            addr: server.check_target(),
            inter: server.inter,
            fastinter: server.fastinter.unwrap_or(server.inter),
            rise: server.rise.max(1),
            fall: server.fall.max(1),
            timeout_connect: backend.timeout_connect,
            timeout_check: backend.timeout_check,
            backend_role: backend.role,
            max_lag: backend.max_lag,
            proxy_header: server.check_proxy_header,
            source: server.source.clone(),
        });
        if health.is_none() && agent.is_none() && role.is_none() {
            return None;
        }
        Some(CheckSpec {
            backend: backend.name.clone(),
            server: server.name.to_string(),
            health,
            agent,
            role,
            on_marked_down_shutdown_sessions: server.on_marked_down_shutdown_sessions,
            on_marked_up_shutdown_backup_sessions: server.on_marked_up_shutdown_backup_sessions
                && !server.backup,
            log_health_checks: backend.log_health_checks,
            backup: server.backup,
        })
    }
}

/// HAProxy's random move of a check interval under `spread-checks N`: up to N% of
/// `interval` either way (counted in whole milliseconds, as HAProxy counts it); `interval`
/// itself when N is 0.
pub(crate) fn spread(interval: Duration, percent: u32) -> Duration {
    if percent == 0 {
        return interval;
    }
    let ms = interval.as_millis();
    let reach = ms * u128::from(percent) / 100;
    // A draw in [0, 2 * reach]: the move is reach - draw, in [-reach, +reach].
    let draw = u128::from(random_u64()) % (2 * reach + 1);
    let moved = (ms + reach).saturating_sub(draw);
    Duration::from_millis(u64::try_from(moved).unwrap_or(u64::MAX))
}

/// 64 random bits: the process's random hash keys (drawn from the system once) over a
/// counter.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    static KEYS: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    let mut hasher = KEYS.get_or_init(Default::default).build_hasher();
    hasher.write_u64(DRAWS.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

/// When the first run of each check starts after a start or reload, as HAProxy's
/// `start_checks`: `checks` are the intervals each check starts with (in the order HAProxy
/// counts them: servers in configuration order, a server's health check before its agent
/// check). The check at position `i` of `n` waits `window * i / n`, `window` being the
/// longer of its own interval and the shortest interval of at least one second among all,
/// bounded by `max-spread-checks`.
pub(crate) fn first_delays(checks: &[Duration], max_spread: Option<Duration>) -> Vec<Duration> {
    let n = u32::try_from(checks.len()).unwrap_or(u32::MAX).max(1);
    let shortest_slow = checks
        .iter()
        .filter(|i| **i >= SPREAD_THRESHOLD)
        .min()
        .copied()
        .unwrap_or_default();
    checks
        .iter()
        .zip(0u32..)
        .map(|(own, i)| {
            let mut window = shortest_slow.max(*own);
            if let Some(max) = max_spread {
                window = window.min(max);
            }
            window * i / n
        })
        .collect()
}

/// Checks faster than this do not widen the first spread of the others (HAProxy's
/// `SRV_CHK_INTER_THRES`).
const SPREAD_THRESHOLD: Duration = Duration::from_secs(1);

/// The next check time, as HAProxy 2.6 sets it when a check ends (`process_chk`): one
/// interval from now, so a check that takes 300 ms with `inter 1s` runs every 1.3 s (a
/// check that runs long never makes the next ones come in a burst).
pub(crate) fn after_this_check(interval: Duration) -> Instant {
    Instant::now() + interval
}

/// The next role check: one interval after the previous *planned* one, never in the past.
/// Role checks (rolelb's own) keep their beat whatever a check costs, so a promotion is seen
/// within one interval: they decide where writes go.
pub(crate) fn on_the_beat(planned: Instant, interval: Duration) -> Instant {
    (planned + interval).max(Instant::now())
}

/// Sleeps until `next`, and on while the server is in MAINT (checks are suspended there, as in
/// HAProxy), looking again every `inter`. Returns when the check is due, or `None` once
/// `stop` is cancelled.
pub(crate) async fn next_turn(
    next: &mut Instant,
    inter: Duration,
    live: &ServerLive,
    stop: &CancellationToken,
) -> Option<()> {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep_until(*next) => {}
        }
        if live.admin() != AdminState::Maint {
            return Some(());
        }
        *next = Instant::now() + inter;
    }
}

/// Runs one health check of the configured method, for a server that is running.
pub async fn run_check(method: &CheckMethod, target: &Target) -> CheckResult {
    run_check_as(method, target, true).await
}

/// Runs one health check; `running`: the server is not DOWN (`http-check disable-on-404`
/// only applies then, as in HAProxy).
pub async fn run_check_as(method: &CheckMethod, target: &Target, running: bool) -> CheckResult {
    match method {
        CheckMethod::Tcp => tcp::check(target).await,
        CheckMethod::TcpCheck(rules) => tcp_check::check(target, rules).await,
        CheckMethod::Pgsql { user } => pgsql::check(target, user).await,
        CheckMethod::Mysql {
            user: Some(user),
            post_41,
        } => mysql::check(target, user, *post_41).await,
        CheckMethod::Mysql { user: None, .. } => mysql::handshake_check(target).await,
        CheckMethod::Http(spec) => http::check_server(target, spec, running).await,
        // A server's own task runs it with the server's details (`tasks.rs`).
        CheckMethod::External(x) => external::check(x, target.addr, target.connect_timeout).await,
    }
}

/// What the check tasks need from the rest of the process: the control task's handle, for
/// the current table (to count servers left for the logs and find backups) and to ask for a
/// rebuild after eligibility changed.
pub type Env = crate::control::ControlHandle;

/// The running check tasks, keyed by backend/server; owned by `control`.
#[derive(Default)]
pub struct Scheduler {
    tasks: HashMap<(String, String), (CheckSpec, CancellationToken)>,
}

impl Scheduler {
    /// Starts, restarts or stops tasks so that exactly the checks `config` asks for run. Tasks
    /// whose spec did not change keep running (their rise/fall state too).
    pub fn reconcile(&mut self, config: &Config, env: &Env) {
        let table = env.table().load();
        let mut wanted: Vec<(CheckSpec, Arc<ServerLive>)> = Vec::new();
        for be in &config.backends {
            let Some(rt) = table.backends.get(&be.name) else {
                continue;
            };
            for (i, s) in be.servers.iter().enumerate() {
                // No address yet (MAINT (resolution)): nothing to check, as in HAProxy.
                if s.dns_maint {
                    continue;
                }
                let Some(spec) = CheckSpec::of(be, s, config.global.spread_checks) else {
                    continue;
                };
                // The table lists the servers in the configuration's order: look there first
                // rather than scan (backends may have 10,000 servers).
                let live = match rt.servers.get(i) {
                    Some(x) if x.name() == &*s.name => Some(x.live.clone()),
                    _ => rt
                        .servers
                        .iter()
                        .find(|x| x.name() == &*s.name)
                        .map(|x| x.live.clone()),
                };
                if let Some(live) = live {
                    wanted.push((spec, live));
                }
            }
        }
        let keys: std::collections::HashSet<(String, String)> = wanted
            .iter()
            .map(|(s, _)| (s.backend.clone(), s.server.clone()))
            .collect();
        self.tasks.retain(|k, (_, token)| {
            let keep = keys.contains(k);
            if !keep {
                token.cancel();
            }
            keep
        });
        // Where each health and agent check starts, spread as HAProxy spreads them.
        let starts: Vec<Duration> = wanted
            .iter()
            .flat_map(|(spec, _)| {
                let health = spec.health.as_ref().map(HealthSpec::first_interval);
                let agent = spec.agent.as_ref().map(|a| a.agent_inter);
                health.into_iter().chain(agent)
            })
            .collect();
        let mut delays = first_delays(&starts, config.global.max_spread_checks).into_iter();
        for (spec, live) in wanted {
            let health_delay = spec.health.as_ref().and_then(|_| delays.next());
            let agent_delay = spec.agent.as_ref().and_then(|_| delays.next());
            let key = (spec.backend.clone(), spec.server.clone());
            if self
                .tasks
                .get(&key)
                .is_some_and(|(running, _)| *running == spec)
            {
                continue;
            }
            if let Some((_, token)) = self.tasks.remove(&key) {
                token.cancel();
            }
            let token = CancellationToken::new();
            if let Some(hs) = spec.health.clone() {
                tokio::spawn(health_loop(
                    spec.clone(),
                    hs,
                    live.clone(),
                    env.clone(),
                    health_delay.unwrap_or_default(),
                    token.clone(),
                ));
            }
            if let Some(ag) = spec.agent.clone() {
                tokio::spawn(agent_loop(
                    spec.clone(),
                    ag,
                    live.clone(),
                    env.clone(),
                    agent_delay.unwrap_or_default(),
                    token.clone(),
                ));
            }
            if let Some(rs) = spec.role.clone().filter(|r| r.check != RoleCheck::Agent) {
                // The first role check runs at once: nothing is eligible until it answers.
                tokio::spawn(role_loop(
                    spec.clone(),
                    rs,
                    live.clone(),
                    env.clone(),
                    Duration::ZERO,
                    token.clone(),
                ));
            }
            self.tasks.insert(key, (spec, token));
        }
    }

    /// Stops every task.
    pub fn stop(&mut self) {
        for (_, (_, token)) in self.tasks.drain() {
            token.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_checks_moves_each_interval_up_to_its_percent_either_way() {
        let inter = Duration::from_millis(2000);
        assert_eq!(spread(inter, 0), inter);
        let draws: Vec<u128> = (0..4000).map(|_| spread(inter, 50).as_millis()).collect();
        assert!(
            draws.iter().all(|ms| (1000..=3000).contains(ms)),
            "{draws:?}"
        );
        // Spread over the whole range, about evenly: each quarter holds about a quarter.
        for quarter in 0..4 {
            let (lo, hi) = (1000 + quarter * 500, 1500 + quarter * 500);
            let n = draws.iter().filter(|ms| (lo..hi).contains(*ms)).count();
            assert!((800..1200).contains(&n), "{n} draws in [{lo}, {hi})");
        }
        let mean = draws.iter().sum::<u128>() / 4000;
        assert!((1950..2050).contains(&mean), "mean {mean}");
        // Whole milliseconds, as HAProxy counts them: 10% of 1,005 ms is 100 ms.
        let odd = Duration::from_millis(1005);
        assert!((0..500).all(|_| (905..=1105).contains(&spread(odd, 10).as_millis())));
    }

    #[test]
    fn first_checks_are_spread_as_haproxy_starts_them() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        // Four checks of 2 s: a quarter of 2 s apart.
        assert_eq!(
            first_delays(&[s(2); 4], None),
            [ms(0), ms(500), ms(1000), ms(1500)]
        );
        // A 100 ms check among 4 s ones spreads over the shortest slow interval (4 s), and a
        // slower one over its own.
        assert_eq!(
            first_delays(&[s(4), ms(100), s(4), s(10)], None),
            [ms(0), ms(1000), ms(2000), ms(7500)]
        );
        // max-spread-checks bounds every window.
        assert_eq!(
            first_delays(&[s(4), ms(100), s(4), s(10)], Some(s(2))),
            [ms(0), ms(500), ms(1000), ms(1500)]
        );
        // Only fast checks: each over its own interval.
        assert_eq!(first_delays(&[ms(100), ms(200)], None), [ms(0), ms(100)]);
        assert!(first_delays(&[], None).is_empty());
    }

    #[test]
    fn first_failure_at_start_marks_down_like_haproxy() {
        let mut m = RiseFall::new(2, 3);
        assert_eq!(m.progress(), "UP 1/3");
        assert!(
            m.transitioning(),
            "fastinter until the first check settles it"
        );
        assert_eq!(m.record(false), Some(Transition::Down));
        assert_eq!(m.progress(), "DOWN 0/2");
    }

    #[test]
    fn once_settled_up_it_takes_fall_failures_and_rise_successes() {
        let mut m = RiseFall::new(2, 3);
        assert_eq!(m.record(true), None);
        assert_eq!(m.progress(), "UP 3/3");
        assert!(!m.transitioning());
        assert_eq!(m.record(false), None);
        assert_eq!(m.record(false), None);
        assert_eq!(m.progress(), "UP 1/3");
        assert_eq!(m.record(false), Some(Transition::Down));
        assert_eq!(m.record(true), None);
        assert!(m.transitioning());
        assert_eq!(m.record(true), Some(Transition::Up));
        assert_eq!(m.progress(), "UP 3/3");
    }

    #[test]
    fn a_result_against_the_trend_resets_the_streak() {
        let mut m = RiseFall::new(2, 3);
        m.record(true);
        m.record(false);
        m.record(false);
        assert_eq!(m.record(true), None);
        assert_eq!(m.progress(), "UP 3/3");
        let mut d = RiseFall::down(3, 2);
        d.record(true);
        d.record(true);
        assert_eq!(d.record(false), None);
        assert_eq!(d.progress(), "DOWN 0/3");
    }

    #[test]
    fn timeout_check_bounds_the_read_and_connect_is_capped_by_inter() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 1));
        let s = Duration::from_secs;
        let t = target(addr, s(2), Some(s(5)), Some(s(1)));
        assert_eq!((t.connect_timeout, t.read_timeout), (s(2), s(1)));
        let t = target(addr, s(2), None, None);
        assert_eq!((t.connect_timeout, t.read_timeout), (s(2), s(2)));
    }
}
