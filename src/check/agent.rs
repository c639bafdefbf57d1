//! `agent-check`: connect to the agent, optionally send `agent-send`, read one line and
//! apply HAProxy's words (`up`, `down`, `fail`, `stopped`, `ready`, `drain`, `maint`,
//! `N%`, `maxconn:N`). The text after `#` is kept for the role issue.

use super::{CheckResult, Target};

/// Operating state words of an agent reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentHealth {
    /// `up`: the server may be UP again if its health checks agree.
    Up,
    /// `down`.
    Down,
    /// `fail`.
    Fail,
    /// `stopped`.
    Stopped,
}

/// Administrative state words of an agent reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentAdmin {
    /// `ready`: cancels a DRAIN or MAINT set by the agent.
    Ready,
    /// `drain`.
    Drain,
    /// `maint`.
    Maint,
}

/// A parsed agent reply; words the agent did not send are `None` (left unchanged).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentReply {
    /// `up` / `down` / `fail` / `stopped`.
    pub health: Option<AgentHealth>,
    /// `ready` / `drain` / `maint`.
    pub admin: Option<AgentAdmin>,
    /// `N%`: weight as a percentage of the configured weight.
    pub weight_pct: Option<u32>,
    /// `maxconn:N`.
    pub maxconn: Option<u32>,
    /// The text after `#`, trimmed (e.g. `role=primary lag=0`).
    pub description: Option<String>,
}

/// Parses one reply line; an error says what was wrong (for the log).
pub fn parse_reply(line: &[u8]) -> Result<AgentReply, String> {
    let _ = line;
    unimplemented!("check types: being written")
}

/// Queries the agent at `target`, sending `send` first when set. A failure (cannot connect,
/// timeout, empty, garbled or oversized reply) comes back as the `CheckResult` to log.
pub async fn query(
    target: &Target,
    send: Option<&[u8]>,
) -> Result<(AgentReply, CheckResult), CheckResult> {
    let _ = (target, send);
    unimplemented!("check types: being written")
}
