//! Drafts to the typed model: splits each `listen` into a frontend and a backend, turns a
//! `mode http` + `stats enable` listen into a [`StatsListener`], refuses every other HTTP
//! proxy, resolves each frontend's backend, chooses the check method, and warns like HAProxy
//! about missing timeouts and ignored settings.

use std::collections::HashMap;

use super::draft::{CheckOption, Diags, ProxyDraft, ProxyKind, ServerDraft};
use super::keywords::did_you_mean;
use super::model::{
    AgentCheck, Backend, Bind, CheckMethod, Config, Frontend, Global, HttpCheck, Mode, Server,
    StatsListener,
};

/// Builds the configuration; problems go to `diags`.
pub fn build(global: Global, proxies: Vec<ProxyDraft>, diags: &mut Diags) -> Config {
    let mut config = Config {
        global,
        frontends: Vec::new(),
        backends: Vec::new(),
        stats: Vec::new(),
        warnings: Vec::new(),
    };
    // (frontend index, where its backend was named) for the cross-reference pass.
    let mut references = Vec::new();
    for p in &proxies {
        if p.mode == Mode::Http {
            http_proxy(p, &mut config, diags);
            continue;
        }
        if let Some(loc) = &p.stats.enable {
            diags.error(
                loc,
                "'stats enable' needs a 'listen' section in 'mode http' (e.g. 'listen stats' with 'mode http' and 'bind *:7000')",
            );
        }
        warn_http_settings(p, diags);
        warn_missing_timeouts(p, diags);
        if p.kind.has_frontend() {
            references.push((config.frontends.len(), reference_loc(p)));
            config.frontends.push(frontend(p, diags));
        }
        if p.kind.has_backend() {
            config.backends.push(backend(p, diags));
        }
    }
    check_duplicate_binds(&config, diags);
    for (index, loc) in references {
        let frontend = &config.frontends[index];
        let target = &frontend.backend;
        if target.is_empty() {
            diags.error(
                &frontend.loc,
                format!(
                    "frontend '{}' has no backend: add 'default_backend NAME' or 'use_backend NAME'",
                    frontend.name
                ),
            );
        } else if !config.backends.iter().any(|b| &b.name == target) {
            let hint = if config.stats.iter().any(|s| &s.name == target) {
                format!(" ('{target}' is a stats listener, not a TCP backend)")
            } else {
                did_you_mean(target, config.backends.iter().map(|b| b.name.as_str()))
            };
            diags.error(
                &loc,
                format!(
                    "frontend '{}' uses backend '{target}', which does not exist{hint}",
                    frontend.name
                ),
            );
        }
    }
    config
}

/// Two listeners on overlapping addresses (the same one, or a wildcard and an address of
/// its family on the same port) would either fail to bind or, with SO_REUSEPORT, share
/// clients at random — never what a config means: refuse it.
fn check_duplicate_binds(config: &Config, diags: &mut Diags) {
    let frontends = config
        .frontends
        .iter()
        .filter(|f| !f.disabled)
        .map(|f| (&f.name, &f.binds));
    let stats = config.stats.iter().map(|s| (&s.name, &s.binds));
    // Keyed by port: a `bind :1-65535` must not make this quadratic.
    let mut seen: HashMap<u16, Vec<(&String, &Bind)>> = HashMap::new();
    for (name, binds) in frontends.chain(stats) {
        for bind in binds {
            let same_port = seen.entry(bind.addr.port()).or_default();
            if let Some((other, first)) =
                same_port.iter().find(|(_, b)| overlaps(b.addr, bind.addr))
            {
                diags.error(
                    &bind.loc,
                    format!(
                        "'{name}' binds {}, which overlaps {} bound by '{other}' at {}",
                        bind.addr, first.addr, first.loc
                    ),
                );
            } else {
                same_port.push((name, bind));
            }
        }
    }
}

