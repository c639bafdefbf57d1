//! The proxy keyword table: what `defaults`, `frontend`, `backend` and `listen` accept, each
//! keyword with its parser and the sections where HAProxy allows it.

use super::{
    Ctx, Sections, acl, bind, check, did_you_mean, etcd, option, resolvers, role, server, stats,
    stick, tcp_request,
};
use crate::config::address::parse_bind_addrs;
use crate::config::draft::{ProxyDraft, ProxyKind, ServerDraft};
use crate::config::keywords::log::parse_log_target;
use crate::config::model::{Balance, Bind, HashType, Mode};
use crate::config::units::{MAX_COUNT, TimeUnit, parse_duration, parse_int};

/// Parser of one proxy keyword.
pub type ProxyParser = fn(&mut ProxyDraft, &mut Ctx) -> Result<(), String>;

/// One entry of the proxy table.
pub struct ProxyKeyword {
    /// The keyword.
    pub name: &'static str,
    /// Where it is valid.
    pub sections: Sections,
    /// Its parser.
    pub parse: ProxyParser,
}

const fn kw(name: &'static str, sections: Sections, parse: ProxyParser) -> ProxyKeyword {
    ProxyKeyword {
        name,
        sections,
        parse,
    }
}

/// The proxy keywords.
pub const PROXY_KEYWORDS: &[ProxyKeyword] = &[
    kw("mode", Sections::ALL, mode),
    kw("id", Sections::PROXIES, id),
    kw("bind", Sections::FE_ONLY, bind_line),
    kw("default_backend", Sections::FE, default_backend),
    kw("use_backend", Sections::FE_ONLY, use_backend),
    kw("balance", Sections::BE, balance),
    kw("hash-type", Sections::BE, hash_type),
    kw("maxconn", Sections::ALL, maxconn),
    kw("backlog", Sections::ALL, backlog),
    kw("fullconn", Sections::ALL, fullconn),
    kw("rate-limit", Sections::ALL, rate_limit),
    kw("source", Sections::BE, source),
    kw("timeout", Sections::ALL, timeout),
    kw("retries", Sections::BE, retries),
    kw("retry-on", Sections::BE, retry_on),
    kw("option", Sections::ALL, option::option_line),
    kw("no", Sections::ALL, no_line),
    kw("log", Sections::ALL, log),
    kw("tcp-check", Sections::BE, check::tcp_check),
    kw("http-check", Sections::BE, check::http_check),
    kw("external-check", Sections::BE, check::external_check),
    kw("disabled", Sections::ALL, disabled),
    kw("enabled", Sections::ALL, enabled),
    kw("default-server", Sections::BE, default_server),
    kw("server", Sections::BE_ONLY, server_line),
    kw("server-template", Sections::BE_ONLY, |p, c| {
        resolvers::server_template(p, c, server_line)
    }),
    kw("stats", Sections::ALL, stats::stats),
    kw("acl", Sections::PROXIES, acl::acl),
    kw("tcp-request", Sections::PROXIES, tcp_request::tcp_request),
    kw("stick-table", Sections::BE_ONLY, stick::stick_table),
    kw("stick", Sections::BE_ONLY, stick::stick),
    // rolelb extensions (HAProxy would reject them).
    kw("role", Sections::BE, role::role),
    kw("role-check", Sections::BE, role::role_check),
    kw("max-lag", Sections::BE, role::max_lag),
    kw("role-source", Sections::BE, role::role_source),
    kw("discover", Sections::BE_ONLY, etcd::discover),
    // Accepted for compatibility; they change neither routing nor timing.
    kw("description", Sections::ALL, ignored),
    kw("log-format", Sections::ALL, super::log::log_format),
    kw("log-tag", Sections::ALL, log_tag),
    kw("errorfile", Sections::ALL, http_only),
    kw("errorloc", Sections::ALL, http_only),
    kw("errorloc302", Sections::ALL, http_only),
    kw("errorloc303", Sections::ALL, http_only),
    kw("errorfiles", Sections::ALL, http_only),
];

