//! HAProxy's agent-check protocol on `listen.agent`: on connect the agent writes one line
//! and closes, e.g. `up ready 100% #role=primary lag=0 lag_s=0`.
//!
//! Words before `#` are HAProxy's: the health (`up`/`down`), the admin state
//! (`ready`/`drain`/`maint`, from the state file) and a weight. After `#` (a description HAProxy
//! only logs) come `role=`, `lag=` (bytes) and `lag_s=` (seconds), which rolelb reads (both
//! sides use `rolelb_roles::description`), and `reason=` when the node is down.
//!
//! The line is built from the cached [`Status`] only. By default it is written at once and
//! the health is role-neutral (`up` when the database answers and a replica is within
//! `max_lag`). With `agent_send_wait` set, the agent first waits that long at most for an
//! HAProxy `agent-send` line naming an endpoint (`primary`, `replica`, `read-only`, ...,
//! as on the HTTP side) and answers `up` only if the node fits it; that is how stock HAProxy
//! routes writes and reads by role with agent-check alone. Whatever the client sends is read
//! and discarded after the reply, so closing never turns into a reset.

use std::sync::Arc;
use std::time::Duration;

use rolelb_roles::description;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::endpoint::Endpoint;
use crate::status::{DbState, Snapshot, Status};
use crate::units::LagLimit;

/// Longest `agent-send` line read; HAProxy's are short.
const MAX_REQUEST: usize = 256;
/// Longest `reason=` text in a line.
const MAX_REASON: usize = 200;
/// Bound on writing the reply to a client that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long to keep reading (and discarding) after the reply, waiting for the client's close.
const LINGER: Duration = Duration::from_secs(1);

/// Serves agent-check connections from the shared status.
#[derive(Debug, Clone)]
pub struct AgentCheck {
    /// The cache every reply reads.
    pub status: Arc<Status>,
    /// The config's `max_lag`.
    pub max_lag: Option<LagLimit>,
    /// The config's `agent_send_wait` (zero: reply at once, role-neutral).
    pub agent_send_wait: Duration,
}

