//! One task per checked server: runs its health check (and its agent check) on schedule,
//! keeps HAProxy's rise/fall state machine, writes the verdict into the server's live state,
//! and asks `control` for a new table when eligibility changes.
//!
//! Intervals as HAProxy: `inter` while steady UP, `fastinter` while a state change is under
//! way (some failures while UP, some successes while DOWN), `downinter` while steady DOWN;
//! each defaults to `inter`. The connect part of a check is bounded by `timeout connect`
//! (at most `inter`) when `timeout check` is set, which bounds the rest; else `inter` bounds
//! both. First checks are spread over one `inter` so hundreds of servers do not fire at once.
//! A server in MAINT is not checked.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::agent::{self, AgentAdmin, AgentHealth};
use super::role::{self, Probe, RoleFailure, RoleReport};
use super::role_tracker::{self, Current, RoleTracker};
use super::{CheckResult, Target, http, mysql, pgsql, tcp, tcp_check};
use crate::config::{AgentCheck, Backend, CheckMethod, Config, MaxLag, Role, RoleCheck, Server};
use crate::table::{AdminState, Health, NodeRole, RoleProblem, ServerLive, TableHandle};

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
}

/// The agent-check half of a [`CheckSpec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSpec {
    /// Agent address.
    pub addr: SocketAddr,
    /// `agent-inter`.
    pub inter: Duration,
    /// `agent-send`.
    pub send: Option<Vec<u8>>,
    /// `timeout connect` of the backend.
    pub timeout_connect: Option<Duration>,
    /// `timeout check` of the backend.
    pub timeout_check: Option<Duration>,
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
}

/// The target of a check run every `inter`, with HAProxy's use of `timeout check`.
fn target(
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
        },
        None => Target {
            addr,
            connect_timeout: inter,
            read_timeout: inter,
        },
    }
}

impl CheckSpec {
    /// The checks `server` of `backend` asks for; `None` when it has neither `check` nor
    /// `agent-check`.
    pub fn of(backend: &Backend, server: &Server) -> Option<CheckSpec> {
        let health = server.check.then(|| HealthSpec {
            method: backend.check.clone(),
            addr: SocketAddr::new(
                server.check_addr.unwrap_or(server.addr.ip()),
                server.check_port.unwrap_or(server.addr.port()),
            ),
            timeout_connect: backend.timeout_connect,
            timeout_check: backend.timeout_check,
            inter: server.inter,
            fastinter: server.fastinter.unwrap_or(server.inter),
            downinter: server.downinter.unwrap_or(server.inter),
            rise: server.rise.max(1),
            fall: server.fall.max(1),
        });
        let agent = server.agent.as_ref().map(|a: &AgentCheck| AgentSpec {
            addr: SocketAddr::new(a.addr.unwrap_or(server.addr.ip()), a.port),
            inter: a.inter,
            send: a.send.clone(),
            timeout_connect: backend.timeout_connect,
            timeout_check: backend.timeout_check,
        });
        let role = backend.role_check.clone().map(|check| RoleSpec {
            check,
            addr: SocketAddr::new(
                server.check_addr.unwrap_or(server.addr.ip()),
                server.check_port.unwrap_or(server.addr.port()),
            ),
            inter: server.inter,
            fastinter: server.fastinter.unwrap_or(server.inter),
            rise: server.rise.max(1),
            fall: server.fall.max(1),
            timeout_connect: backend.timeout_connect,
            timeout_check: backend.timeout_check,
            backend_role: backend.role,
            max_lag: backend.max_lag,
        });
        if health.is_none() && agent.is_none() && role.is_none() {
            return None;
        }
        Some(CheckSpec {
            backend: backend.name.clone(),
            server: server.name.clone(),
            health,
            agent,
            role,
            on_marked_down_shutdown_sessions: server.on_marked_down_shutdown_sessions,
            on_marked_up_shutdown_backup_sessions: server.on_marked_up_shutdown_backup_sessions
                && !server.backup,
        })
    }
}

/// The next check time: one interval after the previous *planned* time, so wake-up latency
/// does not accumulate into a slower schedule; never in the past (a check that overran its
/// slot runs again at once rather than in a burst).
fn reschedule(planned: Instant, interval: Duration) -> Instant {
    (planned + interval).max(Instant::now())
}

