//! Who may use a stats page, as typed values: `userlist` sections (users, groups, passwords),
//! the access rules of a stats listener (`stats auth`, `stats http-request allow|deny|auth`)
//! and the conditions of those rules and of `stats admin if|unless`. Parsed by
//! `keywords::stats` and `keywords::userlist`; evaluated per request by `admin::stats_auth`.
//! Conditions are those of every proxy (`acl`).

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

pub use super::acl::{Cond, Net, Term, Test};

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
