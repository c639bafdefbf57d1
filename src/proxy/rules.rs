//! A frontend's rules on one connection: what its conditions read ([`Conn`], the
//! connection's addresses and the current table) and the `nbsrv` / `srv_is_up` answers,
//! read from the table and the live server state at the moment the rule runs.

use std::net::SocketAddr;

use crate::config::Role;
use crate::config::acl::{Sample, TcpAction, holds, verdict};
use crate::live::{AdminState, Health};
use crate::roles::in_role_conflict;
use crate::table::{BackendRt, FrontendRt, MAX_STICK_RULES, Pool, Table};

/// One connection as its frontend's conditions see it.
pub struct Conn<'a> {
    /// The client (the PROXY header's after `accept-proxy`, except for connection rules).
    pub src: SocketAddr,
    /// Where the client connected to.
    pub dst: SocketAddr,
    /// The table in force.
    pub table: &'a Table,
}

impl Sample for Conn<'_> {
    fn src(&self) -> Option<SocketAddr> {
        Some(self.src)
    }

    fn dst(&self) -> Option<SocketAddr> {
        Some(self.dst)
    }

    fn nbsrv(&self, backend: &str) -> Option<i64> {
        let be = self.table.backends.get(backend)?;
        i64::try_from(usable_servers(be)).ok()
    }

    fn srv_is_up(&self, backend: &str, server: &str) -> Option<bool> {
        let be = self.table.backends.get(backend)?;
        let s = be.servers.iter().find(|s| s.name() == server)?;
        // As HAProxy: up unless in maintenance or failing its checks (draining counts as up).
        Some(
            s.live.effective_admin() != AdminState::Maint
                && s.live.effective_health() == Health::Up,
        )
    }
}

/// HAProxy's `nbsrv`: the active servers that can take traffic now, else the backup ones
/// that would (the first only, without `option allbackups`). rolelb counts only servers its
/// `role` admits, and none while a `role primary` backend sees two primaries: a server the
/// single-writer guard keeps out is not usable.
pub fn usable_servers(be: &BackendRt) -> usize {
    if be.role == Role::Primary && in_role_conflict(be.role_source, &be.servers) {
        return 0;
    }
    let count = |pool: &Pool| {
        pool.members
            .iter()
            .filter(|&&i| be.servers.get(i).is_some_and(|s| s.live.eligible()))
            .count()
    };
    match count(&be.active) {
        0 if be.backup.first_only => count(&be.backup).min(1),
        0 => count(&be.backup),
        n => n,
    }
}

/// Which of `be`'s stick rules apply to the connection: bit `i` when rule `i` has no
/// condition or its `if|unless` condition holds. As HAProxy (`process_sticking_rules`), the
/// conditions are evaluated once per session, before the server is picked, and the stores
/// made once connected follow the same verdicts.
pub fn stick_rules_holding(be: &BackendRt, conn: &Conn) -> u64 {
    let Some(stick) = &be.settings.stick else {
        return 0;
    };
    stick
        .rules
        .iter()
        .take(MAX_STICK_RULES)
        .enumerate()
        .filter(|(_, r)| holds(r.rule.cond.as_ref(), conn))
        .fold(0, |mask, (i, _)| mask | (1 << i))
}

/// The `tcp-request connection` verdict on a connection from `src` to `dst`.
pub fn connection_verdict(fe: &FrontendRt, conn: &Conn) -> TcpAction {
    verdict(&fe.tcp_request_connection, conn)
}

/// The `tcp-request content` verdict.
pub fn content_verdict(fe: &FrontendRt, conn: &Conn) -> TcpAction {
    verdict(&fe.tcp_request_content, conn)
}

/// The frontend as the session sees it: routed by the first conditional `use_backend` whose
/// condition holds, else unchanged (`default_backend` or the unconditional `use_backend`).
pub fn route<'a>(
    fe: &'a std::sync::Arc<FrontendRt>,
    conn: &Conn,
) -> &'a std::sync::Arc<FrontendRt> {
    fe.routes
        .iter()
        .find(|r| r.cond.matches(conn))
        .map_or(fe, |r| &r.frontend)
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::live::{NodeRole, Registry};

    fn table(options: &str) -> (Table, Registry) {
        let text = format!(
            "frontend f\nbind 127.0.0.1:1\ndefault_backend b\nbackend b\n{options}\n\
             server a 127.0.0.1:2\nserver c 127.0.0.1:3\n\
             server k1 127.0.0.1:4 backup\nserver k2 127.0.0.1:5 backup\n"
        );
        let config = crate::config::parse_with_env(&[("t.cfg", &text)], &|_| None)
            .unwrap_or_else(|e| panic!("{e:?}"));
        let registry = Registry::default();
        let t = crate::table::testing::build(&std::sync::Arc::new(config), &registry, 1);
        (t, registry)
    }

    fn conn(t: &Table) -> Conn<'_> {
        Conn {
            src: SocketAddr::from(([127, 0, 0, 1], 40000)),
            dst: SocketAddr::from(([127, 0, 0, 1], 1)),
            table: t,
        }
    }

    #[test]
    fn nbsrv_counts_usable_active_servers_then_backups_as_haproxy() {
        let (t, _reg) = table("");
        let live = |name: &str| {
            t.backends["b"]
                .servers
                .iter()
                .find(|s| s.name() == name)
                .map(|s| s.live.clone())
                .expect("server")
        };
        assert_eq!(conn(&t).nbsrv("b"), Some(2));
        assert_eq!(conn(&t).nbsrv("nope"), None);
        live("a").set_health(Health::Down);
        assert_eq!(conn(&t).nbsrv("b"), Some(1));
        assert_eq!(conn(&t).srv_is_up("b", "a"), Some(false));
        live("c").set_admin(AdminState::Drain);
        // A draining server takes no new traffic but is up.
        assert_eq!(conn(&t).srv_is_up("b", "c"), Some(true));
        // No active server: the first backup only, without `option allbackups`.
        assert_eq!(conn(&t).nbsrv("b"), Some(1));
        live("c").set_admin(AdminState::Maint);
        assert_eq!(conn(&t).srv_is_up("b", "c"), Some(false));
        let (t, _reg) = table("option allbackups");
        for s in &t.backends["b"].servers[..2] {
            s.live.set_admin(AdminState::Maint);
        }
        assert_eq!(conn(&t).nbsrv("b"), Some(2));
        // A map-based algorithm spreads over every backup, but HAProxy still counts one.
        let (t, _reg) = table("balance static-rr");
        for s in &t.backends["b"].servers[..2] {
            s.live.set_admin(AdminState::Maint);
        }
        assert_eq!(t.backends["b"].backup.members.len(), 2);
        assert_eq!(conn(&t).nbsrv("b"), Some(1));
    }

    #[test]
    fn nbsrv_of_a_role_primary_backend_counts_only_the_one_primary() {
        let opts = "role primary\nrole-check pgsql user monitor\ndefault-server check";
        let (t, reg) = table(opts);
        // No role known yet: no server may take writes.
        assert_eq!(conn(&t).nbsrv("b"), Some(0));
        let servers = &t.backends["b"].servers;
        servers[0].live.set_role(NodeRole::Primary);
        servers[1].live.set_role(NodeRole::Replica);
        let config = t.config.clone();
        let t = crate::table::testing::build(&config, &reg, 2);
        assert_eq!(conn(&t).nbsrv("b"), Some(1));
        // Two primaries: the single-writer guard refuses everything, so nothing is usable.
        t.backends["b"].servers[1].live.set_role(NodeRole::Primary);
        assert_eq!(conn(&t).nbsrv("b"), Some(0));
    }
}
