//! The `global` section's keyword table: process-wide settings (`maxconn`, `nbthread`,
//! `stats socket`, `hard-stop-after`, `grace`, `log`, `user`, `group`, `pidfile`, `daemon`,
//! `ulimit-n`, `tune.bufsize`, `tune.maxaccept`, `tune.pipesize`, `external-check`,
//! `insecure-fork-wanted`,
//! rolelb's `admin bind`), plus the common,
//! harmless keywords of real configs that rolelb accepts with a warning naming them
//! (`unix-bind`, HAProxy's other `tune.*` settings, ...).
//!
//! At the 700-line mark: one keyword table and its handlers, plus their unit tests.

use std::path::PathBuf;

use super::Ctx;
use super::log::parse_log_target;
use crate::config::address::parse_bind_addrs;
use crate::config::model::{AdminBind, Global, MaxAccept, StatsLevel, StatsSocket, Verify};
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
    kw("user", user),
    kw("group", group),
    kw("pidfile", pidfile),
    kw("daemon", daemon),
    kw("admin", admin),
    kw("ulimit-n", ulimit_n),
    kw("tune.bufsize", tune_bufsize),
    kw("tune.maxaccept", tune_maxaccept),
    kw("tune.pipesize", tune_pipesize),
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

/// HAProxy 2.6's other `tune.*` keywords (those Debian's build knows): they size or pace
/// things a TCP balancer without HTTP, TLS, Lua, compression, splicing or stick tables does not
/// have, so rolelb accepts them with a warning naming them. The socket buffer sizes are not
/// among them: they change what the kernel does with TCP, and rolelb refuses them (see
/// `unsupported.rs`).
pub const TUNE_IGNORED: &[&str] = &[
    "tune.buffers.limit",
    "tune.buffers.reserve",
    "tune.comp.maxlevel",
    "tune.fail-alloc",
    "tune.h2.header-table-size",
    "tune.h2.initial-window-size",
    "tune.h2.max-concurrent-streams",
    "tune.h2.max-frame-size",
    "tune.http.cookielen",
    "tune.http.logurilen",
    "tune.http.maxhdr",
    "tune.idle-pool.shared",
    "tune.idletimer",
    "tune.listener.multi-queue",
    "tune.lua.forced-yield",
    "tune.lua.maxmem",
    "tune.lua.service-timeout",
    "tune.lua.session-timeout",
    "tune.lua.task-timeout",
    "tune.maxpollevents",
    "tune.maxrewrite",
    "tune.pattern.cache-size",
    "tune.pool-high-fd-ratio",
    "tune.pool-low-fd-ratio",
    "tune.recv_enough",
    "tune.runqueue-depth",
    "tune.sched.low-latency",
    "tune.ssl.cachesize",
    "tune.ssl.capture-buffer-size",
    "tune.ssl.capture-cipherlist-size",
    "tune.ssl.default-dh-param",
    "tune.ssl.force-private-cache",
    "tune.ssl.hard-maxrecord",
    "tune.ssl.keylog",
    "tune.ssl.lifetime",
    "tune.ssl.maxrecord",
    "tune.ssl.ssl-ctx-cache-size",
    "tune.vars.check-max-size",
    "tune.vars.global-max-size",
    "tune.vars.proc-max-size",
    "tune.vars.reqres-max-size",
    "tune.vars.sess-max-size",
    "tune.vars.txn-max-size",
];

/// Looks a `global` keyword up, including the ignored ones.
pub fn find(name: &str) -> Option<GlobalParser> {
    if let Some(k) = GLOBAL_KEYWORDS.iter().find(|k| k.name == name) {
        return Some(k.parse);
    }
    if TUNE_IGNORED.contains(&name) {
        return Some(tune_ignored);
    }
    IGNORED_PREFIXES
        .iter()
        .any(|p| name.starts_with(p))
        .then_some(ignored as GlobalParser)
}

fn tune_ignored(_: &mut Global, ctx: &mut Ctx) -> Result<(), String> {
    let kw = ctx.keyword.to_string();
    ctx.arg(0, "a value")?;
    ctx.warn(format!(
        "'{kw}' is accepted and ignored: it tunes a part of HAProxy (HTTP, TLS, Lua, splicing, \
         pools, polling...) that rolelb does not have; only tune.bufsize, tune.maxaccept and \
         tune.pipesize act"
    ));
    Ok(())
}

