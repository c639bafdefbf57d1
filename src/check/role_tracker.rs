//! What one role-check outcome does to a server: the pure [`RoleTracker::observe`] turns an
//! outcome, the backend's role rules and the server's current role into a [`RoleVerdict`];
//! [`apply`] writes that verdict into the server's live state and logs it.
//!
//! The rules: a definite answer takes effect at once (a primary that says it is in recovery
//! stops taking writes now, and its sessions through a `role primary` backend are closed); a
//! refused connection makes the role unknown at once, other failures after `fall` checks;
//! unknown is never eligible. Over `max-lag` (or of unknown lag) a replica leaves at once
//! and comes back after `rise` good readings; its running sessions are left alone.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rolelb_roles::Lag;

use super::role::{RoleFailure, RoleReport, node_role};
use super::scheduler::RoleSpec;
use crate::config::Role;
use crate::table::{NodeRole, RoleCheckState, RoleProblem, ServerLive};

/// What the role checker remembers between checks of one server.
#[derive(Debug, Default)]
pub struct RoleTracker {
    /// Consecutive failed role checks.
    failures: u32,
    /// The problem last logged, so a failing check logs once per kind of failure.
    logged: Option<RoleProblem>,
    /// Consecutive lag readings within `max-lag` while the server is out for lag.
    lag_streak: u32,
    /// The lag state last logged (`true`: within `max-lag`), so a replica that is over or of
    /// unknown lag from its very first reading is logged NOLB too; `None` until then.
    lag_logged: Option<bool>,
}

/// The server's state as the role check left it last time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Current {
    /// Its role.
    pub role: NodeRole,
    /// Whether its lag lets it take reads.
    pub lag_ok: bool,
}

impl Current {
    /// The current state of `live`.
    pub fn of(live: &ServerLive) -> Current {
        Current {
            role: live.role(),
            lag_ok: live.lag_ok(),
        }
    }
}

/// Something worth a log line, once per change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// The role check answers again after failures.
    AnswersAgain(NodeRole),
    /// The primary now reports another role.
    LostPrimary(NodeRole),
    /// The role changed (not from primary).
    RoleChanged {
        /// Before.
        from: NodeRole,
        /// Now.
        to: NodeRole,
    },
    /// Its sessions are closed: it lost the primary role behind a `role primary` backend.
    ClosingSessions,
    /// The replica is back within `max-lag`.
    BackWithinLag(Lag),
    /// The replica is over `max-lag`, or its lag is unknown.
    OverLag(Lag),
    /// The role check failed (first of its kind in a row).
    Failed(RoleProblem, String),
    /// The role became unknown after this many failures.
    Unknown(u32, RoleProblem),
}

/// What one outcome does to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleVerdict {
    /// The role to set; `None`: leave it.
    pub role: Option<NodeRole>,
    /// The lag to store; `None`: leave it.
    pub lag: Option<Lag>,
    /// Whether its lag lets it take reads; `None`: leave it.
    pub lag_ok: Option<bool>,
    /// Close its sessions now.
    pub close_sessions: bool,
    /// Its eligibility changed: a new table is needed.
    pub changed: bool,
    /// What went wrong, for the check's state (`None`: it answered).
    pub problem: Option<RoleProblem>,
    /// The lag or the failure, for the check's state.
    pub detail: String,
    /// What to log.
    pub notes: Vec<Note>,
}

impl RoleTracker {
    /// Judges one role-check outcome for a server in state `current` under `spec`'s rules.
    pub fn observe(
        &mut self,
        outcome: Result<RoleReport, RoleFailure>,
        spec: &RoleSpec,
        current: Current,
    ) -> RoleVerdict {
        match outcome {
            Ok(report) => self.answered(report, spec, current),
            Err(failure) => self.failed(failure, spec, current),
        }
    }

