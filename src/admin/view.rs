//! How HAProxy numbers and names what rolelb runs, shared by every report: proxies in
//! declaration order with HAProxy's ids (the first configured proxy is 2), servers with their
//! 1-based ids, and a server's state in HAProxy's encodings (`srv_op_state`,
//! `srv_admin_state`, check status numbers, the `show stat` status word).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crate::check::{CheckResult, Status};
use crate::config::{self, Config};
use crate::table::{self, AdminState, BackendRt, Health, ServerRt, Table};

/// HAProxy gives id 1 to an internal proxy; configured proxies count from 2.
const FIRST_PROXY_ID: u32 = 2;

/// One proxy as HAProxy lists it: a `frontend`, a `backend`, or both halves of a `listen`.
#[derive(Debug)]
pub struct Proxy<'a> {
    /// HAProxy's proxy id (`iid`, `be_id`).
    pub id: u32,
    /// Proxy name.
    pub name: &'a str,
    /// The frontend half, with its runtime state.
    pub frontend: Option<(&'a config::Frontend, Option<&'a crate::table::FrontendRt>)>,
    /// The backend half, with its runtime state.
    pub backend: Option<(&'a config::Backend, &'a BackendRt)>,
}

/// The proxies of `table` in declaration order, with HAProxy's ids. Stats listeners take an id
/// (as in HAProxy) but are not listed: they are not TCP proxies.
pub fn proxies(table: &Table) -> Vec<Proxy<'_>> {
    let config: &Config = &table.config;
    // Files in the order they first appear; within a file, by line.
    let mut file_rank: HashMap<&str, usize> = HashMap::new();
    let locs = config
        .frontends
        .iter()
        .map(|f| &f.loc)
        .chain(config.backends.iter().map(|b| &b.loc))
        .chain(config.stats.iter().map(|s| &s.loc));
    for loc in locs {
        let next = file_rank.len();
        file_rank.entry(&loc.file).or_insert(next);
    }
    let key = |loc: &config::Loc| (file_rank.get(&*loc.file).copied().unwrap_or(0), loc.line);

    struct Entry<'a> {
        key: (usize, usize),
        name: &'a str,
        frontend: Option<&'a config::Frontend>,
        backend: Option<&'a config::Backend>,
        listed: bool,
    }
    let mut entries: Vec<Entry<'_>> = Vec::new();
    for fe in &config.frontends {
        entries.push(Entry {
            key: key(&fe.loc),
            name: &fe.name,
            frontend: Some(fe),
            backend: None,
            listed: true,
        });
    }
    for be in &config.backends {
        // The backend half of a `listen` shares the frontend half's name and line.
        if let Some(e) = entries
            .iter_mut()
            .find(|e| e.backend.is_none() && e.name == be.name && e.key == key(&be.loc))
        {
            e.backend = Some(be);
            continue;
        }
        entries.push(Entry {
            key: key(&be.loc),
            name: &be.name,
            frontend: None,
            backend: Some(be),
            listed: true,
        });
    }
    for st in &config.stats {
        entries.push(Entry {
            key: key(&st.loc),
            name: &st.name,
            frontend: None,
            backend: None,
            listed: false,
        });
    }
    entries.sort_by_key(|e| e.key);
    let mut out = Vec::new();
    for (i, e) in entries.into_iter().enumerate() {
        if !e.listed {
            continue;
        }
        let id = FIRST_PROXY_ID + u32::try_from(i).unwrap_or(u32::MAX - FIRST_PROXY_ID);
        let frontend = e.frontend.map(|f| {
            let rt = table
                .frontends
                .iter()
                .find(|r| r.name == f.name)
                .map(|r| &**r);
            (f, rt)
        });
        let backend = e
            .backend
            .and_then(|b| table.backends.get(&b.name).map(|rt| (b, &**rt)));
        out.push(Proxy {
            id,
            name: e.name,
            frontend,
            backend,
        });
    }
    out
}

/// HAProxy's operating state of a server (`srv_op_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum OpState {
    /// `SRV_ST_STOPPED`: down or in maintenance.
    Stopped = 0,
    /// `SRV_ST_STARTING`: up, ramping under `slowstart`.
    Starting = 1,
    /// `SRV_ST_RUNNING`.
    Running = 2,
}