/// HAProxy reads `tune.*` numbers with `atol()`, so `16k` would be 16 there: rolelb takes
/// plain decimal integers only, and says why when it sees anything else.
fn tune_integer(ctx: &Ctx, text: &str) -> Result<i64, String> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "'{}' expects a plain integer, got '{text}' (HAProxy reads only its leading digits, \
             so size units or suffixes would silently change the value)",
            ctx.keyword
        ));
    }
    text.parse::<i64>()
        .map_err(|_| format!("'{}': '{text}' is out of range", ctx.keyword))
}

/// The smallest `tune.bufsize` HAProxy 2.6 starts with: below it, its built-in HTTP error
/// messages (which every proxy carries, even in TCP mode) no longer fit in a buffer and it
/// refuses the configuration (or crashes, under 48 bytes).
const MIN_BUFSIZE: i64 = 352;

/// `tune.bufsize N`: the bytes rolelb holds per direction of a session (HAProxy's buffer
/// size), rounded up to a multiple of 16 as HAProxy does on 64-bit machines.
fn tune_bufsize(g: &mut Global, ctx: &mut Ctx) -> Result<(), String> {
    ctx.at_most(1)?;
    let n = tune_integer(ctx, ctx.arg(0, "an integer argument (bytes)")?)?;
    let rounded = n
        .checked_add(15)
        .map(|n| n & !15)
        .filter(|n| *n > 0 && *n <= i64::from(i32::MAX))
        .ok_or_else(|| {
            format!(
                "'tune.bufsize' expects a positive integer argument up to {}, got '{n}'",
                i32::MAX & !15
            )
        })?;
    if rounded < MIN_BUFSIZE {
        return Err(format!(
            "'tune.bufsize {n}' is too small: HAProxy 2.6 refuses buffers under {MIN_BUFSIZE} \
             bytes (its built-in error messages must fit in one)"
        ));
    }
    g.tune_bufsize = Some(usize::try_from(rounded).map_err(|_| "tune.bufsize is too large")?);
    Ok(())
}

