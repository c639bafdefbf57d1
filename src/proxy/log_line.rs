//! The per-session log line (`option tcplog`, `log-format`): [`SessionLog`] holds what one
//! session did, as HAProxy 2.6 measures it, and [`render`] prints it with a parsed
//! [`LogFormat`], field by field as HAProxy's `sess_build_logline` does. Timers follow
//! HAProxy's TCP-mode arithmetic (`%Tw` is one more than the time spent queued, because a
//! TCP session has no request date: HAProxy subtracts -1). The session (`session.rs`) fills
//! it in; `crate::logging` sends the line to the proxy's `log` targets.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::{LogFlags, LogFormat, LogNode, LogVar};
use crate::logging::{BrokenDown, MONTHS, broken_down, hostname};

/// Sessions started by this process: `%rt` of the next one.
static REQUEST_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Takes the `%rt` of a new session.
pub fn next_request_id() -> u64 {
    REQUEST_COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// Lines each frontend logged (`%lc`), only kept for formats that print it.
static LOG_COUNTS: std::sync::Mutex<Vec<(String, u64)>> = std::sync::Mutex::new(Vec::new());

/// Takes the `%lc` of the next line of `frontend`.
pub fn next_log_count(frontend: &str) -> u64 {
    let mut counts = LOG_COUNTS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, n)) = counts.iter_mut().find(|(f, _)| f == frontend) {
        *n += 1;
        return *n - 1;
    }
    counts.push((frontend.to_string(), 1));
    0
}

/// What one session did, for its log line.
#[derive(Debug, Clone)]
pub struct SessionLog<'a> {
    /// When the connection was accepted.
    pub accepted_at: SystemTime,
    /// The client's address.
    pub client: SocketAddr,
    /// The address the client connected to.
    pub local: SocketAddr,
    /// Frontend name.
    pub frontend: &'a str,
    /// Backend name.
    pub backend: &'a str,
    /// The last server tried, if any (`<NOSRV>` otherwise).
    pub server: Option<&'a str>,
    /// Its address.
    pub server_addr: Option<SocketAddr>,
    /// The local address of the connection to the server, once connected.
    pub source_addr: Option<SocketAddr>,
    /// Milliseconds from accept to the end of the handshake (`%Th`: reading the PROXY header
    /// of an `accept-proxy` listener; 0 without one).
    pub t_handshake: i64,
    /// Milliseconds from accept to leaving the queue (`None`: never got that far).
    pub t_queue: Option<i64>,
    /// Milliseconds from accept to the server connection (`None`: not connected).
    pub t_connect: Option<i64>,
    /// Milliseconds from accept to the end.
    pub t_close: i64,
    /// Bytes from the client to the server.
    pub bytes_in: u64,
    /// Bytes from the server to the client.
    pub bytes_out: u64,
    /// The two-letter termination state.
    pub term: &'static str,
    /// Connections on the process at log time.
    pub act_conn: u64,
    /// Connections on the frontend at log time.
    pub fe_conn: u64,
    /// Connections on the backend (queued ones included) at log time.
    pub be_conn: u64,
    /// Connections on the server at log time.
    pub srv_conn: u64,
    /// Connection retries.
    pub retries: u32,
    /// Whether a retry went to another server (`option redispatch`).
    pub redispatched: bool,
    /// Position in the server queue (rolelb queues per backend: 0).
    pub srv_queue: u64,
    /// Position in the backend queue (0 when not queued).
    pub backend_queue: u64,
    /// `%rt`: this session's number.
    pub request_id: u64,
    /// `%lc`: lines this frontend logged before.
    pub log_count: u64,
    /// `option logasap`: `%Tt`, `%Tu` and `%B` are written with a `+` (values of the moment
    /// the line was sent, not of the session's end).
    pub asap: bool,
}

impl SessionLog<'_> {
    /// Whether HAProxy counts the session as an error for `option dontlog-normal` and
    /// `option log-separate-errors`: redispatched, ended by anything but a normal or local
    /// close (the termination state's first letter), or retried.
    pub fn is_error(&self) -> bool {
        let cause = self.term.as_bytes().first().copied().unwrap_or(b'-');
        self.redispatched || !matches!(cause, b'-' | b'L') || (cause == b'-' && self.retries > 0)
    }
}

