//! The `global` section's keyword table: process-wide settings (`maxconn`, `nbthread`,
//! `stats socket`, `hard-stop-after`, `grace`, `log`, `user`, `group`, `pidfile`, `daemon`,
//! `ulimit-n`, the `tune.*` keywords rolelb acts on (parsed in `tune.rs`), `external-check`,
//! `insecure-fork-wanted`,
//! rolelb's `admin bind`), plus the common,
//! harmless keywords of real configs that rolelb accepts with a warning naming them
//! (`unix-bind`, HAProxy's other `tune.*` settings, ...).
//!
//! At the 700-line mark: one keyword table and its handlers, plus their unit tests.

use std::path::PathBuf;

use super::log::parse_log_target;
use super::{Ctx, tune};
use crate::config::address::parse_bind_addrs;
use crate::config::model::{Account, AdminBind, Global, StatsLevel, StatsSocket, Verify};
use crate::config::units::{MAX_COUNT, TimeUnit, parse_duration, parse_int};

/// Parser of one `global` keyword.
pub type GlobalParser = fn(&mut Global, &mut Ctx) -> Result<(), String>;

/// One entry of the `global` table.
pub struct GlobalKeyword {
    /// The keyword.
    pub name: &'static str,
    /// Its parser.
    pub parse: GlobalParser,
}

const fn kw(name: &'static str, parse: GlobalParser) -> GlobalKeyword {
    GlobalKeyword { name, parse }
}

/// The `global` keywords.
pub const GLOBAL_KEYWORDS: &[GlobalKeyword] = &[
    kw("maxconn", maxconn),
    kw("nbthread", nbthread),
    kw("stats", stats),
    kw("hard-stop-after", hard_stop_after),
    kw("grace", grace),
    kw("log", log),
    kw("user", account),
    kw("uid", account),
    kw("group", account),
    kw("gid", account),
    kw("pidfile", pidfile),
    kw("daemon", daemon),
    kw("admin", admin),
    kw("ulimit-n", ulimit_n),
    kw("maxconnrate", max_rate),
    kw("maxsessrate", max_rate),
    kw("tune.bufsize", tune::tune_bufsize),
    kw("tune.maxaccept", tune::tune_maxaccept),
    kw("tune.pipesize", tune::tune_pipesize),
    kw("tune.rcvbuf.client", tune::tune_socket_buffer),
    kw("tune.rcvbuf.server", tune::tune_socket_buffer),
    kw("tune.sndbuf.client", tune::tune_socket_buffer),
    kw("tune.sndbuf.server", tune::tune_socket_buffer),
    kw("unix-bind", unix_bind),
    kw("external-check", external_check),
    kw("insecure-fork-wanted", insecure_fork_wanted),
    kw("ssl-server-verify", ssl_server_verify),
    kw("ca-base", ca_crt_base),
    kw("crt-base", ca_crt_base),
    // Accepted for compatibility; none of them changes where traffic goes.
    kw("chroot", ignored),
    kw("spread-checks", spread_checks),
    kw("max-spread-checks", max_spread_checks),
    kw("master-worker", ignored),
    kw("log-send-hostname", log_send_hostname),
    kw("log-tag", log_tag),
    kw("node", node),
    kw("description", description),
    kw("cpu-map", ignored),
    kw("maxpipes", maxpipes),
    kw("nosplice", nosplice),
    kw("noepoll", ignored),
    kw("nopoll", ignored),
    kw("busy-polling", ignored),
    kw("set-dumpable", ignored),
    kw("localpeer", ignored),
    kw("expose-experimental-directives", ignored),
    kw("quiet", ignored),
];

/// Keyword prefixes accepted with a warning (TLS settings rolelb has no use for).
pub const IGNORED_PREFIXES: &[&str] = &["ssl-default-", "ssl-dh-param-file"];

/// Looks a `global` keyword up, including the ignored ones.
pub fn find(name: &str) -> Option<GlobalParser> {
    if let Some(k) = GLOBAL_KEYWORDS.iter().find(|k| k.name == name) {
        return Some(k.parse);
    }
    if tune::TUNE_IGNORED.contains(&name) {
        return Some(tune::tune_ignored);
    }
    IGNORED_PREFIXES
        .iter()
        .any(|p| name.starts_with(p))
        .then_some(ignored as GlobalParser)
}

