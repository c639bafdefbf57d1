//! What the agent knows about its node, shared between the writers and every reply.
//!
//! The poller stores a [`DbStatus`] after each poll and the admin-state watcher stores an
//! [`AdminState`]; the agent-check and HTTP servers take a [`Snapshot`] of both per request.
//! Reads are lock-free (an `ArcSwap` and an atomic), so a reply never waits on the database.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

/// The role and lag a poll reads, as rolelb reads them too.
pub use rolelb_roles::{Lag, Role};

/// The outcome of the last poll.
#[derive(Debug, Clone, PartialEq)]
pub enum DbState {
    /// The database answered.
    Up {
        /// Its role.
        role: Role,
        /// Its lag (zero on a primary).
        lag: Lag,
    },
    /// The poll failed or timed out; `reason` says how.
    Down {
        /// Why, for logs and the JSON body.
        reason: String,
    },
}

/// A poll outcome and when it was taken.
#[derive(Debug, Clone, PartialEq)]
pub struct DbStatus {
    /// The outcome.
    pub state: DbState,
    /// When the poll finished.
    pub at: Instant,
}

/// The operator's local admin state, set with `rolelb-agent state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum AdminState {
    /// Normal service.
    #[default]
    Ready = 0,
    /// Take no new connections; let existing ones finish.
    Drain = 1,
    /// Out of service.
    Maint = 2,
}

impl AdminState {
    /// The word used on the wire and in the state file.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminState::Ready => "ready",
            AdminState::Drain => "drain",
            AdminState::Maint => "maint",
        }
    }

    /// Reads `ready`, `drain` or `maint`.
    pub fn parse(word: &str) -> Option<AdminState> {
        match word {
            "ready" => Some(AdminState::Ready),
            "drain" => Some(AdminState::Drain),
            "maint" => Some(AdminState::Maint),
            _ => None,
        }
    }

    fn from_u8(v: u8) -> AdminState {
        match v {
            1 => AdminState::Drain,
            2 => AdminState::Maint,
            _ => AdminState::Ready,
        }
    }
}

impl fmt::Display for AdminState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The shared cache: the last poll outcome and the admin state.
#[derive(Debug)]
pub struct Status {
    db: ArcSwap<DbStatus>,
    admin: AtomicU8,
    stale_after: Duration,
    /// Becomes true when the first poll outcome is stored.
    polled: tokio::sync::watch::Sender<bool>,
}

impl Status {
    /// A cache that says `down` until the first poll lands; a poll outcome older than
    /// `stale_after` reads as `down` too (so a stuck poller never leaves a stale `up`).
    pub fn new(admin: AdminState, stale_after: Duration) -> Arc<Status> {
        Arc::new(Status {
            db: ArcSwap::from_pointee(DbStatus {
                state: DbState::Down {
                    reason: "starting: no poll finished yet".into(),
                },
                at: Instant::now(),
            }),
            admin: AtomicU8::new(admin as u8),
            stale_after,
            polled: tokio::sync::watch::Sender::new(false),
        })
    }

    /// Stores a poll outcome.
    pub fn set_db(&self, state: DbState) {
        self.db.store(Arc::new(DbStatus {
            state,
            at: Instant::now(),
        }));
        self.polled.send_replace(true);
    }

    /// Returns once the first poll outcome is stored (at once if it already is).
    pub async fn first_poll(&self) {
        let mut rx = self.polled.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|polled| *polled).await;
    }

    /// Stores the admin state.
    pub fn set_admin(&self, admin: AdminState) {
        self.admin.store(admin as u8, Ordering::Relaxed);
    }

    /// The admin state.
    pub fn admin(&self) -> AdminState {
        AdminState::from_u8(self.admin.load(Ordering::Relaxed))
    }

    /// Everything one reply needs, as of now.
    pub fn snapshot(&self) -> Snapshot {
        let db = self.db.load_full();
        let age = db.at.elapsed();
        let state = if age > self.stale_after {
            DbState::Down {
                reason: format!("last poll result is stale ({}ms old)", age.as_millis()),
            }
        } else {
            db.state.clone()
        };
        Snapshot {
            db: state,
            admin: self.admin(),
        }
    }
}

/// One consistent view for one reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The database state (already `Down` if the last poll is stale).
    pub db: DbState,
    /// The admin state.
    pub admin: AdminState,
}

impl Snapshot {
    /// The role, if the database is up.
    pub fn role(&self) -> Option<Role> {
        match self.db {
            DbState::Up { role, .. } => Some(role),
            DbState::Down { .. } => None,
        }
    }

    /// The lag (unknown when the database is down).
    pub fn lag(&self) -> Lag {
        match self.db {
            DbState::Up { lag, .. } => lag,
            DbState::Down { .. } => Lag::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_down_then_follows_polls() {
        let s = Status::new(AdminState::Ready, Duration::from_secs(60));
        assert!(matches!(s.snapshot().db, DbState::Down { .. }));
        s.set_db(DbState::Up {
            role: Role::Replica,
            lag: Lag::ZERO,
        });
        assert_eq!(s.snapshot().role(), Some(Role::Replica));
        s.set_admin(AdminState::Maint);
        assert_eq!(s.snapshot().admin, AdminState::Maint);
    }

    #[tokio::test]
    async fn first_poll_wakes_waiters() {
        let s = Status::new(AdminState::Ready, Duration::from_secs(60));
        let waiter = {
            let s = Arc::clone(&s);
            tokio::spawn(async move { s.first_poll().await })
        };
        s.set_db(DbState::Down {
            reason: "refused".into(),
        });
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        s.first_poll().await;
    }

    #[test]
    fn stale_results_read_as_down() {
        let s = Status::new(AdminState::Ready, Duration::ZERO);
        s.set_db(DbState::Up {
            role: Role::Primary,
            lag: Lag::ZERO,
        });
        std::thread::sleep(Duration::from_millis(2));
        match s.snapshot().db {
            DbState::Down { reason } => assert!(reason.contains("stale"), "{reason}"),
            up => panic!("stale result still up: {up:?}"),
        }
    }

    #[test]
    fn admin_words_round_trip() {
        for a in [AdminState::Ready, AdminState::Drain, AdminState::Maint] {
            assert_eq!(AdminState::parse(a.as_str()), Some(a));
            assert_eq!(AdminState::from_u8(a as u8), a);
        }
        assert_eq!(AdminState::parse("up"), None);
    }
}
