//! The configuration's etcd part: `etcd` sections, a backend's `discover`, and what etcd says
//! about a discovered server.

use std::fmt;
use std::time::Duration;

use super::model::Loc;

/// An `etcd NAME` section: one etcd cluster to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdCluster {
    /// Section name, referred to by `discover etcd NAME`.
    pub name: String,
    /// Where the section starts.
    pub loc: Loc,
    /// `endpoints URL...`: client URLs (`http://HOST:PORT`), tried in turn on failure.
    pub endpoints: Vec<String>,
    /// `user` and `password`, when etcd authentication is on.
    pub auth: Option<EtcdAuth>,
    /// `dial-timeout` (default 2s): bound on connecting and on each request.
    pub dial_timeout: Duration,
    /// `prefix`: prepended to every `discover ... path` that uses this cluster.
    pub prefix: String,
}

/// `user` and `password` of an `etcd` section.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdAuth {
    /// User name.
    pub user: String,
    /// Password (never printed: `Debug` hides it).
    pub password: String,
}

impl fmt::Debug for EtcdAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdAuth")
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// `discover etcd NAME path PREFIX [schema native|patroni] [port N]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discover {
    /// The `etcd` section to watch (it exists: checked at load).
    pub etcd: String,
    /// The key prefix, with the section's `prefix` already in front, without a trailing `/`.
    pub path: String,
    /// How the values under the prefix are laid out.
    pub schema: Schema,
    /// `port N`: the traffic port of every discovered server (the members' own port then
    /// stays the check port).
    pub port: Option<u16>,
    /// Where the line is.
    pub loc: Loc,
}

/// `schema` of a `discover` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Schema {
    /// `native` (the default): `PREFIX/members/NAME` = `{host, port, role, ...}`, `PREFIX/leader`.
    #[default]
    Native,
    /// `patroni`: the keys Patroni writes under `/service/SCOPE`.
    Patroni,
}

impl Schema {
    /// The word after `schema` in the configuration.
    pub fn keyword(self) -> &'static str {
        match self {
            Schema::Native => "native",
            Schema::Patroni => "patroni",
        }
    }
}

/// What etcd says about a discovered server; `None` on servers from `server` lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EtcdView {
    /// The role etcd gives it (the leader key, else the member's own `role`).
    pub role: EtcdRole,
    /// The member's `state`.
    pub state: EtcdState,
}

/// A role as etcd publishes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtcdRole {
    /// The leader / `role: primary`.
    Primary,
    /// Any other member.
    Replica,
}

/// A member's `state` in etcd: the same words as `set server ... state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EtcdState {
    /// `ready` (the default).
    #[default]
    Ready,
    /// `drain`: no new connections.
    Drain,
    /// `maint`: no connections, no checks.
    Maint,
}
