//! `log-format` strings (and `option tcplog`, which is the TCP one): parsed once at load time
//! into [`LogFormat`], a list of text pieces, separators and `%` variables with their flags,
//! following HAProxy 2.6's rules (section 8.2.6 of its configuration manual): `%%` is a `%`,
//! `%{+Q,-X}var` sets flags, `%o` sets them for every later variable, runs of spaces are one
//! separator. HTTP-only variables and sample expressions are refused with the reason.
//! The data path renders it (`proxy::log_line`); nothing here looks at a session.

/// `option tcplog`: HAProxy's TCP log format.
pub const TCP_LOG_FORMAT: &str =
    "%ci:%cp [%t] %ft %b/%s %Tw/%Tc/%Tt %B %ts %ac/%fc/%bc/%sc/%rc %sq/%bq";

/// A parsed `log-format`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFormat {
    /// The pieces, in order.
    pub nodes: Vec<LogNode>,
}

impl LogFormat {
    /// True when the format shows any of `vars` (a value costly to read is read only then).
    pub fn shows(&self, vars: &[LogVar]) -> bool {
        self.nodes
            .iter()
            .any(|n| matches!(n, LogNode::Var(v, _) if vars.contains(v)))
    }
}

/// One piece of a [`LogFormat`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogNode {
    /// Literal text.
    Text(String),
    /// A run of spaces: one space, unless the line is empty or already ends with one.
    Separator,
    /// A `%` variable.
    Var(LogVar, LogFlags),
}

/// The flags of a variable (`%{+Q}s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogFlags {
    /// `Q`: put the value in double quotes.
    pub quote: bool,
    /// `X`: hexadecimal (addresses, ports, `%Ts`, `%ms`, `%pid`, `%rt`, `%lc`).
    pub hex: bool,
    /// `E`: escape `"`, `\` and `]` with a backslash.
    pub escape: bool,
}

/// The variables that mean something for a TCP session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogVar {
    /// `%ci` client address.
    ClientIp,
    /// `%cp` client port.
    ClientPort,
    /// `%fi` address the client connected to.
    FrontendIp,
    /// `%fp` port the client connected to.
    FrontendPort,
    /// `%f` frontend name.
    Frontend,
    /// `%ft` frontend name with transport (`~` for SSL, never in rolelb).
    FrontendXprt,
    /// `%b` backend name.
    Backend,
    /// `%s` server name (`<NOSRV>` when none was tried).
    Server,
    /// `%si` server address.
    ServerIp,
    /// `%sp` server port.
    ServerPort,
    /// `%bi` local address of the server connection.
    BackendSourceIp,
    /// `%bp` local port of the server connection.
    BackendSourcePort,
    /// `%Tw` time in queue (ms, -1 when the queue was not reached).
    Tw,
    /// `%Tc` time to connect (ms, -1 when not connected).
    Tc,
    /// `%Tt` total time (ms).
    Tt,
    /// `%Th` handshake time (0: no TLS, and the PROXY header is not timed apart).
    Th,
    /// `%Td` data transfer time: `Tt - Tw - Tc` (-1 when not connected).
    Td,
    /// `%Tu` total time seen by the user (`Tt` in TCP).
    Tu,
    /// `%B` bytes from the server to the client.
    BytesRead,
    /// `%U` bytes from the client to the server.
    BytesUploaded,
    /// `%ts` termination state.
    TermState,
    /// `%tsc` termination state with cookie status (`--` in TCP).
    TermStateCookie,
    /// `%ac` connections on the process.
    ActConn,
    /// `%fc` connections on the frontend.
    FeConn,
    /// `%bc` connections on the backend (with its queue).
    BeConn,
    /// `%sc` connections on the server.
    SrvConn,
    /// `%rc` retries (`+` prefix after a redispatch).
    Retries,
    /// `%sq` position in the server queue.
    SrvQueue,
    /// `%bq` position in the backend queue.
    BackendQueue,
    /// `%t` accept date, local time, with milliseconds.
    Date,
    /// `%T` accept date, GMT.
    DateGmt,
    /// `%Tl` accept date, local time with its offset.
    DateLocal,
    /// `%Ts` accept date as a Unix timestamp.
    Timestamp,
    /// `%ms` milliseconds of the accept date.
    Millis,
    /// `%pid` process id.
    Pid,
    /// `%H` host name.
    Hostname,
    /// `%ID` unique id (none in rolelb: `-`).
    UniqueId,
    /// `%rt` request (session) counter.
    RequestCounter,
    /// `%lc` frontend log counter.
    LogCounter,
    /// `%ST` status code (0 in TCP).
    Status,
    /// `%hr`, `%hrl`, `%hs`, `%hsl`: captured headers (none in TCP: nothing is printed).
    Captures,
    /// `%sslc`, `%sslv`: client TLS cipher and version (no TLS: `-`).
    Ssl,
}