/// `unix-bind [prefix P] [mode M] [user U] [uid N] [group G] [gid N]`: HAProxy's defaults for
/// the unix sockets of `bind` lines. rolelb's proxies bind TCP only, and HAProxy does not
/// apply `unix-bind` to `stats socket` (it skips the prefix for the CLI and takes mode and
/// owner from the `stats socket` line), so it changes nothing: checked as HAProxy checks it
/// (known options, a value after each, users and groups that exist), then accepted with a
/// warning.
fn unix_bind(_: &mut Global, ctx: &mut Ctx) -> Result<(), String> {
    let mut i = 0;
    while let Some(opt) = ctx.args.get(i).map(|w| w.as_str().to_string()) {
        if !["prefix", "mode", "uid", "gid", "user", "group"].contains(&opt.as_str()) {
            return Err(format!(
                "'unix-bind' only supports the 'prefix', 'mode', 'uid', 'gid', 'user' and 'group' options, not '{opt}'"
            ));
        }
        let value = ctx.arg(i + 1, &format!("a value after '{opt}'"))?;
        let known = match opt.as_str() {
            "user" => nix::unistd::User::from_name(value).ok().flatten().is_some(),
            "group" => nix::unistd::Group::from_name(value)
                .ok()
                .flatten()
                .is_some(),
            _ => true,
        };
        if !known {
            return Err(format!("'unix-bind': '{value}' unknown {opt}"));
        }
        i += 2;
    }
    ctx.warn(
        "'unix-bind' is accepted and has no effect: it only applies to unix sockets of 'bind' \
         lines, which rolelb does not have (HAProxy does not apply it to 'stats socket' either)",
    );
    Ok(())
}

fn ignored(_: &mut Global, ctx: &mut Ctx) -> Result<(), String> {
    let kw = ctx.keyword.to_string();
    ctx.warn(format!(
        "'{kw}' is accepted for compatibility and ignored by rolelb"
    ));
    Ok(())
}

fn string_arg(ctx: &Ctx, what: &str) -> Result<String, String> {
    ctx.at_most(1)?;
    let value = ctx.arg(0, what)?;
    if value.is_empty() {
        return Err(format!(
            "'{}' expects {what}, got an empty string",
            ctx.keyword
        ));
    }
    Ok(value.to_string())
}

/// The most descriptors Linux lets one process have (`fs.nr_open` at its ceiling on 64-bit).
const LINUX_MAX_FDS: u64 = 2_147_483_584;
/// Descriptors one proxied connection holds (client and server side; see `fd_limit`).
const FDS_PER_CONNECTION: u64 = 2;

/// `maxconn N`; 0 means "not set" as in HAProxy: the limit then comes from the file limit.
/// A value whose two descriptors per connection no Linux process can have is refused here
/// (HAProxy's `int` arithmetic overflows on it and it starts with a tiny descriptor budget).
fn maxconn(g: &mut Global, ctx: &mut Ctx) -> Result<(), String> {
    ctx.at_most(1)?;
    let n = parse_int(
        ctx.arg(0, "a number of connections")?,
        "maxconn",
        0,
        MAX_COUNT,
    )?;
    let need = n.saturating_mul(FDS_PER_CONNECTION);
    if need > LINUX_MAX_FDS {
        return Err(format!(
            "maxconn {n} would need {need} file descriptors, more than Linux allows one process \
             ({LINUX_MAX_FDS}); the largest usable value is below {}",
            LINUX_MAX_FDS / FDS_PER_CONNECTION
        ));
    }
    g.maxconn = match u32::try_from(n).map_err(|_| "maxconn is too large".to_string())? {
        0 => None,
        n => Some(n),
    };
    Ok(())
}

