//! The values under a `discover` prefix, as SPEC section 6 lays them out, parsed into
//! [`Member`]s. Nothing here talks to etcd: `etcd` hands keys and values in, and a value that
//! does not parse comes back as a [`ValueError`] saying why, so the caller can log it with
//! its key and keep the member's previous entry.
//!
//! - `native` (a DBaaS backend writes it): `PREFIX/members/NAME` = YAML or JSON
//!   `{host, port, role: primary|replica, weight?, state?: ready|drain|maint, check_port?}`,
//!   `PREFIX/leader` = NAME.
//! - `patroni` (Patroni writes it, PREFIX = `/service/SCOPE`): `PREFIX/leader` = member name,
//!   `PREFIX/members/NAME` = JSON with `conn_url` (`postgres://host:port/db`), `api_url`,
//!   `role` (`master`/`primary`/`replica`/`standby_leader`), `state`, `tags`
//!   (`noloadbalance`, `nofailover`), `xlog_location`. Its other keys (`config`, `history`,
//!   `initialize`, `optime/...`, `status`, `failover`, `sync`) are not about routing.

use std::sync::Arc;

use serde::Deserialize;

use crate::config::{EtcdRole, EtcdState, Schema};

/// The largest value looked at; anything longer is refused unread (no member needs more,
/// and a runaway writer must not make rolelb parse megabytes on every event).
pub const MAX_VALUE: usize = 64 * 1024;

/// One member as etcd describes it (before the leader key is applied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The member's name: the last part of its key, and the server's name (one copy,
    /// shared by every map that holds the member).
    pub name: Arc<str>,
    /// Host name or IP address.
    pub host: String,
    /// The database port.
    pub port: u16,
    /// The role the member itself claims (`role`).
    pub role: EtcdRole,
    /// `weight` (native schema).
    pub weight: Option<u32>,
    /// `state` (native), or what Patroni's `state` and `noloadbalance` tag amount to.
    pub state: EtcdState,
    /// `check_port` (native schema).
    pub check_port: Option<u16>,
}

/// What a key under the prefix is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key<'a> {
    /// `PREFIX/leader`.
    Leader,
    /// `PREFIX/members/NAME`.
    Member(&'a str),
    /// Anything else under the prefix: not about routing.
    Other,
}

/// Classifies `key` under `prefix` (given without its trailing `/`).
pub fn classify<'a>(prefix: &str, key: &'a [u8]) -> Key<'a> {
    let Some(rest) = key
        .strip_prefix(prefix.as_bytes())
        .and_then(|r| r.strip_prefix(b"/"))
    else {
        return Key::Other;
    };
    if rest == b"leader" {
        return Key::Leader;
    }
    match rest.strip_prefix(b"members/") {
        Some(name) if !name.is_empty() && !name.contains(&b'/') => {
            // A name that is not text is still a member key: its value is reported as bad.
            std::str::from_utf8(name).map_or(Key::Member(""), Key::Member)
        }
        _ => Key::Other,
    }
}

/// Why a value was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// Longer than [`MAX_VALUE`].
    #[error("value is {0} bytes, more than the {MAX_VALUE} bytes allowed")]
    TooLarge(usize),
    /// Not UTF-8 text.
    #[error("value is not UTF-8 text")]
    NotText,
    /// The member name cannot be a server name.
    #[error("member name {0:?} cannot be a server name (letters, digits and - _ . : only)")]
    BadName(String),
    /// Not valid JSON (patroni) or YAML/JSON (native).
    #[error("not valid {format}: {detail}")]
    Syntax {
        /// `JSON` or `YAML or JSON`.
        format: &'static str,
        /// The parser's message.
        detail: String,
    },
    /// A field is missing or has a value that makes no sense.
    #[error("{0}")]
    Field(String),
}

