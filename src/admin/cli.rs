//! The runtime API's commands: one line in, one reply out, in HAProxy's words. The socket
//! plumbing is in `runtime`; this file only parses a command, checks the session's level,
//! reads or changes live state and asks `control` for a new table.
//!
//! Changes go through `ops` (shared with the HTTP API) to the server's live state (which
//! outlives tables and reloads); the reply is sent once the rebuilt table is published, so a
//! client that sees the reply sees the change.

use super::Env;
use super::ops::{self, Found, LookupError};
use super::servers_state;
use super::show_table;
use super::stats::{self, StatFilter};
use super::view;
use crate::config::StatsLevel;
use crate::table::AdminState;

/// The highest weight HAProxy accepts.
const MAX_WEIGHT: u32 = 256;

/// The commands rolelb answers, as `help` lists them: (usage, description, needs admin).
const COMMANDS: &[(&str, &str, bool)] = &[
    (
        "disable server <bk>/<srv>",
        "put a server in maintenance (same as 'set server <bk>/<srv> state maint')",
        true,
    ),
    (
        "enable server <bk>/<srv>",
        "take a server out of maintenance",
        true,
    ),
    (
        "get weight <bk>/<srv>",
        "report a server's current weight",
        false,
    ),
    (
        "set server <bk>/<srv> [opts]",
        "change a server's state (ready|drain|maint) or weight",
        true,
    ),
    (
        "set weight <bk>/<srv> <w>",
        "change a server's weight (same as 'set server <bk>/<srv> weight')",
        true,
    ),
    (
        "show backend",
        "list backends in the current running config",
        false,
    ),
    (
        "show info",
        "report information about the running process",
        false,
    ),
    (
        "show servers state [<backend>]",
        "dump volatile server information (all or for a single backend)",
        false,
    ),
    (
        "show stat [<px> <type> <sid>]",
        "report counters for each proxy and server",
        false,
    ),
    (
        "show table <table> [<filter>]*",
        "report table usage stats or dump this table's contents (filter: data/key)",
        false,
    ),
];

/// Always listed last, as HAProxy does.
const SESSION_COMMANDS: &[(&str, &str)] = &[
    ("help [<command>]", "list matching or all commands"),
    ("prompt", "toggle interactive mode with prompt"),
    ("quit", "disconnect"),
];

const PERMISSION_DENIED: &str = "Permission denied\n";
const REQUIRE_TARGET: &str = "Require 'backend/server'.\n";
const NO_BACKEND: &str = "No such backend.\n";
const NO_SERVER: &str = "No such server.\n";
const BAD_STATE: &str = "'set server <srv> state' expects 'ready', 'drain' and 'maint'.\n";
const SET_SERVER_USAGE: &str = "usage: set server <backend>/<server> state | weight\n";

/// What the session must do after a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Send this text (the session adds the blank line that ends a reply).
    Reply(String),
    /// Toggle interactive mode.
    TogglePrompt,
    /// Close the connection.
    Quit,
}

/// A weight given to `set server ... weight`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weight {
    /// `N`: the weight itself.
    Absolute(i64),
    /// `N%`: a share of the configured weight.
    Relative(i64),
}

impl Weight {
    /// The weight to set on a server configured with `initial`, or HAProxy's refusal.
    pub fn resolve(self, initial: u32) -> Result<u32, &'static str> {
        match self {
            Weight::Absolute(w) => u32::try_from(w)
                .ok()
                .filter(|w| *w <= MAX_WEIGHT)
                .ok_or("Absolute weight can only be between 0 and 256 inclusive.\n"),
            Weight::Relative(p) if p < 0 => Err("Relative weight must be positive.\n"),
            Weight::Relative(p) => {
                let w = i128::from(initial) * i128::from(p) / 100;
                Ok(u32::try_from(w.min(i128::from(MAX_WEIGHT))).unwrap_or(MAX_WEIGHT))
            }
        }
    }
}

/// Parses `N` or `N%` with HAProxy's error texts (some of which end without a newline).
pub fn parse_weight(word: Option<&str>) -> Result<Weight, &'static str> {
    let Some(word) = word else {
        return Err("Require <weight> or <weight%>.\n");
    };
    let (negative, rest) = match word.as_bytes().first() {
        Some(b'-') => (true, &word[1..]),
        Some(b'+') => (false, &word[1..]),
        _ => (false, word),
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err("Empty weight string empty or preceded by garbage");
    }
    // More digits than any weight needs saturate; the range check refuses them.
    let value = rest[..digits].parse::<i64>().unwrap_or(i64::MAX);
    let value = if negative { -value } else { value };
    match &rest[digits..] {
        "" => Ok(Weight::Absolute(value)),
        "%" => Ok(Weight::Relative(value)),
        _ => Err("Trailing garbage in weight string"),
    }
}

