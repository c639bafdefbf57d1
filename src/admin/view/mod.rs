//! The one place that derives what the reports show: proxies in declaration order with
//! their ids (assigned by the configuration build), servers with their 1-based ids
//! (`server`: state encodings, status word, weights, throttle, limits, checks), backends and
//! frontends (`backend`: `act`/`bck`, status, weight sum, limits), and process-wide values.
//! `show stat`, `show info`, `show servers state`, `/metrics` and the JSON API format these
//! values; none of them derives its own.

mod backend;
mod server;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

pub use backend::{BackendView, frontend_limit};
pub use server::{CheckShown, LbState, ServerView, servers};

use crate::check::{CheckResult, Status};
use crate::config::{self, Config};
use crate::table::{BackendRt, Table};

/// One proxy as HAProxy lists it: a `frontend`, a `backend`, or both halves of a `listen`.
#[derive(Debug)]
pub struct Proxy<'a> {
    /// HAProxy's proxy id (`iid`, `be_id`), assigned when the configuration was built.
    pub id: u32,
    /// Proxy name.
    pub name: &'a str,
    /// The frontend half, with its runtime state.
    pub frontend: Option<(&'a config::Frontend, Option<&'a crate::table::FrontendRt>)>,
    /// The backend half, with its runtime state.
    pub backend: Option<(&'a config::Backend, &'a BackendRt)>,
}

/// The TCP proxies of `table` in declaration order (HAProxy's listing order, whatever their
/// ids). Stats listeners are not listed: they are not TCP proxies.
pub fn proxies(table: &Table) -> Vec<Proxy<'_>> {
    let config: &Config = &table.config;
    // Files in the order they first appear; within a file, by line.
    let mut file_rank: HashMap<&str, usize> = HashMap::new();
    let locs = config
        .frontends
        .iter()
        .map(|f| &f.loc)
        .chain(config.backends.iter().map(|b| &b.loc));
    for loc in locs {
        let next = file_rank.len();
        file_rank.entry(&loc.file).or_insert(next);
    }
    let key = |loc: &config::Loc| (file_rank.get(&*loc.file).copied().unwrap_or(0), loc.line);

    let mut out: Vec<Proxy<'_>> = Vec::new();
    for fe in &config.frontends {
        let rt = table
            .frontends
            .iter()
            .find(|r| r.name == fe.name)
            .map(|r| &**r);
        out.push(Proxy {
            id: fe.id,
            name: &fe.name,
            frontend: Some((fe, rt)),
            backend: None,
        });
    }
    for be in &config.backends {
        let Some(rt) = table.backends.get(&be.name) else {
            continue;
        };
        // The backend half of a `listen` is the same proxy as its frontend half.
        if let Some(p) = out
            .iter_mut()
            .find(|p| p.backend.is_none() && p.id == be.id && p.name == be.name)
        {
            p.backend = Some((be, &**rt));
            continue;
        }
        out.push(Proxy {
            id: be.id,
            name: &be.name,
            frontend: None,
            backend: Some((be, &**rt)),
        });
    }
    out.sort_by_key(|p| {
        let loc = p
            .frontend
            .map_or_else(|| p.backend.map(|(b, _)| &b.loc), |(f, _)| Some(&f.loc));
        loc.map(key)
    });
    out
}

impl<'a> Proxy<'a> {
    /// The backend half with its servers, when the proxy has one.
    pub fn backend_view(&self) -> Option<BackendView<'a>> {
        self.backend.map(|(cfg, rt)| BackendView::new(cfg, rt))
    }
}

/// The process's `maxconn` (`Maxconn`, `haproxy_process_max_connections`).
pub fn maxconn(table: &Table, default_maxconn: u32) -> u32 {
    table.maxconn.unwrap_or(default_maxconn)
}

/// The file-descriptor limit (`Ulimit-n`, `haproxy_process_max_fds`).
pub fn max_fds() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(0, |(soft, _)| soft)
}

/// Bytes sent to clients by every frontend (`TotalBytesOut`).
pub fn bytes_out(table: &Table) -> u64 {
    table
        .frontends
        .iter()
        .map(|f| f.live.bytes_out.load(Ordering::Relaxed))
        .sum()
}

/// `started` in seconds since the epoch (`Start_time_sec`).
pub fn start_time_secs(started: SystemTime) -> u64 {
    started
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// HAProxy's number for a check status (`srv_check_status`); `INI` (1) before the first check.
pub fn status_number(result: Option<&CheckResult>) -> u8 {
    match result.map(|r| r.status) {
        None => 1,
        Some(Status::Checked) => 3,
        Some(Status::SockErr) => 5,
        Some(Status::L4Ok) => 6,
        Some(Status::L4Tout) => 7,
        Some(Status::L4Con) => 8,
        Some(Status::L6Ok) => 9,
        Some(Status::L6Tout) => 10,
        Some(Status::L6Rsp) => 11,
        Some(Status::L7Tout) => 12,
        Some(Status::L7Rsp) => 13,
        Some(Status::L7Ok) => 15,
        Some(Status::L7Okc) => 16,
        Some(Status::L7Sts) => 17,
        Some(Status::ProcErr) => 18,
        Some(Status::ProcTout) => 19,
        Some(Status::ProcOk) => 20,
    }
}

/// HAProxy's check result (`srv_check_result`): 0 unknown, 1 neutral, 2 failed, 3 passed, 4
/// conditionally passed.
pub fn result_number(result: Option<&CheckResult>) -> u8 {
    match result.map(|r| r.status) {
        None => 0,
        Some(Status::Checked) => 1,
        Some(Status::L7Okc) => 4,
        Some(s) if s.passed() => 3,
        Some(_) => 2,
    }
}

/// The name of the role a backend requires (`primary`, `replica`, `any`).
pub fn role_name(role: config::Role) -> &'static str {
    match role {
        config::Role::Primary => "primary",
        config::Role::Replica => "replica",
        config::Role::Any => "any",
    }
}

/// HAProxy's name of a `balance` algorithm (`algo` in `show stat`).
pub fn algo_name(balance: config::Balance) -> &'static str {
    match balance {
        config::Balance::RoundRobin => "roundrobin",
        config::Balance::StaticRr => "static-rr",
        config::Balance::LeastConn => "leastconn",
        config::Balance::First => "first",
        config::Balance::Source => "source",
    }
}

#[cfg(test)]
mod tests;