/// Parses the value of `PREFIX/members/NAME`.
pub fn parse_member(schema: Schema, name: &str, value: &[u8]) -> Result<Member, ValueError> {
    if !valid_name(name) {
        return Err(ValueError::BadName(name.to_owned()));
    }
    let text = text(value)?;
    match schema {
        Schema::Native => native(name, text),
        Schema::Patroni => patroni(name, text),
    }
}

/// Parses the value of `PREFIX/leader`: a member name (surrounding blanks ignored).
pub fn parse_leader(value: &[u8]) -> Result<String, ValueError> {
    let name = text(value)?.trim();
    if !valid_name(name) {
        return Err(ValueError::BadName(name.to_owned()));
    }
    Ok(name.to_owned())
}

/// Whether `name` is usable as a server name (the characters HAProxy allows).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
}

fn text(value: &[u8]) -> Result<&str, ValueError> {
    if value.len() > MAX_VALUE {
        return Err(ValueError::TooLarge(value.len()));
    }
    std::str::from_utf8(value).map_err(|_| ValueError::NotText)
}

/// The native schema's value. Numbers are read wide so that an out-of-range one is reported
/// as such rather than as a type error; unknown fields are ignored (newer writers may add some).
#[derive(Debug, Deserialize)]
struct NativeValue {
    host: Option<String>,
    port: Option<i64>,
    role: Option<String>,
    weight: Option<i64>,
    state: Option<String>,
    check_port: Option<i64>,
}

fn native(name: &str, text: &str) -> Result<Member, ValueError> {
    if text.trim().is_empty() {
        return Err(field("the value is empty"));
    }
    // JSON is tried first for its clearer messages, then YAML (which also reads flow
    // mappings such as `{host: db1, port: 5432}`); a value that looks like JSON and is
    // neither gets the JSON message.
    let json = serde_json::from_str::<NativeValue>(text);
    let v = match json {
        Ok(v) => v,
        Err(json_error) => match serde_yaml_ng::from_str::<NativeValue>(text) {
            Ok(v) => v,
            Err(_) if text.trim_start().starts_with('{') => {
                return Err(ValueError::Syntax {
                    format: "JSON",
                    detail: json_error.to_string(),
                });
            }
            Err(yaml_error) => {
                return Err(ValueError::Syntax {
                    format: "YAML or JSON",
                    detail: yaml_error.to_string(),
                });
            }
        },
    };
    let host = host(v.host.as_deref())?;
    let port = in_range("port", v.port)?.ok_or_else(|| field("missing 'port'"))?;
    let role = match v.role.as_deref() {
        Some("primary") => EtcdRole::Primary,
        Some("replica") => EtcdRole::Replica,
        Some(other) => {
            return Err(field(format!(
                "unknown role {other:?} (use primary or replica)"
            )));
        }
        None => return Err(field("missing 'role' (primary or replica)")),
    };
    let weight = match v.weight {
        None => None,
        Some(w @ 0..=256) => u32::try_from(w).ok(),
        Some(w) => return Err(field(format!("weight {w} is out of range 0-256"))),
    };
    let state = match v.state.as_deref() {
        None | Some("ready") => EtcdState::Ready,
        Some("drain") => EtcdState::Drain,
        Some("maint") => EtcdState::Maint,
        Some(other) => {
            return Err(field(format!(
                "unknown state {other:?} (use ready, drain or maint)"
            )));
        }
    };
    Ok(Member {
        name: name.into(),
        host,
        port,
        role,
        weight,
        state,
        check_port: in_range("check_port", v.check_port)?,
    })
}

/// Patroni's member value (the fields rolelb uses; the rest is ignored).
#[derive(Debug, Deserialize)]
struct PatroniValue {
    conn_url: Option<String>,
    role: Option<String>,
    state: Option<String>,
    #[serde(default)]
    tags: PatroniTags,
}

#[derive(Debug, Default, Deserialize)]
struct PatroniTags {
    #[serde(default)]
    noloadbalance: bool,
}

