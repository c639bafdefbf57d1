//! The configuration's DNS part: `resolvers` sections, and what a server's `resolvers`,
//! `resolve-prefer`, `init-addr` and `resolve-opts` ask for (HAProxy 2.6, configuration
//! manual section 5.3). The `dns` module runs one resolver task per section in use.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::model::Loc;

/// A `resolvers NAME` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolvers {
    /// Section name, referred to by a server's `resolvers NAME`.
    pub name: String,
    /// Where the section starts.
    pub loc: Loc,
    /// `nameserver NAME ADDR[:PORT]` lines and `parse-resolv-conf`'s, in order (UDP).
    pub nameservers: Vec<SocketAddr>,
    /// `resolve_retries` (default 3): queries sent for one resolution before giving up.
    pub resolve_retries: u32,
    /// `timeout resolve` (default 1s): how often each name is resolved again.
    pub timeout_resolve: Duration,
    /// `timeout retry` (default 1s): how long to wait for an answer before querying again.
    pub timeout_retry: Duration,
    /// `hold STATUS PERIOD`.
    pub hold: Hold,
    /// `accepted_payload_size` (default 512): the EDNS payload size announced.
    pub accepted_payload_size: u16,
}

/// `hold STATUS PERIOD` of a `resolvers` section: how long the last good answer is kept
/// after each kind of failure, and how long a record missing from answers is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    /// `hold valid` (default 10s): how long a valid answer serves a new requester.
    pub valid: Duration,
    /// `hold obsolete` (default 0s): how long a record absent from the answers is kept.
    pub obsolete: Duration,
    /// `hold nx` (default 30s).
    pub nx: Duration,
    /// `hold other` (default 30s).
    pub other: Duration,
    /// `hold refused` (default 30s).
    pub refused: Duration,
    /// `hold timeout` (default 30s).
    pub timeout: Duration,
}

impl Default for Hold {
    fn default() -> Self {
        let thirty = Duration::from_secs(30);
        Hold {
            valid: Duration::from_secs(10),
            obsolete: Duration::ZERO,
            nx: thirty,
            other: thirty,
            refused: thirty,
            timeout: thirty,
        }
    }
}

/// `resolve-prefer ipv4|ipv6` (HAProxy's default is `ipv6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AddrFamily {
    /// `ipv4`: A records first.
    Ipv4,
    /// `ipv6`: AAAA records first.
    #[default]
    Ipv6,
}

/// One method of `init-addr`: how a server gets its address at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitAddr {
    /// `last`: the address from a server state file (rolelb has none: never succeeds).
    Last,
    /// `libc`: the system's resolver.
    Libc,
    /// `none`: start without an address, in maintenance until DNS gives one.
    None,
    /// An IP address.
    Ip(IpAddr),
}

/// HAProxy's default `init-addr`.
pub const DEFAULT_INIT_ADDR: [InitAddr; 2] = [InitAddr::Last, InitAddr::Libc];

/// A server whose name is resolved at run time (`resolvers NAME` on a `server` or
/// `server-template` line with a host name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolve {
    /// The `resolvers` section (it exists: checked at load).
    pub resolvers: String,
    /// The name to resolve, as written.
    pub fqdn: String,
    /// `resolve-prefer`.
    pub prefer: AddrFamily,
    /// `resolve-opts ignore-weight`: SRV weights are not applied.
    pub ignore_weight: bool,
}

impl Resolve {
    /// Whether the name is an SRV name (`_service._proto.name`): the records give the
    /// servers their target, port and weight.
    pub fn is_srv(&self) -> bool {
        self.fqdn.starts_with('_')
    }
}