/// Writes a text value as `lf_text` does: `-` when empty (unless quoted), quotes and
/// escapes on request.
fn text(out: &mut String, value: Option<&str>, f: LogFlags) {
    if f.quote {
        out.push('"');
    }
    match value {
        Some(v) if !v.is_empty() => {
            if f.escape {
                for c in v.chars() {
                    if matches!(c, '"' | '\\' | ']') {
                        out.push('\\');
                    }
                    out.push(c);
                }
            } else {
                out.push_str(v);
            }
        }
        _ if !f.quote => out.push('-'),
        _ => {}
    }
    if f.quote {
        out.push('"');
    }
}

fn ip(out: &mut String, addr: Option<SocketAddr>, f: LogFlags) {
    match (addr, f.hex) {
        (Some(a), true) => match a.ip() {
            IpAddr::V4(v4) => v4.octets().iter().for_each(|b| {
                let _ = write!(out, "{b:02X}");
            }),
            IpAddr::V6(v6) => v6.octets().iter().for_each(|b| {
                let _ = write!(out, "{b:02X}");
            }),
        },
        (Some(a), false) => text(out, Some(&a.ip().to_string()), f),
        (None, _) => text(out, None, f),
    }
}

fn port(out: &mut String, addr: Option<SocketAddr>, f: LogFlags) {
    match (addr, f.hex) {
        (Some(a), true) => {
            let _ = write!(out, "{:04X}", a.port());
        }
        (Some(a), false) => {
            let _ = write!(out, "{}", a.port());
        }
        (None, _) => text(out, None, f),
    }
}

/// `dd/Mon/yyyy:hh:mm:ss`, the date part HAProxy's `%t`, `%T` and `%Tl` share.
fn date(out: &mut String, t: &BrokenDown) {
    let _ = write!(
        out,
        "{:02}/{}/{:04}:{:02}:{:02}:{:02}",
        t.mday,
        MONTHS[t.month0 % 12],
        t.year,
        t.hour,
        t.min,
        t.sec
    );
}

/// The line HAProxy logs for a connection closed before it became a session (a refused
/// PROXY header): `CLIENT:PORT [ACCEPT_DATE] FRONTEND/LISTENER: MESSAGE`, whatever the
/// frontend's `log-format`.
pub fn handshake_failure(
    client: SocketAddr,
    accepted_at: SystemTime,
    frontend: &str,
    listener: &str,
    message: &str,
) -> String {
    let since = accepted_at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = i64::try_from(since.as_secs()).unwrap_or(i64::MAX);
    let mut out = format!("{}:{} [", client.ip(), client.port());
    date(&mut out, &broken_down(secs, true));
    let _ = write!(
        out,
        ".{:03}] {frontend}/{listener}: {message}",
        since.subsec_millis()
    );
    out
}