    /// Consecutive failed role checks so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    fn answered(&mut self, report: RoleReport, spec: &RoleSpec, current: Current) -> RoleVerdict {
        let role = node_role(report.role);
        let mut notes = Vec::new();
        if self.logged.take().is_some() {
            notes.push(Note::AnswersAgain(role));
        }
        self.failures = 0;
        let mut changed = false;
        let mut close_sessions = false;
        if current.role != role {
            changed = true;
            if current.role == NodeRole::Primary {
                notes.push(Note::LostPrimary(role));
                if spec.backend_role == Role::Primary {
                    close_sessions = true;
                    notes.push(Note::ClosingSessions);
                }
            } else {
                notes.push(Note::RoleChanged {
                    from: current.role,
                    to: role,
                });
            }
        }
        // `None`: no max-lag; `Some(None)`: the lag is unknown.
        let within = spec.max_lag.map(|max| report.lag.within(max));
        let ok = match within {
            None => true,
            Some(Some(true)) if current.lag_ok => true,
            Some(Some(true)) => {
                self.lag_streak += 1;
                self.lag_streak >= spec.rise
            }
            Some(Some(false) | None) => {
                self.lag_streak = 0;
                false
            }
        };
        if current.lag_ok != ok {
            changed = true;
            self.lag_streak = 0;
        }
        // Lag is logged for replicas of backends with `max-lag` only, once per change of
        // state; a reading within max-lag that still waits for `rise` logs nothing.
        if within.is_some() && role == NodeRole::Replica {
            if ok && self.lag_logged != Some(true) {
                self.lag_logged = Some(true);
                notes.push(Note::BackWithinLag(report.lag));
            } else if within != Some(Some(true)) && self.lag_logged != Some(false) {
                self.lag_logged = Some(false);
                notes.push(Note::OverLag(report.lag));
            }
        }
        RoleVerdict {
            role: Some(role),
            lag: Some(report.lag),
            lag_ok: Some(ok),
            close_sessions,
            changed,
            problem: None,
            detail: report.lag.to_string(),
            notes,
        }
    }

    fn failed(&mut self, failure: RoleFailure, spec: &RoleSpec, current: Current) -> RoleVerdict {
        let mut notes = Vec::new();
        self.failures += 1;
        if self.logged != Some(failure.problem) {
            notes.push(Note::Failed(failure.problem, failure.detail.clone()));
            self.logged = Some(failure.problem);
        }
        // A refused connection means nothing listens on the database's port: whatever it
        // was, it is not serving as primary now, so that needs no `fall` confirmations.
        // Timeouts and bad answers may be passing trouble and wait for `fall` failures.
        let needed = if failure.problem == RoleProblem::Refused {
            1
        } else {
            spec.fall
        };
        let unknown = self.failures >= needed && current.role != NodeRole::Unknown;
        if unknown {
            self.lag_logged = None;
            notes.push(Note::Unknown(self.failures, failure.problem));
        }
        RoleVerdict {
            role: unknown.then_some(NodeRole::Unknown),
            lag: unknown.then_some(Lag::UNKNOWN),
            lag_ok: unknown.then_some(false),
            close_sessions: false,
            changed: unknown,
            problem: Some(failure.problem),
            detail: failure.detail,
            notes,
        }
    }
}

/// Writes `verdict` into `live` and logs its notes for server `name` (`backend/server`);
/// `duration` is the check's. Returns whether a new table is needed.
pub fn apply(verdict: RoleVerdict, live: &ServerLive, name: &str, duration: Duration) -> bool {
    if let Some(lag) = verdict.lag {
        live.lag_bytes
            .store(lag.bytes.unwrap_or(u64::MAX), Ordering::Relaxed);
        let ms = lag.time.map_or(u64::MAX, |d| {
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
        });
        live.lag_ms.store(ms, Ordering::Relaxed);
    }
    // What the swaps return also counts: a reload may have reset the role in between.
    let mut changed = verdict.changed;
    if let Some(role) = verdict.role {
        changed |= live.set_role(role) != role;
    }
    if let Some(ok) = verdict.lag_ok {
        changed |= live.set_lag_ok(ok) != ok;
    }
    if verdict.close_sessions {
        live.shutdown_sessions();
    }
    for note in &verdict.notes {
        log(note, name, duration);
    }
    live.last_role_check.store(Some(Arc::new(RoleCheckState {
        role: live.role(),
        problem: verdict.problem,
        detail: verdict.detail,
        duration,
    })));
    changed
}