impl AgentCheck {
    /// Answers one connection: (optionally) read the `agent-send` line, write the reply,
    /// half-close, then drain what the client still sends until it closes.
    pub async fn handle(self, mut stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let mut buf = [0u8; MAX_REQUEST];
        let endpoint = if self.agent_send_wait.is_zero() {
            None
        } else {
            read_request(&mut stream, &mut buf, self.agent_send_wait).await
        };
        let reply = line(&self.status.snapshot(), endpoint, self.max_lag);
        let written = tokio::time::timeout(WRITE_TIMEOUT, async {
            stream.write_all(reply.as_bytes()).await?;
            stream.shutdown().await
        })
        .await;
        if !matches!(written, Ok(Ok(()))) {
            return;
        }
        let _ = tokio::time::timeout(LINGER, async {
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    }
}

/// Reads an `agent-send` line for at most `wait`: up to a newline, the client's close, or
/// [`MAX_REQUEST`] bytes. `None` when nothing usable arrived (the reply is then role-neutral).
async fn read_request(stream: &mut TcpStream, buf: &mut [u8], wait: Duration) -> Option<Endpoint> {
    let mut len = 0;
    let _ = tokio::time::timeout(wait, async {
        while len < buf.len() {
            match stream.read(&mut buf[len..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    len += n;
                    if buf[..len].contains(&b'\n') {
                        break;
                    }
                }
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&buf[..len]);
    let request = text.lines().next().unwrap_or("").trim();
    if request.is_empty() {
        return None;
    }
    let (path, query) = match request.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (request, None),
    };
    match Endpoint::parse(path, query) {
        Ok(e) => Some(e),
        Err(e) => {
            tracing::debug!("agent-send {request:?}: {e}; answering role-neutral");
            None
        }
    }
}

/// The reply line for `snap`: for `endpoint` if the client named one, else role-neutral.
pub fn line(snap: &Snapshot, endpoint: Option<Endpoint>, max_lag: Option<LagLimit>) -> String {
    let endpoint = endpoint.unwrap_or(Endpoint::ReadOnly { lag: None });
    let verdict = endpoint.serves(snap, max_lag);
    let health = if verdict.is_ok() { "up" } else { "down" };
    let mut out = format!(
        "{health} {} 100% #{}",
        snap.admin,
        description::format(snap.role(), snap.lag())
    );
    // A down database, or a node that does not fit the endpoint: say why.
    let reason = match (&snap.db, verdict) {
        (DbState::Down { reason }, _) => Some(reason.clone()),
        (_, Err(reason)) => Some(reason),
        _ => None,
    };
    if let Some(reason) = reason {
        out.push_str(" reason=");
        out.extend(
            reason
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .take(MAX_REASON),
        );
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{AdminState, Lag, Role};

    fn snap(db: DbState, admin: AdminState) -> Snapshot {
        Snapshot { db, admin }
    }

    fn up(role: Role, bytes: Option<u64>, seconds: Option<f64>) -> DbState {
        DbState::Up {
            role,
            lag: Lag {
                bytes,
                time: seconds.and_then(rolelb_roles::seconds),
            },
        }
    }

    #[test]
    fn primary_line() {
        let s = snap(up(Role::Primary, Some(0), Some(0.0)), AdminState::Ready);
        assert_eq!(
            line(&s, None, None),
            "up ready 100% #role=primary lag=0 lag_s=0\n"
        );
    }

    #[test]
    fn replica_line_carries_lag_and_admin_word() {
        let s = snap(up(Role::Replica, Some(4096), Some(1.25)), AdminState::Drain);
        assert_eq!(
            line(&s, None, None),
            "up drain 100% #role=replica lag=4096 lag_s=1.25\n"
        );
        let s = snap(up(Role::Replica, None, None), AdminState::Maint);
        assert_eq!(
            line(&s, None, None),
            "up maint 100% #role=replica lag=unknown lag_s=unknown\n"
        );
    }

    #[test]
    fn down_line_has_a_one_line_reason() {
        let s = snap(
            DbState::Down {
                reason: "connect: refused\nsecond line".into(),
            },
            AdminState::Ready,
        );
        assert_eq!(
            line(&s, None, None),
            "down ready 100% #role=unknown lag=unknown lag_s=unknown reason=connect: refused second line\n"
        );
        let long = snap(
            DbState::Down {
                reason: "x".repeat(1000),
            },
            AdminState::Ready,
        );
        assert!(line(&long, None, None).len() < 300);
    }

    #[test]
    fn lagging_replica_is_down_when_max_lag_is_set() {
        let s = snap(up(Role::Replica, Some(5000), Some(3.0)), AdminState::Ready);
        assert_eq!(
            line(&s, None, Some(LagLimit::Bytes(100))),
            "down ready 100% #role=replica lag=5000 lag_s=3 reason=replication lag 5000 bytes exceeds 100 bytes\n"
        );
    }

    #[test]
    fn agent_send_endpoint_picks_the_role() {
        let replica = snap(up(Role::Replica, Some(0), Some(0.0)), AdminState::Ready);
        let primary = snap(up(Role::Primary, Some(0), Some(0.0)), AdminState::Ready);
        let want_primary = Some(Endpoint::Primary);
        let want_replica = Some(Endpoint::Replica { lag: None });
        assert!(line(&primary, want_primary, None).starts_with("up ready"));
        assert!(line(&replica, want_primary, None).starts_with("down ready"));
        assert!(line(&replica, want_primary, None).ends_with("reason=node is a replica\n"));
        assert!(line(&replica, want_replica, None).starts_with("up ready"));
        assert!(line(&primary, want_replica, None).starts_with("down ready"));
    }
}