/// `tune.maxaccept N`: connections one listener accepts in a row before letting other work
/// run; `-1` is no limit, `0` HAProxy's default (4).
fn tune_maxaccept(g: &mut Global, ctx: &mut Ctx) -> Result<(), String> {
    ctx.at_most(1)?;
    let n = tune_integer(ctx, ctx.arg(0, "an integer argument")?)?;
    if g.tune_maxaccept.is_some() {
        // HAProxy alerts and keeps the first value.
        ctx.warn("'tune.maxaccept' already specified; the first value is kept");
        return Ok(());
    }
    g.tune_maxaccept = match n {
        -1 => Some(MaxAccept::Unlimited),
        0 => None,
        n => Some(MaxAccept::Batch(
            u32::try_from(n)
                .ok()
                .filter(|n| i32::try_from(*n).is_ok())
                .and_then(std::num::NonZeroU32::new)
                .ok_or_else(|| {
                    "'tune.maxaccept' expects -1 or an integer from 0 to 2147483647".to_string()
                })?,
        )),
    };
    Ok(())
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

fn user(g: &mut Global, ctx: &mut Ctx) -> Result<(), String> {
    g.user = Some(string_arg(ctx, "a user name")?);
    Ok(())
}

fn group(g: &mut Global, ctx: &mut Ctx) -> Result<(), String> {
    g.group = Some(string_arg(ctx, "a group name")?);
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

/// `tune.pipesize N`: the size asked of the kernel for each pipe splicing makes
/// (`F_SETPIPE_SZ`, which rounds it up to a power of two pages); 0 keeps the kernel's
/// default, as in HAProxy. Above 2^31 the kernel refuses every size, so `-c` does.
fn tune_pipesize(g: &mut Global, ctx: &mut Ctx) -> Result<(), String> {
    ctx.at_most(1)?;
    let n = tune_integer(ctx, ctx.arg(0, "an integer argument (bytes)")?)?;
    if !(0..=1 << 31).contains(&n) {
        return Err(format!(
            "'tune.pipesize' expects a size in bytes from 0 (the kernel's default) to {}, got '{n}'",
            1u64 << 31
        ));
    }
    g.tune_pipesize = usize::try_from(n).ok().filter(|&n| n > 0);
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
    use std::num::NonZeroU32;

    use crate::config::testing::{errors, parse};
    use crate::config::{DEFAULT_BUFSIZE, MaxAccept};

    fn global(line: &str) -> crate::config::Config {
        parse(&format!("global\n    {line}\n")).unwrap_or_else(|e| panic!("{line}: {e:?}"))
    }

    fn error(line: &str) -> String {
        let e = errors(&format!("global\n    {line}\n"));
        assert!(e[0].starts_with("t.cfg:2: "), "{e:?}");
        e[0].clone()
    }

    #[test]
    fn tune_bufsize_rounds_up_like_haproxy_and_refuses_what_it_refuses() {
        assert_eq!(global("maxconn 10").global.bufsize(), DEFAULT_BUFSIZE);
        assert_eq!(global("tune.bufsize 1024").global.bufsize(), 1024);
        assert_eq!(global("tune.bufsize 1000").global.bufsize(), 1008);
        assert_eq!(global("tune.bufsize 337").global.bufsize(), 352);
        assert!(error("tune.bufsize 336").contains("too small"));
        assert!(error("tune.bufsize 0").contains("positive integer"));
        assert!(error("tune.bufsize -16").contains("positive integer"));
        assert!(error("tune.bufsize 2147483647").contains("positive integer"));
        // HAProxy's atol() would read '16k' as 16: refused rather than guessed.
        assert!(error("tune.bufsize 16k").contains("plain integer"));
        assert!(error("tune.bufsize").contains("expects"));
    }

    #[test]
    fn tune_maxaccept_values() {
        let batch = |n| Some(MaxAccept::Batch(NonZeroU32::new(n).expect("non-zero")));
        assert_eq!(global("tune.maxaccept 64").global.tune_maxaccept, batch(64));
        assert_eq!(
            global("tune.maxaccept -1").global.tune_maxaccept,
            Some(MaxAccept::Unlimited)
        );
        // 0 is "not set": HAProxy's default of 4.
        assert_eq!(
            global("tune.maxaccept 0").global.maxaccept(),
            batch(4).unwrap()
        );
        assert!(error("tune.maxaccept 3000000000").contains("-1 or an integer"));
        assert!(error("tune.maxaccept -5").contains("-1 or an integer"));
        assert!(error("tune.maxaccept 1x").contains("plain integer"));
        // Given twice: HAProxy alerts and keeps the first.
        let c = parse("global\n    tune.maxaccept 8\n    tune.maxaccept 2\n").expect("valid");
        assert_eq!(c.global.tune_maxaccept, batch(8));
        assert!(c.warnings.iter().any(|w| w.message.contains("already")));
    }

    #[test]
    fn tune_pipesize_takes_bytes_and_0_is_the_kernels_default() {
        assert_eq!(
            global("tune.pipesize 262144").global.tune_pipesize,
            Some(262144)
        );
        assert_eq!(global("tune.pipesize 0").global.tune_pipesize, None);
        assert_eq!(global("maxconn 10").global.tune_pipesize, None);
        assert!(error("tune.pipesize 64k").contains("plain integer"));
        assert!(error("tune.pipesize -1").contains("from 0"));
        assert!(error("tune.pipesize 2147483649").contains("from 0"));
        assert!(error("tune.pipesize").contains("expects"));
    }

    #[test]
    fn other_tune_keywords_warn_by_name_unknown_ones_are_errors() {
        let c = global("tune.ssl.cachesize 1000");
        assert!(
            c.warnings
                .iter()
                .any(|w| w.message.contains("'tune.ssl.cachesize'")),
            "{:?}",
            c.warnings
        );
        assert!(error("tune.foo 1").contains("unknown keyword 'tune.foo'"));
        assert!(error("tune.maxpollevents").contains("expects a value"));
        assert!(error("tune.rcvbuf.client 65536").contains("socket buffer"));
        assert!(error("tune.chksize 100").contains("tune.bufsize is used instead"));
    }

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
}
