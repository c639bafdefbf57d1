//! Who may use a stats page, as typed values: `userlist` sections (users, groups, passwords),
//! the access rules of a stats listener (`stats auth`, `stats http-request allow|deny|auth`)
//! and the conditions of those rules and of `stats admin if|unless`. Parsed by
//! `keywords::stats` and `keywords::userlist`; evaluated per request by `admin::stats_auth`.

use std::net::IpAddr;

use super::model::Loc;

/// The realm of the `WWW-Authenticate` answer when no `stats realm` is given (HAProxy's).
pub const DEFAULT_REALM: &str = "HAProxy Statistics";
/// The userlist `stats auth` lines fill (HAProxy's name for it).
pub const STATS_AUTH_USERLIST: &str = ".internal-stats-userlist";

/// A `userlist NAME` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Userlist {
    /// Its name, as `http_auth(NAME)` refers to it.
    pub name: String,
    /// Where the section starts.
    pub loc: Loc,
    /// `user` lines.
    pub users: Vec<User>,
    /// `group` lines, with the users each lists (`users a,b`).
    pub groups: Vec<Group>,
}

/// A `group NAME [users U1,U2]` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The group's name.
    pub name: String,
    /// Users named on the group's own line.
    pub users: Vec<String>,
}

/// A `user NAME password|insecure-password P [groups G1,G2]` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The user's name.
    pub name: String,
    /// How the password is checked.
    pub password: Password,
    /// Groups named on the user's line.
    pub groups: Vec<String>,
}

/// A user's password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Password {
    /// `insecure-password`: compared as is.
    Insecure(String),
    /// `password`: a crypt(3) hash, SHA-256 (`$5$`) or SHA-512 (`$6$`).
    Crypt(String),
    /// No password given: the user can never log in (as HAProxy).
    None,
}

impl Userlist {
    /// Whether `user` is in `group`, by either the group's or the user's line.
    pub fn in_group(&self, user: &str, group: &str) -> bool {
        self.groups
            .iter()
            .any(|g| g.name == group && g.users.iter().any(|u| u == user))
            || self
                .users
                .iter()
                .any(|u| u.name == user && u.groups.iter().any(|g| g == group))
    }
}

/// An IP network of a `src` test: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    /// The network address.
    pub addr: IpAddr,
    /// Leading bits that must match.
    pub prefix: u8,
}

impl Net {
    /// Whether `ip` is in the network (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// One test of a condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Test {
    /// `TRUE` / `always_true`.
    True,
    /// `FALSE` / `always_false`.
    False,
    /// `{ src NET ... }` (`LOCALHOST` is `src 127.0.0.1/8 ::1`).
    Src(Vec<Net>),
    /// A named ACL (`acl NAME ...` lines of the proxy): any of its tests.
    Acl {
        /// Its name.
        name: String,
        /// The tests of its lines, in order.
        tests: Vec<Test>,
    },
    /// `{ http_auth(LIST) }`, or with groups `{ http_auth_group(LIST) G1 G2 }`: the request's
    /// Basic credentials are a user of LIST (in one of the groups, when given).
    HttpAuth {
        /// The userlist's name.
        list: String,
        /// Groups, for `http_auth_group`.
        groups: Option<Vec<String>>,
        /// Where the test is written.
        loc: Loc,
    },
}

/// A test, maybe negated with `!`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    /// `!`.
    pub negate: bool,
    /// The test.
    pub test: Test,
}

/// `if|unless` followed by terms: the terms of a group must all match, and one group of
/// several separated by `||` (or `or`) must.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cond {
    /// `unless`.
    pub unless: bool,
    /// The `||`-separated groups of terms.
    pub any_of: Vec<Vec<Term>>,
}

/// What a matching access rule does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Serve the page.
    Allow,
    /// 403.
    Deny,
    /// 401 asking for Basic credentials in this realm.
    Auth {
        /// The realm (`stats realm`, `auth realm R`, or [`DEFAULT_REALM`]).
        realm: String,
    },
}

/// One access rule of a stats page; the first whose condition matches decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// What it does.
    pub action: Action,
    /// When it applies (always, without a condition).
    pub cond: Option<Cond>,
}