/// Variable names HAProxy 2.6 knows, with what they are here; `None` for HTTP-only ones.
const VARIABLES: &[(&str, Option<LogVar>)] = &[
    ("B", Some(LogVar::BytesRead)),
    ("CC", None),
    ("CS", None),
    ("H", Some(LogVar::Hostname)),
    ("ID", Some(LogVar::UniqueId)),
    ("ST", Some(LogVar::Status)),
    ("T", Some(LogVar::DateGmt)),
    ("Ta", None),
    ("Tc", Some(LogVar::Tc)),
    ("Th", Some(LogVar::Th)),
    ("Ti", None),
    ("Tl", Some(LogVar::DateLocal)),
    ("Tq", None),
    ("Tr", None),
    ("TR", None),
    ("Td", Some(LogVar::Td)),
    ("Ts", Some(LogVar::Timestamp)),
    ("Tt", Some(LogVar::Tt)),
    ("Tu", Some(LogVar::Tu)),
    ("Tw", Some(LogVar::Tw)),
    ("U", Some(LogVar::BytesUploaded)),
    ("ac", Some(LogVar::ActConn)),
    ("b", Some(LogVar::Backend)),
    ("bc", Some(LogVar::BeConn)),
    ("bi", Some(LogVar::BackendSourceIp)),
    ("bp", Some(LogVar::BackendSourcePort)),
    ("bq", Some(LogVar::BackendQueue)),
    ("ci", Some(LogVar::ClientIp)),
    ("cp", Some(LogVar::ClientPort)),
    ("f", Some(LogVar::Frontend)),
    ("fc", Some(LogVar::FeConn)),
    ("fi", Some(LogVar::FrontendIp)),
    ("fp", Some(LogVar::FrontendPort)),
    ("ft", Some(LogVar::FrontendXprt)),
    ("hr", Some(LogVar::Captures)),
    ("hrl", Some(LogVar::Captures)),
    ("hs", Some(LogVar::Captures)),
    ("hsl", Some(LogVar::Captures)),
    ("HM", None),
    ("HP", None),
    ("HPO", None),
    ("HQ", None),
    ("HU", None),
    ("HV", None),
    ("lc", Some(LogVar::LogCounter)),
    ("ms", Some(LogVar::Millis)),
    ("pid", Some(LogVar::Pid)),
    ("r", None),
    ("rc", Some(LogVar::Retries)),
    ("rt", Some(LogVar::RequestCounter)),
    ("s", Some(LogVar::Server)),
    ("sc", Some(LogVar::SrvConn)),
    ("si", Some(LogVar::ServerIp)),
    ("sp", Some(LogVar::ServerPort)),
    ("sq", Some(LogVar::SrvQueue)),
    ("sslc", Some(LogVar::Ssl)),
    ("sslv", Some(LogVar::Ssl)),
    ("t", Some(LogVar::Date)),
    ("tr", None),
    ("trg", None),
    ("trl", None),
    ("ts", Some(LogVar::TermState)),
    ("tsc", Some(LogVar::TermStateCookie)),
];

/// Applies `+F`/`-F` words of a `%{...}` argument to `flags` (unknown names are ignored,
/// as HAProxy does; `M`, mandatory, is always on for `log-format`).
fn apply_flags(arg: &str, flags: &mut LogFlags) {
    for word in arg.split(',') {
        let (on, name) = match word.as_bytes().first() {
            Some(b'+') => (true, &word[1..]),
            Some(b'-') => (false, &word[1..]),
            _ => continue,
        };
        match name {
            "Q" => flags.quote = on,
            "X" => flags.hex = on,
            "E" => flags.escape = on,
            _ => {}
        }
    }
}