/// Sleeps until `next`, and on while the server is in MAINT (checks are suspended there, as in
/// HAProxy), looking again every `inter`. Returns when the check is due, or `None` once
/// `stop` is cancelled.
async fn next_turn(
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

/// Runs one health check of the configured method.
pub async fn run_check(method: &CheckMethod, target: &Target) -> CheckResult {
    match method {
        CheckMethod::Tcp => tcp::check(target).await,
        CheckMethod::TcpCheck(rules) => tcp_check::check(target, rules).await,
        CheckMethod::Pgsql { user } => pgsql::check(target, user).await,
        CheckMethod::Mysql { user, post_41 } => mysql::check(target, user, *post_41).await,
        CheckMethod::Http(spec) => http::check(target, spec).await,
    }
}

/// HAProxy's rise/fall machine for one server: a health counter from 0 to `rise + fall - 1`.
/// UP servers sit at the top and fall one step per failure, going DOWN (counter 0) when a
/// failure finds them at `rise`; DOWN servers climb one step per success and jump to the top,
/// UP, on reaching `rise`. A server starts UP at `rise`, so its very first failure marks it
/// DOWN, as HAProxy 2.6 does (`UP 1/3` before the first check).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RiseFall {
    up: bool,
    health: u32,
    rise: u32,
    fall: u32,
}

/// A state change decided by [`RiseFall::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Became UP after `rise` successes.
    Up,
    /// Became DOWN.
    Down,
}

impl RiseFall {
    /// A server at start: UP, one failure away from DOWN.
    pub fn new(rise: u32, fall: u32) -> RiseFall {
        let (rise, fall) = (rise.max(1), fall.max(1));
        RiseFall {
            up: true,
            health: rise,
            rise,
            fall,
        }
    }

    /// A server known to be DOWN (a check task restarted by a reload).
    pub fn down(rise: u32, fall: u32) -> RiseFall {
        RiseFall {
            up: false,
            health: 0,
            ..RiseFall::new(rise, fall)
        }
    }

    fn top(&self) -> u32 {
        self.rise + self.fall - 1
    }

    /// Whether the server is UP.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// The health counter itself, from 0 to `rise + fall - 1` (HAProxy's `check_health`).
    pub fn counter(&self) -> u32 {
        self.health
    }

    /// Whether a change of state is under way (the `fastinter` case).
    pub fn transitioning(&self) -> bool {
        self.health != 0 && self.health != self.top()
    }

    /// Records one result; returns the transition it causes, if any.
    pub fn record(&mut self, passed: bool) -> Option<Transition> {
        match (self.up, passed) {
            (true, true) => {
                self.health = self.top();
                None
            }
            (true, false) if self.health > self.rise => {
                self.health -= 1;
                None
            }
            (true, false) => {
                self.up = false;
                self.health = 0;
                Some(Transition::Down)
            }
            (false, true) => {
                self.health += 1;
                if self.health < self.rise {
                    return None;
                }
                self.up = true;
                self.health = self.top();
                Some(Transition::Up)
            }
            (false, false) => {
                self.health = 0;
                None
            }
        }
    }

    /// The state as HAProxy prints it in `show stat` and check logs (`UP 2/3`, `DOWN 1/2`).
    pub fn progress(&self) -> String {
        if self.up {
            format!("UP {}/{}", self.health + 1 - self.rise, self.fall)
        } else {
            format!("DOWN {}/{}", self.health, self.rise)
        }
    }
}

/// What the scheduler needs from the rest of the process.
#[derive(Clone)]
pub struct Env {
    /// The current table (to count servers left for the logs and find backups).
    pub table: TableHandle,
    /// Asks `control` to rebuild the table after eligibility changed.
    pub rebuild: mpsc::UnboundedSender<()>,
}

fn servers_left(env: &Env, backend: &str) -> (usize, usize) {
    let table = env.table.load();
    let Some(be) = table.backends.get(backend) else {
        return (0, 0);
    };
    let usable = |backup: bool| {
        be.servers
            .iter()
            .filter(|s| s.backup == backup && s.live.eligible())
            .count()
    };
    (usable(false), usable(true))
}