fn patroni(name: &str, text: &str) -> Result<Member, ValueError> {
    let v: PatroniValue = serde_json::from_str(text).map_err(|e| ValueError::Syntax {
        format: "JSON",
        detail: e.to_string(),
    })?;
    let url = v
        .conn_url
        .as_deref()
        .ok_or_else(|| field("missing 'conn_url'"))?;
    let (host, port) = conn_url(url)?;
    // Only the leader of the primary cluster takes writes; a standby cluster's leader is
    // itself read-only, so it counts as a replica here.
    let role = match v.role.as_deref() {
        Some("master" | "primary") => EtcdRole::Primary,
        _ => EtcdRole::Replica,
    };
    // A member that is not running (starting, stopping, creating a replica...) takes no new
    // connections, nor does a replica tagged `noloadbalance` (as Patroni's `GET /replica`).
    let running = v.state.as_deref().is_none_or(|s| s == "running");
    let state = if !running || (v.tags.noloadbalance && role == EtcdRole::Replica) {
        EtcdState::Drain
    } else {
        EtcdState::Ready
    };
    Ok(Member {
        name: name.into(),
        host,
        port,
        role,
        weight: None,
        state,
        check_port: None,
    })
}

/// `postgres://[user[:password]@]host[:port][/db][?params]` → host and port (default 5432).
fn conn_url(url: &str) -> Result<(String, u16), ValueError> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .ok_or_else(|| field("'conn_url' is not a postgres:// URL"))?;
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = match hostport.strip_prefix('[') {
        Some(v6) => {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| field("'conn_url' has an unclosed '[' in its host"))?;
            (h, after.strip_prefix(':'))
        }
        None => match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        },
    };
    let port = match port {
        None => 5432,
        Some(p) => {
            let n: i64 = p
                .parse()
                .map_err(|_| field(format!("'conn_url' port {p:?} is not a number")))?;
            in_range("conn_url port", Some(n))?.unwrap_or(5432)
        }
    };
    Ok((self::host(Some(host))?, port))
}

fn host(host: Option<&str>) -> Result<String, ValueError> {
    match host.map(str::trim) {
        None => Err(field("missing 'host'")),
        Some("") => Err(field("'host' is empty")),
        Some(h) if h.contains(char::is_whitespace) => {
            Err(field(format!("host {h:?} contains blanks")))
        }
        Some(h) => Ok(h.trim_start_matches('[').trim_end_matches(']').to_owned()),
    }
}

fn in_range(what: &str, n: Option<i64>) -> Result<Option<u16>, ValueError> {
    match n {
        None => Ok(None),
        Some(p @ 1..=65535) => Ok(u16::try_from(p).ok()),
        Some(p) => Err(field(format!("{what} {p} is out of range 1-65535"))),
    }
}

