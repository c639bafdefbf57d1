//! The `option` table: `option NAME [ARGS]` and `no option NAME` in proxies — logging and
//! keep-alive flags (`tcplog` sets the TCP log format), `redispatch`, `allbackups`, and the health-check methods
//! (`tcp-check`, `pgsql-check`, `mysql-check`, `httpchk`, `external-check`).

use super::{Ctx, Sections, did_you_mean};
use crate::config::draft::{CheckOption, ProxyDraft};
use crate::config::log_format::TCP_LOG_FORMAT;

/// Parser of one option; `enable` is false for `no option NAME`.
pub type OptionParser = fn(&mut ProxyDraft, &mut Ctx, bool) -> Result<(), String>;

/// One entry of the option table.
pub struct OptionKeyword {
    /// The option name.
    pub name: &'static str,
    /// Where it is valid.
    pub sections: Sections,
    /// Whether `no option NAME` is accepted.
    pub negatable: bool,
    /// Its parser.
    pub parse: OptionParser,
}

const fn flag(name: &'static str, sections: Sections, parse: OptionParser) -> OptionKeyword {
    OptionKeyword {
        name,
        sections,
        negatable: true,
        parse,
    }
}

const fn method(name: &'static str, parse: OptionParser) -> OptionKeyword {
    OptionKeyword {
        name,
        sections: Sections::BE,
        negatable: false,
        parse,
    }
}

/// The options.
pub const OPTION_KEYWORDS: &[OptionKeyword] = &[
    flag("redispatch", Sections::BE, redispatch),
    flag("tcplog", Sections::FE, tcplog),
    flag("dontlognull", Sections::FE, |p, c, on| {
        set(&mut p.log_options.dontlognull, on, c)
    }),
    flag("dontlog-normal", Sections::FE, |p, c, on| {
        set(&mut p.log_options.dontlog_normal, on, c)
    }),
    flag("log-separate-errors", Sections::FE, |p, c, on| {
        set(&mut p.log_options.separate_errors, on, c)
    }),
    flag("logasap", Sections::FE, |p, c, on| {
        set(&mut p.log_options.asap, on, c)
    }),
    flag("abortonclose", Sections::BE, |p, c, on| {
        set(&mut p.abortonclose, on, c)
    }),
    flag("allbackups", Sections::BE, |p, c, on| {
        set(&mut p.allbackups, on, c)
    }),
    flag("clitcpka", Sections::FE, |p, c, on| {
        set(&mut p.clitcpka, on, c)
    }),
    flag("srvtcpka", Sections::BE, |p, c, on| {
        set(&mut p.srvtcpka, on, c)
    }),
    flag("tcpka", Sections::ALL, |p, c, on| {
        p.clitcpka = on;
        set(&mut p.srvtcpka, on, c)
    }),
    flag("httplog", Sections::FE, |p, c, on| {
        p.httplog = on.then(|| c.loc.clone());
        // In a TCP proxy HAProxy falls back to the TCP format.
        tcplog(p, c, on)
    }),
    method("tcp-check", tcp_check),
    method("pgsql-check", pgsql_check),
    method("mysql-check", mysql_check),
    method("httpchk", httpchk),
    method("external-check", external_check),
    // HTTP-only options, common in `defaults` written for `mode http`: HAProxy ignores them
    // in TCP proxies, and so does rolelb (with a warning).
    flag("forwardfor", Sections::ALL, http_only),
    flag("prefer-last-server", Sections::BE, http_only),
    flag("checkcache", Sections::BE, http_only),
    flag("http-use-proxy-header", Sections::FE, http_only),
    flag("accept-invalid-http-request", Sections::FE, http_only),
    flag("accept-invalid-http-response", Sections::BE, http_only),
    flag("http-server-close", Sections::ALL, http_only),
    flag("http-keep-alive", Sections::ALL, http_only),
    flag("httpclose", Sections::ALL, http_only),
    flag("http-pretend-keepalive", Sections::ALL, http_only),
    flag("http-no-delay", Sections::ALL, http_only),
    flag("http-buffer-request", Sections::ALL, http_only),
    flag("http-ignore-probes", Sections::ALL, http_only),
    flag("originalto", Sections::ALL, http_only),
    // Accepted and ignored: they tune logging or kernel details, not where traffic goes.
    flag("log-health-checks", Sections::BE, |p, c, on| {
        set(&mut p.log_health_checks, on, c)
    }),
    flag("contstats", Sections::FE, contstats),
    flag("splice-auto", Sections::ALL, |p, c, on| {
        set(&mut p.splice.auto, on, c)
    }),
    flag("splice-request", Sections::ALL, |p, c, on| {
        set(&mut p.splice.request, on, c)
    }),
    flag("splice-response", Sections::ALL, |p, c, on| {
        set(&mut p.splice.response, on, c)
    }),
    flag("tcp-smart-accept", Sections::FE, |p, c, on| {
        set(&mut p.smart_accept, on, c)
    }),
    flag("tcp-smart-connect", Sections::BE, |p, c, on| {
        set(&mut p.smart_connect, on, c)
    }),
    flag("socket-stats", Sections::FE, ignored),
    flag("nolinger", Sections::ALL, |p, c, on| {
        set(&mut p.nolinger, on, c)
    }),
    flag("independent-streams", Sections::ALL, |p, c, on| {
        set(&mut p.independent_streams, on, c)
    }),
];