/// Looks a proxy keyword up.
pub fn find(name: &str) -> Option<&'static ProxyKeyword> {
    PROXY_KEYWORDS.iter().find(|k| k.name == name)
}

fn ignored(_: &mut ProxyDraft, ctx: &mut Ctx) -> Result<(), String> {
    let kw = ctx.keyword.to_string();
    ctx.warn(format!(
        "'{kw}' is accepted for compatibility and ignored by rolelb"
    ));
    Ok(())
}

fn http_only(_: &mut ProxyDraft, ctx: &mut Ctx) -> Result<(), String> {
    let kw = ctx.keyword.to_string();
    ctx.warn(format!(
        "'{kw}' only applies to HTTP traffic and is ignored: rolelb is a TCP balancer"
    ));
    Ok(())
}

/// `id N`: the proxy's id (`iid` in `show stat`, `HAPROXY_PROXY_ID`). HAProxy stores it in
/// an `int` and wants it above 0; duplicates are refused when ids are assigned.
fn id(p: &mut ProxyDraft, ctx: &mut Ctx) -> Result<(), String> {
    ctx.at_most(1)?;
    let text = ctx.arg(0, "an integer")?;
    if let Some((_, first)) = &p.id {
        return Err(format!(
            "'id' given twice for {} '{}' (first at {first})",
            p.kind.keyword(),
            p.name
        ));
    }
    let id = parse_int(text, "'id'", 1, i32::MAX as u64)
        .map_err(|e| format!("{e} (a proxy's custom id has to be > 0)"))?;
    p.id = Some((u32::try_from(id).unwrap_or(u32::MAX), ctx.loc.clone()));
    Ok(())
}

fn mode(p: &mut ProxyDraft, ctx: &mut Ctx) -> Result<(), String> {
    ctx.at_most(1)?;
    p.mode = match ctx.arg(0, "'tcp' or 'http'")? {
        "tcp" => Mode::Tcp,
        "http" => Mode::Http,
        "health" => return Err("'mode health' was removed from HAProxy; use 'mode tcp'".into()),
        other => return Err(format!("unknown mode '{other}' (use 'mode tcp')")),
    };
    p.mode_loc = Some(ctx.loc.clone());
    Ok(())
}

/// The pre-1.5 `listen NAME ADDR:PORT` (or `frontend NAME ADDR:PORT`): HAProxy 2.6 refuses
/// it ("please use the 'bind' keyword"), so rolelb does too, showing the modern form.
/// `args` are the header's words after the keyword.
pub fn address_on_header(kind: ProxyKind, args: &[&str]) -> Option<String> {
    let [name, addr] = args else {
        return None;
    };
    if !kind.has_frontend() || *addr == "from" {
        return None;
    }
    let keyword = kind.keyword();
    Some(format!(
        "'{keyword} {name} {addr}' is the pre-1.5 syntax, which HAProxy 2.6 refuses too: \
         write '{keyword} {name}' and, on the next line, 'bind {addr}'"
    ))
}

fn bind_line(p: &mut ProxyDraft, ctx: &mut Ctx) -> Result<(), String> {
    ctx.arg(0, "an address such as ':5000' or '127.0.0.1:5000'")?;
    let addrs = parse_bind_addrs(ctx.args[0].address_checked()?)?;
    let args = ctx.args;
    let opts = bind::parse_options(&args[1..], ctx)?;
    if let Some(id) = opts.id {
        // As HAProxy: one listener per address, and an id names one.
        if addrs.len() > 1 {
            return Err(format!(
                "bind option 'id' can only be used with a single socket ('{}' has {})",
                ctx.args[0].as_str(),
                addrs.len()
            ));
        }
        if let Some(other) = p.binds.iter().find(|b| b.id == Some(id)) {
            return Err(format!(
                "bind option 'id': custom id {id} already used at {} (bind {})",
                other.loc, other.addr
            ));
        }
    }
    p.binds.extend(addrs.into_iter().map(|addr| Bind {
        addr,
        name: opts.name.clone(),
        accept_proxy: opts.accept_proxy,
        defer_accept: opts.defer_accept,
        tfo: opts.tfo,
        id: opts.id,
        maxconn: opts.maxconn,
        socket: opts.socket.clone(),
        loc: ctx.loc.clone(),
    }));
    Ok(())
}

