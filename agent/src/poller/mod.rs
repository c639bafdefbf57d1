//! The poller: asks the local database for its role and lag every `inter` and stores the
//! answer in the shared [`Status`], which is all that replies ever read.
//!
//! One [`Probe`] per database kind (`postgres.rs`, `mysql.rs`) keeps one session open between
//! polls and reopens it after any error; the queries and the reading of their answers are
//! `rolelb_roles`', the same as rolelb's own role checks. Each poll (connect included) is bounded by
//! `timeout`; a poll that fails or times out stores `Down` with the reason, never leaving an
//! old `Up` in place.

mod mysql;
mod postgres;

use std::sync::Arc;
use std::time::Duration;

use rolelb_roles::Reading;

use crate::config::{Database, DbKind};
use crate::status::{DbState, Status};

pub use mysql::MysqlProbe;
pub use postgres::PostgresProbe;

/// Why a poll found no answer.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// Opening the session failed.
    #[error("connect to {target}: {message}")]
    Connect {
        /// `host:port` or socket path.
        target: String,
        /// The driver's error chain.
        message: String,
    },
    /// A status query failed.
    #[error("query on {target}: {message}")]
    Query {
        /// `host:port` or socket path.
        target: String,
        /// The driver's error chain.
        message: String,
    },
}

/// A database session the poller can ask for a [`Reading`].
pub(crate) trait Probe: Send {
    /// Runs the status queries, opening the session first if there is none.
    async fn poll(&mut self) -> Result<Reading, PollError>;
    /// Drops the session (after an error or a timeout) so the next poll reconnects.
    fn reset(&mut self);
    /// `host:port` or socket path, for reasons and logs.
    fn target(&self) -> &str;
}

/// An error and its sources, joined with ": " (drivers put the useful part in the source).
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        next = s.source();
    }
    out
}

/// Polls `db` forever (the first poll at once), storing each outcome in `status`.
pub async fn run(db: Database, inter: Duration, timeout: Duration, status: Arc<Status>) {
    match db.kind {
        DbKind::Postgres => {
            poll_loop(PostgresProbe::new(&db, timeout), inter, timeout, status).await
        }
        DbKind::Mysql => poll_loop(MysqlProbe::new(&db), inter, timeout, status).await,
    }
}

/// One bounded poll: the probe's answer, or `Down` with why (the session is reset then).
async fn poll_once(probe: &mut impl Probe, timeout: Duration) -> DbState {
    match tokio::time::timeout(timeout, probe.poll()).await {
        Ok(Ok(Reading { role, lag })) => DbState::Up { role, lag },
        Ok(Err(e)) => {
            probe.reset();
            DbState::Down {
                reason: e.to_string(),
            }
        }
        Err(_) => {
            probe.reset();
            DbState::Down {
                reason: format!(
                    "no answer from {} within {}ms",
                    probe.target(),
                    timeout.as_millis()
                ),
            }
        }
    }
}

async fn poll_loop(mut probe: impl Probe, inter: Duration, timeout: Duration, status: Arc<Status>) {
    let mut tick = tokio::time::interval(inter);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<DbState> = None;
    loop {
        tick.tick().await;
        let state = poll_once(&mut probe, timeout).await;
        log_change(last.as_ref(), &state, probe.target());
        status.set_db(state.clone());
        last = Some(state);
    }
}

/// Logs up/down and role changes (not every poll, and not lag moving).
fn log_change(last: Option<&DbState>, now: &DbState, target: &str) {
    match (last, now) {
        (Some(DbState::Up { role: a, .. }), DbState::Up { role: b, .. }) if a == b => {}
        (Some(DbState::Down { reason: a }), DbState::Down { reason: b }) if a == b => {}
        (_, DbState::Up { role, .. }) => {
            tracing::info!(database = target, role = role.as_str(), "database up")
        }
        (_, DbState::Down { reason }) => {
            tracing::warn!(database = target, %reason, "database down")
        }
    }
}