fn field(message: impl Into<String>) -> ValueError {
    ValueError::Field(message.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn native(value: &str) -> Result<Member, ValueError> {
        parse_member(Schema::Native, "pg1", value.as_bytes())
    }

    fn patroni(value: &str) -> Result<Member, ValueError> {
        parse_member(Schema::Patroni, "pg1", value.as_bytes())
    }

    fn error(r: Result<Member, ValueError>) -> String {
        r.expect_err("expected a bad value").to_string()
    }

    #[test]
    fn keys_under_the_prefix() {
        let p = "/db/pg";
        assert_eq!(classify(p, b"/db/pg/leader"), Key::Leader);
        assert_eq!(classify(p, b"/db/pg/members/pg1"), Key::Member("pg1"));
        assert_eq!(classify(p, b"/db/pg/members/"), Key::Other);
        assert_eq!(classify(p, b"/db/pg/members/a/b"), Key::Other);
        assert_eq!(classify(p, b"/db/pg/config"), Key::Other);
        assert_eq!(classify(p, b"/db/pg/optime/leader"), Key::Other);
        assert_eq!(classify(p, b"/db/pg2/leader"), Key::Other);
        assert_eq!(classify(p, b"/db/pgleader"), Key::Other);
        assert_eq!(classify(p, b"/db/pg/members/\xff"), Key::Member(""));
    }

    #[test]
    fn native_json_and_yaml() {
        let want = Member {
            name: "pg1".into(),
            host: "10.0.0.1".into(),
            port: 6432,
            role: EtcdRole::Primary,
            weight: Some(50),
            state: EtcdState::Drain,
            check_port: Some(5432),
        };
        let json = r#"{"host": "10.0.0.1", "port": 6432, "role": "primary", "weight": 50,
                       "state": "drain", "check_port": 5432, "zone": "a"}"#;
        assert_eq!(native(json), Ok(want.clone()));
        let yaml = "host: 10.0.0.1\nport: 6432\nrole: primary\nweight: 50\nstate: drain\ncheck_port: 5432\n";
        assert_eq!(native(yaml), Ok(want));
        let m = native("{host: db1.example, port: 5432, role: replica}").unwrap();
        assert_eq!(
            (m.host.as_str(), m.role, m.weight, m.state, m.check_port),
            (
                "db1.example",
                EtcdRole::Replica,
                None,
                EtcdState::Ready,
                None
            )
        );
        assert_eq!(
            native("host: '::1'\nport: 1\nrole: replica").unwrap().host,
            "::1"
        );
    }

    #[test]
    fn native_malformed_values() {
        assert!(error(native(r#"{"host": "h", "port": 1,"#)).starts_with("not valid JSON"));
        assert!(error(native("host: [unclosed\nport: 1")).starts_with("not valid YAML or JSON"));
        assert!(error(native("just a string")).starts_with("not valid YAML or JSON"));
        assert_eq!(error(native(" \n")), "the value is empty");
        assert_eq!(
            error(native(r#"{"port": 1, "role": "primary"}"#)),
            "missing 'host'"
        );
        assert_eq!(
            error(native(r#"{"host": " ", "port": 1, "role": "primary"}"#)),
            "'host' is empty"
        );
        assert_eq!(
            error(native(r#"{"host": "h", "role": "primary"}"#)),
            "missing 'port'"
        );
        assert_eq!(
            error(native(r#"{"host": "h", "port": 70000, "role": "primary"}"#)),
            "port 70000 is out of range 1-65535"
        );
        assert_eq!(
            error(native(r#"{"host": "h", "port": 0, "role": "primary"}"#)),
            "port 0 is out of range 1-65535"
        );
        assert!(
            error(native(
                r#"{"host": "h", "port": "5432", "role": "primary"}"#
            ))
            .contains("invalid type")
        );
        assert!(
            error(native(r#"{"host": "h", "port": 1e3, "role": "primary"}"#))
                .starts_with("not valid JSON")
        );
        assert_eq!(
            error(native(r#"{"host": "h", "port": 1, "role": "master"}"#)),
            "unknown role \"master\" (use primary or replica)"
        );
        assert!(error(native(r#"{"host": "h", "port": 1}"#)).starts_with("missing 'role'"));
        assert_eq!(
            error(native(
                r#"{"host": "h", "port": 1, "role": "replica", "weight": 300}"#
            )),
            "weight 300 is out of range 0-256"
        );
        assert!(
            error(native(
                r#"{"host": "h", "port": 1, "role": "replica", "state": "up"}"#
            ))
            .starts_with("unknown state")
        );
        assert_eq!(
            error(native(
                r#"{"host": "h", "port": 1, "role": "replica", "check_port": -1}"#
            )),
            "check_port -1 is out of range 1-65535"
        );
        let huge = format!(
            r#"{{"host": "h", "port": 1, "role": "replica", "pad": "{}"}}"#,
            "x".repeat(100_000)
        );
        assert_eq!(native(&huge), Err(ValueError::TooLarge(huge.len())));
        assert_eq!(
            parse_member(Schema::Native, "pg1", b"\xff\xfe"),
            Err(ValueError::NotText)
        );
        assert!(matches!(
            parse_member(Schema::Native, "a b", b"{}"),
            Err(ValueError::BadName(_))
        ));
        assert!(matches!(
            parse_member(Schema::Native, "", b"{}"),
            Err(ValueError::BadName(_))
        ));
    }

    #[test]
    fn patroni_members() {
        let v = r#"{"conn_url": "postgres://10.0.0.2:5433/postgres", "api_url": "http://10.0.0.2:8008/patroni",
                    "state": "running", "role": "replica", "version": "3.0.2", "xlog_location": 50331968,
                    "tags": {"nofailover": true}}"#;
        let m = patroni(v).unwrap();
        assert_eq!(
            (m.host.as_str(), m.port, m.role, m.state, m.weight),
            ("10.0.0.2", 5433, EtcdRole::Replica, EtcdState::Ready, None)
        );
        for role in ["master", "primary"] {
            let v = format!(
                r#"{{"conn_url": "postgres://h/postgres", "role": "{role}", "state": "running"}}"#
            );
            let m = patroni(&v).unwrap();
            assert_eq!((m.role, m.port), (EtcdRole::Primary, 5432));
        }
        let v = r#"{"conn_url": "postgresql://u:p@[::1]:6000", "role": "standby_leader", "state": "running"}"#;
        let m = patroni(v).unwrap();
        assert_eq!(
            (m.host.as_str(), m.port, m.role),
            ("::1", 6000, EtcdRole::Replica)
        );
        // Not running, or a replica that must not take load: drained.
        let v = r#"{"conn_url": "postgres://h:1/d", "role": "replica", "state": "starting"}"#;
        assert_eq!(patroni(v).unwrap().state, EtcdState::Drain);
        let v = r#"{"conn_url": "postgres://h:1/d", "role": "replica", "state": "running", "tags": {"noloadbalance": true}}"#;
        assert_eq!(patroni(v).unwrap().state, EtcdState::Drain);
        let v = r#"{"conn_url": "postgres://h:1/d", "role": "master", "state": "running", "tags": {"noloadbalance": true}}"#;
        assert_eq!(patroni(v).unwrap().state, EtcdState::Ready);
    }

    #[test]
    fn patroni_malformed_values() {
        assert!(error(patroni("role: master")).starts_with("not valid JSON"));
        assert_eq!(
            error(patroni(r#"{"role": "master"}"#)),
            "missing 'conn_url'"
        );
        assert_eq!(
            error(patroni(r#"{"conn_url": "mysql://h:1/d"}"#)),
            "'conn_url' is not a postgres:// URL"
        );
        assert_eq!(
            error(patroni(r#"{"conn_url": "postgres://h:70000/d"}"#)),
            "conn_url port 70000 is out of range 1-65535"
        );
        assert!(error(patroni(r#"{"conn_url": "postgres://h:x/d"}"#)).contains("is not a number"));
        assert_eq!(
            error(patroni(r#"{"conn_url": "postgres://:1/d"}"#)),
            "'host' is empty"
        );
        assert!(error(patroni(r#"{"conn_url": "postgres://[::1/d"}"#)).contains("unclosed"));
        assert!(
            error(patroni(r#"{"conn_url": "postgres://h/d", "tags": "x"}"#))
                .starts_with("not valid JSON")
        );
    }

    #[test]
    fn leader_values() {
        assert_eq!(parse_leader(b"pg2\n").as_deref(), Ok("pg2"));
        assert!(matches!(parse_leader(b""), Err(ValueError::BadName(_))));
        assert!(matches!(parse_leader(b"a/b"), Err(ValueError::BadName(_))));
        assert_eq!(
            parse_leader(&vec![b'a'; MAX_VALUE + 1]),
            Err(ValueError::TooLarge(MAX_VALUE + 1))
        );
    }
}
