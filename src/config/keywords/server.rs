//! The server option table: what may follow `server NAME ADDR` and `default-server`
//! (`check`, `inter`, `fastinter`, `weight`, `agent-check`, `send-proxy`...), with the
//! `no-<flag>` forms HAProxy accepts to undo a `default-server` flag.

use std::time::Duration;

use super::server_tls::{TLS_KEYWORDS, TLS_REFUSED};
use super::{Ctx, did_you_mean};
use crate::config::address::resolve_host;
use crate::config::draft::ServerDraft;
use crate::config::lexer::Word;
use crate::config::model::ProxyProtocol;
use crate::config::units::{MAX_COUNT, TimeUnit, parse_duration, parse_int, parse_port};

/// Parser of one server option; `ctx.args` holds its argument when it takes one.
pub type ServerParser = fn(&mut ServerDraft, &mut Ctx) -> Result<(), String>;

/// One entry of the server option table.
pub struct ServerKeyword {
    /// The option.
    pub name: &'static str,
    /// Whether it takes one argument.
    pub takes_arg: bool,
    /// Its parser.
    pub parse: ServerParser,
}

pub(super) const fn flag(name: &'static str, parse: ServerParser) -> ServerKeyword {
    ServerKeyword {
        name,
        takes_arg: false,
        parse,
    }
}

pub(super) const fn with_arg(name: &'static str, parse: ServerParser) -> ServerKeyword {
    ServerKeyword {
        name,
        takes_arg: true,
        parse,
    }
}

/// The server options.
pub const SERVER_KEYWORDS: &[ServerKeyword] = &[
    flag("check", |s, _| set(&mut s.check, true)),
    flag("no-check", |s, _| set(&mut s.check, false)),
    with_arg("inter", |s, c| {
        s.inter = interval(c)?;
        Ok(())
    }),
    with_arg("fastinter", |s, c| {
        s.fastinter = Some(interval(c)?);
        Ok(())
    }),
    with_arg("downinter", |s, c| {
        s.downinter = Some(interval(c)?);
        Ok(())
    }),
    with_arg("rise", |s, c| {
        s.rise = count(c, 1)?;
        Ok(())
    }),
    with_arg("fall", |s, c| {
        s.fall = count(c, 1)?;
        Ok(())
    }),
    with_arg("port", |s, c| {
        // As HAProxy: port 0 means no override, checks go to the server's own port.
        s.check_port = match c.arg(0, "a port")? {
            "0" => None,
            text => Some(parse_port(text, "check 'port'")?),
        };
        Ok(())
    }),
    with_arg("addr", |s, c| {
        c.arg(0, "an address")?;
        // HAProxy reads `addr` as an address (`$VAR` expands), `agent-addr` as a bare IP.
        s.check_addr = Some(resolve_host(c.args[0].address_checked()?)?);
        Ok(())
    }),
    with_arg("weight", |s, c| {
        let w = parse_int(c.arg(0, "a weight")?, "weight", 0, 256)?;
        s.weight = u32::try_from(w).map_err(|_| "weight out of range".to_string())?;
        Ok(())
    }),
    flag("backup", |s, _| set(&mut s.backup, true)),
    flag("no-backup", |s, _| set(&mut s.backup, false)),
    flag("non-stick", |s, _| set(&mut s.non_stick, true)),
    flag("stick", |s, _| set(&mut s.non_stick, false)),
    flag("disabled", |s, _| set(&mut s.disabled, true)),
    flag("enabled", |s, _| set(&mut s.disabled, false)),
    with_arg("source", server_source),
    with_arg("maxconn", |s, c| {
        s.maxconn = Some(count(c, 0)?);
        Ok(())
    }),
    with_arg("minconn", |s, c| {
        s.minconn = Some(count(c, 0)?);
        Ok(())
    }),
    with_arg("maxqueue", |s, c| {
        s.maxqueue = Some(count(c, 0)?);
        Ok(())
    }),
    with_arg("slowstart", slowstart),
    with_arg("on-marked-down", on_marked_down),
    with_arg("on-marked-up", on_marked_up),
    flag("agent-check", |s, _| set(&mut s.agent_check, true)),
    flag("no-agent-check", |s, _| set(&mut s.agent_check, false)),
    with_arg("agent-port", |s, c| {
        s.agent_port = Some(parse_port(c.arg(0, "a port")?, "agent-port")?);
        Ok(())
    }),
    with_arg("agent-addr", |s, c| {
        s.agent_addr = Some(resolve_host(c.arg(0, "an address")?)?);
        Ok(())
    }),
    with_arg("agent-inter", |s, c| {
        s.agent_inter = Some(interval(c)?);
        Ok(())
    }),
    with_arg("agent-send", |s, c| {
        s.agent_send = c.args.first().map(|w| w.bytes.clone());
        Ok(())
    }),
    flag("send-proxy", |s, _| {
        s.send_proxy = Some(ProxyProtocol::V1);
        Ok(())
    }),
    flag("send-proxy-v2", |s, _| {
        s.send_proxy = Some(ProxyProtocol::V2);
        Ok(())
    }),
    flag("check-send-proxy", |s, _| {
        s.check_send_proxy = true;
        Ok(())
    }),
    flag("no-check-send-proxy", |s, _| {
        s.check_send_proxy = false;
        Ok(())
    }),
    flag("no-send-proxy", |s, _| {
        if s.send_proxy == Some(ProxyProtocol::V1) {
            s.send_proxy = None;
        }
        Ok(())
    }),
    flag("no-send-proxy-v2", |s, _| {
        if s.send_proxy == Some(ProxyProtocol::V2) {
            s.send_proxy = None;
        }
        Ok(())
    }),
    with_arg("id", server_id),
    with_arg("resolvers", super::resolvers::server_resolvers),
    with_arg("resolve-prefer", super::resolvers::resolve_prefer),
    with_arg("init-addr", super::resolvers::init_addr),
    with_arg("resolve-opts", super::resolvers::resolve_opts),
];