/// Parses `ready|drain|maint`.
pub fn parse_state(word: Option<&str>) -> Result<AdminState, &'static str> {
    match word {
        Some("ready") => Ok(AdminState::Ready),
        Some("drain") => Ok(AdminState::Drain),
        Some("maint") => Ok(AdminState::Maint),
        _ => Err(BAD_STATE),
    }
}

/// Splits `backend/server`.
pub fn split_target(word: Option<&str>) -> Result<(&str, &str), &'static str> {
    word.and_then(|w| w.split_once('/'))
        .filter(|(b, s)| !b.is_empty() && !s.is_empty())
        .ok_or(REQUIRE_TARGET)
}

fn help_line(usage: &str, desc: &str) -> String {
    format!("  {usage:<40}: {desc}\n")
}

/// `help`, or the reply to an unknown command: the commands of the session's `level`
/// matching `word` if any, else all of them (as HAProxy, a session below `admin` is not shown
/// the commands it may not run).
pub fn help(word: Option<&str>, unknown: bool, level: StatsLevel) -> String {
    let all = COMMANDS
        .iter()
        .filter(|(_, _, admin)| !admin || level == StatsLevel::Admin)
        .map(|(u, d, _)| (*u, *d));
    let matching: Vec<(&str, &str)> = match word {
        Some(w) => all
            .clone()
            .filter(|(usage, _)| {
                let first = usage.split(' ').next().unwrap_or_default();
                first == w || strsim::jaro_winkler(first, w) > 0.85
            })
            .collect(),
        None => Vec::new(),
    };
    let (title, list): (&str, Vec<(&str, &str)>) = match (unknown, matching.is_empty()) {
        (true, true) => (
            "Unknown command. Please enter one of the following commands only:",
            all.collect(),
        ),
        (true, false) => (
            "Unknown command, but maybe one of the following ones is a better match:",
            matching,
        ),
        (false, true) => (
            "The following commands are valid at this level:",
            all.collect(),
        ),
        (false, false) => ("The following commands are valid at this level:", matching),
    };
    let mut out = format!("{title}\n");
    for (usage, desc) in list.into_iter().chain(SESSION_COMMANDS.iter().copied()) {
        out.push_str(&help_line(usage, desc));
    }
    out
}

/// Splits one input line into commands: `;` separates them, as in HAProxy.
pub fn split_commands(line: &str) -> Vec<Vec<&str>> {
    line.split(';')
        .map(|c| c.split_whitespace().collect())
        .collect()
}

fn parse_stat_filter(words: &[&str]) -> StatFilter {
    let mut filter = StatFilter::default();
    // Options such as `typed` or `json` are not supported; the CSV is printed instead.
    let numeric: Vec<&str> = words
        .iter()
        .copied()
        .filter(|w| !matches!(*w, "desc" | "json" | "typed" | "up" | "no-maint"))
        .collect();
    if let [px, ty, sid, ..] = numeric.as_slice() {
        if *px != "-1" {
            filter.proxy = Some((*px).to_owned());
        }
        if let Ok(t) = ty.parse::<i64>()
            && t >= 0
        {
            filter.types = u8::try_from(t & 7).unwrap_or(7);
        }
        filter.sid = sid.parse::<u32>().ok();
    }
    filter
}