/// `maxconnrate N` / `maxsessrate N`: connections or sessions per second over every
/// frontend; 0 is "not set". HAProxy reads N with `atol()` (`5k` is 5): plain integers only.
/// Given twice, the first is kept with a warning, as HAProxy alerts and keeps it.
fn max_rate(g: &mut Global, ctx: &mut Ctx) -> Result<(), String> {
    ctx.at_most(1)?;
    let kw = ctx.keyword;
    let n = parse_int(ctx.arg(0, "an integer argument")?, kw, 0, MAX_COUNT)?;
    let slot = if kw == "maxconnrate" {
        &mut g.maxconnrate
    } else {
        &mut g.maxsessrate
    };
    if slot.is_some() {
        ctx.warn(format!("'{kw}' already specified: the first value is kept"));
        return Ok(());
    }
    *slot = u32::try_from(n).ok().filter(|&n| n > 0);
    Ok(())
}

/// `ulimit-n N`: the file descriptor limit to set (0: computed from `maxconn`, the default).
fn ulimit_n(g: &mut Global, ctx: &mut Ctx) -> Result<(), String> {
    ctx.at_most(1)?;
    if g.ulimit_n.is_some() {
        return Err("'ulimit-n' is given twice".into());
    }
    let n = parse_int(
        ctx.arg(0, "a number of file descriptors")?,
        "ulimit-n",
        0,
        u64::from(u32::MAX),
    )?;
    g.ulimit_n = (n > 0).then_some(n);
    Ok(())
}

fn nbthread(g: &mut Global, ctx: &mut Ctx) -> Result<(), String> {
    ctx.at_most(1)?;
    // HAProxy's default build supports at most 64 threads.
    let n = parse_int(ctx.arg(0, "a number of threads")?, "nbthread", 1, 64)?;
    g.nbthread = Some(usize::try_from(n).map_err(|_| "nbthread is too large".to_string())?);
    Ok(())
}

fn hard_stop_after(g: &mut Global, ctx: &mut Ctx) -> Result<(), String> {
    ctx.at_most(1)?;
    let d = parse_duration(ctx.arg(0, "a duration")?, TimeUnit::Millis)?;
    // As HAProxy: 0 is "not set", sessions may run to their end.
    g.hard_stop_after = (!d.is_zero()).then_some(d);
    Ok(())
}

fn grace(g: &mut Global, ctx: &mut Ctx) -> Result<(), String> {
    ctx.at_most(1)?;
    let d = parse_duration(ctx.arg(0, "a duration")?, TimeUnit::Millis)?;
    // As HAProxy: 0 is "not set", a soft stop closes the listeners at once.
    g.grace = (!d.is_zero()).then_some(d);
    Ok(())
}

/// `log-tag TAG`: the tag in the syslog header of every line.
fn log_tag(g: &mut Global, ctx: &mut Ctx) -> Result<(), String> {
    g.log_tag = Some(one_tag(ctx)?);
    Ok(())
}

/// `spread-checks N`: health and agent check intervals moved by up to N% either way, at
/// random, as HAProxy 2.6 reads it: 0..=50; a second one is reported and the first kept
/// (HAProxy also takes a second one after `spread-checks 0`). HAProxy reads `10x` as 10 and
/// `x` as 0; rolelb refuses what is not a number.
fn spread_checks(g: &mut Global, ctx: &mut Ctx) -> Result<(), String> {
    ctx.at_most(1)?;
    let text = ctx.arg(0, "an integer argument (0..50)")?.to_string();
    if g.spread_checks != 0 {
        ctx.warn("'spread-checks' already specified: the first one is kept".to_string());
        return Ok(());
    }
    let n = parse_int(&text, "spread-checks", 0, 50)?;
    g.spread_checks = u32::try_from(n).map_err(|_| "spread-checks is too large".to_string())?;
    Ok(())
}

/// `max-spread-checks DELAY` (milliseconds without a unit): the first checks after a start
/// are spread over at most DELAY; 0 sets no bound, as in HAProxy.
fn max_spread_checks(g: &mut Global, ctx: &mut Ctx) -> Result<(), String> {
    ctx.at_most(1)?;
    let d = parse_duration(ctx.arg(0, "a delay")?, TimeUnit::Millis)?;
    g.max_spread_checks = (!d.is_zero()).then_some(d);
    Ok(())
}

