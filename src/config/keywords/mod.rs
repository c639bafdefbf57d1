//! Keyword tables: one per section family, each entry mapping a keyword to its parser and
//! (for proxies) the sections where it is valid, as HAProxy's own `cfg_kw_list` does.
//! Grep for a keyword (`fastinter`, `balance`, `pgsql-check`) to find its parser.
//!
//! - [`global`]: the `global` section.
//! - [`proxy`]: `defaults`, `frontend`, `backend`, `listen`.
//! - [`option`]: `option X` / `no option X` inside proxies.
//! - [`check`]: `tcp-check` and `http-check` rules.
//! - [`server`]: options of `server` and `default-server` lines.
//! - [`server_tls`]: their options for health checks over TLS (`check-ssl`, `verify`...).
//! - [`bind`]: options of `bind` lines.
//! - [`log`]: the `log` line, shared by `global` and proxies.
//! - [`role`]: the rolelb extensions `role`, `role-check`, `max-lag`, `role-source`.
//! - [`acl`]: `acl` lines and the `if|unless` conditions every rule takes.
//! - [`tcp_request`]: `tcp-request connection|content|inspect-delay`.
//! - [`stats`]: `stats ...` lines of a proxy.
//! - [`userlist`]: the `userlist` section.
//! - [`resolvers`]: the `resolvers` section, `server-template` and the DNS server options.
//! - [`etcd`]: the rolelb extensions `etcd` (a section) and `discover`.
//! - [`tune`]: the `tune.*` keywords of `global` rolelb acts on, and those it warns about.
//! - [`unsupported`]: HAProxy keywords rolelb knows but refuses, with what to do instead,
//!   and the rolelb extensions not implemented yet.

pub mod acl;
pub mod bind;
pub mod check;
pub mod etcd;
pub mod global;
pub mod log;
pub mod option;
pub mod proxy;
pub mod resolvers;
pub mod role;
pub mod server;
pub mod server_tls;
pub mod stats;
pub mod stick;
pub mod tcp_request;
pub mod tune;
pub mod unsupported;
pub mod userlist;

use super::draft::{Diags, ProxyKind};
use super::lexer::Word;
use super::model::Loc;

/// The sections where a proxy keyword is valid (a bit set over [`ProxyKind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sections(u8);

impl Sections {
    /// `defaults`.
    pub const DEFAULTS: Sections = Sections(1);
    /// `frontend`.
    pub const FRONTEND: Sections = Sections(2);
    /// `backend`.
    pub const BACKEND: Sections = Sections(4);
    /// `listen`.
    pub const LISTEN: Sections = Sections(8);
    /// Every proxy section.
    pub const ALL: Sections = Sections(15);
    /// Sections with a frontend side, and `defaults`.
    pub const FE: Sections = Sections(1 | 2 | 8);
    /// Sections with a backend side, and `defaults`.
    pub const BE: Sections = Sections(1 | 4 | 8);
    /// `backend` and `listen` (no `defaults`).
    pub const BE_ONLY: Sections = Sections(4 | 8);
    /// `frontend` and `listen` (no `defaults`).
    pub const FE_ONLY: Sections = Sections(2 | 8);
    /// Every proxy section but `defaults`.
    pub const PROXIES: Sections = Sections(2 | 4 | 8);

    fn bit(kind: ProxyKind) -> u8 {
        match kind {
            ProxyKind::Defaults => 1,
            ProxyKind::Frontend => 2,
            ProxyKind::Backend => 4,
            ProxyKind::Listen => 8,
        }
    }

    /// Whether `kind` is one of these sections.
    pub fn contains(self, kind: ProxyKind) -> bool {
        self.0 & Self::bit(kind) != 0
    }

    /// The section names, for error messages: `backend, listen`.
    pub fn names(self) -> String {
        [
            ProxyKind::Defaults,
            ProxyKind::Frontend,
            ProxyKind::Backend,
            ProxyKind::Listen,
        ]
        .into_iter()
        .filter(|k| self.contains(*k))
        .map(ProxyKind::keyword)
        .collect::<Vec<_>>()
        .join(", ")
    }
}

/// What a keyword parser gets: its arguments, where the line is, and a place for warnings.
pub struct Ctx<'a> {
    /// The keyword (or option name) being parsed, for messages.
    pub keyword: &'a str,
    /// The words after the keyword.
    pub args: &'a [Word],
    /// Where the line is.
    pub loc: &'a Loc,
    /// Where warnings (and extra errors) go.
    pub diags: &'a mut Diags,
}

impl Ctx<'_> {
    /// The `i`-th argument as text, or an error saying what is missing.
    pub fn arg(&self, i: usize, what: &str) -> Result<&str, String> {
        self.args
            .get(i)
            .map(Word::as_str)
            .ok_or_else(|| format!("'{}' expects {what}", self.keyword))
    }

    /// Errors when there are more than `n` arguments.
    pub fn at_most(&self, n: usize) -> Result<(), String> {
        match self.args.get(n) {
            Some(extra) => Err(format!(
                "'{}': unexpected argument '{}'",
                self.keyword, extra.text
            )),
            None => Ok(()),
        }
    }

    /// Records a warning at this line.
    pub fn warn(&mut self, message: impl Into<String>) {
        self.diags.warn(self.loc, message);
    }
}

/// The nearest known keyword to a misspelt one, if it is close enough to be a typo.
pub fn suggest<'a>(word: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    known
        // The distance is at least the difference in length and must stay under `k`'s length:
        // a much longer word is no typo (and a 5000-character token would cost a 5000 x k table).
        .filter(|k| word.len() < 2 * k.len())
        .map(|k| (strsim::damerau_levenshtein(word, k), k))
        .filter(|(d, k)| *d <= 2.max(word.len() / 3) && *d < k.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Appends ` (did you mean 'X'?)` when a typo suggestion exists.
pub fn did_you_mean<'a>(word: &str, known: impl Iterator<Item = &'a str>) -> String {
    suggest(word, known)
        .map(|k| format!(" (did you mean '{k}'?)"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_keywords_only() {
        let known = ["fastinter", "downinter", "inter", "balance"];
        assert_eq!(suggest("fastintr", known.into_iter()), Some("fastinter"));
        assert_eq!(suggest("balanse", known.into_iter()), Some("balance"));
        assert_eq!(suggest("zzz", known.into_iter()), None);
    }

    #[test]
    fn sections_names() {
        assert_eq!(Sections::BE_ONLY.names(), "backend, listen");
        assert!(Sections::FE.contains(ProxyKind::Defaults));
        assert!(!Sections::FE.contains(ProxyKind::Backend));
    }
}
