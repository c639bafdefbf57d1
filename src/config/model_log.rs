//! The logging part of the typed configuration: `log` targets (where lines go and how they
//! are framed) and a frontend's logging `option`s.

use std::net::SocketAddr;
use std::path::PathBuf;

/// A `log` line (in `global`, or in a proxy when it is not `log global`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogTarget {
    /// Where lines go.
    pub dest: LogDest,
    /// Syslog facility number (e.g. `local0` = 16).
    pub facility: u8,
    /// Most verbose syslog severity sent (0 emerg .. 7 debug); `None` = all.
    pub max_level: Option<u8>,
    /// The least severe level a line is sent with (`log ... LEVEL MINLEVEL`): a less
    /// severe line is raised to it.
    pub min_level: Option<u8>,
    /// `format`: how each line is framed.
    pub format: SyslogFormat,
    /// `len`: the longest line sent (1024 by default, as HAProxy), framing included.
    pub max_len: usize,
}

/// `format` of a `log` target: the header put before each line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyslogFormat {
    /// No `format`: `<PRI>Mmm dd hh:mm:ss TAG[PID]: ` (RFC 3164 without a host name).
    #[default]
    Legacy,
    /// `format rfc3164`: `<PRI>Mmm dd hh:mm:ss HOST TAG[PID]: `.
    Rfc3164,
    /// `format rfc5424`: `<PRI>1 ISO-TIME HOST TAG PID - - `.
    Rfc5424,
    /// `format short`: `<LEVEL>`.
    Short,
    /// `format timed`: `<LEVEL>ISO-TIME `.
    Timed,
    /// `format iso`: `ISO-TIME `.
    Iso,
    /// `format raw`: the line alone.
    Raw,
}

/// Destination of a `log` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogDest {
    /// `log stderr ...`
    Stderr,
    /// `log stdout ...`
    Stdout,
    /// `log ADDR[:PORT] ...` (UDP syslog, port 514 by default).
    Udp(SocketAddr),
    /// `log /dev/log ...` (unix datagram syslog).
    Unix(PathBuf),
}

/// How a frontend logs its sessions: HAProxy's logging `option`s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// `option dontlognull`: no line for a session that received nothing from the client.
    pub dontlognull: bool,
    /// `option dontlog-normal`: lines only for sessions that ended in an error, were
    /// retried or redispatched.
    pub dontlog_normal: bool,
    /// `option log-separate-errors`: those sessions' lines at level `err`, not `info`.
    pub separate_errors: bool,
    /// `option logasap`: a session's line is sent as soon as its server connection is
    /// established, with the total time and byte count of that moment marked `+`.
    pub asap: bool,
}
