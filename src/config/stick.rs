//! Stick tables as the configuration holds them: a backend's `stick-table` (key type, size,
//! expiry) and its `stick on|match|store-request` rules (with their `table` and `if|unless`
//! condition). Parsed in `keywords::stick`, each rule's table resolved when the configuration
//! is built, read by `table::stick` and `live::stick`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use super::model::Loc;

/// `stick-table type ...`: what a key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// `type ip`: IPv4 addresses (an IPv4-mapped IPv6 address counts as its IPv4 one).
    Ip,
    /// `type ipv6`: IPv6 addresses (IPv4 ones are stored mapped).
    Ipv6,
    /// `type integer`: 32-bit integers (an IPv4 address as its number).
    Integer,
    /// `type string [len N]`: text, cut to `N` bytes (32 by default).
    String(usize),
}

impl KeyType {
    /// The name `show table` prints.
    pub fn name(self) -> &'static str {
        match self {
            KeyType::Ip => "ip",
            KeyType::Ipv6 => "ipv6",
            KeyType::Integer => "integer",
            KeyType::String(_) => "string",
        }
    }

    /// The key for address `addr`, converted as HAProxy casts an address sample to the
    /// table's type; `None` when it cannot be (an IPv6 address in an `ip` or `integer` table),
    /// and the rule is then skipped.
    pub fn to_key(self, addr: IpAddr) -> Option<StickKey> {
        let v4 = |addr: IpAddr| match addr {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(a) => a.to_ipv4_mapped(),
        };
        match self {
            KeyType::Ip => v4(addr).map(StickKey::Ip),
            KeyType::Ipv6 => Some(StickKey::Ipv6(match addr {
                IpAddr::V4(a) => a.to_ipv6_mapped(),
                IpAddr::V6(a) => a,
            })),
            KeyType::Integer => match addr {
                IpAddr::V4(a) => Some(StickKey::Integer(u32::from(a))),
                IpAddr::V6(_) => None,
            },
            KeyType::String(len) => {
                let mut text = addr.to_string();
                text.truncate(len);
                Some(StickKey::String(text))
            }
        }
    }
}

/// One key of a stick table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StickKey {
    /// An IPv4 address.
    Ip(Ipv4Addr),
    /// An IPv6 address.
    Ipv6(Ipv6Addr),
    /// An integer.
    Integer(u32),
    /// A string.
    String(String),
}

impl fmt::Display for StickKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StickKey::Ip(a) => a.fmt(f),
            StickKey::Ipv6(a) => a.fmt(f),
            StickKey::Integer(n) => n.fmt(f),
            StickKey::String(s) => f.write_str(s),
        }
    }
}

/// `stick-table type T size N [expire D] [nopurge]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StickTable {
    /// `type`.
    pub key: KeyType,
    /// `size`: the most entries the table holds.
    pub size: u32,
    /// `expire`: an entry not touched for this long is gone; `None` keeps entries until the
    /// table is full.
    pub expire: Option<Duration>,
    /// `nopurge`: a full table stores nothing new instead of dropping its oldest entry.
    pub nopurge: bool,
    /// Where the line is.
    pub loc: Loc,
}

/// The sample a stick rule takes its key from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StickFetch {
    /// `src`: the client's address (the PROXY header's, with `accept-proxy`).
    Src,
    /// `dst`: the address the client connected to.
    Dst,
}

impl StickFetch {
    /// The address the rule reads, from a connection's `src` and `dst`.
    pub fn of(self, src: IpAddr, dst: IpAddr) -> IpAddr {
        match self {
            StickFetch::Src => src,
            StickFetch::Dst => dst,
        }
    }
}

/// What a stick rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StickAction {
    /// `stick on`: match, then store.
    On,
    /// `stick match`: a found entry names the server.
    Match,
    /// `stick store-request`: the server the connection went to is stored.
    StoreRequest,
}

impl StickAction {
    /// Whether the rule looks entries up.
    pub fn matches(self) -> bool {
        matches!(self, StickAction::On | StickAction::Match)
    }

    /// Whether the rule stores entries.
    pub fn stores(self) -> bool {
        matches!(self, StickAction::On | StickAction::StoreRequest)
    }
}

/// The most `stick` rules one backend may have (the data path keeps one bit per rule for
/// whether its condition held).
pub const MAX_STICK_RULES: usize = 64;

/// One `stick` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StickRule {
    /// `on`, `match` or `store-request`.
    pub action: StickAction,
    /// `src` or `dst`.
    pub fetch: StickFetch,
    /// `table NAME`: the backend whose stick table the rule uses; `None` for its own.
    pub table: Option<String>,
    /// `if|unless COND`: when the rule applies (always without one).
    pub cond: Option<super::acl::Cond>,
    /// Where the line is.
    pub loc: Loc,
}

impl StickRule {
    /// The name of the backend whose table the rule uses, `own` being the rule's backend.
    pub fn table_name<'a>(&'a self, own: &'a str) -> &'a str {
        self.table.as_deref().unwrap_or(own)
    }
}

/// A backend's stick table and the rules that fill and read tables (its own or, with
/// `table NAME`, another backend's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stick {
    /// The `stick-table` line, when the backend declares one.
    pub table: Option<StickTable>,
    /// The `stick` rules, in order (may be empty: the table is then only shown, or filled by
    /// other backends' rules).
    pub rules: Vec<StickRule>,
}
