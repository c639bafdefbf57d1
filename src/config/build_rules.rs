//! Cross-checks of the rules once every section is read: the backends a frontend's
//! `use_backend` lines name, the stick tables a backend's `stick` rules use (its own or
//! `table NAME`'s), and the backends and servers their conditions read (`nbsrv(B)`,
//! `srv_is_up(B/S)`), must exist.

use super::acl::{Cond, Fetch, Test};
use super::draft::Diags;
use super::keywords::did_you_mean;
use super::model::{Config, Loc};

/// Reports every rule of every frontend and backend that names a missing backend, stick table
/// or server.
pub(super) fn check_references(config: &Config, diags: &mut Diags) {
    for be in &config.backends {
        let rules = be.stick.iter().flat_map(|s| &s.rules);
        for rule in rules {
            let name = rule.table_name(&be.name);
            let has_table = |b: &&super::model::Backend| {
                b.name == name && b.stick.as_ref().is_some_and(|s| s.table.is_some())
            };
            if !config.backends.iter().any(|b| has_table(&b)) {
                let tables = config
                    .backends
                    .iter()
                    .filter(|b| b.stick.as_ref().is_some_and(|s| s.table.is_some()))
                    .map(|b| b.name.as_str());
                diags.error(
                    &rule.loc,
                    format!(
                        "backend '{}': unable to find stick-table '{name}' (a 'table' names a backend or listen with a 'stick-table'){}",
                        be.name,
                        did_you_mean(name, tables)
                    ),
                );
            }
            if let Some(cond) = &rule.cond {
                check_cond(config, cond, &rule.loc, diags);
            }
        }
    }
    for fe in &config.frontends {
        for rule in &fe.use_backend_rules {
            if !config.backends.iter().any(|b| b.name == rule.backend) {
                diags.error(
                    &rule.loc,
                    format!(
                        "frontend '{}' uses backend '{}', which does not exist{}",
                        fe.name,
                        rule.backend,
                        did_you_mean(
                            &rule.backend,
                            config.backends.iter().map(|b| b.name.as_str())
                        )
                    ),
                );
            }
            check_cond(config, &rule.cond, &rule.loc, diags);
        }
        for rule in fe
            .tcp_request_connection
            .iter()
            .chain(&fe.tcp_request_content)
        {
            if let Some(cond) = &rule.cond {
                check_cond(config, cond, &rule.loc, diags);
            }
        }
    }
}

fn check_cond(config: &Config, cond: &Cond, loc: &Loc, diags: &mut Diags) {
    for test in cond.tests() {
        let Test::Match { fetch, .. } = test else {
            continue;
        };
        let (backend, server) = match fetch {
            Fetch::Nbsrv(b) => (b, None),
            Fetch::SrvIsUp(b, s) => (b, Some(s)),
            _ => continue,
        };
        let Some(be) = config.backends.iter().find(|x| &x.name == backend) else {
            diags.error(
                loc,
                format!(
                    "'{}' names backend '{backend}', which does not exist{}",
                    fetch.name(),
                    did_you_mean(backend, config.backends.iter().map(|b| b.name.as_str()))
                ),
            );
            continue;
        };
        if let Some(server) = server
            && !be.servers.iter().any(|s| &*s.name == server.as_str())
        {
            diags.error(
                loc,
                format!(
                    "'srv_is_up({backend}/{server})': backend '{backend}' has no server '{server}'"
                ),
            );
        }
    }
}
