//! The questions a client can ask the agent, named as Patroni names its HTTP endpoints, and
//! the answer to each from a [`Snapshot`].
//!
//! The HTTP server maps a path (`/primary`, `/replica?lag=16MB`, ...) to an [`Endpoint`]; the
//! agent-check server maps an `agent-send` line (`primary`, `replica`, ...) to the same thing.
//! [`Endpoint::serves`] judges the database (up, role, lag) and [`Endpoint::admits`] the
//! admin state, so HTTP can require both while an agent-check line carries the admin state
//! as its own word.

use crate::status::{AdminState, DbState, Lag, Role, Snapshot};
use crate::units::{self, LagLimit, UnitError};

/// One health question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/primary`, `/master`, `/read-write`, `/`: the node takes writes.
    Primary,
    /// `/replica`: a replica within the lag limit.
    Replica {
        /// `?lag=` (else the config's `max_lag`).
        lag: Option<LagLimit>,
    },
    /// `/read-only`: the node can serve reads (primary, or replica within the lag limit).
    ReadOnly {
        /// `?lag=` (else the config's `max_lag`).
        lag: Option<LagLimit>,
    },
    /// `/health`: the database answers.
    Health,
    /// `/liveness`: the agent runs (always yes).
    Liveness,
    /// `/readiness`: the database answers and the node is not in maintenance.
    Readiness,
}

/// Why a path or `agent-send` line names no endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// No such endpoint.
    #[error("unknown endpoint {0:?}")]
    Unknown(String),
    /// `?lag=` is not a size or duration.
    #[error("bad lag: {0}")]
    BadLag(#[from] UnitError),
}

impl Endpoint {
    /// Reads a path (leading `/` optional) and its query string.
    pub fn parse(path: &str, query: Option<&str>) -> Result<Endpoint, EndpointError> {
        let lag = match query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .find_map(|kv| kv.strip_prefix("lag="))
        {
            Some(text) => Some(units::parse_lag_limit(text)?),
            None => None,
        };
        Ok(match path.trim_start_matches('/') {
            "" | "primary" | "master" | "read-write" => Endpoint::Primary,
            "replica" => Endpoint::Replica { lag },
            "read-only" => Endpoint::ReadOnly { lag },
            "health" => Endpoint::Health,
            "liveness" => Endpoint::Liveness,
            "readiness" => Endpoint::Readiness,
            other => return Err(EndpointError::Unknown(other.to_string())),
        })
    }

    /// Whether the database, as `snap` sees it, fits this endpoint; `Err` says why not.
    /// `max_lag` applies where the request names no lag. Ignores the admin state.
    pub fn serves(&self, snap: &Snapshot, max_lag: Option<LagLimit>) -> Result<(), String> {
        if *self == Endpoint::Liveness {
            return Ok(());
        }
        let (role, lag) = match &snap.db {
            DbState::Up { role, lag } => (*role, *lag),
            DbState::Down { reason } => return Err(reason.clone()),
        };
        match (self, role) {
            (Endpoint::Health | Endpoint::Readiness | Endpoint::Liveness, _) => Ok(()),
            (Endpoint::Primary, Role::Primary) => Ok(()),
            (Endpoint::Primary, Role::Replica) => Err("node is a replica".into()),
            (Endpoint::Replica { .. }, Role::Primary) => Err("node is the primary".into()),
            (Endpoint::ReadOnly { .. }, Role::Primary) => Ok(()),
            (
                Endpoint::Replica { lag: limit } | Endpoint::ReadOnly { lag: limit },
                Role::Replica,
            ) => within(lag, limit.or(max_lag)),
        }
    }

    /// Whether the admin state lets this endpoint answer yes.
    pub fn admits(&self, admin: AdminState) -> bool {
        match self {
            Endpoint::Primary | Endpoint::Replica { .. } | Endpoint::ReadOnly { .. } => {
                admin == AdminState::Ready
            }
            Endpoint::Readiness => admin != AdminState::Maint,
            Endpoint::Health | Endpoint::Liveness => true,
        }
    }

    /// [`Endpoint::serves`] and [`Endpoint::admits`] together: the HTTP answer.
    pub fn answer(&self, snap: &Snapshot, max_lag: Option<LagLimit>) -> Result<(), String> {
        self.serves(snap, max_lag)?;
        if self.admits(snap.admin) {
            Ok(())
        } else {
            Err(format!("admin state is {}", snap.admin))
        }
    }
}