fn set(flag: &mut bool, on: bool, ctx: &Ctx) -> Result<(), String> {
    ctx.at_most(1)?;
    *flag = on;
    Ok(())
}

/// `option tcplog`: the session's log line in HAProxy's TCP format; `no option tcplog`
/// drops it (a `log-format` set after it stays).
fn tcplog(p: &mut ProxyDraft, ctx: &mut Ctx, on: bool) -> Result<(), String> {
    ctx.at_most(1)?;
    if on {
        p.log_format = Some((TCP_LOG_FORMAT.to_string(), ctx.loc.clone()));
    } else if p
        .log_format
        .as_ref()
        .is_some_and(|(f, _)| f == TCP_LOG_FORMAT)
    {
        p.log_format = None;
    }
    Ok(())
}

/// `option redispatch [<interval>]`: without a value, the last retry (-1); `no option
/// redispatch` turns it off (HAProxy keeps 0 there).
fn redispatch(p: &mut ProxyDraft, ctx: &mut Ctx, on: bool) -> Result<(), String> {
    p.redispatch = on;
    if !on {
        ctx.at_most(1)?;
        p.redispatch_after = (0, None);
        return Ok(());
    }
    ctx.at_most(2)?;
    p.redispatch_after = match ctx.args.get(1) {
        None => (-1, None),
        Some(word) => {
            let text = word.as_str();
            let digits = text.strip_prefix('-').unwrap_or(text);
            let value = (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| text.parse::<i32>().ok())
                .flatten()
                .ok_or_else(|| {
                    format!(
                        "'option redispatch' expects an interval (an integer: N > 0 every Nth retry, -N the Nth retry before the last, 0 never by count), got '{text}'"
                    )
                })?;
            (value, Some(ctx.loc.clone()))
        }
    };
    Ok(())
}

fn http_only(p: &mut ProxyDraft, ctx: &mut Ctx, on: bool) -> Result<(), String> {
    let name = format!("option {}", ctx.keyword);
    p.http_only.retain(|(n, _)| *n != name);
    if on {
        p.http_only.push((name, ctx.loc.clone()));
    }
    Ok(())
}

/// `option contstats`: what it asks for is what rolelb always does.
fn contstats(_: &mut ProxyDraft, ctx: &mut Ctx, _: bool) -> Result<(), String> {
    ctx.warn(
        "'option contstats' changes nothing in rolelb: it always counts bytes into the \
         statistics as they flow"
            .to_string(),
    );
    Ok(())
}