/// `srv_admin_state` bit: forced maintenance (operator or agent).
pub const ADMF_FMAINT: u8 = 0x01;
/// `srv_admin_state` bit: maintenance from the configuration (`disabled`).
pub const ADMF_CMAINT: u8 = 0x04;
/// `srv_admin_state` bit: forced drain (operator or agent).
pub const ADMF_FDRAIN: u8 = 0x08;

/// `srv_check_state` bit: the check is configured.
const CHK_CONFIGURED: u8 = 0x02;
/// `srv_check_state` bit: the check is enabled.
const CHK_ENABLED: u8 = 0x04;
/// `srv_check_state` bit: the check is paused (server in maintenance).
const CHK_PAUSED: u8 = 0x08;
/// `srv_check_state` bit: this is an agent check.
const CHK_AGENT: u8 = 0x10;

/// One server as the reports see it: its configuration and its live state.
#[derive(Debug, Clone, Copy)]
pub struct ServerView<'a> {
    /// The server's id within its backend (1-based, declaration order).
    pub id: u32,
    /// Its configuration.
    pub cfg: &'a config::Server,
    /// Its runtime entry (live state inside).
    pub rt: &'a ServerRt,
}

/// The servers of a backend with their ids, in declaration order.
pub fn servers<'a>(cfg: &'a config::Backend, rt: &'a BackendRt) -> Vec<ServerView<'a>> {
    cfg.servers
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let rt = rt.servers.iter().find(|r| r.name == s.name)?;
            Some(ServerView {
                id: u32::try_from(i + 1).unwrap_or(u32::MAX),
                cfg: s,
                rt,
            })
        })
        .collect()
}

impl ServerView<'_> {
    /// Whether the server is in maintenance (operator, agent or `disabled`).
    pub fn maint(&self) -> bool {
        self.rt.live.effective_admin() == AdminState::Maint
    }

    /// Whether the server is UP as checks and agent see it.
    pub fn up(&self) -> bool {
        self.rt.live.effective_health() == Health::Up
    }

    /// `srv_op_state`.
    pub fn op_state(&self, now: Instant) -> OpState {
        if self.maint() || !self.up() {
            OpState::Stopped
        } else if self.rt.live.in_slowstart(self.cfg.slowstart, now) {
            OpState::Starting
        } else {
            OpState::Running
        }
    }

    /// `srv_admin_state`: HAProxy's flags for the operator's and the agent's states together.
    pub fn admin_flags(&self) -> u8 {
        let live = &self.rt.live;
        let mut flags = 0;
        for state in [live.admin(), live.agent_admin()] {
            flags |= match state {
                AdminState::Ready => 0,
                AdminState::Drain => ADMF_FDRAIN,
                AdminState::Maint => ADMF_FMAINT,
            };
        }
        if live.admin() == AdminState::Maint && live.config_disabled() {
            flags |= ADMF_CMAINT;
        }
        flags
    }

    /// The health check's counter (`check_health`): the published one, else HAProxy's start
    /// value (`rise`, or 0 for a stopped server).
    pub fn check_health(&self, now: Instant) -> u32 {
        match self.rt.live.check_health() {
            Some(h) if self.cfg.check => h,
            _ if self.op_state(now) == OpState::Stopped => 0,
            _ => self.cfg.rise,
        }
    }

    /// `srv_check_state`.
    pub fn check_state(&self) -> u8 {
        let mut st = 0;
        if self.cfg.check {
            st |= CHK_CONFIGURED | CHK_ENABLED;
        }
        if self.maint() && (self.cfg.check || self.rt.live.config_disabled()) {
            st |= CHK_PAUSED;
        }
        st
    }

    /// `srv_agent_state`.
    pub fn agent_state(&self) -> u8 {
        if self.cfg.agent.is_none() {
            return 0;
        }
        let mut st = CHK_CONFIGURED | CHK_ENABLED | CHK_AGENT;
        if self.maint() {
            st |= CHK_PAUSED;
        }
        st
    }

    /// The last health check's result, when the server has `check`.
    pub fn last_check(&self) -> Option<Arc<CheckResult>> {
        if !self.cfg.check {
            return None;
        }
        self.rt.live.last_check.load_full()
    }

    /// The last agent check's result, when the server has `agent-check`.
    pub fn last_agent(&self) -> Option<Arc<CheckResult>> {
        self.cfg.agent.as_ref()?;
        self.rt.live.last_agent.load_full()
    }

    /// The status word of `show stat` (`UP`, `UP 1/3`, `DOWN 1/2`, `DRAIN`, `MAINT`, `no check`).
    pub fn status(&self, now: Instant) -> String {
        let live = &self.rt.live;
        if self.maint() {
            return "MAINT".to_owned();
        }
        let (rise, fall) = (self.cfg.rise.max(1), self.cfg.fall.max(1));
        let counter = self.check_health(now);
        if self.up() {
            let going_down = self.cfg.check && counter < rise + fall - 1;
            if live.admin() == AdminState::Drain {
                return "DRAIN".to_owned();
            }
            if live.agent_admin() == AdminState::Drain {
                return "DRAIN (agent)".to_owned();
            }
            if !self.cfg.check {
                return "no check".to_owned();
            }
            if going_down {
                return format!("UP {}/{}", (counter + 1).saturating_sub(rise), fall);
            }
            return "UP".to_owned();
        }
        if live.agent_health() == Health::Down {
            return "DOWN (agent)".to_owned();
        }
        if self.cfg.check && counter > 0 {
            return format!("DOWN {counter}/{rise}");
        }
        "DOWN".to_owned()
    }
}

