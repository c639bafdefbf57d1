//! One server as every report shows it: HAProxy's state encodings (`srv_op_state`,
//! `srv_admin_state`, `srv_check_state`), the `show stat` status word, the `/metrics` and JSON
//! state, and each derived value (weights, throttle, limits, last change, downtime, what the
//! last checks show). `show stat`, `show servers state`, `/metrics` and the JSON API read these
//! and only format them.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::check::CheckResult;
use crate::config;
use crate::table::{self, AdminState, BackendRt, Health, ServerRt};

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
/// `SRV_ADMF_RMAINT`: no address from DNS.
pub const ADMF_RMAINT: u8 = 0x20;

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
    /// The server's id within its backend (HAProxy's `puid`: `id N`, else numbered in order).
    pub id: u32,
    /// Its configuration.
    pub cfg: &'a config::Server,
    /// Its runtime entry (live state inside).
    pub rt: &'a ServerRt,
}

/// The servers of a backend with their ids, in declaration order (the table keeps it).
pub fn servers(rt: &BackendRt) -> Vec<ServerView<'_>> {
    rt.servers
        .iter()
        .map(|rt| ServerView {
            id: rt.puid,
            cfg: &rt.config,
            rt,
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
        if live.dns_maint() {
            flags |= ADMF_RMAINT;
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
        if live.dns_maint() {
            return "MAINT (resolution)".to_owned();
        }
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
            if live.check_stopping() && going_down {
                return format!("NOLB {}/{}", (counter + 1).saturating_sub(rise), fall);
            }
            if live.check_stopping() {
                return "NOLB".to_owned();
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

/// What a health or agent check shows: HAProxy's status code and description (`INI`,
/// `Initializing` before the first result), and the last result itself.
#[derive(Debug, Clone)]
pub struct CheckShown {
    /// `check_status` / `agent_status` (`INI`, `L4OK`, `L7STS`...).
    pub status: &'static str,
    /// `check_desc` / `agent_desc`.
    pub desc: &'static str,
    /// The last result, once there is one.
    pub last: Option<Arc<CheckResult>>,
}

impl CheckShown {
    fn of(last: Option<Arc<CheckResult>>) -> CheckShown {
        CheckShown {
            status: last.as_deref().map_or("INI", |r| r.status.code()),
            desc: last
                .as_deref()
                .map_or("Initializing", |r| r.status.describe()),
            last,
        }
    }

    /// The layer-5-7 code as a number (`haproxy_server_check_code`): 0 when there is none.
    pub fn code_number(&self) -> u64 {
        self.last
            .as_deref()
            .and_then(|r| r.code.as_deref())
            .and_then(|c| c.parse::<u64>().ok())
            .unwrap_or(0)
    }

    /// How long the last check took; zero before the first.
    pub fn duration(&self) -> Duration {
        self.last.as_deref().map_or(Duration::ZERO, |r| r.duration)
    }
}

impl ServerView<'_> {
    /// The effective weight on the user scale (`weight`): ramped under `slowstart`.
    pub fn shown_weight(&self) -> u32 {
        self.rt.shown_weight()
    }

    /// The weight in force, as the operator set it (`uweight`, `srv_uweight`).
    pub fn user_weight(&self) -> u32 {
        self.rt.weight
    }

    /// `throttle`: the percentage of its weight a starting server gets, while it ramps.
    pub fn throttle(&self) -> Option<u32> {
        self.rt.throttle()
    }

    /// `slim`: the server's `maxconn` in force, when it has one.
    pub fn limit(&self) -> Option<u32> {
        self.rt.maxconn.filter(|m| *m > 0)
    }

    /// `qlimit`: the server's `maxqueue`, when it has one.
    pub fn queue_limit(&self) -> Option<u32> {
        self.cfg.maxqueue.filter(|q| *q > 0)
    }

    /// `lastchg`: seconds since the server's state last changed.
    pub fn last_change(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.rt.live.changed_at())
            .as_secs()
    }

    /// `downtime`: seconds spent stopped (down or in maintenance); `None` without `check`,
    /// as HAProxy counts it only for checked servers.
    pub fn downtime(&self, now: Instant) -> Option<u64> {
        self.cfg.check.then(|| self.rt.live.downtime(now).as_secs())
    }

    /// What the health check shows; `None` when the server has no `check`.
    pub fn check_shown(&self) -> Option<CheckShown> {
        self.cfg.check.then(|| CheckShown::of(self.last_check()))
    }

    /// What the agent check shows; `None` when the server has no `agent-check`.
    pub fn agent_shown(&self) -> Option<CheckShown> {
        self.cfg.agent.as_ref()?;
        Some(CheckShown::of(self.last_agent()))
    }

    /// The agent's address (`srv_agent_addr`): `agent-addr`, else the check's `addr`.
    pub fn agent_addr(&self) -> Option<std::net::IpAddr> {
        self.cfg
            .agent
            .as_ref()
            .and_then(|a| a.agent_addr)
            .or(self.cfg.check_addr)
    }

    /// Replication lag in bytes the last role check measured; `None` when unknown.
    pub fn lag_bytes(&self) -> Option<u64> {
        known(self.rt.live.lag_bytes.load(Ordering::Relaxed))
    }

    /// Replication lag in milliseconds the last role check measured; `None` when unknown.
    pub fn lag_ms(&self) -> Option<u64> {
        known(self.rt.live.lag_ms.load(Ordering::Relaxed))
    }
}

/// A lag, `u64::MAX` standing for "not known".
fn known(v: u64) -> Option<u64> {
    (v != u64::MAX).then_some(v)
}