/// `node NAME`: letters, digits, `.`, `-` and `_`, as HAProxy requires.
fn node(g: &mut Global, ctx: &mut Ctx) -> Result<(), String> {
    ctx.at_most(1)?;
    let name = ctx.args.first().map(|w| w.as_str()).unwrap_or_default();
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !valid {
        return Err(
            "'node' requires valid node name - non-empty string with digits(0-9), letters(A-Z, \
             a-z), dot(.), hyphen(-) or underscode(_)"
                .to_string(),
        );
    }
    g.node = Some(name.to_string());
    Ok(())
}

/// `description TEXT...`: the words joined by one space, as HAProxy joins them.
fn description(g: &mut Global, ctx: &mut Ctx) -> Result<(), String> {
    let words: Vec<&str> = ctx.args.iter().map(|w| w.as_str()).collect();
    if words.first().is_none_or(|w| w.is_empty()) {
        return Err("'description' expects a string argument".to_string());
    }
    g.description = Some(words.join(" "));
    Ok(())
}

/// `log-send-hostname [NAME]`: NAME, or this machine's name, in the header of every syslog
/// line. As in HAProxy, a second one is reported and the first kept, and words after NAME
/// are ignored (with a warning here).
fn log_send_hostname(g: &mut Global, ctx: &mut Ctx) -> Result<(), String> {
    if g.log_send_hostname.is_some() {
        ctx.warn("'log-send-hostname' already specified: the first one is kept".to_string());
        return Ok(());
    }
    if ctx.args.len() > 1 {
        ctx.warn(format!(
            "'log-send-hostname' takes one name: '{}' and what follows are ignored",
            ctx.args[1].as_str()
        ));
    }
    let name = match ctx.args.first().map(|w| w.as_str()) {
        Some(name) if !name.is_empty() => name,
        _ => crate::logging::hostname(),
    };
    // No name (the host's cannot be read): the headers keep their default host field.
    g.log_send_hostname = (!name.is_empty()).then(|| name.to_string());
    Ok(())
}

/// The one word of a `log-tag` line, as HAProxy reads it.
pub(super) fn one_tag(ctx: &mut Ctx) -> Result<String, String> {
    ctx.at_most(1)?;
    match ctx.args.first().map(|w| w.as_str()) {
        Some(tag) if !tag.is_empty() => Ok(tag.to_string()),
        _ => Err(format!("'{}' expects a tag for use in syslog", ctx.keyword)),
    }
}

fn log(g: &mut Global, ctx: &mut Ctx) -> Result<(), String> {
    if ctx.args.first().is_some_and(|w| w.as_str() == "global") {
        return Err("'log global' is only valid in proxies; in 'global' give a target".into());
    }
    g.logs.push(parse_log_target(ctx)?);
    Ok(())
}

/// `user NAME` / `uid N`, `group NAME` / `gid N`: who rolelb runs as once its sockets are
/// bound. As in HAProxy, `user` and `uid` set the same thing (a second one is reported and
/// the first kept), as do `group` and `gid`; an id of 0 is "not set"; a name must be in the
/// system's user or group database when the file is read (`-c` too). HAProxy warns about a
/// `uid` that is not a number and then keeps running as root: rolelb refuses it.
fn account(g: &mut Global, ctx: &mut Ctx) -> Result<(), String> {
    let kw = ctx.keyword;
    let (slot, pair, what) = match kw {
        "user" | "uid" => (&mut g.user, "user/uid", "user"),
        _ => (&mut g.group, "group/gid", "group"),
    };
    let account = if kw.ends_with("id") {
        ctx.at_most(1)?;
        let text = ctx.arg(0, "an integer argument")?;
        let id = parse_int(text, kw, 0, u64::from(i32::MAX.unsigned_abs()))
            .map_err(|e| format!("{e} (to name the {what}, use '{what} NAME' instead)"))?;
        match u32::try_from(id).map_err(|_| format!("'{kw}' is too large"))? {
            0 => None,
            id => Some(Account::Id(id)),
        }
    } else {
        let name = string_arg(ctx, &format!("a {what} name"))?;
        let known = if what == "user" {
            nix::unistd::User::from_name(&name).map(|u| u.is_some())
        } else {
            nix::unistd::Group::from_name(&name).map(|g| g.is_some())
        };
        match known {
            Ok(true) => {}
            Ok(false) => return Err(format!("cannot find {what} id for '{name}'")),
            Err(e) => return Err(format!("cannot look {what} '{name}' up: {e}")),
        }
        Some(Account::Name(name))
    };
    if slot.is_some() {
        ctx.warn(format!("{pair} already specified: the first one is kept"));
        return Ok(());
    }
    *slot = account;
    Ok(())
}