/// Renders `s` with `format`.
pub fn render(format: &LogFormat, s: &SessionLog<'_>) -> String {
    let mut out = String::with_capacity(160);
    let since = s.accepted_at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = i64::try_from(since.as_secs()).unwrap_or(i64::MAX);
    let millis = since.subsec_millis();
    // HAProxy's TCP timers (see the module doc): -1 for a step that did not happen.
    let tw = s.t_queue.map_or(-1, |q| q + 1);
    let tc = match (s.t_connect, s.t_queue) {
        (Some(c), Some(q)) => c - q,
        _ => -1,
    };
    let td = s.t_connect.map_or(-1, |c| s.t_close - c);
    let mut last_space = true;
    for node in &format.nodes {
        let f = match node {
            LogNode::Separator => {
                if !last_space {
                    out.push(' ');
                    last_space = true;
                }
                continue;
            }
            LogNode::Text(t) => {
                out.push_str(t);
                last_space = false;
                continue;
            }
            LogNode::Var(LogVar::Captures, _) => continue,
            LogNode::Var(_, f) => *f,
        };
        let LogNode::Var(var, _) = node else { continue };
        let num = |out: &mut String, n: i64| {
            let _ = write!(out, "{n}");
        };
        match var {
            LogVar::ClientIp => ip(&mut out, Some(s.client), f),
            LogVar::ClientPort => port(&mut out, Some(s.client), f),
            LogVar::FrontendIp => ip(&mut out, Some(s.local), f),
            LogVar::FrontendPort => port(&mut out, Some(s.local), f),
            LogVar::Frontend => text(&mut out, Some(s.frontend), f),
            LogVar::FrontendXprt => {
                // Written as is (no '-' for an empty name), quoted on request.
                if f.quote {
                    out.push('"');
                }
                out.push_str(s.frontend);
                if f.quote {
                    out.push('"');
                }
            }
            LogVar::Backend => text(&mut out, Some(s.backend), f),
            LogVar::Server => text(&mut out, Some(s.server.unwrap_or("<NOSRV>")), f),
            LogVar::ServerIp => ip(&mut out, s.server_addr, f),
            LogVar::ServerPort => port(&mut out, s.server_addr, f),
            LogVar::BackendSourceIp => ip(&mut out, s.source_addr, f),
            LogVar::BackendSourcePort => port(&mut out, s.source_addr, f),
            LogVar::Tw => num(&mut out, tw),
            LogVar::Tc => num(&mut out, tc),
            LogVar::Tt | LogVar::Tu => {
                if s.asap {
                    out.push('+');
                }
                num(&mut out, s.t_close)
            }
            LogVar::Th => num(&mut out, s.t_handshake),
            LogVar::Status => num(&mut out, 0),
            LogVar::Td => num(&mut out, td),
            LogVar::BytesRead => {
                if s.asap {
                    out.push('+');
                }
                let _ = write!(out, "{}", s.bytes_out);
            }
            LogVar::BytesUploaded => {
                let _ = write!(out, "{}", s.bytes_in);
            }
            LogVar::TermState => out.push_str(s.term),
            LogVar::TermStateCookie => {
                out.push_str(s.term);
                out.push_str("--");
            }
            LogVar::ActConn => {
                let _ = write!(out, "{}", s.act_conn);
            }
            LogVar::FeConn => {
                let _ = write!(out, "{}", s.fe_conn);
            }
            LogVar::BeConn => {
                let _ = write!(out, "{}", s.be_conn);
            }
            LogVar::SrvConn => {
                let _ = write!(out, "{}", s.srv_conn);
            }
            LogVar::Retries => {
                if s.redispatched {
                    out.push('+');
                }
                let _ = write!(out, "{}", s.retries);
            }
            LogVar::SrvQueue => {
                let _ = write!(out, "{}", s.srv_queue);
            }
            LogVar::BackendQueue => {
                let _ = write!(out, "{}", s.backend_queue);
            }
            LogVar::Date => {
                date(&mut out, &broken_down(secs, true));
                let _ = write!(out, ".{millis:03}");
            }
            LogVar::DateGmt => {
                date(&mut out, &broken_down(secs, false));
                out.push_str(" +0000");
            }
            LogVar::DateLocal => {
                let t = broken_down(secs, true);
                date(&mut out, &t);
                let off = t.gmtoff.abs() / 60;
                let sign = if t.gmtoff < 0 { '-' } else { '+' };
                let _ = write!(out, " {sign}{:02}{:02}", off / 60, off % 60);
            }
            LogVar::Timestamp if f.hex => {
                let _ = write!(out, "{secs:04X}");
            }
            LogVar::Timestamp => num(&mut out, secs),
            LogVar::Millis if f.hex => {
                let _ = write!(out, "{millis:02X}");
            }
            LogVar::Millis => {
                let _ = write!(out, "{millis:03}");
            }
            LogVar::Pid if f.hex => {
                let _ = write!(out, "{:04X}", std::process::id());
            }
            LogVar::Pid => {
                let _ = write!(out, "{}", std::process::id());
            }
            LogVar::Hostname => text(&mut out, Some(hostname()), f),
            LogVar::UniqueId | LogVar::Ssl => text(&mut out, None, f),
            LogVar::RequestCounter if f.hex => {
                let _ = write!(out, "{:04X}", s.request_id);
            }
            LogVar::RequestCounter => {
                let _ = write!(out, "{}", s.request_id);
            }
            LogVar::LogCounter if f.hex => {
                let _ = write!(out, "{:04X}", s.log_count);
            }
            LogVar::LogCounter => {
                let _ = write!(out, "{}", s.log_count);
            }
            LogVar::Captures => {}
        }
        last_space = false;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::log_format::{TCP_LOG_FORMAT, parse_log_format};
    use std::time::Duration;

    fn session() -> SessionLog<'static> {
        SessionLog {
            accepted_at: UNIX_EPOCH + Duration::from_millis(1_234_567_890_123),
            client: "10.0.1.2:33313".parse().unwrap(),
            local: "127.0.0.1:5001".parse().unwrap(),
            frontend: "fnt",
            backend: "bck",
            server: Some("srv1"),
            server_addr: Some("127.0.0.1:8000".parse().unwrap()),
            source_addr: Some("127.0.0.1:40000".parse().unwrap()),
            t_handshake: 0,
            t_queue: Some(0),
            t_connect: Some(2),
            t_close: 5007,
            bytes_in: 40,
            bytes_out: 212,
            term: "--",
            act_conn: 1,
            fe_conn: 1,
            be_conn: 0,
            srv_conn: 0,
            retries: 3,
            redispatched: false,
            srv_queue: 0,
            backend_queue: 0,
            request_id: 7,
            log_count: 0,
            asap: false,
        }
    }

    #[test]
    fn the_tcplog_line_has_haproxys_fields() {
        let f = parse_log_format(TCP_LOG_FORMAT).unwrap();
        let line = render(&f, &session());
        let (head, tail) = line.split_once(" [").unwrap();
        assert_eq!(head, "10.0.1.2:33313");
        let (date, rest) = tail.split_once("] ").unwrap();
        assert_eq!(date.len(), "13/Feb/2009:23:31:30.123".len(), "{date}");
        assert!(date.ends_with(".123"), "{date}");
        assert_eq!(rest, "fnt bck/srv1 1/2/5007 212 -- 1/1/0/0/3 0/0");
    }

    #[test]
    fn logasap_marks_the_total_time_and_bytes_with_a_plus() {
        let f = parse_log_format("%Tw/%Tc/%Tt %Tu %B %U").unwrap();
        let s = SessionLog {
            asap: true,
            ..session()
        };
        assert_eq!(render(&f, &s), "1/2/+5007 +5007 +212 40");
    }

    #[test]
    fn errors_are_what_haproxy_counts_for_dontlog_normal() {
        let with = |term, retries, redispatched| SessionLog {
            term,
            retries,
            redispatched,
            ..session()
        };
        // Normal and locally closed sessions without retries are normal.
        assert!(!with("--", 0, false).is_error());
        assert!(!with("LR", 0, false).is_error());
        // Retried, redispatched, or ended by a timeout, a close, a failed connect or a rule.
        assert!(with("--", 1, false).is_error());
        assert!(with("--", 0, true).is_error());
        assert!(with("LR", 0, true).is_error());
        for term in [
            "cD", "CD", "sD", "SD", "SC", "sC", "PR", "RC", "IR", "DC", "KC", "UC",
        ] {
            assert!(with(term, 0, false).is_error(), "{term}");
        }
        // A retry that ended in an error state counts for that state only.
        assert!(!with("LR", 2, false).is_error());
    }

    #[test]
    fn a_refused_proxy_header_line_names_client_frontend_and_listener() {
        let line = handshake_failure(
            "[2001:db8::7]:4242".parse().unwrap(),
            UNIX_EPOCH + Duration::from_millis(1_234_567_890_045),
            "fe",
            "1",
            "Truncated PROXY protocol header received",
        );
        let (head, tail) = line.split_once(" [").unwrap();
        assert_eq!(head, "2001:db8::7:4242");
        let (date, rest) = tail.split_once("] ").unwrap();
        assert!(
            date.ends_with(".045") && date.contains("/Feb/2009:"),
            "{date}"
        );
        assert_eq!(rest, "fe/1: Truncated PROXY protocol header received");
    }

    #[test]
    fn th_is_the_handshake_time() {
        let f = parse_log_format("%Th/%Tw").unwrap();
        let mut s = session();
        s.t_handshake = 250;
        assert_eq!(render(&f, &s), "250/1");
    }

    #[test]
    fn a_session_refused_before_the_queue_prints_minus_one_and_nosrv() {
        let f = parse_log_format("%b/%s %Tw/%Tc/%Tt %Td %si:%sp %rc").unwrap();
        let s = SessionLog {
            server: None,
            server_addr: None,
            t_queue: None,
            t_connect: None,
            t_close: 0,
            redispatched: true,
            retries: 1,
            ..session()
        };
        assert_eq!(render(&f, &s), "bck/<NOSRV> -1/-1/0 -1 -:- +1");
    }

    #[test]
    fn flags_quote_escape_hex_and_empty_values() {
        let f = parse_log_format("%{+Q}o %f %ID %{-Q}ID %{+X}ci:%{+X}cp %{+E}H x%hr y %U %{+Q}pid")
            .unwrap();
        let line = render(&f, &session());
        assert!(
            line.starts_with("\"fnt\" \"\" - 0A000102:8221 \""),
            "{line}"
        );
        assert!(line.contains("\" x y 40 "), "{line}");
        let gmt = render(
            &parse_log_format("%T %Ts %ms %rt %tsc").unwrap(),
            &session(),
        );
        assert_eq!(gmt, "13/Feb/2009:23:31:30 +0000 1234567890 123 7 ----");
    }
}