fn default_backend(p: &mut ProxyDraft, ctx: &mut Ctx) -> Result<(), String> {
    ctx.at_most(1)?;
    let name = ctx.arg(0, "a backend name")?.to_string();
    p.default_backend = Some((name, ctx.loc.clone()));
    Ok(())
}

/// `use_backend NAME [if|unless COND]`: the first rule whose condition holds names the
/// backend, else `default_backend`; rules after an unconditional one are never used.
fn use_backend(p: &mut ProxyDraft, ctx: &mut Ctx) -> Result<(), String> {
    let name = ctx.arg(0, "a backend name")?.to_string();
    if name.contains("%[") {
        return Err("a dynamic backend name ('%[...]') is not supported: name the backend".into());
    }
    let args = ctx.args;
    let cond = acl::parse_cond(&acl::words(args, 1), p, ctx)?;
    if let Some((first, loc)) = &p.use_backend {
        let msg = format!(
            "'use_backend {name}' is never used: the unconditional 'use_backend {first}' at {loc} always wins"
        );
        ctx.warn(msg);
        return Ok(());
    }
    match cond {
        Some(cond) => p.use_backend_rules.push(crate::config::acl::UseBackend {
            backend: name,
            cond,
            loc: ctx.loc.clone(),
        }),
        None => p.use_backend = Some((name, ctx.loc.clone())),
    }
    Ok(())
}

fn balance(p: &mut ProxyDraft, ctx: &mut Ctx) -> Result<(), String> {
    ctx.at_most(1)?;
    p.balance = match ctx.arg(
        0,
        "an algorithm (roundrobin, static-rr, leastconn, first, source)",
    )? {
        "roundrobin" => Balance::RoundRobin,
        "static-rr" => Balance::StaticRr,
        "leastconn" => Balance::LeastConn,
        "first" => Balance::First,
        "source" => Balance::Source,
        other @ ("uri" | "url_param" | "hdr" | "random" | "rdp-cookie" | "hash") => {
            return Err(format!(
                "'balance {other}' is not supported by rolelb (use roundrobin, static-rr, leastconn, first or source)"
            ));
        }
        other => {
            return Err(format!(
                "unknown balance algorithm '{other}' (use roundrobin, static-rr, leastconn, first or source)"
            ));
        }
    };
    Ok(())
}