/// `id N`: the server's id in its backend (HAProxy's `puid`), a positive `int`. HAProxy
/// refuses it on `default-server`; its uniqueness is checked by the `server` line.
/// `source ADDR[:PORT]` on a server line (`usesrc` and `interface` after it are refused as
/// unknown options).
fn server_source(s: &mut ServerDraft, ctx: &mut Ctx) -> Result<(), String> {
    let addr = crate::config::address::parse_source_addr(ctx.arg(0, "an address")?)?;
    s.source = Some(crate::config::model::Source {
        addr,
        interface: None,
    });
    Ok(())
}

fn server_id(s: &mut ServerDraft, ctx: &mut Ctx) -> Result<(), String> {
    if s.name.is_empty() {
        return Err("'id' option is not accepted in default-server sections".into());
    }
    let text = ctx.arg(0, "an integer")?;
    let n: i64 = text
        .parse()
        .map_err(|_| format!("'id' expects an integer argument, not '{text}'"))?;
    if n <= 0 {
        return Err("'id': custom id has to be > 0".into());
    }
    let id = u32::try_from(n)
        .ok()
        .filter(|&id| id <= i32::MAX as u32)
        .ok_or_else(|| format!("'id': custom id {n} is too large (at most {})", i32::MAX))?;
    s.id = Some(id);
    Ok(())
}

fn set(flag: &mut bool, value: bool) -> Result<(), String> {
    *flag = value;
    Ok(())
}

/// A check interval: a non-zero duration, bare numbers in milliseconds.
fn interval(ctx: &Ctx) -> Result<Duration, String> {
    let d = parse_duration(ctx.arg(0, "a duration, e.g. '2s'")?, TimeUnit::Millis)
        .map_err(|e| format!("'{}': {e}", ctx.keyword))?;
    if d.is_zero() {
        return Err(format!("'{}' must be greater than zero", ctx.keyword));
    }
    Ok(d)
}

/// `slowstart`: HAProxy keeps it in whole seconds, rounded up (`500ms` ramps over 1 s), and
/// 0 turns it off.
fn slowstart(s: &mut ServerDraft, ctx: &mut Ctx) -> Result<(), String> {
    let d = parse_duration(ctx.arg(0, "a duration, e.g. '30s'")?, TimeUnit::Millis)
        .map_err(|e| format!("'{}': {e}", ctx.keyword))?;
    let secs = d.as_millis().div_ceil(1000);
    s.slowstart = (secs > 0).then(|| Duration::from_secs(u64::try_from(secs).unwrap_or(u64::MAX)));
    Ok(())
}

/// A count such as `maxconn`, `rise`: at least `min`, at most HAProxy's `int`.
fn count(ctx: &Ctx, min: u64) -> Result<u32, String> {
    let n = parse_int(ctx.arg(0, "a number")?, ctx.keyword, min, MAX_COUNT)?;
    u32::try_from(n).map_err(|_| format!("'{}' is too large", ctx.keyword))
}

