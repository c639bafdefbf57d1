//! Building a stats listener (`mode http` + `stats enable`): its page, its access rules
//! (`stats auth`, `stats http-request`, `stats admin`) and the userlists they name.

use super::*;

pub(super) fn http_proxy(
    p: &ProxyDraft,
    userlists: &[Arc<Userlist>],
    config: &mut Config,
    diags: &mut Diags,
) {
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
    let stats_kind = matches!(p.kind, ProxyKind::Listen | ProxyKind::Frontend);
    if !stats_kind || !stats_enabled(&p.stats) {
        diags.error(
            if inherited.is_empty() { mode_loc } else { &p.loc },
            format!(
                "{} '{}' is in 'mode http'{inherited}: rolelb is a TCP balancer; use 'mode tcp' ('mode http' is only for a 'listen' or 'frontend' with 'stats enable')",
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
    if let Some((backend, loc)) = p.use_backend.as_ref().or(p.default_backend.as_ref()) {
        diags.error(
            loc,
            format!(
                "stats {} '{}' cannot pass requests to backend '{backend}': rolelb serves only the stats page in 'mode http'",
                p.kind.keyword(),
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
    for bind in p.binds.iter().filter(|b| b.accept_proxy) {
        diags.error(
            &bind.loc,
            format!(
                "bind option 'accept-proxy' is not supported on stats listener '{}': the stats page and /metrics do not read PROXY headers; use it on TCP frontends",
                p.name
            ),
        );
    }
    let (rules, own) = stats_rules(p, diags);
    let mut used: Vec<Arc<Userlist>> = own.into_iter().collect();
    let conds = rules
        .iter()
        .filter_map(|r| r.cond.as_ref())
        .chain(&p.stats.admin);
    for test in conds.flat_map(cond_tests) {
        let Test::HttpAuth { list, loc, .. } = test else {
            continue;
        };
        if used.iter().any(|u| &u.name == list) {
            continue;
        }
        match userlists.iter().find(|u| &u.name == list) {
            Some(u) => used.push(u.clone()),
            None => {
                let hint = did_you_mean(list, userlists.iter().map(|u| u.name.as_str()));
                diags.error(loc, format!("no userlist '{list}'{hint}"));
            }
        }
    }
    config.stats.push(StatsListener {
        name: p.name.clone(),
        loc: p.loc.clone(),
        binds: p.binds.clone(),
        uri: p.stats.uri.clone().unwrap_or_else(|| "/".into()),
        refresh: p.stats.refresh,
        rules,
        admin: p.stats.admin.clone(),
        userlists: used,
        hide_version: p.stats.hide_version,
        show_legends: p.stats.show_legends,
        show_node: p.stats.show_node.clone(),
    });
}

/// The tests of a condition, those of its named ACLs included.
fn cond_tests(cond: &Cond) -> Vec<&Test> {
    fn add<'a>(test: &'a Test, out: &mut Vec<&'a Test>) {
        if let Test::Acl { tests, .. } = test {
            tests.iter().for_each(|t| add(t, out));
        }
        out.push(test);
    }
    let mut out = Vec::new();
    cond.any_of
        .iter()
        .flatten()
        .for_each(|t| add(&t.test, &mut out));
    out
}

/// The access rules of a stats listener: `stats auth` lines become HAProxy's
/// `auth [realm R] unless { http_auth(.internal-stats-userlist) }`, with that userlist.
fn stats_rules(p: &ProxyDraft, diags: &mut Diags) -> (Vec<Rule>, Option<Arc<Userlist>>) {
    let s = &p.stats;
    if let Some(loc) = &s.http_request_loc
        && (!s.auth.is_empty() || s.realm.is_some())
    {
        diags.error(
            loc,
            format!(
                "proxy '{}': stats 'auth'/'realm' and 'http-request' can't be used at the same time",
                p.name
            ),
        );
    }
    let Some((_, _, first)) = s.auth.first() else {
        return (s.http_request.clone(), None);
    };
    let mut list = Userlist {
        name: STATS_AUTH_USERLIST.into(),
        loc: first.clone(),
        users: Vec::new(),
        groups: Vec::new(),
    };
    for (user, pass, _) in &s.auth {
        list.users.push(User {
            name: user.clone(),
            password: Password::Insecure(pass.clone()),
            groups: Vec::new(),
        });
    }
    let rule = Rule {
        action: Action::Auth {
            realm: s.realm.clone().unwrap_or_else(|| DEFAULT_REALM.into()),
        },
        cond: Some(Cond {
            unless: true,
            any_of: vec![vec![Term {
                negate: false,
                test: Test::HttpAuth {
                    list: STATS_AUTH_USERLIST.into(),
                    groups: None,
                    loc: first.clone(),
                },
            }]],
        }),
    };
    (vec![rule], Some(Arc::new(list)))
}

/// Whether a `mode http` proxy serves the stats page: `stats enable`, or any other `stats`
/// keyword of the page (`uri`, `auth`, `realm`, `refresh`, `admin`, ...), each of which turns
/// the page on in HAProxy too (TiDB's and others' shipped configs rely on it).
fn stats_enabled(s: &crate::config::draft::StatsDraft) -> bool {
    s.enable.is_some()
        || s.uri.is_some()
        || s.refresh.is_some()
        || s.realm.is_some()
        || !s.auth.is_empty()
        || !s.http_request.is_empty()
        || !s.admin.is_empty()
        || s.hide_version
        || s.show_legends
        || s.show_node.is_some()
}