/// A server's state as `/metrics` (`haproxy_server_status{state=...}`) and the JSON API name
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbState {
    /// Down by its checks or its agent.
    Down,
    /// Up and taking traffic.
    Up,
    /// In maintenance (operator, agent or `disabled`).
    Maint,
    /// Draining: keeps its sessions, takes no new ones.
    Drain,
    /// Up, but its role or replication lag keeps it out of this backend's rotation.
    Nolb,
}

impl LbState {
    /// Every state, in the order HAProxy's exporter lists them.
    pub const ALL: [LbState; 5] = [
        LbState::Down,
        LbState::Up,
        LbState::Maint,
        LbState::Drain,
        LbState::Nolb,
    ];

    /// The word (`UP`, `DOWN`, `NOLB`, `DRAIN`, `MAINT`).
    pub fn word(self) -> &'static str {
        match self {
            LbState::Down => "DOWN",
            LbState::Up => "UP",
            LbState::Maint => "MAINT",
            LbState::Drain => "DRAIN",
            LbState::Nolb => "NOLB",
        }
    }
}

impl ServerView<'_> {
    /// The server's state in `backend`: maintenance first, then health, drain, then whether
    /// its role and lag let it take this backend's traffic.
    pub fn lb_state(&self, backend: &BackendRt) -> LbState {
        let live = &self.rt.live;
        if self.maint() {
            LbState::Maint
        } else if !self.up() {
            LbState::Down
        } else if live.effective_admin() == AdminState::Drain {
            LbState::Drain
        } else if !table::admits(backend.rule(), self.rt) {
            LbState::Nolb
        } else {
            LbState::Up
        }
    }
}

/// HAProxy's number for a check status (`srv_check_status`); `INI` (1) before the first check.
pub fn status_number(result: Option<&CheckResult>) -> u8 {
    match result.map(|r| r.status) {
        None => 1,
        Some(Status::L4Ok) => 6,
        Some(Status::L4Tout) => 7,
        Some(Status::L4Con) => 8,
        Some(Status::L6Tout) => 10,
        Some(Status::L6Rsp) => 11,
        Some(Status::L7Tout) => 12,
        Some(Status::L7Rsp) => 13,
        Some(Status::L7Ok) => 15,
        Some(Status::L7Okc) => 16,
        Some(Status::L7Sts) => 17,
    }
}

/// HAProxy's check result (`srv_check_result`): 0 unknown, 2 failed, 3 passed, 4 conditionally passed.
pub fn result_number(result: Option<&CheckResult>) -> u8 {
    match result.map(|r| r.status) {
        None => 0,
        Some(Status::L7Okc) => 4,
        Some(s) if s.passed() => 3,
        Some(_) => 2,
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