/// Runs one command (already split into words) for a session at `level`.
pub async fn execute(env: &Env, level: StatsLevel, words: &[&str], origin: &str) -> Outcome {
    let reply = |s: &str| Outcome::Reply(s.to_owned());
    match words {
        [] => Outcome::Reply(help(None, true, level)),
        ["help", rest @ ..] => Outcome::Reply(help(rest.first().copied(), false, level)),
        ["prompt", ..] => Outcome::TogglePrompt,
        ["quit", ..] => Outcome::Quit,
        ["show", "info", ..] => Outcome::Reply(stats::show_info(env)),
        ["show", "stat", rest @ ..] => {
            Outcome::Reply(stats::show_stat(env, &parse_stat_filter(rest)))
        }
        ["show", "servers", "state", rest @ ..] => {
            match servers_state::show(env, rest.first().copied()) {
                Ok(text) => Outcome::Reply(text),
                Err(e) => Outcome::Reply(e.to_string()),
            }
        }
        ["show", "backend", ..] => Outcome::Reply(show_backend(env)),
        ["show", "table", rest @ ..] => {
            Outcome::Reply(show_table::show_table(&env.table().load(), level, rest))
        }
        ["get", "weight", rest @ ..] => Outcome::Reply(get_weight(env, rest.first().copied())),
        ["set" | "enable" | "disable", "server", ..] | ["set", "weight", ..]
            if level != StatsLevel::Admin =>
        {
            reply(PERMISSION_DENIED)
        }
        ["set", "server", target, rest @ ..] => match rest {
            ["state", state @ ..] => {
                set_state(env, target, parse_state(state.first().copied()), origin).await
            }
            ["weight", w @ ..] => {
                set_weight(env, target, parse_weight(w.first().copied()), origin).await
            }
            _ => match lookup(env, Some(target)) {
                Err(e) => reply(e),
                Ok(_) => reply(SET_SERVER_USAGE),
            },
        },
        ["set", "server"] => reply(REQUIRE_TARGET),
        ["set", "weight", target, w @ ..] => {
            set_weight(env, target, parse_weight(w.first().copied()), origin).await
        }
        ["set", "weight"] => reply(REQUIRE_TARGET),
        ["enable", "server", rest @ ..] => enable(env, rest.first().copied(), true, origin).await,
        ["disable", "server", rest @ ..] => enable(env, rest.first().copied(), false, origin).await,
        [first, ..] => Outcome::Reply(help(Some(first), true, level)),
    }
}

fn show_backend(env: &Env) -> String {
    let table = env.table().load();
    let mut out = String::from("# name\n");
    for px in view::proxies(&table).iter().filter(|p| p.backend.is_some()) {
        out.push_str(px.name);
        out.push('\n');
    }
    out
}

fn lookup(env: &Env, target: Option<&str>) -> Result<Found, &'static str> {
    let (backend, server) = split_target(target)?;
    ops::lookup(env, backend, server).map_err(|e| match e {
        LookupError::NoBackend => NO_BACKEND,
        LookupError::NoServer => NO_SERVER,
    })
}

fn get_weight(env: &Env, target: Option<&str>) -> String {
    match lookup(env, target) {
        Err(e) => e.to_string(),
        Ok(f) => format!(
            "{} (initial {})\n",
            f.live.user_weight(f.initial),
            f.initial
        ),
    }
}

async fn set_state(
    env: &Env,
    target: &str,
    state: Result<AdminState, &'static str>,
    origin: &str,
) -> Outcome {
    let found = match lookup(env, Some(target)) {
        Ok(f) => f,
        Err(e) => return Outcome::Reply(e.to_owned()),
    };
    let state = match state {
        Ok(s) => s,
        Err(e) => return Outcome::Reply(e.to_owned()),
    };
    ops::set_state(env, &found, state, origin).await;
    Outcome::Reply(String::new())
}

async fn set_weight(
    env: &Env,
    target: &str,
    weight: Result<Weight, &'static str>,
    origin: &str,
) -> Outcome {
    let found = match lookup(env, Some(target)) {
        Ok(f) => f,
        Err(e) => return Outcome::Reply(e.to_owned()),
    };
    let w = match weight.and_then(|w| w.resolve(found.initial)) {
        Ok(w) => w,
        Err(e) => return Outcome::Reply(e.to_owned()),
    };
    ops::set_weight(env, &found, w, origin).await;
    Outcome::Reply(String::new())
}