fn pidfile(g: &mut Global, ctx: &mut Ctx) -> Result<(), String> {
    g.pidfile = Some(PathBuf::from(string_arg(ctx, "a file path")?));
    Ok(())
}

/// `ssl-server-verify none|required`: the `verify` of servers that set none.
fn ssl_server_verify(g: &mut Global, ctx: &mut Ctx) -> Result<(), String> {
    ctx.at_most(1)?;
    g.ssl_server_verify = match ctx.args.first().map(|w| w.as_str()) {
        Some("none") => Verify::None,
        Some("required") => Verify::Required,
        _ => return Err("'ssl-server-verify' expects 'none' or 'required' as argument.".into()),
    };
    Ok(())
}

/// `ca-base DIR` / `crt-base DIR`: where a relative `ca-file` / `crt` is looked up; once
/// only, as in HAProxy.
fn ca_crt_base(g: &mut Global, ctx: &mut Ctx) -> Result<(), String> {
    ctx.at_most(1)?;
    let kw = ctx.keyword;
    let target = if kw == "ca-base" {
        &mut g.ca_base
    } else {
        &mut g.crt_base
    };
    if target.is_some() {
        return Err(format!("'{kw}' already specified."));
    }
    match ctx.args.first().map(|w| w.as_str()) {
        Some(dir) if !dir.is_empty() => {
            *target = Some(PathBuf::from(dir));
            Ok(())
        }
        _ => Err(format!(
            "global statement '{kw}' expects a directory path as an argument."
        )),
    }
}

fn daemon(g: &mut Global, ctx: &mut Ctx) -> Result<(), String> {
    ctx.at_most(0)?;
    g.daemon = true;
    ctx.warn("'daemon': rolelb always runs in the foreground; let systemd or your supervisor background it");
    Ok(())
}

/// `nosplice`: no kernel splicing, whatever `option splice-*` say.
fn nosplice(g: &mut Global, ctx: &mut Ctx) -> Result<(), String> {
    ctx.at_most(0)?;
    g.nosplice = true;
    Ok(())
}

/// `maxpipes N`: the pipes splicing may use at once; 0 means the default, as in HAProxy.
fn maxpipes(g: &mut Global, ctx: &mut Ctx) -> Result<(), String> {
    ctx.at_most(1)?;
    let n = parse_int(ctx.arg(0, "a number of pipes")?, "maxpipes", 0, MAX_COUNT)?;
    g.maxpipes = usize::try_from(n).ok().filter(|&n| n > 0);
    Ok(())
}

/// `external-check`: proxies may use `option external-check`.
fn external_check(g: &mut Global, ctx: &mut Ctx) -> Result<(), String> {
    ctx.at_most(0)?;
    g.external_check = true;
    Ok(())
}

/// `insecure-fork-wanted`: the process may start programs, as external checks do.
fn insecure_fork_wanted(g: &mut Global, ctx: &mut Ctx) -> Result<(), String> {
    ctx.at_most(0)?;
    g.insecure_fork_wanted = true;
    Ok(())
}