fn overlaps(a: std::net::SocketAddr, b: std::net::SocketAddr) -> bool {
    a.port() == b.port()
        && a.is_ipv4() == b.is_ipv4()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// Where a frontend names its backend (the `use_backend` / `default_backend` line).
fn reference_loc(p: &ProxyDraft) -> super::model::Loc {
    p.use_backend
        .as_ref()
        .or(p.default_backend.as_ref())
        .map_or_else(|| p.loc.clone(), |(_, loc)| loc.clone())
}

fn http_proxy(p: &ProxyDraft, config: &mut Config, diags: &mut Diags) {
    let mode_loc = p.mode_loc.as_ref().unwrap_or(&p.loc);
    let inherited = if p
        .mode_loc
        .as_ref()
        .is_some_and(|l| l.line < p.loc.line || l.file != p.loc.file)
    {
        " (inherited from 'defaults'; add 'mode tcp' to this section)"
    } else {
        ""
    };
    if p.kind != ProxyKind::Listen || p.stats.enable.is_none() {
        diags.error(
            if inherited.is_empty() { mode_loc } else { &p.loc },
            format!(
                "{} '{}' is in 'mode http'{inherited}: rolelb is a TCP balancer; use 'mode tcp' ('mode http' is only for a 'listen' with 'stats enable')",
                p.kind.keyword(),
                p.name
            ),
        );
        return;
    }
    if let Some(server) = p.servers.first() {
        diags.error(
            &server.loc,
            format!(
                "stats listener '{}' cannot have servers: move them to a TCP 'backend'",
                p.name
            ),
        );
    }
    if p.binds.is_empty() {
        diags.warn(
            &p.loc,
            format!("stats listener '{}' has no 'bind' directive", p.name),
        );
    }
    config.stats.push(StatsListener {
        name: p.name.clone(),
        loc: p.loc.clone(),
        binds: p.binds.clone(),
        uri: p.stats.uri.clone().unwrap_or_else(|| "/".into()),
        refresh: p.stats.refresh,
    });
}

fn warn_http_settings(p: &ProxyDraft, diags: &mut Diags) {
    if let Some(loc) = &p.httplog
        && p.kind.has_frontend()
    {
        diags.warn(
            loc,
            format!(
                "'option httplog' not usable with {} '{}' (needs 'mode http'): falling back to 'option tcplog'",
                p.kind.keyword(),
                p.name
            ),
        );
    }
    for (what, loc) in &p.http_only {
        diags.warn(
            loc,
            format!(
                "'{what}' ignored for {} '{}' as it requires HTTP mode",
                p.kind.keyword(),
                p.name
            ),
        );
    }
}

fn warn_missing_timeouts(p: &ProxyDraft, diags: &mut Diags) {
    let t = &p.timeouts;
    let missing = (p.kind.has_frontend() && t.client.is_none())
        || (p.kind.has_backend() && (t.connect.is_none() || t.server.is_none()));
    if missing && !p.disabled {
        diags.warn(
            &p.loc,
            format!(
                "missing timeouts for {} '{}': set 'timeout client', 'timeout connect' and 'timeout server' (e.g. in 'defaults'), or idle connections are never closed",
                p.kind.keyword(),
                p.name
            ),
        );
    }
}

fn frontend(p: &ProxyDraft, diags: &mut Diags) -> Frontend {
    if p.binds.is_empty() && !p.disabled {
        diags.warn(
            &p.loc,
            format!(
                "{} '{}' has no 'bind' directive. Please declare it as a backend if this was intended",
                p.kind.keyword(),
                p.name
            ),
        );
    }
    let backend = p
        .use_backend
        .as_ref()
        .or(p.default_backend.as_ref())
        .map(|(name, _)| name.clone())
        .unwrap_or_else(|| {
            if p.kind == ProxyKind::Listen {
                p.name.clone()
            } else {
                String::new()
            }
        });
    Frontend {
        name: p.name.clone(),
        loc: p.loc.clone(),
        binds: p.binds.clone(),
        backend,
        maxconn: p.maxconn,
        timeout_client: p.timeouts.client,
        timeout_client_fin: p.timeouts.client_fin,
        tcplog: p.tcplog || p.httplog.is_some(),
        dontlognull: p.dontlognull,
        clitcpka: p.clitcpka,
        log_global: p.log_global,
        logs: p.logs.clone(),
        disabled: p.disabled,
    }
}

fn check_method(p: &ProxyDraft, diags: &mut Diags) -> CheckMethod {
    let uses_tcp_rules = matches!(p.check_option, Some((CheckOption::TcpCheck, _)));
    let uses_http_rules = matches!(p.check_option, Some((CheckOption::Http { .. }, _)));
    if let Some(loc) = p
        .tcp_check_loc
        .as_ref()
        .filter(|_| p.tcp_check_own && !uses_tcp_rules)
    {
        diags.warn(
            loc,
            format!(
                "backend '{}' uses tcp-check rules without 'option tcp-check', so the rules are ignored",
                p.name
            ),
        );
    }
    if let Some(loc) = p
        .http_expect_loc
        .as_ref()
        .filter(|_| p.http_expect_own && !uses_http_rules)
    {
        diags.warn(
            loc,
            format!(
                "backend '{}' uses http-check rules without 'option httpchk', so the rules are ignored",
                p.name
            ),
        );
    }
    match &p.check_option {
        None => CheckMethod::Tcp,
        Some((CheckOption::TcpCheck, _)) => CheckMethod::TcpCheck(p.tcp_check_rules.clone()),
        Some((CheckOption::Pgsql { user }, _)) => CheckMethod::Pgsql { user: user.clone() },
        Some((CheckOption::Mysql { user, post_41 }, _)) => CheckMethod::Mysql {
            user: user.clone(),
            post_41: *post_41,
        },
        Some((
            CheckOption::Http {
                method,
                uri,
                version,
            },
            _,
        )) => CheckMethod::Http(HttpCheck {
            method: method.clone(),
            uri: uri.clone(),
            version: version.clone(),
            expect: p.http_expect.clone().unwrap_or_default(),
        }),
    }
}

fn backend(p: &ProxyDraft, diags: &mut Diags) -> Backend {
    Backend {
        name: p.name.clone(),
        loc: p.loc.clone(),
        balance: p.balance,
        hash_type: p.hash_type,
        timeout_connect: p.timeouts.connect,
        timeout_server: p.timeouts.server,
        timeout_server_fin: p.timeouts.server_fin,
        timeout_queue: p.timeouts.queue,
        timeout_tunnel: p.timeouts.tunnel,
        timeout_check: p.timeouts.check,
        retries: p.retries,
        redispatch: p.redispatch,
        allbackups: p.allbackups,
        srvtcpka: p.srvtcpka,
        check: check_method(p, diags),
        servers: p.servers.iter().filter_map(server).collect(),
        disabled: p.disabled,
    }
}

/// The final server; `None` when its address did not parse (already reported).
fn server(s: &ServerDraft) -> Option<Server> {
    let agent = match (s.agent_check, s.agent_port) {
        (true, Some(port)) => Some(AgentCheck {
            port,
            addr: s.agent_addr,
            inter: s.agent_inter.unwrap_or(s.inter),
            send: s.agent_send.clone(),
        }),
        _ => None,
    };
    Some(Server {
        name: s.name.clone(),
        loc: s.loc.clone(),
        addr: s.addr?,
        check: s.check,
        inter: s.inter,
        fastinter: s.fastinter,
        downinter: s.downinter,
        rise: s.rise,
        fall: s.fall,
        check_port: s.check_port,
        check_addr: s.check_addr,
        weight: s.weight,
        backup: s.backup,
        disabled: s.disabled,
        maxconn: s.maxconn,
        maxqueue: s.maxqueue,
        slowstart: s.slowstart,
        shutdown_sessions_on_down: s.shutdown_sessions_on_down,
        shutdown_backup_sessions_on_up: s.shutdown_backup_sessions_on_up,
        agent,
        send_proxy: s.send_proxy,
    })
}