fn log(note: &Note, name: &str, duration: Duration) {
    match note {
        Note::AnswersAgain(role) => tracing::info!(
            "Role check for server {name} answers again: {}.",
            role.name()
        ),
        Note::LostPrimary(role) => tracing::warn!(
            "Server {name} is no longer the primary: it reports {} (check duration: {}ms).",
            role.name(),
            duration.as_millis()
        ),
        Note::RoleChanged { from, to } => tracing::info!(
            "Server {name} reports role {} (was {}).",
            to.name(),
            from.name()
        ),
        Note::ClosingSessions => {
            tracing::warn!("Closing the sessions of {name}: it lost the primary role.")
        }
        Note::BackWithinLag(lag) => {
            tracing::info!("Server {name} is back within max-lag ({lag}).")
        }
        Note::OverLag(lag) => {
            tracing::warn!("Server {name} is NOLB: {lag} over max-lag or unknown.")
        }
        Note::Failed(problem, detail) => tracing::warn!(
            "Role check for server {name} failed ({}): {detail}, check duration: {}ms.",
            problem.name(),
            duration.as_millis()
        ),
        Note::Unknown(failures, problem) => tracing::warn!(
            "Server {name} role is unknown after {failures} failed role checks ({}): not eligible.",
            problem.name()
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use rolelb_roles::{LagLimit, Reading};

    use super::*;
    use crate::config::RoleCheck;

    fn spec(backend_role: Role, max_lag: Option<LagLimit>, rise: u32, fall: u32) -> RoleSpec {
        RoleSpec {
            check: RoleCheck::Agent,
            addr: SocketAddr::from(([127, 0, 0, 1], 5432)),
            inter: Duration::from_secs(2),
            fastinter: Duration::from_secs(1),
            rise,
            fall,
            timeout_connect: None,
            timeout_check: None,
            backend_role,
            max_lag,
            proxy_header: None,
            source: None,
        }
    }

    fn replica(bytes: Option<u64>) -> Result<RoleReport, RoleFailure> {
        Ok(Reading::replica(Lag {
            bytes,
            time: Some(Duration::ZERO),
        }))
    }

    fn failure(problem: RoleProblem) -> Result<RoleReport, RoleFailure> {
        Err(RoleFailure {
            problem,
            detail: "127.0.0.1:5432: boom".into(),
        })
    }

    /// Runs `outcomes` through a tracker, carrying the state from verdict to verdict as
    /// `apply` would; returns each verdict.
    fn run(
        spec: &RoleSpec,
        start: Current,
        outcomes: Vec<Result<RoleReport, RoleFailure>>,
    ) -> Vec<(RoleVerdict, Current)> {
        let mut tracker = RoleTracker::default();
        let mut current = start;
        outcomes
            .into_iter()
            .map(|o| {
                let v = tracker.observe(o, spec, current);
                current = Current {
                    role: v.role.unwrap_or(current.role),
                    lag_ok: v.lag_ok.unwrap_or(current.lag_ok),
                };
                (v, current)
            })
            .collect()
    }

    const UNKNOWN: Current = Current {
        role: NodeRole::Unknown,
        lag_ok: false,
    };

    #[test]
    fn over_max_lag_leaves_at_once_and_returns_after_rise_good_readings() {
        let s = spec(Role::Replica, Some(LagLimit::Bytes(1000)), 3, 2);
        let v = run(
            &s,
            UNKNOWN,
            vec![
                replica(Some(10)),
                replica(Some(5000)),
                replica(Some(10)),
                replica(Some(10)),
                replica(Some(10)),
            ],
        );
        let eligible: Vec<bool> = v.iter().map(|(_, c)| c.lag_ok).collect();
        // Coming from unknown, a replica within max-lag still needs `rise` readings; one
        // reading over it starts the count again.
        assert_eq!(eligible, [false, false, false, false, true]);
        let (mut streak_tracker, mut cur) = (RoleTracker::default(), UNKNOWN);
        for _ in 0..3 {
            let v = streak_tracker.observe(replica(Some(10)), &s, cur);
            cur.role = v.role.unwrap_or(cur.role);
            cur.lag_ok = v.lag_ok.unwrap_or(cur.lag_ok);
        }
        assert!(cur.lag_ok, "three good readings put it back");
        let over = streak_tracker.observe(replica(Some(1001)), &s, cur);
        assert_eq!(
            over.lag_ok,
            Some(false),
            "one reading over max-lag is enough"
        );
        assert!(over.changed, "leaving for lag changes eligibility");
        assert!(!over.close_sessions, "running sessions are left alone");
        assert!(matches!(over.notes.as_slice(), [Note::OverLag(_)]));
        let back = &v[4].0;
        assert!(back.changed);
        assert!(matches!(back.notes.as_slice(), [Note::BackWithinLag(_)]));
    }

    #[test]
    fn a_bad_reading_resets_the_way_back() {
        let s = spec(Role::Replica, Some(LagLimit::Bytes(1000)), 2, 2);
        let v = run(
            &s,
            Current {
                role: NodeRole::Replica,
                lag_ok: false,
            },
            vec![
                replica(Some(10)),
                replica(None),
                replica(Some(10)),
                replica(Some(10)),
            ],
        );
        let eligible: Vec<bool> = v.iter().map(|(_, c)| c.lag_ok).collect();
        assert_eq!(eligible, [false, false, false, true]);
        assert!(
            matches!(v[1].0.notes.as_slice(), [Note::OverLag(_)]),
            "unknown lag is logged as out: {:?}",
            v[1].0.notes
        );
    }

    #[test]
    fn without_max_lag_any_replica_reading_is_eligible_at_once() {
        let s = spec(Role::Replica, None, 3, 3);
        let v = run(&s, UNKNOWN, vec![replica(None)]);
        assert!(v[0].1.lag_ok);
        assert_eq!(v[0].1.role, NodeRole::Replica);
        assert!(v[0].0.changed);
    }

    #[test]
    fn refused_means_unknown_at_once() {
        let s = spec(Role::Primary, None, 2, 3);
        let primary = Current {
            role: NodeRole::Primary,
            lag_ok: true,
        };
        let v = run(&s, primary, vec![failure(RoleProblem::Refused)]);
        let (verdict, now) = &v[0];
        assert_eq!(now.role, NodeRole::Unknown);
        assert_eq!(verdict.lag, Some(Lag::UNKNOWN));
        assert_eq!(verdict.lag_ok, Some(false));
        assert!(verdict.changed);
        assert_eq!(verdict.problem, Some(RoleProblem::Refused));
        assert!(matches!(
            verdict.notes.as_slice(),
            [Note::Failed(..), Note::Unknown(1, RoleProblem::Refused)]
        ));
    }

    #[test]
    fn other_failures_make_the_role_unknown_after_fall() {
        let s = spec(Role::Primary, None, 2, 3);
        let primary = Current {
            role: NodeRole::Primary,
            lag_ok: true,
        };
        for problem in [
            RoleProblem::Unreachable,
            RoleProblem::Rejected,
            RoleProblem::BadAnswer,
        ] {
            let v = run(&s, primary, vec![failure(problem); 4]);
            let roles: Vec<NodeRole> = v.iter().map(|(_, c)| c.role).collect();
            assert_eq!(
                roles,
                [
                    NodeRole::Primary,
                    NodeRole::Primary,
                    NodeRole::Unknown,
                    NodeRole::Unknown
                ],
                "{problem:?}"
            );
            assert!(!v[0].0.changed && !v[1].0.changed && v[2].0.changed && !v[3].0.changed);
            assert_eq!(v[0].0.notes.len(), 1, "the first failure is logged");
            assert!(v[1].0.notes.is_empty(), "the same failure is logged once");
        }
    }

    #[test]
    fn an_answer_resets_the_failure_count() {
        let s = spec(Role::Primary, None, 2, 2);
        let primary = Current {
            role: NodeRole::Primary,
            lag_ok: true,
        };
        let v = run(
            &s,
            primary,
            vec![
                failure(RoleProblem::Unreachable),
                Ok(Reading::PRIMARY),
                failure(RoleProblem::Unreachable),
            ],
        );
        assert!(v.iter().all(|(_, c)| c.role == NodeRole::Primary));
        assert_eq!(v[1].0.notes, [Note::AnswersAgain(NodeRole::Primary)]);
    }

    #[test]
    fn a_primary_turning_replica_loses_writes_at_once_and_its_sessions_close() {
        let primary = Current {
            role: NodeRole::Primary,
            lag_ok: true,
        };
        let behind_primary = spec(Role::Primary, None, 3, 3);
        let v = run(&behind_primary, primary, vec![replica(Some(0))]);
        assert_eq!(v[0].1.role, NodeRole::Replica);
        assert!(v[0].0.changed && v[0].0.close_sessions);
        let behind_replica = spec(Role::Replica, None, 3, 3);
        let v = run(&behind_replica, primary, vec![replica(Some(0))]);
        assert!(v[0].0.changed && !v[0].0.close_sessions);
    }
}