/// Parses a `log-format` string for a TCP proxy.
pub fn parse_log_format(text: &str) -> Result<LogFormat, String> {
    let bytes = text.as_bytes();
    let mut nodes = Vec::new();
    let mut defaults = LogFlags::default();
    let mut lit = String::new();
    let flush = |lit: &mut String, nodes: &mut Vec<LogNode>| {
        if !lit.is_empty() {
            nodes.push(LogNode::Text(std::mem::take(lit)));
        }
    };
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b' ' {
            flush(&mut lit, &mut nodes);
            while i < bytes.len() && bytes[i] == b' ' {
                i += 1;
            }
            nodes.push(LogNode::Separator);
            continue;
        }
        if c != b'%' {
            let ch = text[i..].chars().next().unwrap_or(' ');
            lit.push(ch);
            i += ch.len_utf8();
            continue;
        }
        // A '%': a variable, `%%`, or a stray '%' (HAProxy drops it and keeps what follows).
        i += 1;
        let Some(&next) = bytes.get(i) else {
            return Err("truncated line after '%'".into());
        };
        let mut arg = None;
        match next {
            b'%' => {
                lit.push('%');
                i += 1;
                continue;
            }
            b'{' => {
                let end = text[i..]
                    .find('}')
                    .map(|e| i + e)
                    .ok_or_else(|| format!("truncated line after '{}'", &text[i + 1..]))?;
                arg = Some(&text[i + 1..end]);
                i = end + 1;
                match bytes.get(i) {
                    Some(b) if b.is_ascii_alphanumeric() || *b == b'[' => {}
                    _ => {
                        return Err(format!(
                            "parse argument modifier without variable name near '%{{{}}}'",
                            arg.unwrap_or_default()
                        ));
                    }
                }
            }
            b if b.is_ascii_digit() || b == b'\t' => {
                return Err(format!(
                    "unexpected variable name near '{}' at position {} line : '{text}'. Maybe you want to write a single '%', use the syntax '%%'",
                    char::from(b),
                    i
                ));
            }
            b if b.is_ascii_alphabetic() || b == b'[' => {}
            _ => continue,
        }
        if bytes.get(i) == Some(&b'[') {
            return Err(
                "sample expressions ('%[...]') in log-format are not supported by rolelb: use the '%' variables".into(),
            );
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphanumeric() {
            i += 1;
        }
        let name = &text[start..i];
        let mut flags = defaults;
        if let Some(arg) = arg {
            apply_flags(arg, &mut flags);
        }
        if name == "o" {
            defaults = flags;
            continue;
        }
        let Some((_, var)) = VARIABLES.iter().find(|(n, _)| *n == name) else {
            return Err(format!(
                "no such format variable '{name}'. If you wanted to emit the '%' character verbatim, you need to use '%%'"
            ));
        };
        let Some(var) = var else {
            return Err(format!(
                "format variable '{name}' is reserved for HTTP mode"
            ));
        };
        flush(&mut lit, &mut nodes);
        nodes.push(LogNode::Var(*var, flags));
    }
    flush(&mut lit, &mut nodes);
    Ok(LogFormat { nodes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tcplog_format_parses_into_its_fields() {
        let f = parse_log_format(TCP_LOG_FORMAT).unwrap();
        let vars = f
            .nodes
            .iter()
            .filter(|n| matches!(n, LogNode::Var(..)))
            .count();
        assert_eq!(vars, 18);
        assert_eq!(
            f.nodes[..4],
            [
                LogNode::Var(LogVar::ClientIp, LogFlags::default()),
                LogNode::Text(":".into()),
                LogNode::Var(LogVar::ClientPort, LogFlags::default()),
                LogNode::Separator,
            ]
        );
    }

    #[test]
    fn flags_percent_and_spaces_follow_haproxy() {
        let f = parse_log_format("%{+Q}o  %f %{-Q,+X}ci 100%% %-x").unwrap();
        let q = LogFlags {
            quote: true,
            ..LogFlags::default()
        };
        let x = LogFlags {
            hex: true,
            ..LogFlags::default()
        };
        assert_eq!(
            f.nodes,
            [
                LogNode::Separator,
                LogNode::Var(LogVar::Frontend, q),
                LogNode::Separator,
                LogNode::Var(LogVar::ClientIp, x),
                LogNode::Separator,
                LogNode::Text("100%".into()),
                LogNode::Separator,
                LogNode::Text("-x".into()),
            ]
        );
    }

    #[test]
    fn http_variables_unknown_ones_and_samples_are_refused_with_the_reason() {
        let e = parse_log_format("%ci %r").unwrap_err();
        assert_eq!(e, "format variable 'r' is reserved for HTTP mode");
        let e = parse_log_format("%Tx").unwrap_err();
        assert!(e.starts_with("no such format variable 'Tx'"), "{e}");
        assert!(parse_log_format("%[src]").unwrap_err().contains("sample"));
        assert!(parse_log_format("50%").unwrap_err().contains("truncated"));
        assert!(parse_log_format("%5").unwrap_err().contains("'%%'"));
        assert!(parse_log_format("%{+Q} x").is_err());
    }
}
