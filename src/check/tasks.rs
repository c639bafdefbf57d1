//! The per-server check tasks on one skeleton (wait for the turn, run, record, reschedule):
//! the health loop, the agent loop and the role loop, and the one place a server's operating
//! state changes (UP ⇄ DOWN) with HAProxy's side effects, whatever caused it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::agent::{self, AgentAdmin, AgentHealth};
use super::external;
use super::rise_fall::{RiseFall, Transition};
use super::role::{self, Probe, RoleFailure, RoleReport};
use super::role_tracker::{self, Current, RoleTracker};
use super::scheduler::{
    AgentSpec, CheckSpec, Env, HealthSpec, RoleSpec, after_this_check, next_turn, on_the_beat,
    run_check_as, spread, target,
};
use super::tls::TlsClient;
use super::{CheckResult, Status};
use crate::config::{CheckMethod, RoleCheck};
use crate::table::{AdminState, Health, NodeRole, RoleProblem, ServerLive};

fn servers_left(env: &Env, backend: &str) -> (usize, usize) {
    let table = env.table().load();
    let Some(be) = table.backends.get(backend) else {
        return (0, 0);
    };
    // HAProxy's `srv_currently_usable`: a server of weight 0 takes no traffic and is not
    // counted.
    let usable = |backup: bool| {
        be.servers
            .iter()
            .filter(|s| {
                s.config.backup == backup
                    && s.live.eligible()
                    && s.live.user_weight(s.config.weight) > 0
            })
            .count()
    };
    (usable(false), usable(true))
}