fn on_marked_down(s: &mut ServerDraft, ctx: &mut Ctx) -> Result<(), String> {
    match ctx.arg(0, "'shutdown-sessions'")? {
        "shutdown-sessions" => set(&mut s.on_marked_down_shutdown_sessions, true),
        other => Err(format!(
            "'on-marked-down {other}' is not supported (rolelb knows 'shutdown-sessions')"
        )),
    }
}

fn on_marked_up(s: &mut ServerDraft, ctx: &mut Ctx) -> Result<(), String> {
    match ctx.arg(0, "'shutdown-backup-sessions'")? {
        "shutdown-backup-sessions" => set(&mut s.on_marked_up_shutdown_backup_sessions, true),
        other => Err(format!(
            "'on-marked-up {other}' is not supported (rolelb knows 'shutdown-backup-sessions')"
        )),
    }
}

/// Parses server options into `srv`, reporting every bad option (the first is returned,
/// later ones are recorded as extra errors so all of them show up).
pub fn parse_options(srv: &mut ServerDraft, args: &[Word], ctx: &mut Ctx) -> Result<(), String> {
    let mut first_error: Option<String> = None;
    let mut i = 0;
    while let Some(word) = args.get(i) {
        let opt = word.as_str();
        i += 1;
        let result = match all_keywords().find(|k| k.name == opt) {
            // Its arity is unknown, so the words after it cannot be read reliably.
            None => {
                record(&mut first_error, ctx, unknown(opt));
                break;
            }
            Some(entry) => {
                let end = if entry.takes_arg { i + 1 } else { i };
                match args.get(i..end) {
                    Some(opt_args) => {
                        i = end;
                        let mut sub = Ctx {
                            keyword: entry.name,
                            args: opt_args,
                            loc: ctx.loc,
                            diags: &mut *ctx.diags,
                        };
                        (entry.parse)(srv, &mut sub)
                    }
                    None => Err(format!("server option '{opt}' expects an argument")),
                }
            }
        };
        if let Err(message) = result {
            record(&mut first_error, ctx, message);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// The server options rolelb honours, those of checks over TLS included.
fn known_keywords() -> impl Iterator<Item = &'static ServerKeyword> {
    SERVER_KEYWORDS.iter().chain(TLS_KEYWORDS)
}

/// Every option with a parser: the known ones and HAProxy's TLS options that are refused
/// (their parser says why).
fn all_keywords() -> impl Iterator<Item = &'static ServerKeyword> {
    known_keywords().chain(TLS_REFUSED)
}

/// Keeps the first error for the caller and records the others directly.
fn record(first_error: &mut Option<String>, ctx: &mut Ctx, message: String) {
    match first_error {
        None => *first_error = Some(message),
        Some(_) => ctx.diags.error(ctx.loc, message),
    }
}

fn unknown(opt: &str) -> String {
    match opt {
        "resolve-net" => format!(
            "server option '{opt}' is not supported: rolelb picks among the answers by 'resolve-prefer' alone"
        ),
        "cookie" | "redir" => {
            format!("server option '{opt}' only applies to HTTP: rolelb is a TCP balancer")
        }
        "track"
        | "observe"
        | "error-limit"
        | "on-error"
        | "agent-check-send-proxy"
        | "proto"
        | "usesrc"
        | "namespace"
        | "tfo"
        | "pool-max-conn"
        | "max-reuse"
        | "socks4"
        | "no-agent-check-send-proxy" => {
            format!("server option '{opt}' is not supported by rolelb; remove it")
        }
        _ => format!(
            "unknown server option '{opt}'{}",
            did_you_mean(opt, known_keywords().map(|k| k.name))
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::draft::Diags;
    use crate::config::model::Loc;

    fn parse(line: &str) -> (ServerDraft, Result<(), String>, Diags) {
        crate::config::testing::server_options(line)
    }

    #[test]
    fn id_is_a_positive_int() {
        let (s, r, _) = parse("id 12");
        r.unwrap();
        assert_eq!(s.id, Some(12));
        for bad in ["id 0", "id -3", "id x", "id 2147483648"] {
            let (_, r, _) = parse(bad);
            assert!(r.is_err(), "{bad}");
        }
        let loc = Loc {
            file: "t".into(),
            line: 1,
        };
        let mut default = ServerDraft::new(String::new(), loc.clone());
        let mut diags = Diags::default();
        let mut ctx = Ctx {
            keyword: "default-server",
            args: &[],
            loc: &loc,
            diags: &mut diags,
        };
        let args = [Word::new(b"id".to_vec()), Word::new(b"3".to_vec())];
        let r = parse_options(&mut default, &args, &mut ctx);
        assert!(r.unwrap_err().contains("default-server"));
    }

    #[test]
    fn haproxy_defaults() {
        let (s, r, _) = parse("");
        r.unwrap();
        assert_eq!(
            (s.inter, s.rise, s.fall, s.weight),
            (Duration::from_secs(2), 2, 3, 1)
        );
    }

    #[test]
    fn check_options() {
        let (s, r, _) = parse(
            "check inter 3s fastinter 500 downinter 1m rise 5 fall 2 port 8008 addr 127.0.0.2",
        );
        r.unwrap();
        assert!(s.check);
        assert_eq!(s.inter, Duration::from_secs(3));
        assert_eq!(s.fastinter, Some(Duration::from_millis(500)));
        assert_eq!(s.downinter, Some(Duration::from_secs(60)));
        assert_eq!((s.rise, s.fall, s.check_port), (5, 2, Some(8008)));
        assert_eq!(s.check_addr, Some("127.0.0.2".parse().unwrap()));
    }

    #[test]
    fn traffic_options() {
        let (s, r, _) = parse(
            "weight 0 backup maxconn 100 maxqueue 10 slowstart 30s on-marked-down shutdown-sessions on-marked-up shutdown-backup-sessions send-proxy-v2 disabled",
        );
        r.unwrap();
        assert_eq!((s.weight, s.backup, s.disabled), (0, true, true));
        assert_eq!((s.maxconn, s.maxqueue), (Some(100), Some(10)));
        assert_eq!(s.slowstart, Some(Duration::from_secs(30)));
        assert!(s.on_marked_down_shutdown_sessions && s.on_marked_up_shutdown_backup_sessions);
        assert_eq!(s.send_proxy, Some(ProxyProtocol::V2));
    }

    #[test]
    fn slowstart_is_whole_seconds_rounded_up_and_zero_is_off() {
        for (text, secs) in [
            ("500ms", Some(1)),
            ("1", Some(1)),
            ("1001", Some(2)),
            ("30s", Some(30)),
            ("0", None),
            ("0s", None),
        ] {
            let (s, r, _) = parse(&format!("slowstart {text}"));
            r.unwrap();
            assert_eq!(s.slowstart, secs.map(Duration::from_secs), "{text}");
        }
        assert!(parse("slowstart 25d").1.unwrap_err().contains("overflows"));
    }

    #[test]
    fn check_port_zero_is_the_servers_port() {
        let (s, r, _) = parse("check port 0");
        r.unwrap();
        assert_eq!(s.check_port, None);
        assert!(parse("check port 65536").1.is_err());
    }

    #[test]
    fn counts_stop_at_haproxys_int() {
        let (s, r, _) = parse("maxconn 2147483647 maxqueue 0 rise 2147483647");
        r.unwrap();
        assert_eq!(
            (s.maxconn, s.maxqueue, s.rise),
            (Some(i32::MAX as u32), Some(0), i32::MAX as u32)
        );
        for bad in ["maxconn 2147483648", "fall 2147483648", "rise 0", "fall 0"] {
            assert!(parse(bad).1.is_err(), "{bad}");
        }
    }

    #[test]
    fn agent_options() {
        let (s, r, _) = parse(
            "agent-check agent-port 9999 agent-inter 5s agent-addr 127.0.0.1 agent-send ping\\n",
        );
        r.unwrap();
        assert!(s.agent_check);
        assert_eq!(s.agent_port, Some(9999));
        assert_eq!(s.agent_inter, Some(Duration::from_secs(5)));
    }

    #[test]
    fn no_flags_undo() {
        let (s, r, _) = parse("check backup send-proxy no-check no-backup no-send-proxy");
        r.unwrap();
        assert!(!s.check && !s.backup && s.send_proxy.is_none());
    }

    #[test]
    fn every_bad_option_is_reported() {
        let (_, r, diags) = parse("weight 257 inter 0 rise");
        assert!(r.unwrap_err().contains("between 0 and 256"));
        let rest: Vec<String> = diags.errors.iter().map(|d| d.message.clone()).collect();
        assert_eq!(rest.len(), 2, "{rest:?}");
        assert!(rest[0].contains("greater than zero"));
        assert!(rest[1].contains("expects an argument"));
        let (_, r, diags) = parse("check fastintr 1s weight 300");
        assert!(r.unwrap_err().contains("did you mean 'fastinter'"));
        assert!(diags.errors.is_empty());
    }

    #[test]
    fn tls_and_dns_options_explain_themselves() {
        assert!(parse("ssl").1.unwrap_err().contains("check-ssl"));
        assert!(
            parse("resolve-net 10.0.0.0/8")
                .1
                .unwrap_err()
                .contains("resolve-prefer")
        );
    }
}