fn ignored(_: &mut ProxyDraft, ctx: &mut Ctx, _: bool) -> Result<(), String> {
    let kw = ctx.keyword.to_string();
    ctx.warn(format!(
        "'option {kw}' is accepted for compatibility and ignored by rolelb"
    ));
    Ok(())
}

fn set_check(p: &mut ProxyDraft, ctx: &Ctx, check: CheckOption) {
    p.check_option = Some((check, ctx.loc.clone()));
}

fn tcp_check(p: &mut ProxyDraft, ctx: &mut Ctx, _: bool) -> Result<(), String> {
    ctx.at_most(1)?;
    set_check(p, ctx, CheckOption::TcpCheck);
    Ok(())
}

fn pgsql_check(p: &mut ProxyDraft, ctx: &mut Ctx, _: bool) -> Result<(), String> {
    if ctx.args.get(1).map(|w| w.as_str()) != Some("user") {
        return Err("'option pgsql-check' expects 'user <username>' as argument".into());
    }
    let user = ctx.arg(2, "a user name after 'user'")?.to_string();
    ctx.at_most(3)?;
    set_check(p, ctx, CheckOption::Pgsql { user });
    Ok(())
}

/// `option external-check`: run `external-check command` for each check; it needs
/// `external-check` and `insecure-fork-wanted` in `global` (checked when the proxy is built).
fn external_check(p: &mut ProxyDraft, ctx: &mut Ctx, _: bool) -> Result<(), String> {
    ctx.at_most(1)?;
    set_check(p, ctx, CheckOption::External);
    Ok(())
}

/// `option mysql-check [user U [post-41|pre-41]]`; without a user, HAProxy only reads the
/// server's greeting.
fn mysql_check(p: &mut ProxyDraft, ctx: &mut Ctx, _: bool) -> Result<(), String> {
    match ctx.args.get(1).map(|w| w.as_str()) {
        None => {
            set_check(
                p,
                ctx,
                CheckOption::Mysql {
                    user: None,
                    post_41: true,
                },
            );
            return Ok(());
        }
        Some("user") => {}
        Some(other) => {
            return Err(format!(
                "'option mysql-check' only supports 'user <username>' (got '{other}')"
            ));
        }
    }
    let user = Some(ctx.arg(2, "a user name after 'user'")?.to_string());
    // HAProxy 2.6 sends the 4.1 client packet unless told `pre-41`.
    let post_41 = match ctx.args.get(3).map(|w| w.as_str()) {
        Some("pre-41") => false,
        None | Some("post-41") => true,
        Some(other) => {
            return Err(format!(
                "'option mysql-check': unexpected '{other}' (expected post-41 or pre-41)"
            ));
        }
    };
    ctx.at_most(4)?;
    set_check(p, ctx, CheckOption::Mysql { user, post_41 });
    Ok(())
}

/// `option httpchk`, `option httpchk URI`, `option httpchk METHOD URI [VERSION]`. As in
/// HAProxy, a single argument is the URI (`option httpchk GET` sends `OPTIONS GET
/// HTTP/1.0`), and neither the method nor the URI is checked: the server judges them.
fn httpchk(p: &mut ProxyDraft, ctx: &mut Ctx, _: bool) -> Result<(), String> {
    // An empty word counts as absent, as HAProxy reads it.
    let words: Vec<String> = ctx.args[1..]
        .iter()
        .map(|w| w.text.clone())
        .filter(|w| !w.is_empty())
        .collect();
    let (method, uri, version) = match words.as_slice() {
        [] => (
            "OPTIONS".to_string(),
            "/".to_string(),
            "HTTP/1.0".to_string(),
        ),
        [uri] => ("OPTIONS".to_string(), uri.clone(), "HTTP/1.0".to_string()),
        [m, uri] => (m.clone(), uri.clone(), "HTTP/1.0".to_string()),
        [m, uri, v] => (m.clone(), uri.clone(), v.clone()),
        _ => {
            return Err("'option httpchk' expects at most METHOD URI VERSION".into());
        }
    };
    // A proxy's own `option httpchk` starts a new rule set, as in HAProxy: `http-check send`
    // and `expect` lines inherited from `defaults` no longer apply.
    if !p.http_send_own {
        p.http_send = None;
    }
    if !p.http_expect_own {
        p.http_expect = None;
        p.http_expect_loc = None;
    }
    let (version, headers, body) = split_hidden_request(&version);
    if !headers.is_empty() || !body.is_empty() {
        ctx.warn(
            "'option httpchk': hiding headers or body at the end of the version string is deprecated; use 'http-check send hdr NAME VALUE' / 'body TEXT'",
        );
    }
    set_check(
        p,
        ctx,
        CheckOption::Http {
            method,
            uri,
            version,
            headers,
            body,
        },
    );
    Ok(())
}