fn hash_type(p: &mut ProxyDraft, ctx: &mut Ctx) -> Result<(), String> {
    p.hash_type = match ctx.arg(0, "'map-based' or 'consistent'")? {
        "map-based" => HashType::MapBased,
        "consistent" => HashType::Consistent,
        other => {
            return Err(format!(
                "unknown hash-type '{other}' (use 'map-based' or 'consistent')"
            ));
        }
    };
    let mut i = 1;
    // HAProxy hashes `balance source` without the function (sdbm, djb2, wt6, crc32 only serve
    // `balance uri`, `hdr`, `hash` and the like), so a function alone changes nothing. `avalanche` does change which
    // server a client goes to; HAProxy applies it to `consistent` unless a function is named
    // without it. rolelb hashes `consistent` with avalanche and `map-based` without, so the
    // two other combinations are refused rather than run differently.
    if let Some(func) = ctx.args.get(1).map(|w| w.as_str().to_string()) {
        if !["sdbm", "djb2", "wt6", "crc32"].contains(&func.as_str()) {
            return Err(format!(
                "unknown hash function '{func}' (HAProxy knows sdbm, djb2, wt6, crc32)"
            ));
        }
        i = 2;
        let mut avalanche = false;
        if let Some(modifier) = ctx.args.get(2) {
            if modifier.as_str() != "avalanche" {
                return Err(format!(
                    "unknown hash modifier '{}' (HAProxy knows 'avalanche')",
                    modifier.as_str()
                ));
            }
            avalanche = true;
            i = 3;
        }
        match (p.hash_type, avalanche) {
            (HashType::Consistent, false) => {
                return Err(format!(
                    "'hash-type consistent {func}' without 'avalanche' is not supported by rolelb: \
                     use 'hash-type consistent' or 'hash-type consistent {func} avalanche' \
                     (both hash client addresses with avalanche, as HAProxy does for them)"
                ));
            }
            (HashType::MapBased, true) => {
                return Err(format!(
                    "'hash-type map-based {func} avalanche' is not supported by rolelb: \
                     use 'hash-type map-based' (HAProxy hashes client addresses the same way \
                     with any function, and without avalanche)"
                ));
            }
            _ => {}
        }
    }
    ctx.at_most(i)
}

/// A count of the frontend side (`maxconn N`, `backlog N`): `Some(None)` for 0, "not set" as
/// in HAProxy; `None` in a backend, which has no frontend side (warned about, with `hint`
/// after the message, as HAProxy warns).
fn frontend_count(
    p: &ProxyDraft,
    ctx: &mut Ctx,
    hint: &str,
) -> Result<Option<Option<u32>>, String> {
    ctx.at_most(1)?;
    let kw = ctx.keyword;
    let n = parse_int(ctx.arg(0, "a number of connections")?, kw, 0, MAX_COUNT)?;
    if p.kind == ProxyKind::Backend {
        let name = &p.name;
        ctx.warn(format!(
            "'{kw}' ignored because backend '{name}' has no frontend capability{hint}"
        ));
        return Ok(None);
    }
    let n = u32::try_from(n).map_err(|_| format!("{kw} is too large"))?;
    Ok(Some(Some(n).filter(|&n| n > 0)))
}

/// `maxconn N`; 0 means "not set" as in HAProxy, so the frontend takes the global `maxconn`.
fn maxconn(p: &mut ProxyDraft, ctx: &mut Ctx) -> Result<(), String> {
    let hint = "; limit servers with 'server ... maxconn N'";
    if let Some(n) = frontend_count(p, ctx, hint)? {
        p.maxconn = n;
    }
    Ok(())
}

/// `backlog N`: the listen backlog of the frontend's addresses (a `bind ... backlog` wins);
/// 0 leaves the default, as in HAProxy.
fn backlog(p: &mut ProxyDraft, ctx: &mut Ctx) -> Result<(), String> {
    if let Some(n) = frontend_count(p, ctx, "")? {
        p.backlog = n;
    }
    Ok(())
}

/// `fullconn N`: the backend load at which dynamic server limits (`minconn`) reach their
/// `maxconn`; 0 means "not set" (computed), as in HAProxy. In a frontend it is warned about
/// and ignored, as HAProxy does.
fn fullconn(p: &mut ProxyDraft, ctx: &mut Ctx) -> Result<(), String> {
    ctx.at_most(1)?;
    let n = parse_int(ctx.arg(0, "an integer argument")?, "fullconn", 0, MAX_COUNT)?;
    if p.kind == ProxyKind::Frontend {
        let name = &p.name;
        ctx.warn(format!(
            "'fullconn' ignored because frontend '{name}' has no backend capability; maybe you \
             want 'maxconn' instead"
        ));
        return Ok(());
    }
    p.fullconn =
        Some(u32::try_from(n).map_err(|_| "fullconn is too large".to_string())?).filter(|&n| n > 0);
    Ok(())
}