fn close_backup_sessions(env: &Env, backend: &str) {
    let table = env.table.load();
    if let Some(be) = table.backends.get(backend) {
        for s in be.servers.iter().filter(|s| s.backup) {
            s.live.shutdown_sessions();
        }
    }
}

/// The one place a server's operating state changes (UP ⇄ DOWN), whatever caused it — its
/// health check or its agent — with HAProxy's side effects (`srv_update_status`): the DOWN
/// count (`chkdown`), `on-marked-down shutdown-sessions`, `on-marked-up
/// shutdown-backup-sessions`, and the log line. `was` is the effective health before the cause
/// was applied to `live`; returns whether the operating state changed. The caller asks for the
/// rebuild.
fn operating_change(
    env: &Env,
    spec: &CheckSpec,
    live: &ServerLive,
    was: Health,
    reason: &dyn std::fmt::Display,
) -> bool {
    let now = live.effective_health();
    if now == was {
        return false;
    }
    let name = format!("{}/{}", spec.backend, spec.server);
    if now == Health::Down {
        live.down_transitions.fetch_add(1, Ordering::Relaxed);
        if spec.on_marked_down_shutdown_sessions {
            live.shutdown_sessions();
        }
        let (active, backup) = servers_left(env, &spec.backend);
        let sessions = live.sessions.load(Ordering::Relaxed);
        tracing::warn!(
            "Server {name} is DOWN, reason: {reason}. {active} active and {backup} backup servers left. \
             {sessions} sessions active{}, 0 requeued, 0 remaining in queue.",
            if spec.on_marked_down_shutdown_sessions {
                " (closed: shutdown-sessions)"
            } else {
                ""
            }
        );
        if active == 0 && backup == 0 {
            tracing::error!("proxy '{}' has no server available!", spec.backend);
        }
    } else {
        if spec.on_marked_up_shutdown_backup_sessions {
            close_backup_sessions(env, &spec.backend);
        }
        let (active, backup) = servers_left(env, &spec.backend);
        tracing::info!(
            "Server {name} is UP, reason: {reason}. {active} active and {backup} backup servers online."
        );
    }
    true
}

/// Runs the health check of one server forever (until `stop`).
async fn health_loop(
    spec: CheckSpec,
    hs: HealthSpec,
    live: Arc<ServerLive>,
    env: Env,
    first_delay: Duration,
    stop: CancellationToken,
) {
    // A task restarted by a reload continues from the state it knew.
    let mut machine = if live.health() == Health::Down {
        RiseFall::down(hs.rise, hs.fall)
    } else {
        RiseFall::new(hs.rise, hs.fall)
    };
    live.set_check_health(machine.counter());
    let mut next = Instant::now() + first_delay;
    loop {
        if next_turn(&mut next, hs.inter, &live, &stop).await.is_none() {
            return;
        }
        let target = target(hs.addr, hs.inter, hs.timeout_connect, hs.timeout_check);
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            r = run_check(&hs.method, &target) => r,
        };
        let passed = result.status.passed();
        if !passed {
            live.check_failures.fetch_add(1, Ordering::Relaxed);
        }
        let name = format!("{}/{}", spec.backend, spec.server);
        let transition = machine.record(passed);
        live.set_check_health(machine.counter());
        match transition {
            Some(t) => {
                let was = live.effective_health();
                live.set_health(if t == Transition::Up {
                    Health::Up
                } else {
                    Health::Down
                });
                if !operating_change(&env, &spec, &live, was, &result) {
                    tracing::info!(
                        "Health check for server {name} is {}, reason: {result}; the server stays {:?} (its agent says so).",
                        if t == Transition::Up { "UP" } else { "DOWN" },
                        live.effective_health(),
                    );
                }
                let _ = env.rebuild.send(());
            }
            None if !passed || machine.transitioning() => {
                tracing::debug!(
                    "Health check for server {name} {}, reason: {result}, status: {}.",
                    if passed { "succeeded" } else { "failed" },
                    machine.progress(),
                );
            }
            None => {}
        }
        live.check_durations.health.observe(result.duration);
        live.last_check.store(Some(Arc::new(result)));
        let interval = if machine.transitioning() {
            hs.fastinter
        } else if machine.is_up() {
            hs.inter
        } else {
            hs.downinter
        };
        next = reschedule(next, interval);
    }
}

