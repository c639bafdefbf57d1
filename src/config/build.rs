//! Drafts to the typed model: splits each `listen` into a frontend and a backend, turns a
//! `mode http` + `stats enable` listen into a [`StatsListener`], refuses every other HTTP
//! proxy, resolves each frontend's backend, chooses the check method, and warns like HAProxy
//! about missing timeouts and ignored settings.

use std::collections::HashMap;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use super::draft::{Diags, EtcdDraft, ProxyDraft, ProxyKind, ServerDraft};
use super::keywords::did_you_mean;
use super::log_format::parse_log_format;
use super::model::{
    AgentCheck, Backend, Bind, Config, Discover, EtcdAuth, EtcdCluster, Frontend, Global, MaxLag,
    Mode, Role, RoleCheck, RoleSource, Server, StatsListener,
};
use super::stats_access::{
    Action, Cond, DEFAULT_REALM, Password, Rule, STATS_AUTH_USERLIST, Term, Test, User, Userlist,
};

/// `dial-timeout` when an `etcd` section sets none (etcdctl's default).
const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(2);

/// Builds the configuration; problems go to `diags`.
pub fn build(
    global: Global,
    proxies: Vec<ProxyDraft>,
    etcd: Vec<EtcdDraft>,
    userlists: Vec<Userlist>,
    cli_proxy_at: Option<usize>,
    diags: &mut Diags,
) -> Config {
    let userlists: Vec<Arc<Userlist>> = userlists.into_iter().map(Arc::new).collect();
    let mut config = Config {
        global,
        frontends: Vec::new(),
        backends: Vec::new(),
        stats: Vec::new(),
        etcd: etcd.iter().filter_map(|e| etcd_cluster(e, diags)).collect(),
        resolvers: Vec::new(),
        warnings: Vec::new(),
    };
    let etcd_names: Vec<&str> = etcd.iter().map(|e| e.name.as_str()).collect();
    let mut tls = TlsLoader::new(&config.global);
    // (frontend index, where its backend was named) for the cross-reference pass.
    let mut references = Vec::new();
    let ids = ids::assign(&proxies, cli_proxy_at, diags);
    for (p, id) in proxies.iter().zip(ids) {
        if p.mode == Mode::Http {
            http_proxy(p, &userlists, &mut config, diags);
            continue;
        }
        if let Some(loc) = &p.stats.enable {
            diags.error(
                loc,
                "'stats enable' needs a 'listen' or 'frontend' section in 'mode http' (e.g. 'listen stats' with 'mode http' and 'bind *:7000')",
            );
        }
        warn_http_settings(p, diags);
        warn_missing_timeouts(p, diags);
        check::external_check_rules(&config.global, p, diags);
        if p.kind.has_frontend() {
            references.push((config.frontends.len(), reference_loc(p)));
            config.frontends.push(frontend(p, id, diags));
        }
        if p.kind.has_backend() {
            let discover = discover(p, &config.etcd, &etcd_names, diags);
            config
                .backends
                .push(backend(p, id, discover, &mut tls, diags));
        }
    }
    check_duplicate_binds(&config, diags);
    super::build_rules::check_references(&config, diags);
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
    let missing = (p.kind.has_frontend() && t.timeout_client.is_none())
        || (p.kind.has_backend() && (t.timeout_connect.is_none() || t.timeout_server.is_none()));
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

fn frontend(p: &ProxyDraft, id: u32, diags: &mut Diags) -> Frontend {
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
    let log_format = p
        .log_format
        .as_ref()
        .and_then(|(text, loc)| match parse_log_format(text) {
            Ok(f) => Some(Arc::new(f)),
            Err(e) => {
                diags.error(loc, format!("failed to parse log-format : {e}."));
                None
            }
        });
    if log_format.is_some() && !p.log_global && p.logs.is_empty() && !p.disabled {
        diags.warn(
            &p.loc,
            format!(
                "log format ignored for {} '{}' since it has no log address (rolelb writes its lines to its own log on stderr).",
                p.kind.keyword(),
                p.name
            ),
        );
    }
    Frontend {
        name: p.name.clone(),
        id,
        loc: p.loc.clone(),
        binds: p.binds.clone(),
        backend,
        use_backend_rules: p.use_backend_rules.clone(),
        tcp_request_connection: p.tcp_request_connection.clone(),
        tcp_request_content: p.tcp_request_content.clone(),
        inspect_delay: p.inspect_delay,
        maxconn: p.maxconn,
        backlog: p.backlog,
        rate_limit_sessions: p.rate_limit_sessions,
        timeout_client: p.timeouts.timeout_client,
        timeout_client_fin: p.timeouts.timeout_client_fin,
        tcplog: log_format.is_some(),
        log_format,
        log_options: p.log_options,
        clitcpka: p.clitcpka,
        nolinger: p.nolinger,
        independent_streams: p.independent_streams,
        smart_accept: p.smart_accept,
        splice: p.splice,
        log_global: p.log_global,
        logs: p.logs.clone(),
        log_tag: p.log_tag.clone(),
        disabled: p.disabled,
    }
}

/// An `etcd` section, once complete; `None` (with errors) when it is not.
fn etcd_cluster(e: &EtcdDraft, diags: &mut Diags) -> Option<EtcdCluster> {
    let mut ok = true;
    if e.endpoints.is_empty() {
        diags.error(
            &e.loc,
            format!(
                "etcd section '{}' has no 'endpoints': add 'endpoints http://HOST:2379'",
                e.name
            ),
        );
        ok = false;
    }
    let auth = match (&e.user, &e.password) {
        (Some((user, _)), Some((password, _))) => Some(EtcdAuth {
            user: user.clone(),
            password: password.clone(),
        }),
        (None, None) => None,
        (Some((_, loc)), None) => {
            diags.error(
                loc,
                format!("etcd section '{}' has a 'user' but no 'password'", e.name),
            );
            ok = false;
            None
        }
        (None, Some((_, loc))) => {
            diags.error(
                loc,
                format!("etcd section '{}' has a 'password' but no 'user'", e.name),
            );
            ok = false;
            None
        }
    };
    ok.then(|| EtcdCluster {
        name: e.name.clone(),
        loc: e.loc.clone(),
        endpoints: e.endpoints.clone(),
        auth,
        dial_timeout: e.dial_timeout.unwrap_or(DEFAULT_DIAL_TIMEOUT),
        prefix: e.prefix.clone().unwrap_or_default(),
    })
}

/// The backend's `discover` line with its `etcd` section resolved; errors name the line.
/// `declared` holds every `etcd` section name, complete or not, so an incomplete section
/// is reported once (at the section) rather than again at each `discover`.
fn discover(
    p: &ProxyDraft,
    clusters: &[EtcdCluster],
    declared: &[&str],
    diags: &mut Diags,
) -> Option<Discover> {
    let (d, loc) = p.discover.as_ref()?;
    let Some(cluster) = clusters.iter().find(|c| c.name == d.etcd) else {
        if !declared.contains(&d.etcd.as_str()) {
            let hint = did_you_mean(&d.etcd, declared.iter().copied());
            diags.error(
                loc,
                format!(
                    "{} '{}' discovers from etcd '{}', which is not declared{hint}: add an 'etcd {}' section with 'endpoints'",
                    p.kind.keyword(),
                    p.name,
                    d.etcd,
                    d.etcd
                ),
            );
        }
        return None;
    };
    Some(Discover {
        etcd: d.etcd.clone(),
        path: format!("{}{}", cluster.prefix, d.path),
        schema: d.schema,
        port: d.port,
        loc: loc.clone(),
    })
}

/// `option redispatch N` with N < 0 counts back from the last retry: with `retries R` it
/// names the retries that are multiples of `R + 1 + N`. When that is 0 there is no such
/// retry (HAProxy divides by zero at the first retry), so the value is refused.
fn check_redispatch(p: &ProxyDraft, diags: &mut Diags) {
    let (after, Some(loc)) = &p.redispatch_after else {
        return;
    };
    if !p.redispatch || *after >= 0 || p.retries == 0 {
        return;
    }
    if i64::from(p.retries) + 1 + i64::from(*after) == 0 {
        diags.error(
            loc,
            format!(
                "'option redispatch {after}' with 'retries {}' names no retry to redispatch: use a value from -{} to -1 (or a positive interval)",
                p.retries, p.retries
            ),
        );
    }
}

fn backend(
    p: &ProxyDraft,
    id: u32,
    discover: Option<Discover>,
    tls: &mut TlsLoader,
    diags: &mut Diags,
) -> Backend {
    check_roles(p, diags);
    check_redispatch(p, diags);
    let mut with_tls = |s: &ServerDraft, name: &str, mut srv: Server, diags: &mut Diags| {
        srv.check_tls = tls.check_tls(&s.tls, name, &s.loc, diags);
        if srv.source.is_none() {
            srv.source.clone_from(&p.source);
        }
        srv
    };
    let servers = p
        .servers
        .iter()
        .filter_map(|s| Some(with_tls(s, &s.name, server(s)?, diags)))
        .map(Arc::new)
        .collect();
    // Discovered servers are made from the template: check it as a server would be.
    let template_name = if p.discover.is_some() {
        "default-server"
    } else {
        ""
    };
    let default_server = with_tls(
        &p.default_server,
        template_name,
        template(&p.default_server),
        diags,
    );
    Backend {
        name: p.name.clone(),
        id,
        loc: p.loc.clone(),
        balance: p.balance,
        hash_type: p.hash_type,
        timeout_connect: p.timeouts.timeout_connect,
        timeout_server: p.timeouts.timeout_server,
        timeout_server_fin: p.timeouts.timeout_server_fin,
        timeout_queue: p.timeouts.timeout_queue,
        timeout_tunnel: p.timeouts.timeout_tunnel,
        timeout_check: p.timeouts.timeout_check,
        retries: p.retries,
        redispatch: p.redispatch,
        redispatch_after: p.redispatch_after.0,
        retry_on_conn_failure: p.retry_on_conn_failure,
        allbackups: p.allbackups,
        abortonclose: p.abortonclose,
        fullconn: p.fullconn,
        srvtcpka: p.srvtcpka,
        nolinger: p.nolinger,
        log_health_checks: p.log_health_checks,
        independent_streams: p.independent_streams,
        smart_connect: p.smart_connect,
        splice: p.splice,
        check: check_method(p, diags),
        servers,
        disabled: p.disabled,
        role: p.role.as_ref().map_or(Role::Any, |(role, _)| *role),
        role_check: p.role_check.as_ref().map(|(check, _)| check.clone()),
        max_lag: p.max_lag.as_ref().map(|(lag, _)| *lag),
        role_source: role_source(p),
        discover,
        stick: stick(p),
        default_server,
    }
}

/// The backend's stick table and rules (the table each rule uses is checked once every
/// backend is built, in `build_rules`).
fn stick(p: &ProxyDraft) -> Option<Arc<super::stick::Stick>> {
    if p.stick_table.is_none() && p.stick_rules.is_empty() {
        return None;
    }
    Some(Arc::new(super::stick::Stick {
        table: p.stick_table.clone(),
        rules: p.stick_rules.clone(),
    }))
}

/// `role-source` in force: as written, else `both` with `discover` and `check` without.
fn role_source(p: &ProxyDraft) -> RoleSource {
    match (&p.role_source, &p.discover) {
        (Some((source, _)), _) => *source,
        (None, Some(_)) => RoleSource::Both,
        (None, None) => RoleSource::Check,
    }
}

/// The rules that tie the role extensions together, on the final backend: each setting may
/// come from `defaults`, so they can only be judged once inheritance is done. Errors point
/// at the line of the setting that is wrong here (perhaps in `defaults`) and name the backend.
fn check_roles(p: &ProxyDraft, diags: &mut Diags) {
    let proxy = format!("{} '{}'", p.kind.keyword(), p.name);
    let role = p.role.as_ref().map_or(Role::Any, |(role, _)| *role);
    let role_check = p.role_check.as_ref().map(|(check, _)| check);
    let source = role_source(p);
    if let Some((source @ (RoleSource::Etcd | RoleSource::Both), loc)) = &p.role_source
        && p.discover.is_none()
    {
        let word = if *source == RoleSource::Etcd {
            "etcd"
        } else {
            "both"
        };
        diags.error(
            loc,
            format!(
                "{proxy} has 'role-source {word}' but no 'discover etcd': etcd can only tell the roles of the servers it lists"
            ),
        );
    }
    if let Some((role @ (Role::Primary | Role::Replica), loc)) = &p.role
        && role_check.is_none()
        && source != RoleSource::Etcd
    {
        let etcd_hint = if p.discover.is_some() {
            " (or 'role-source etcd' to take them from etcd alone)"
        } else {
            ""
        };
        diags.error(
            loc,
            format!(
                "{proxy} has 'role {}' but no 'role-check': it needs role-check pgsql|mysql|agent to know the roles{etcd_hint}",
                role.keyword()
            ),
        );
    }
    if let (Some((_, loc)), None, RoleSource::Etcd) = (&p.max_lag, role_check, source) {
        diags.error(
            loc,
            format!(
                "{proxy}: 'max-lag' needs a 'role-check' to measure the lag; 'role-source etcd' alone does not report it"
            ),
        );
    }
    if let Some((lag, loc)) = &p.max_lag {
        if role != Role::Replica {
            diags.error(
                loc,
                format!(
                    "'max-lag' only applies with 'role replica', and {proxy} has 'role {}'",
                    role.keyword()
                ),
            );
        } else if let (MaxLag::Bytes(_), Some(RoleCheck::Mysql { .. })) = (lag, role_check) {
            diags.error(
                loc,
                format!(
                    "{proxy}: a size max-lag cannot be measured with 'role-check mysql', which reports replica lag in seconds only: write a duration such as '10s'"
                ),
            );
        }
    }
    if let Some(RoleCheck::Mysql { .. }) = role_check {
        for s in p.servers.iter().filter(|s| check_sends_proxy_header(s)) {
            diags.warn(
                &s.loc,
                format!(
                    "server '{}/{}': its health checks send the PROXY header ('send-proxy' or \
                     'check-send-proxy'), but 'role-check mysql' cannot (the MySQL client opens \
                     its own connection): if the server requires the header, its role checks \
                     fail; give the checks a port that does not ('check port N') or use \
                     'role-check agent'",
                    p.name, s.name
                ),
            );
        }
        for s in p
            .servers
            .iter()
            .filter(|s| s.source.is_some() || p.source.is_some())
        {
            diags.warn(
                &s.loc,
                format!(
                    "server '{}/{}': its traffic and health checks connect from its 'source', \
                     but 'role-check mysql' cannot (the MySQL client opens its own connection \
                     from the system's default address): if the server only admits the \
                     source address, its role checks fail; use 'role-check agent' there",
                    p.name, s.name
                ),
            );
        }
    }
    if let Some(RoleCheck::Agent) = role_check {
        if let Some((_, loc)) = p
            .discover
            .as_ref()
            .filter(|_| !p.default_server.agent_check)
        {
            diags.error(
                loc,
                format!(
                    "{proxy} takes roles from the agent ('role-check agent'), so discovered servers need 'agent-check': add 'default-server agent-check agent-port N'"
                ),
            );
        }
        for s in p.servers.iter().filter(|s| !s.agent_check) {
            diags.error(
                &s.loc,
                format!(
                    "server '{}/{}' has no 'agent-check', which 'role-check agent' takes the role from: add 'agent-check agent-port N'",
                    p.name, s.name
                ),
            );
        }
    }
}

/// Whether `s`'s health checks send the PROXY header, as HAProxy 2.6 decides it: with
/// `check-send-proxy`, or with `send-proxy[-v2]` when the check goes to the traffic address
/// and port.
fn check_sends_proxy_header(s: &ServerDraft) -> bool {
    s.check_send_proxy
        || (s.send_proxy.is_some() && s.check_port.is_none() && s.check_addr.is_none())
}

/// The final server; `None` when its address did not parse (already reported).
fn server(s: &ServerDraft) -> Option<Server> {
    Some(server_at(s, s.addr?))
}

/// The `default-server` options as a server without name or address (`0.0.0.0:0`): the
/// template of discovered servers.
fn template(s: &ServerDraft) -> Server {
    let mut t = server_at(s, SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
    t.name = "".into();
    t
}

/// A server's `maxconn` and dynamic `minconn` from what its line says, as HAProxy 2.6
/// settles them: a `minconn` above `maxconn` (or without one) becomes the `maxconn`, and the
/// limit is dynamic only when `minconn` is below `maxconn` (0 is "not set" for both).
fn server_limits(maxconn: Option<u32>, minconn: Option<u32>) -> (Option<u32>, Option<u32>) {
    let max = maxconn.unwrap_or(0);
    match minconn.unwrap_or(0) {
        0 => (maxconn, None),
        min if min >= max => (Some(min), None),
        min => (maxconn, Some(min)),
    }
}

fn server_at(s: &ServerDraft, addr: SocketAddr) -> Server {
    let agent = match (s.agent_check, s.agent_port) {
        (true, Some(agent_port)) => Some(Box::new(AgentCheck {
            agent_port,
            agent_addr: s.agent_addr,
            agent_inter: s.agent_inter.unwrap_or(s.inter),
            agent_send: s.agent_send.clone(),
        })),
        _ => None,
    };
    let (maxconn, minconn) = server_limits(s.maxconn, s.minconn);
    Server {
        name: s.name.as_str().into(),
        loc: s.loc.clone(),
        addr,
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
        non_stick: s.non_stick,
        disabled: s.disabled,
        maxconn,
        minconn,
        maxqueue: s.maxqueue,
        slowstart: s.slowstart,
        on_marked_down_shutdown_sessions: s.on_marked_down_shutdown_sessions,
        on_marked_up_shutdown_backup_sessions: s.on_marked_up_shutdown_backup_sessions,
        agent,
        send_proxy: s.send_proxy,
        source: s.source.clone(),
        check_proxy_header: check_sends_proxy_header(s)
            .then(|| s.send_proxy.unwrap_or(super::ProxyProtocol::V1)),
        etcd: None,
        id: s.id,
        resolve: s.resolve.model().map(Arc::new),
        dns_maint: s.resolve.no_addr,
        check_tls: None,
    }
}

#[path = "build_stats.rs"]
mod stats;
use stats::http_proxy;

#[path = "build_tls.rs"]
mod tls;
use tls::TlsLoader;
#[path = "build_ids.rs"]
mod ids;

#[path = "build_check.rs"]
mod check;
use check::check_method;

#[cfg(test)]
#[path = "build_tests.rs"]
mod tests;