/// `rate-limit sessions N`: new sessions per second the frontend accepts; past it, it stops
/// accepting until the rate falls (0: no limit), as in HAProxy 2.6. HAProxy reads N with
/// `strtoul(.., 0)`, so `010` is 8 and `0x10` 16 there: rolelb takes plain decimal numbers
/// only and says why. In a backend it is warned about and ignored, as HAProxy does.
fn rate_limit(p: &mut ProxyDraft, ctx: &mut Ctx) -> Result<(), String> {
    match ctx.args.first().map(|w| w.as_str()) {
        Some("sessions") => {}
        other => {
            return Err(format!(
                "'rate-limit' only supports 'sessions' (got '{}')",
                other.unwrap_or_default()
            ));
        }
    }
    let text = ctx
        .arg(1, "an integer value (in sessions/second)")?
        .to_string();
    ctx.at_most(2)?;
    if text.len() > 1 && text.starts_with('0') {
        return Err(format!(
            "'rate-limit sessions {text}': write the number in decimal without a leading 0 \
             (HAProxy reads '0...' as octal or hexadecimal)"
        ));
    }
    let n = parse_int(&text, "'rate-limit sessions'", 0, u64::from(u32::MAX))?;
    if p.kind == ProxyKind::Backend {
        let name = &p.name;
        ctx.warn(format!(
            "rate-limit sessions will be ignored because backend '{name}' has no frontend \
             capability"
        ));
        return Ok(());
    }
    p.rate_limit_sessions = u32::try_from(n).ok().filter(|&n| n > 0);
    Ok(())
}

/// `source ADDR[:PORT] [interface NAME]`: the address connections to the servers come from
/// (a server's own `source` wins). `usesrc` (connecting from the client's address, which
/// needs transparent proxying) is refused.
fn source(p: &mut ProxyDraft, ctx: &mut Ctx) -> Result<(), String> {
    let addr = crate::config::address::parse_source_addr(ctx.arg(0, "an address")?)?;
    let interface = match ctx.args.get(1).map(|w| w.as_str()) {
        None => None,
        Some("interface") => {
            ctx.at_most(3)?;
            Some(ctx.arg(2, "an interface name")?.to_string())
        }
        Some("usesrc") => {
            return Err(
                "'source ... usesrc' is not supported: rolelb connects from its own \
                 address, not the client's (that needs transparent proxying)"
                    .into(),
            );
        }
        Some(other) => {
            return Err(format!(
                "'source {}': unexpected '{other}' (expected 'interface NAME')",
                ctx.args[0].as_str()
            ));
        }
    };
    p.source = Some(crate::config::model::Source { addr, interface });
    Ok(())
}

fn timeout(p: &mut ProxyDraft, ctx: &mut Ctx) -> Result<(), String> {
    let which = ctx
        .arg(
            0,
            "a timeout name and a duration, e.g. 'timeout connect 5s'",
        )?
        .to_string();
    let frontend_side = match which.as_str() {
        "client" | "client-fin" => true,
        "connect" | "server" | "queue" | "check" | "tunnel" | "server-fin" => false,
        "http-request" | "http-keep-alive" | "tarpit" => {
            ctx.arg(1, "a duration")?;
            ctx.warn(format!(
                "'timeout {which}' only applies to HTTP traffic and is ignored: rolelb is a TCP balancer"
            ));
            return Ok(());
        }
        other => {
            return Err(format!(
                "unknown timeout '{other}' (known: connect, client, server, queue, check, tunnel, client-fin, server-fin)"
            ));
        }
    };
    ctx.at_most(2)?;
    let value = parse_duration(ctx.arg(1, "a duration, e.g. '5s'")?, TimeUnit::Millis)?;
    let applies = if frontend_side {
        p.kind != ProxyKind::Backend
    } else {
        p.kind != ProxyKind::Frontend
    };
    if !applies {
        let (kind, name) = (p.kind.keyword(), p.name.clone());
        let side = if frontend_side { "frontend" } else { "backend" };
        ctx.warn(format!(
            "'timeout {which}' will be ignored because {kind} '{name}' has no {side} capability"
        ));
        return Ok(());
    }
    let t = &mut p.timeouts;
    let slot = match which.as_str() {
        "client" => &mut t.timeout_client,
        "client-fin" => &mut t.timeout_client_fin,
        "connect" => &mut t.timeout_connect,
        "server" => &mut t.timeout_server,
        "queue" => &mut t.timeout_queue,
        "check" => &mut t.timeout_check,
        "tunnel" => &mut t.timeout_tunnel,
        _ => &mut t.timeout_server_fin,
    };
    // HAProxy reads 0 as "not set": no timeout, or the fallback (`queue` takes `connect`,
    // `check` takes `inter`, `client-fin`/`server-fin` take `client`/`server`, and without
    // `tunnel` the client and server timeouts stay in force). It also overrides `defaults`.
    *slot = (!value.is_zero()).then_some(value);
    Ok(())
}