/// Applies an agent reply; returns whether anything that affects eligibility changed. An
/// agent's `down`/`up` goes through [`operating_change`] like a health check's verdict.
fn apply_agent(
    env: &Env,
    spec: &CheckSpec,
    live: &ServerLive,
    reply: &agent::AgentReply,
    name: &str,
) -> bool {
    let mut changed = false;
    if let Some(h) = reply.health {
        let health = if h == AgentHealth::Up {
            Health::Up
        } else {
            Health::Down
        };
        let was = live.effective_health();
        if live.set_agent_health(health) != health {
            changed = true;
            let reason = format!("Agent reported {h:?}{}", describe(reply));
            if !operating_change(env, spec, live, was, &reason) {
                tracing::info!(
                    "Agent of server {name} reports {h:?}{}; the server stays {:?} (its health check says so).",
                    describe(reply),
                    live.effective_health(),
                );
            }
        }
    }
    if let Some(a) = reply.admin {
        let state = match a {
            AgentAdmin::Ready => AdminState::Ready,
            AgentAdmin::Drain => AdminState::Drain,
            AgentAdmin::Maint => AdminState::Maint,
        };
        if live.set_agent_admin(state) != state {
            changed = true;
            tracing::warn!(
                "Server {name} is {} (set by the agent){}.",
                state.word(),
                describe(reply)
            );
        }
    }
    if let Some(pct) = reply.weight_pct
        && live.agent_weight_pct.swap(pct, Ordering::AcqRel) != pct
    {
        changed = true;
        tracing::info!("Server {name} weight set to {pct}% of its configured weight by the agent.");
    }
    if let Some(m) = reply.maxconn
        && live.agent_maxconn.swap(m, Ordering::AcqRel) != m
    {
        changed = true;
        tracing::info!("Server {name} maxconn set to {m} by the agent.");
    }
    changed
}

fn describe(reply: &agent::AgentReply) -> String {
    reply
        .description
        .as_ref()
        .map(|d| format!(" (\"{d}\")"))
        .unwrap_or_default()
}

/// Runs the agent check of one server forever (until `stop`). A failed agent check changes
/// nothing (HAProxy: connectivity is the health check's business); it is logged once per
/// change of outcome, not on every attempt.
async fn agent_loop(
    spec: CheckSpec,
    ag: AgentSpec,
    live: Arc<ServerLive>,
    env: Env,
    first_delay: Duration,
    stop: CancellationToken,
) {
    let name = format!("{}/{}", spec.backend, spec.server);
    let role_from_agent = spec.role.clone().filter(|r| r.check == RoleCheck::Agent);
    let mut tracker = RoleTracker::default();
    let mut next = Instant::now() + first_delay;
    let mut last_failure: Option<super::Status> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
        let target = target(ag.addr, ag.inter, ag.timeout_connect, ag.timeout_check);
        let outcome = tokio::select! {
            _ = stop.cancelled() => return,
            r = agent::query(&target, ag.send.as_deref()) => r,
        };
        match outcome {
            Ok((reply, result)) => {
                if last_failure.take().is_some() {
                    tracing::info!("Agent check for server {name} answers again.");
                }
                if apply_agent(&env, &spec, &live, &reply, &name) {
                    let _ = env.rebuild.send(());
                }
                if let Some(rs) = &role_from_agent {
                    let report =
                        role::from_agent_description(reply.description.as_deref().unwrap_or(""))
                            .map_err(|e| RoleFailure {
                                problem: RoleProblem::BadAnswer,
                                detail: e,
                            });
                    apply_role(
                        &spec,
                        rs,
                        &live,
                        &env,
                        &mut tracker,
                        report,
                        result.duration,
                    );
                }
                live.check_durations.agent.observe(result.duration);
                live.last_agent.store(Some(Arc::new(result)));
            }
            Err(result) => {
                if last_failure != Some(result.status) {
                    tracing::warn!("Agent check for server {name} failed, reason: {result}.");
                    last_failure = Some(result.status);
                }
                if let Some(rs) = &role_from_agent {
                    let problem = match result.status {
                        super::Status::L4Con => RoleProblem::Refused,
                        super::Status::L4Tout => RoleProblem::Unreachable,
                        _ => RoleProblem::BadAnswer,
                    };
                    let failure = RoleFailure {
                        problem,
                        detail: result.to_string(),
                    };
                    apply_role(
                        &spec,
                        rs,
                        &live,
                        &env,
                        &mut tracker,
                        Err(failure),
                        result.duration,
                    );
                }
                live.check_durations.agent.observe(result.duration);
                live.last_agent.store(Some(Arc::new(result)));
            }
        }
        next = reschedule(next, ag.inter);
    }
}