/// Whether `lag` is within `limit` ([`Lag::within`], as rolelb judges `max-lag`), with
/// why not; unknown lag is never within a limit.
fn within(lag: Lag, limit: Option<LagLimit>) -> Result<(), String> {
    let Some(limit) = limit else {
        return Ok(());
    };
    match (lag.within(limit), limit) {
        (Some(true), _) => Ok(()),
        (None, LagLimit::Bytes(_)) => Err("replication lag in bytes is unknown".into()),
        (None, LagLimit::Time(_)) => Err("replication lag in seconds is unknown".into()),
        (Some(false), LagLimit::Bytes(max)) => Err(format!(
            "replication lag {} bytes exceeds {max} bytes",
            lag.bytes.unwrap_or_default()
        )),
        (Some(false), LagLimit::Time(max)) => Err(format!(
            "replication lag {:.3}s exceeds {:.3}s",
            lag.time.unwrap_or_default().as_secs_f64(),
            max.as_secs_f64()
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn up(role: Role, bytes: Option<u64>, seconds: Option<f64>) -> DbState {
        DbState::Up {
            role,
            lag: Lag {
                bytes,
                time: seconds.and_then(rolelb_roles::seconds),
            },
        }
    }

    fn down() -> DbState {
        DbState::Down {
            reason: "connection refused".into(),
        }
    }

    fn ep(path: &str) -> Endpoint {
        let (p, q) = path
            .split_once('?')
            .map_or((path, None), |(p, q)| (p, Some(q)));
        Endpoint::parse(p, q).unwrap()
    }

    #[test]
    fn paths_map_to_endpoints() {
        for p in ["/", "/primary", "/master", "/read-write", "primary"] {
            assert_eq!(ep(p), Endpoint::Primary, "{p}");
        }
        assert_eq!(ep("/replica"), Endpoint::Replica { lag: None });
        assert_eq!(
            ep("/replica?lag=1MB"),
            Endpoint::Replica {
                lag: Some(LagLimit::Bytes(1 << 20))
            }
        );
        assert_eq!(
            ep("/read-only?x=1&lag=5s"),
            Endpoint::ReadOnly {
                lag: Some(LagLimit::Time(Duration::from_secs(5)))
            }
        );
        assert_eq!(ep("/health"), Endpoint::Health);
        assert_eq!(ep("/liveness"), Endpoint::Liveness);
        assert_eq!(ep("/readiness"), Endpoint::Readiness);
        assert!(matches!(
            Endpoint::parse("/standby-leader", None),
            Err(EndpointError::Unknown(_))
        ));
        assert!(matches!(
            Endpoint::parse("/replica", Some("lag=lots")),
            Err(EndpointError::BadLag(_))
        ));
    }

    /// Every endpoint against every role, admin state and a lag inside and outside the limit.
    #[test]
    fn decision_matrix() {
        let limit = Some(LagLimit::Bytes(1000));
        let dbs = [
            ("primary", up(Role::Primary, Some(0), Some(0.0))),
            ("replica-fresh", up(Role::Replica, Some(10), Some(0.5))),
            ("replica-lagging", up(Role::Replica, Some(5000), Some(30.0))),
            ("replica-unknown-lag", up(Role::Replica, None, None)),
            ("down", down()),
        ];
        let endpoints = [
            "/primary",
            "/replica",
            "/read-only",
            "/health",
            "/liveness",
            "/readiness",
        ];
        // Expected 200s for admin `ready`, by database state, in `endpoints` order.
        let ready: [(&str, [bool; 6]); 5] = [
            ("primary", [true, false, true, true, true, true]),
            ("replica-fresh", [false, true, true, true, true, true]),
            ("replica-lagging", [false, false, false, true, true, true]),
            (
                "replica-unknown-lag",
                [false, false, false, true, true, true],
            ),
            ("down", [false, false, false, false, true, false]),
        ];
        for ((name, db), (name2, expect)) in dbs.iter().zip(ready.iter()) {
            assert_eq!(name, name2);
            for admin in [AdminState::Ready, AdminState::Drain, AdminState::Maint] {
                let snap = Snapshot {
                    db: db.clone(),
                    admin,
                };
                for (path, want_ready) in endpoints.iter().zip(expect.iter()) {
                    let e = ep(path);
                    let want = match (admin, *path) {
                        (_, "/liveness" | "/health") => *want_ready,
                        (AdminState::Ready, _) => *want_ready,
                        (AdminState::Drain, "/readiness") => *want_ready,
                        _ => false,
                    };
                    let got = e.answer(&snap, limit);
                    assert_eq!(got.is_ok(), want, "{name} {admin} {path}: {got:?}");
                }
            }
        }
    }

    #[test]
    fn query_lag_overrides_max_lag() {
        let snap = Snapshot {
            db: up(Role::Replica, Some(5000), Some(2.0)),
            admin: AdminState::Ready,
        };
        let limit = Some(LagLimit::Bytes(1000));
        assert!(ep("/replica").answer(&snap, limit).is_err());
        assert!(ep("/replica?lag=1MB").answer(&snap, limit).is_ok());
        assert!(ep("/replica?lag=1s").answer(&snap, limit).is_err());
        assert!(ep("/replica?lag=3s").answer(&snap, limit).is_ok());
        assert!(ep("/replica").answer(&snap, None).is_ok());
    }

    #[test]
    fn reasons_say_why() {
        let snap = Snapshot {
            db: up(Role::Replica, Some(5000), None),
            admin: AdminState::Ready,
        };
        assert_eq!(
            ep("/primary").answer(&snap, None),
            Err("node is a replica".into())
        );
        assert_eq!(
            ep("/replica?lag=100").answer(&snap, None),
            Err("replication lag 5000 bytes exceeds 100 bytes".into())
        );
        assert_eq!(
            ep("/replica?lag=1s").answer(&snap, None),
            Err("replication lag in seconds is unknown".into())
        );
        let drained = Snapshot {
            admin: AdminState::Drain,
            ..snap
        };
        assert_eq!(
            ep("/replica").answer(&drained, None),
            Err("admin state is drain".into())
        );
        let down = Snapshot {
            db: down(),
            admin: AdminState::Ready,
        };
        assert_eq!(
            ep("/health").answer(&down, None),
            Err("connection refused".into())
        );
    }
}