/// `admin bind ADDR:PORT [token-file PATH]`: the HTTP admin API and `/metrics`. A bare port
/// (`9000` or `:9000`) binds loopback; any address off loopback requires a token file, since
/// the API can drain servers and reload the configuration.
fn admin(g: &mut Global, ctx: &mut Ctx) -> Result<(), String> {
    if ctx.arg(0, "'bind ADDR:PORT [token-file PATH]'")? != "bind" {
        return Err("'admin' expects 'bind ADDR:PORT [token-file PATH]'".into());
    }
    if g.admin.is_some() {
        return Err("'admin bind' is given twice; rolelb serves one admin address".into());
    }
    let text = ctx.arg(1, "an address after 'admin bind' (ADDR:PORT)")?;
    let text = if text.contains(':') {
        text.to_owned()
    } else {
        format!(":{text}")
    };
    let addr = if let Some(port) = text.strip_prefix(':') {
        parse_bind_addrs(&format!("127.0.0.1:{port}"))?
    } else {
        parse_bind_addrs(&text)?
    };
    let [addr] = addr.as_slice() else {
        return Err(format!(
            "'admin bind {text}': give exactly one ADDR:PORT (no lists or port ranges)"
        ));
    };
    let mut token_file = None;
    let mut i = 2;
    while let Some(opt) = ctx.args.get(i).map(|w| w.as_str().to_owned()) {
        match opt.as_str() {
            "token-file" => {
                let path = ctx.arg(i + 1, "a file path after 'token-file'")?;
                if path.is_empty() {
                    return Err("'admin bind ... token-file' expects a file path".into());
                }
                token_file = Some(PathBuf::from(path));
            }
            other => {
                return Err(format!(
                    "unsupported 'admin bind' option '{other}' (rolelb knows token-file)"
                ));
            }
        }
        i += 2;
    }
    if !addr.ip().is_loopback() && token_file.is_none() {
        return Err(format!(
            "'admin bind {addr}' is off loopback: add 'token-file PATH' so that changes need a bearer token"
        ));
    }
    let checked = token_file.as_deref().map_or(Ok(()), check_token_file);
    // Declared even with a bad token file, so a second `admin bind` is still reported.
    g.admin = Some(AdminBind {
        addr: *addr,
        token_file,
        loc: ctx.loc.clone(),
    });
    checked
}

/// A token file must be readable and hold one word, checked when the config is (`-c`), so a
/// typo is found before the service is started with it. One exception: a file that exists but
/// that this (unprivileged) process may not read passes, since rolelb reads it at start before
/// dropping privileges and a reload after the drop must not fail on it; the start itself
/// reports it at the same line if it really is unreadable.
fn check_token_file(path: &std::path::Path) -> Result<(), String> {
    let shown = path.display();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e)
            if e.kind() == std::io::ErrorKind::PermissionDenied
                && !nix::unistd::geteuid().is_root() =>
        {
            return Ok(());
        }
        Err(e) => {
            return Err(format!(
                "'admin bind ... token-file {shown}': cannot read it: {e}"
            ));
        }
    };
    let token = text.trim();
    if token.is_empty() {
        return Err(format!(
            "'admin bind ... token-file {shown}': the file is empty"
        ));
    }
    if token.contains(char::is_whitespace) {
        return Err(format!(
            "'admin bind ... token-file {shown}': the token must be one word"
        ));
    }
    Ok(())
}

/// `stats socket|timeout|maxconn|bind-process` in `global`.
fn stats(g: &mut Global, ctx: &mut Ctx) -> Result<(), String> {
    let sub = ctx.arg(0, "'socket', 'timeout' or 'maxconn'")?.to_string();
    match sub.as_str() {
        "socket" => {
            let socket = stats_socket(ctx)?;
            g.stats_sockets.push(socket);
            Ok(())
        }
        "timeout" => {
            ctx.at_most(2)?;
            let d = parse_duration(ctx.arg(1, "a timeout")?, TimeUnit::Millis)?;
            if d.is_zero() {
                return Err("'stats timeout' expects a positive value".to_string());
            }
            g.stats_timeout = Some(d);
            Ok(())
        }
        "maxconn" => {
            ctx.at_most(2)?;
            let n = parse_int(ctx.arg(1, "a number")?, "stats maxconn", 1, MAX_COUNT)?;
            g.stats_maxconn =
                Some(u32::try_from(n).map_err(|_| "stats maxconn is too large".to_string())?);
            Ok(())
        }
        "bind-process" => {
            ctx.warn(
                "'stats bind-process' is accepted for compatibility and ignored by rolelb \
                 (one process)"
                    .to_string(),
            );
            Ok(())
        }
        _ => Err(format!(
            "unknown 'stats {sub}' in 'global' (known: stats socket, stats timeout, stats maxconn)"
        )),
    }
}

