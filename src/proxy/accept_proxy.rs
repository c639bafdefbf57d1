//! The `accept-proxy` step of a session: before anything else, read the client's PROXY
//! protocol header (`proxy_header_in`), bounded by the frontend's `timeout client` from the
//! accept, as HAProxy bounds its handshake. On success the session goes on with the
//! addresses the header carries; on refusal the connection is closed and one line is logged,
//! HAProxy's (`CLIENT:PORT [DATE] FRONTEND/LISTENER: REASON`), to the frontend's `log`
//! targets when it logs sessions (`option tcplog` or `log-format`), else to rolelb's own log
//! at most once a second. `option dontlognull` drops the line for a client that sent nothing.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use tokio::net::TcpStream;

use super::log_line;
use super::proxy_header_in::{self, Header, Refusal, Refused};
use super::session::{LOG_ERR, LOG_INFO, emit};
use crate::config::Config;
use crate::logging::Throttle;
use crate::table::{FrontendRt, ListenerRt};

/// Refused headers logged without a session log format, all frontends together.
static REFUSED_HEADERS: Throttle = Throttle::new();

/// Where a connection came from and went to, as the rest of the session must see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    /// The client (`%ci:%cp`, `balance source`, the `send-proxy` source).
    pub client: SocketAddr,
    /// The address it connected to (`%fi:%fp`, the `send-proxy` destination).
    pub local: SocketAddr,
}

/// A connection accepted on `bind`, with what its log line needs.
pub struct Incoming<'a> {
    /// The frontend.
    pub fe: &'a FrontendRt,
    /// The listener it came through.
    pub bind: &'a ListenerRt,
    /// The configuration of the table it was accepted with (log format and targets).
    pub config: &'a Config,
    /// When it was accepted.
    pub at: SystemTime,
    /// Its own addresses.
    pub addresses: Addresses,
}

/// Reads the header of `client`; returns the addresses the session continues with, or
/// `None` once the connection must be closed (the refusal is logged).
pub async fn handshake(client: &mut TcpStream, accepted: &Incoming<'_>) -> Option<Addresses> {
    match receive_within(client, accepted.fe.timeout_client).await {
        Ok(Header {
            addresses: Some((client, local)),
            ..
        }) => Some(Addresses { client, local }),
        Ok(Header {
            addresses: None, ..
        }) => Some(accepted.addresses),
        Err(refused) => {
            log_refusal(accepted, refused);
            None
        }
    }
}

/// [`proxy_header_in::receive`] within `timeout` (`None`: no limit, as `timeout client 0`).
async fn receive_within(
    client: &mut TcpStream,
    timeout: Option<Duration>,
) -> Result<Header, Refused> {
    match timeout {
        Some(t) => tokio::time::timeout(t, proxy_header_in::receive(client))
            .await
            .unwrap_or_else(|_| Err(Refusal::Timeout.into())),
        None => proxy_header_in::receive(client).await,
    }
}

fn log_refusal(accepted: &Incoming<'_>, refused: Refused) {
    let fe = accepted.fe;
    let client = refused.client.unwrap_or(accepted.addresses.client);
    let reason = refused.reason.message();
    let Some(fe_cfg) = accepted
        .config
        .frontends
        .iter()
        .find(|f| f.name == fe.name)
        .filter(|f| f.log_format.is_some())
    else {
        if let Some(n) = REFUSED_HEADERS.hit() {
            tracing::warn!(
                frontend = %fe.name,
                listener = %accepted.bind.label,
                %client,
                "connection closed: {reason} [{n} occurrences since the last such line]"
            );
        }
        return;
    };
    if fe.log_options.dontlognull && refused.reason.is_null() {
        return;
    }
    let line =
        log_line::handshake_failure(client, accepted.at, &fe.name, &accepted.bind.label, reason);
    // As HAProxy's, at level `err` with `option log-separate-errors`, and kept with
    // `option dontlog-normal` (a refused handshake is never normal).
    let level = if fe.log_options.separate_errors {
        LOG_ERR
    } else {
        LOG_INFO
    };
    emit(fe_cfg, &accepted.config.global, level, &line);
}
