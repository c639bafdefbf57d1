//! A frontend's rules on one connection: what its conditions read ([`Conn`], the
//! connection's addresses and the current table) and the `nbsrv` / `srv_is_up` answers,
//! read from the table and the live server state at the moment the rule runs.

use std::net::SocketAddr;

use crate::config::Role;
use crate::config::acl::{Sample, TcpAction, verdict};
use crate::live::{AdminState, Health};
use crate::roles::in_role_conflict;
use crate::table::{BackendRt, FrontendRt, Pool, Table};

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
        0 => count(&be.backup),
        n => n,
    }
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