async fn enable(env: &Env, target: Option<&str>, enable: bool, origin: &str) -> Outcome {
    let found = match lookup(env, target) {
        Ok(f) => f,
        Err(e) => return Outcome::Reply(e.to_owned()),
    };
    let current = found.live.admin();
    let next = match (enable, current) {
        (true, AdminState::Maint) => AdminState::Ready,
        (true, other) => other,
        (false, _) => AdminState::Maint,
    };
    if next != current {
        ops::set_state(env, &found, next, origin).await;
    }
    Outcome::Reply(String::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_parse_with_haproxy_errors() {
        assert_eq!(parse_weight(Some("10")), Ok(Weight::Absolute(10)));
        assert_eq!(parse_weight(Some("+3")), Ok(Weight::Absolute(3)));
        assert_eq!(parse_weight(Some("50%")), Ok(Weight::Relative(50)));
        assert_eq!(parse_weight(None), Err("Require <weight> or <weight%>.\n"));
        assert_eq!(
            parse_weight(Some("x")),
            Err("Empty weight string empty or preceded by garbage")
        );
        assert_eq!(
            parse_weight(Some("12abc")),
            Err("Trailing garbage in weight string")
        );
        assert_eq!(
            parse_weight(Some("50%%")),
            Err("Trailing garbage in weight string")
        );
        assert!(parse_weight(Some("99999999999999999999999")).is_ok());
    }

    #[test]
    fn weights_resolve_against_the_configured_weight() {
        assert_eq!(Weight::Absolute(0).resolve(5), Ok(0));
        assert_eq!(Weight::Absolute(256).resolve(5), Ok(256));
        assert!(Weight::Absolute(257).resolve(5).is_err());
        assert!(Weight::Absolute(-1).resolve(5).is_err());
        assert_eq!(Weight::Relative(50).resolve(1), Ok(0));
        assert_eq!(Weight::Relative(2000).resolve(5), Ok(100));
        assert_eq!(Weight::Relative(10000).resolve(5), Ok(256));
        assert_eq!(
            Weight::Relative(-5).resolve(5),
            Err("Relative weight must be positive.\n")
        );
        assert_eq!(Weight::Absolute(i64::MAX).resolve(1).ok(), None);
    }

    #[test]
    fn states_and_targets_parse() {
        assert_eq!(parse_state(Some("drain")), Ok(AdminState::Drain));
        assert_eq!(parse_state(Some("DRAIN")), Err(BAD_STATE));
        assert_eq!(parse_state(None), Err(BAD_STATE));
        assert_eq!(split_target(Some("be/s1")), Ok(("be", "s1")));
        assert_eq!(split_target(Some("be")), Err(REQUIRE_TARGET));
        assert_eq!(split_target(Some("/s")), Err(REQUIRE_TARGET));
        assert_eq!(split_target(None), Err(REQUIRE_TARGET));
    }

    #[test]
    fn lines_split_on_semicolons_into_words() {
        assert_eq!(
            split_commands("show info; show  stat\r"),
            vec![vec!["show", "info"], vec!["show", "stat"]]
        );
        assert_eq!(split_commands(""), vec![Vec::<&str>::new()]);
    }

    #[test]
    fn help_lines_are_aligned_like_haproxy() {
        let h = help(None, false, StatsLevel::Admin);
        assert!(h.starts_with("The following commands are valid at this level:\n"));
        assert!(h.contains(
            "  show backend                            : list backends in the current running config\n"
        ));
        assert!(h.ends_with("  quit                                    : disconnect\n"));
        let u = help(Some("show"), true, StatsLevel::Admin);
        assert!(u.starts_with("Unknown command, but maybe"));
        assert!(!u.contains("set server"));
        let none = help(Some("zzzzqqq"), true, StatsLevel::Admin);
        assert!(none.starts_with("Unknown command. Please enter one of the following"));
    }

    #[test]
    fn help_below_admin_lists_no_admin_command() {
        let admin = help(None, false, StatsLevel::Admin);
        assert!(admin.contains("set server <bk>/<srv>"), "{admin}");
        for level in [StatsLevel::User, StatsLevel::Operator] {
            let h = help(None, false, level);
            for (usage, _, needs_admin) in COMMANDS {
                assert_eq!(h.contains(usage), !needs_admin, "{level:?}: {usage}\n{h}");
            }
            assert!(h.ends_with("  quit                                    : disconnect\n"));
            let unknown = help(Some("zzzzqqq"), true, level);
            assert!(!unknown.contains("enable server"), "{unknown}");
        }
    }

    #[test]
    fn stat_filters_follow_haproxy_arguments() {
        assert_eq!(parse_stat_filter(&[]), StatFilter::default());
        let f = parse_stat_filter(&["be", "4", "-1"]);
        assert_eq!(f.proxy.as_deref(), Some("be"));
        assert_eq!((f.types, f.sid), (4, None));
        assert_eq!(parse_stat_filter(&["-1", "-1", "2"]).sid, Some(2));
    }
}