/// `HTTP/1.1\r\nHost: x\r\n\r\nbody` → the version, the headers and the body, split where
/// HAProxy splits them (at the first `\r\n` and the first `\r\n\r\n`).
fn split_hidden_request(text: &str) -> (String, Vec<(String, String)>, String) {
    let (head, body) = match text.split_once("\r\n\r\n") {
        Some((head, body)) => (head, body.to_string()),
        None => (text, String::new()),
    };
    let (version, lines) = head.split_once("\r\n").unwrap_or((head, ""));
    let headers = lines
        .split("\r\n")
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_string(), value.trim().to_string()))
        .filter(|(name, _)| !name.is_empty())
        .collect();
    (version.to_string(), headers, body)
}

/// Checks an option name against the table and the section; returns its entry.
fn lookup(p: &ProxyDraft, name: &str) -> Result<&'static OptionKeyword, String> {
    let Some(entry) = OPTION_KEYWORDS.iter().find(|o| o.name == name) else {
        return Err(unknown(name));
    };
    if !entry.sections.contains(p.kind) {
        return Err(format!(
            "'option {name}' is not allowed in a '{}' section (valid in: {})",
            p.kind.keyword(),
            entry.sections.names()
        ));
    }
    Ok(entry)
}

/// `option NAME ...` (the proxy keyword `option`).
pub fn option_line(p: &mut ProxyDraft, ctx: &mut Ctx) -> Result<(), String> {
    let name = ctx.arg(0, "an option name")?;
    let entry = lookup(p, name)?;
    let mut sub = Ctx {
        keyword: entry.name,
        args: ctx.args,
        loc: ctx.loc,
        diags: &mut *ctx.diags,
    };
    (entry.parse)(p, &mut sub, true)
}

/// `no option NAME` (called by the proxy keyword `no`).
pub fn no_option(p: &mut ProxyDraft, ctx: &mut Ctx) -> Result<(), String> {
    let name = ctx.arg(1, "an option name after 'no option'")?;
    let entry = lookup(p, name)?;
    if !entry.negatable {
        return Err(format!(
            "'no option {name}' is not supported: to drop a check method inherited from defaults, choose another one"
        ));
    }
    let mut sub = Ctx {
        keyword: entry.name,
        args: &ctx.args[1..],
        loc: ctx.loc,
        diags: &mut *ctx.diags,
    };
    (entry.parse)(p, &mut sub, false)
}

fn unknown(name: &str) -> String {
    match name {
        "ssl-hello-chk" | "smtpchk" | "ldap-check" | "redis-check" | "spop-check" => format!(
            "'option {name}' is not supported by rolelb: use 'option tcp-check' with 'tcp-check send'/'tcp-check expect', or pgsql-check, mysql-check, httpchk"
        ),
        "transparent" | "persist" => {
            format!("'option {name}' is not supported by rolelb; remove it")
        }
        _ => format!(
            "unknown option '{name}'{}",
            did_you_mean(name, OPTION_KEYWORDS.iter().map(|o| o.name))
        ),
    }
}