/// Applies one role-check outcome to the server's live state (see `role_tracker`); asks
/// for a new table when eligibility changed.
fn apply_role(
    spec: &CheckSpec,
    rs: &RoleSpec,
    live: &ServerLive,
    env: &Env,
    tracker: &mut RoleTracker,
    outcome: Result<RoleReport, RoleFailure>,
    duration: Duration,
) {
    let name = format!("{}/{}", spec.backend, spec.server);
    let verdict = tracker.observe(outcome, rs, Current::of(live));
    if role_tracker::apply(verdict, live, &name, duration) {
        let _ = env.rebuild.send(());
    }
}

/// Runs the role check (`role-check pgsql|mysql`) of one server forever (until `stop`).
async fn role_loop(
    spec: CheckSpec,
    rs: RoleSpec,
    live: Arc<ServerLive>,
    env: Env,
    first_delay: Duration,
    stop: CancellationToken,
) {
    let Some(mut probe) = Probe::new(&rs.check, rs.addr) else {
        return;
    };
    let mut tracker = RoleTracker::default();
    let mut next = Instant::now() + first_delay;
    loop {
        if next_turn(&mut next, rs.inter, &live, &stop).await.is_none() {
            return;
        }
        let t = target(rs.addr, rs.inter, rs.timeout_connect, rs.timeout_check);
        let limits = role::Limits {
            connect: t.connect_timeout,
            answer: t.read_timeout,
        };
        let (outcome, duration) = tokio::select! {
            _ = stop.cancelled() => return,
            r = probe.probe(limits) => r,
        };
        live.check_durations.role.observe(duration);
        apply_role(&spec, &rs, &live, &env, &mut tracker, outcome, duration);
        let settled = tracker.failures() == 0 && live.role() != NodeRole::Unknown;
        let interval = if settled { rs.inter } else { rs.fastinter };
        next = reschedule(next, interval);
    }
}

/// The running check tasks, keyed by backend/server; owned by `control`.
#[derive(Default)]
pub struct Scheduler {
    tasks: HashMap<(String, String), (CheckSpec, CancellationToken)>,
}

impl Scheduler {
    /// Starts, restarts or stops tasks so that exactly the checks `config` asks for run. Tasks
    /// whose spec did not change keep running (their rise/fall state too).
    pub fn reconcile(&mut self, config: &Config, env: &Env) {
        let table = env.table.load();
        let mut wanted: Vec<(CheckSpec, Arc<ServerLive>)> = Vec::new();
        for be in &config.backends {
            let Some(rt) = table.backends.get(&be.name) else {
                continue;
            };
            for (i, s) in be.servers.iter().enumerate() {
                let Some(spec) = CheckSpec::of(be, s) else {
                    continue;
                };
                // The table lists the servers in the configuration's order: look there first
                // rather than scan (backends may have 10,000 servers).
                let live = match rt.servers.get(i) {
                    Some(x) if x.name == s.name => Some(x.live.clone()),
                    _ => rt
                        .servers
                        .iter()
                        .find(|x| x.name == s.name)
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
        let count = wanted.len().max(1) as u32;
        for (i, (spec, live)) in wanted.into_iter().enumerate() {
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
            let i = i as u32;
            if let Some(hs) = spec.health.clone() {
                let delay = hs.inter * i / count;
                tokio::spawn(health_loop(
                    spec.clone(),
                    hs,
                    live.clone(),
                    env.clone(),
                    delay,
                    token.clone(),
                ));
            }
            if let Some(ag) = spec.agent.clone() {
                let delay = ag.inter * i / count;
                tokio::spawn(agent_loop(
                    spec.clone(),
                    ag,
                    live.clone(),
                    env.clone(),
                    delay,
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