fn retries(p: &mut ProxyDraft, ctx: &mut Ctx) -> Result<(), String> {
    ctx.at_most(1)?;
    let n = parse_int(ctx.arg(0, "a number")?, "retries", 0, MAX_COUNT)?;
    p.retries = u32::try_from(n).map_err(|_| "retries is too large".to_string())?;
    Ok(())
}

/// `retry-on` keywords that only HTTP proxies act on; HAProxy accepts them in TCP mode and
/// does nothing with them.
const RETRY_ON_HTTP: &[&str] = &[
    "empty-response",
    "junk-response",
    "response-timeout",
    "0rtt-rejected",
    "401",
    "403",
    "404",
    "408",
    "425",
    "500",
    "501",
    "502",
    "503",
    "504",
];

/// `retry-on KEYWORD...`: replaces the previous list. A TCP proxy retries only failed
/// connects, so what counts is whether `conn-failure` (or `all-retryable-errors`) is in it:
/// `retry-on none` turns connect retries off, as in HAProxy.
fn retry_on(p: &mut ProxyDraft, ctx: &mut Ctx) -> Result<(), String> {
    ctx.arg(
        0,
        "at least one keyword saying when to retry (e.g. 'conn-failure')",
    )?;
    let mut conn_failure = false;
    let mut http_only = Vec::new();
    for (i, word) in ctx.args.iter().enumerate() {
        match word.as_str() {
            "conn-failure" => conn_failure = true,
            "all-retryable-errors" => {
                conn_failure = true;
                http_only.push("all-retryable-errors");
            }
            "none" if i == 0 && ctx.args.len() == 1 => {}
            "none" => return Err("'retry-on none' must be alone on its line".to_string()),
            other => match RETRY_ON_HTTP.iter().find(|k| **k == other) {
                Some(k) => http_only.push(k),
                None => {
                    let hint = did_you_mean(
                        other,
                        RETRY_ON_HTTP.iter().copied().chain([
                            "conn-failure",
                            "all-retryable-errors",
                            "none",
                        ]),
                    );
                    return Err(format!("'retry-on': unknown keyword '{other}'{hint}"));
                }
            },
        }
    }
    if !http_only.is_empty() {
        ctx.warn(format!(
            "'retry-on {}' only applies to HTTP requests; a TCP proxy ignores it, as HAProxy does (only 'conn-failure' counts here)",
            http_only.join(" ")
        ));
    }
    p.retry_on_conn_failure = conn_failure;
    Ok(())
}

/// `no option X` and `no log`.
fn no_line(p: &mut ProxyDraft, ctx: &mut Ctx) -> Result<(), String> {
    match ctx.arg(0, "'option NAME' or 'log'")? {
        "option" => option::no_option(p, ctx),
        "log" => {
            ctx.at_most(1)?;
            p.logs.clear();
            p.log_global = false;
            Ok(())
        }
        other => Err(format!(
            "'no {other}' is not supported (rolelb knows 'no option NAME' and 'no log')"
        )),
    }
}