fn stats_socket(ctx: &mut Ctx) -> Result<StatsSocket, String> {
    ctx.arg(1, "a unix socket path after 'stats socket'")?;
    let path = ctx.args[1].address_checked()?;
    let path = path.strip_prefix("unix@").unwrap_or(path);
    if !path.starts_with('/') && path.contains(':') {
        return Err(format!(
            "'stats socket {path}': only unix socket paths are supported, not TCP addresses"
        ));
    }
    let mut socket = StatsSocket {
        path: PathBuf::from(path),
        mode: None,
        level: StatsLevel::default(),
        loc: ctx.loc.clone(),
    };
    let mut i = 2;
    while let Some(opt) = ctx.args.get(i).map(|w| w.as_str().to_string()) {
        let value = ctx.arg(i + 1, &format!("a value after '{opt}'"));
        match opt.as_str() {
            "mode" => {
                let v = value?;
                let mode = u32::from_str_radix(v, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or_else(|| format!("'stats socket ... mode {v}': expected octal permission bits such as 660"))?;
                socket.mode = Some(mode);
            }
            "level" => {
                socket.level = match value? {
                    "user" => StatsLevel::User,
                    "operator" => StatsLevel::Operator,
                    "admin" => StatsLevel::Admin,
                    other => {
                        return Err(format!(
                            "'stats socket ... level {other}': expected user, operator or admin"
                        ));
                    }
                };
            }
            "expose-fd" | "user" | "group" | "uid" | "gid" => {
                let v = value?.to_string();
                ctx.warn(format!("'stats socket ... {opt} {v}' is ignored by rolelb"));
            }
            other => {
                return Err(format!(
                    "unsupported 'stats socket' option '{other}' (rolelb knows mode and level)"
                ));
            }
        }
        i += 2;
    }
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use crate::config::Account;
    use crate::config::testing::{global_error as error, global_line as global, parse};

    #[test]
    fn unix_bind_is_checked_then_accepted_with_a_warning() {
        for line in [
            "unix-bind prefix /run/x mode 600 uid 0 gid 0",
            "unix-bind",
            "unix-bind user root group root",
        ] {
            let c = global(line);
            assert!(
                c.warnings.iter().any(|w| w.message.contains("'unix-bind'")),
                "{line}"
            );
        }
        assert!(error("unix-bind bogus 1").contains("only supports"));
        assert!(error("unix-bind user no-such-user-here").contains("unknown user"));
        assert!(error("unix-bind prefix").contains("a value after 'prefix'"));
    }

    #[test]
    fn uid_and_gid_are_numbers_sharing_their_slot_with_user_and_group() {
        let c = global("uid 99");
        assert_eq!(c.global.user, Some(Account::Id(99)));
        let c = parse("global\n    gid 100\n    group nogroup\n    user nobody\n    uid 5\n")
            .expect("valid");
        assert_eq!(c.global.group, Some(Account::Id(100)));
        assert_eq!(c.global.user, Some(Account::Name("nobody".into())));
        let said: Vec<&str> = c.warnings.iter().map(|w| w.message.as_str()).collect();
        assert!(
            said.contains(&"group/gid already specified: the first one is kept"),
            "{said:?}"
        );
        assert!(
            said.contains(&"user/uid already specified: the first one is kept"),
            "{said:?}"
        );
        // 0 is "not set", as in HAProxy: no switch.
        assert_eq!(global("uid 0").global.user, None);
        assert!(error("uid nobody").contains("'user NAME'"));
        assert!(error("gid -1").contains("'group NAME'"));
        assert!(error("uid 2147483648").contains("2147483647"));
        assert!(error("gid").contains("expects"));
        assert!(error("uid 1 2").contains("uid"));
        // Names must exist when the file is read, as HAProxy looks them up while parsing.
        assert!(
            error("user no-such-user-rlbt").contains("cannot find user id for 'no-such-user-rlbt'")
        );
        assert!(error("group no-such-group-rlbt").contains("cannot find group id"));
    }
}