fn close_backup_sessions(env: &Env, backend: &str) {
    let table = env.table().load();
    if let Some(be) = table.backends.get(backend) {
        for s in be.servers.iter().filter(|s| s.config.backup) {
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
    reason: Option<&dyn std::fmt::Display>,
) -> bool {
    let now = live.effective_health();
    if now == was {
        return false;
    }
    let name = format!(
        "{}Server {}/{}",
        if spec.backup { "Backup " } else { "" },
        spec.backend,
        spec.server
    );
    // HAProxy leaves the reason out when `option log-health-checks` already logged it.
    let reason = reason.map(|r| format!(", reason: {r}")).unwrap_or_default();
    if now == Health::Down {
        live.down_transitions.fetch_add(1, Ordering::Relaxed);
        if spec.on_marked_down_shutdown_sessions {
            live.shutdown_sessions();
        }
        let (active, backup) = servers_left(env, &spec.backend);
        let sessions = live.sessions.load(Ordering::Relaxed);
        tracing::warn!(
            "{name} is DOWN{reason}. {active} active and {backup} backup servers left. \
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
            "{name} is UP{reason}. {active} active and {backup} backup servers online. \
             0 sessions requeued, 0 total in queue."
        );
    }
    true
}

/// HAProxy 2.6's lines for a server's forced administrative state moving from `was` to
/// `now` (its `srv_update_status`), counted after the move.
fn admin_change_lines(
    env: &Env,
    spec: &CheckSpec,
    live: &ServerLive,
    was: AdminState,
    now: AdminState,
) -> Vec<String> {
    let name = format!(
        "{}Server {}/{}",
        if spec.backup { "Backup " } else { "" },
        spec.backend,
        spec.server
    );
    let up = if live.effective_health() == Health::Down {
        "DOWN"
    } else {
        "UP"
    };
    let (active, backup) = servers_left(env, &spec.backend);
    match (was, now) {
        (_, AdminState::Maint) => vec![format!(
            "{name} is going DOWN for maintenance. {active} active and {backup} backup servers \
             left. {} sessions active, 0 requeued, 0 remaining in queue.",
            live.sessions.load(Ordering::Relaxed)
        )],
        (AdminState::Maint, AdminState::Ready) => {
            vec![format!(
                "{name} is {up}/READY (leaving forced maintenance)."
            )]
        }
        (AdminState::Maint, AdminState::Drain) => vec![
            format!("{name} is {up}/DRAIN (leaving forced maintenance)."),
            format!("{name} remains in forced drain mode."),
        ],
        (_, AdminState::Drain) => vec![format!(
            "{name} enters drain state. {active} active and {backup} backup servers online. \
             0 sessions requeued, 0 total in queue."
        )],
        (_, AdminState::Ready) => vec![format!("{name} is {up} (leaving forced drain).")],
    }
}

/// Which check a `log-health-checks` line is about.
#[derive(Clone, Copy)]
enum CheckKind {
    Health,
    Agent,
}

/// HAProxy 2.6's `option log-health-checks` line for one check result (its
/// `set_server_check_status`): `Health|Agent check for [backup ]server BE/SRV
/// [conditionally ]succeeded|failed, reason: ..., status: H/N UP|DRAIN|DOWN.`, where the
/// counter is the check's own (`rise`, `fall`, `health`: an agent check's is 1, 1, and 1 or 0).
fn check_log_line(
    env: &Env,
    spec: &CheckSpec,
    live: &ServerLive,
    result: &CheckResult,
    kind: CheckKind,
    (rise, fall, health): (u32, u32, u32),
) -> String {
    let (done, of, state) = if health >= rise {
        let drained = env
            .table()
            .load()
            .backends
            .get(&spec.backend)
            .and_then(|b| b.servers.iter().find(|s| *s.config.name == *spec.server))
            .is_some_and(|s| live.user_weight(s.config.weight) == 0);
        (
            health - rise + 1,
            fall,
            if drained { "DRAIN" } else { "UP" },
        )
    } else {
        (health, rise, "DOWN")
    };
    format!(
        "{} check for {}server {}/{} {}{}, reason: {result}, status: {done}/{of} {state}.",
        match kind {
            CheckKind::Health => "Health",
            CheckKind::Agent => "Agent",
        },
        if spec.backup { "backup " } else { "" },
        spec.backend,
        spec.server,
        if result.status == Status::L7Okc {
            "conditionally "
        } else {
            ""
        },
        if result.status.passed() {
            "succeeded"
        } else {
            "failed"
        },
    )
}

/// `http-check disable-on-404`: a conditional pass (`L7OKC`) stops new traffic to the server
/// (`NOLB`), a plain pass resumes it. Returns whether that changed.
fn stopping_change(live: &ServerLive, result: &CheckResult, spec: &CheckSpec) -> bool {
    let stopping = result.status == Status::L7Okc;
    if live.set_check_stopping(stopping) == stopping {
        return false;
    }
    let name = format!("{}/{}", spec.backend, spec.server);
    if stopping {
        tracing::warn!("Server {name} is stopping, reason: {result}.");
    } else {
        tracing::info!("Server {name} is UP (leaving stopping mode), reason: {result}.");
    }
    true
}

/// Runs one health check of the server. An external check is given the server's details as
/// they are in the table now (its sessions, ids, the proxy's first `bind`).
async fn run_health(
    hs: &HealthSpec,
    target: &super::Target,
    live: &ServerLive,
    env: &Env,
    spec: &CheckSpec,
    external: &mut external::Runner,
) -> CheckResult {
    let CheckMethod::External(x) = &hs.method else {
        return run_check_as(&hs.method, target, live.health() == Health::Up).await;
    };
    let name = format!("{}/{}", spec.backend, spec.server);
    let table = env.table().load();
    let Some(subject) = external::Subject::find(&table, &spec.backend, &spec.server) else {
        // Only between a reload that removed the server and the end of its task.
        return external::check(x, target.addr, target.connect_timeout).await;
    };
    drop(table);
    // HAProxy gives the program `inter`, or `timeout connect` when `timeout check` is set and
    // that is shorter: the connect part of `target`.
    external
        .run(x, &subject, target.connect_timeout, &name)
        .await
}

/// Runs the health check of one server forever (until `stop`).
pub(crate) async fn health_loop(
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
    // The status of the previous result (HAProxy's `prev_status`; none yet: `INI`).
    let mut last_status: Option<Status> = None;
    live.set_check_health(machine.counter());
    let mut external = external::Runner::default();
    // `check-ssl`: one TLS client for all the checks of this server.
    let tls = hs.tls.as_deref().map(TlsClient::new).transpose();
    if let Err(why) = &tls {
        tracing::error!(
            "{}/{}: health checks over TLS: {why}",
            spec.backend,
            spec.server
        );
    }
    let mut next = Instant::now() + first_delay;
    loop {
        if next_turn(&mut next, hs.inter, &live, &stop).await.is_none() {
            return;
        }
        let mut target = target(hs.addr, hs.inter, hs.timeout_connect, hs.timeout_check);
        target.proxy_header = hs.proxy_header;
        target.source.clone_from(&hs.source);
        let result = match &tls {
            Ok(client) => {
                target.tls = client.clone();
                tokio::select! {
                    _ = stop.cancelled() => return,
                    r = run_health(&hs, &target, &live, &env, &spec, &mut external) => r,
                }
            }
            Err(why) => CheckResult::new(Status::L6Rsp, why.clone(), Duration::ZERO),
        };
        let passed = result.status.passed();
        if passed && stopping_change(&live, &result, &spec) {
            let _ = env.rebuild();
        }
        if !passed {
            live.check_failures.fetch_add(1, Ordering::Relaxed);
        }
        let name = format!("{}/{}", spec.backend, spec.server);
        let counter = machine.counter();
        let transition = machine.record(passed);
        live.set_check_health(machine.counter());
        let status_changed = last_status.replace(result.status) != Some(result.status);
        // As HAProxy: a line when the status changes or the health counter moves.
        if spec.log_health_checks && (status_changed || machine.counter() != counter) {
            let line = check_log_line(
                &env,
                &spec,
                &live,
                &result,
                CheckKind::Health,
                (machine.rise(), machine.fall(), machine.counter()),
            );
            tracing::warn!("{line}");
        }
        match transition {
            Some(t) => {
                let was = live.effective_health();
                live.set_health(if t == Transition::Up {
                    Health::Up
                } else {
                    Health::Down
                });
                let reason = (!spec.log_health_checks).then_some(&result as &dyn std::fmt::Display);
                if !operating_change(&env, &spec, &live, was, reason) {
                    tracing::info!(
                        "Health check for server {name} is {}, reason: {result}; the server stays {:?} (its agent says so).",
                        if t == Transition::Up { "UP" } else { "DOWN" },
                        live.effective_health(),
                    );
                }
                let _ = env.rebuild();
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
        next = after_this_check(spread(interval, hs.spread));
    }
}

/// Applies an agent reply; returns whether anything that affects eligibility changed. An
/// agent's `down`/`up` goes through [`operating_change`] like a health check's verdict.
fn apply_agent(
    env: &Env,
    spec: &CheckSpec,
    live: &ServerLive,
    reply: &agent::AgentReply,
    result: &CheckResult,
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
            // As HAProxy: the reason is the agent check's result, left out when
            // `log-health-checks` already logged it.
            let reason = (!spec.log_health_checks).then_some(result as &dyn std::fmt::Display);
            if !operating_change(env, spec, live, was, reason) {
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
        let was = live.set_agent_admin(state);
        if was != state {
            changed = true;
            for line in admin_change_lines(env, spec, live, was, state) {
                tracing::warn!("{line}");
            }
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
pub(crate) async fn agent_loop(
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
    // The agent check's status (HAProxy's `check->status`; `None`: INI), for
    // `log-health-checks`.
    let mut last_status: Option<Status> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
        let mut target = target(
            ag.addr,
            ag.agent_inter,
            ag.timeout_connect,
            ag.timeout_check,
        );
        target.source.clone_from(&ag.source);
        let outcome = tokio::select! {
            _ = stop.cancelled() => return,
            r = agent::query(&target, ag.agent_send.as_deref()) => r,
        };
        // The agent's answer (or its failure) is also the role check's outcome with `role-check agent`.
        // `log-health-checks`: as HAProxy, a line for a result whose status changed (not for a
        // reply without a health word, HAProxy's neutral `CHECKED`), with the agent's own
        // counter (1 after `up`, 0 after `down`/`fail`/`stopped`), logged before the server's
        // UP/DOWN line the reply may cause.
        let (status, reported_health) = match &outcome {
            Ok((reply, result)) => (result.status, reply.health),
            Err(result) => (result.status, None),
        };
        if last_status.replace(status) != Some(status)
            && spec.log_health_checks
            && status != Status::Checked
        {
            let up =
                reported_health.map_or(live.agent_health() == Health::Up, |h| h == AgentHealth::Up);
            let result = match &outcome {
                Ok((_, result)) | Err(result) => result,
            };
            let line = check_log_line(
                &env,
                &spec,
                &live,
                result,
                CheckKind::Agent,
                (1, 1, u32::from(up)),
            );
            tracing::warn!("{line}");
        }
        let (role_outcome, result) = match outcome {
            Ok((reply, result)) => {
                if last_failure.take().is_some() && !spec.log_health_checks {
                    tracing::info!("Agent check for server {name} answers again.");
                }
                if apply_agent(&env, &spec, &live, &reply, &result, &name) {
                    let _ = env.rebuild();
                }
                let report =
                    role::from_agent_description(reply.description.as_deref().unwrap_or(""))
                        .map_err(|e| RoleFailure {
                            problem: RoleProblem::BadAnswer,
                            detail: e,
                        });
                (report, result)
            }
            Err(result) => {
                if last_failure != Some(result.status) {
                    // Without `log-health-checks` (which logs it as HAProxy does), rolelb
                    // still says once that the agent stopped answering.
                    if !spec.log_health_checks {
                        tracing::warn!("Agent check for server {name} failed, reason: {result}.");
                    }
                    last_failure = Some(result.status);
                }
                let problem = match result.status {
                    super::Status::L4Con => RoleProblem::Refused,
                    super::Status::L4Tout => RoleProblem::Unreachable,
                    _ => RoleProblem::BadAnswer,
                };
                let failure = RoleFailure {
                    problem,
                    detail: result.to_string(),
                };
                (Err(failure), result)
            }
        };
        if let Some(rs) = &role_from_agent {
            apply_role(
                &spec,
                rs,
                &live,
                &env,
                &mut tracker,
                role_outcome,
                result.duration,
            );
        }
        live.check_durations.agent.observe(result.duration);
        live.last_agent.store(Some(Arc::new(result)));
        next = after_this_check(spread(ag.agent_inter, ag.spread));
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
        let _ = env.rebuild();
    }
}

/// Runs the role check (`role-check pgsql|mysql`) of one server forever (until `stop`).
pub(crate) async fn role_loop(
    spec: CheckSpec,
    rs: RoleSpec,
    live: Arc<ServerLive>,
    env: Env,
    first_delay: Duration,
    stop: CancellationToken,
) {
    let Some(mut probe) = Probe::new(&rs.check, rs.addr, rs.proxy_header, rs.source.clone()) else {
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
        next = on_the_beat(next, interval);
    }
}