fn log(p: &mut ProxyDraft, ctx: &mut Ctx) -> Result<(), String> {
    if ctx.args.first().is_some_and(|w| w.as_str() == "global") {
        ctx.at_most(1)?;
        p.log_global = true;
        return Ok(());
    }
    let target = parse_log_target(ctx)?;
    p.logs.push(target);
    Ok(())
}

fn disabled(p: &mut ProxyDraft, ctx: &mut Ctx) -> Result<(), String> {
    ctx.at_most(0)?;
    p.disabled = true;
    Ok(())
}

fn enabled(p: &mut ProxyDraft, ctx: &mut Ctx) -> Result<(), String> {
    ctx.at_most(0)?;
    p.disabled = false;
    Ok(())
}

fn default_server(p: &mut ProxyDraft, ctx: &mut Ctx) -> Result<(), String> {
    let mut template = p.default_server.clone();
    let args = ctx.args;
    server::parse_options(&mut template, args, ctx)?;
    p.default_server = template;
    Ok(())
}

fn server_line(p: &mut ProxyDraft, ctx: &mut Ctx) -> Result<(), String> {
    let name = ctx
        .arg(0, "a name and an address, e.g. 'server pg1 10.0.0.1:5432'")?
        .to_string();
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.:".contains(*c)))
    {
        return Err(format!(
            "character '{c}' is not permitted in server name '{name}'"
        ));
    }
    if let Some(prev) = p.servers.iter().find(|s| s.name == name) {
        return Err(format!(
            "server '{}/{name}' already exists (declared at {})",
            p.name, prev.loc
        ));
    }
    ctx.arg(1, "an address HOST:PORT after the server name")?;
    let addr_text = ctx.args[1].address_checked()?.to_string();
    let mut srv = ServerDraft {
        name,
        loc: ctx.loc.clone(),
        ..p.default_server.clone()
    };
    let args = ctx.args;
    let options = server::parse_options(&mut srv, &args[2..], ctx);
    // After the options: `init-addr` and `resolve-prefer` decide how a name is resolved.
    let addr = resolvers::server_address(&mut srv, &addr_text);
    srv.addr = addr.as_ref().ok().copied();
    if let Some(w) = srv.resolve.warning.take() {
        ctx.warn(format!("server '{}/{}': {w}", p.name, srv.name));
    }
    let id_error = srv.id.and_then(|id| {
        let prev = p.servers.iter().find(|s| s.id == Some(id))?;
        Some(format!(
            "'id': custom id {id} already used at {} ('server {}')",
            prev.loc, prev.name
        ))
    });
    if id_error.is_some() {
        srv.id = None;
    }
    // Keep the server (even with errors) so later duplicates are still found.
    let agent_error = (srv.agent_check && srv.agent_port.is_none()).then(|| {
        format!(
            "server '{}/{}' has 'agent-check' but no 'agent-port': add 'agent-port N' (HAProxy would disable the agent check)",
            p.name, srv.name
        )
    });
    p.servers.push(srv);
    if let (Err(_), Err(e)) = (&addr, &options) {
        // Both are reported: a bad `init-addr` explains a failed address.
        ctx.diags.error(ctx.loc, e.clone());
    }
    addr?;
    options?;
    id_error.map_or(Ok(()), Err)?;
    agent_error.map_or(Ok(()), Err)
}

#[cfg(test)]
#[path = "proxy_tests.rs"]
mod tests;

/// `log-tag TAG`: the tag in the syslog header of this proxy's session lines.
fn log_tag(p: &mut ProxyDraft, ctx: &mut Ctx) -> Result<(), String> {
    p.log_tag = Some(super::global::one_tag(ctx)?);
    Ok(())
}
