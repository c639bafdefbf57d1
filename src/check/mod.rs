//! Health checks as HAProxy runs them. `scheduler` runs one task per checked server (the
//! rise/fall state machine, `inter`/`fastinter`/`downinter`, spreading); each other file is one
//! check type, a function from a [`Target`] to a [`CheckResult`]. Checks only write the
//! server's live state and tell `control` when eligibility changed; they never touch the
//! data path.

pub mod agent;
mod conn;
pub mod external;
pub mod http;
pub mod mysql;
pub mod pgsql;
pub mod rise_fall;
pub mod role;
pub mod role_tracker;
pub mod scheduler;
mod tasks;
pub mod tcp;
pub mod tcp_check;
pub mod tls;
mod tls_names;

/// A check's outcome lives with the server state that keeps it (`live`), so `live` needs
/// nothing from `check`; re-exported here, where checks make it.
pub use crate::live::{CheckResult, Status};

use std::net::SocketAddr;
use std::time::Duration;

/// Where and how long one check may take, and whether it speaks TLS.
#[derive(Debug, Clone)]
pub struct Target {
    /// The check destination (`addr`/`port` overrides already applied).
    pub addr: SocketAddr,
    /// Limit for establishing the connection (`timeout connect`, else `inter`).
    pub connect_timeout: Duration,
    /// Limit for the rest of the check once connected (`timeout check`, else `inter`).
    pub read_timeout: Duration,
    /// `check-ssl`: the TLS client of the check connection.
    pub tls: Option<tls::TlsClient>,
    /// The PROXY protocol header sent before anything else (the server's `send-proxy[-v2]`
    /// when the check goes to the traffic port, or `check-send-proxy`), as HAProxy sends it.
    pub proxy_header: Option<crate::config::ProxyProtocol>,
    /// `source`: the address the connection is made from.
    pub source: Option<crate::config::model::Source>,
}
