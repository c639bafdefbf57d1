//! The agent's YAML config (`agent.yaml`): text in, a validated [`Config`] out.
//!
//! Parsing is serde over a maintained serde_yaml fork; unknown keys are errors, and every
//! error names the file and the line (serde's error location, or the line of the key a
//! cross-field check rejects). Units are read by [`crate::units`]. Nothing here touches the
//! network or the database.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::units::{self, LagLimit};

/// Where the agent looks for its config when `-f` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/rolelb/agent.yaml";
/// Where the admin state is kept when `state_file` is not set (systemd's `StateDirectory`).
pub const DEFAULT_STATE_FILE: &str = "/var/lib/rolelb-agent/state";

/// A config file that could not be read or is not valid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// The YAML is malformed, has an unknown key, or a value is invalid.
    #[error("{path}:{line}: {message}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// 1-based line of the offending value (0 when the parser gave none).
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// Which database the agent polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DbKind {
    /// PostgreSQL (tokio-postgres): `pg_is_in_recovery()` and WAL replay lag.
    Postgres,
    /// MySQL or MariaDB (mysql_async): `read_only` and `Seconds_Behind_Master`.
    Mysql,
}

impl DbKind {
    /// The server's usual port, used when `database.port` is omitted.
    pub fn default_port(self) -> u16 {
        match self {
            DbKind::Postgres => 5432,
            DbKind::Mysql => 3306,
        }
    }
}

impl fmt::Display for DbKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DbKind::Postgres => "postgres",
            DbKind::Mysql => "mysql",
        })
    }
}

/// How to reach the local database.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Database {
    /// postgres or mysql.
    pub kind: DbKind,
    /// Host name or address; a path starting with `/` is a Unix socket (directory for
    /// PostgreSQL, socket file for MySQL). Default 127.0.0.1.
    #[serde(default = "default_host")]
    pub host: String,
    /// TCP port; default 5432 or 3306 by `kind`.
    #[serde(default)]
    pub port: Option<u16>,
    /// The user the agent logs in as (it only reads status).
    pub user: String,
    /// The password, if the server asks for one.
    #[serde(default)]
    pub password: Option<String>,
    /// The database to connect to (PostgreSQL default: the user's name).
    #[serde(default)]
    pub dbname: Option<String>,
}

impl Database {
    /// The port to connect to.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or_else(|| self.kind.default_port())
    }

    /// `host:port` (or the socket path), for logs and reasons.
    pub fn target(&self) -> String {
        if self.host.starts_with('/') {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port())
        }
    }
}

fn default_host() -> String {
    "127.0.0.1".to_string()
}

/// The agent's two listeners.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// HAProxy agent-check protocol (one line, then close).
    pub agent: SocketAddr,
    /// Patroni-compatible HTTP endpoints.
    pub http: SocketAddr,
}

/// The raw file, as serde reads it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    database: Database,
    listen: Listen,
    #[serde(default)]
    max_lag: Option<Unit<LagLimit>>,
    #[serde(default)]
    inter: Option<Unit<Duration>>,
    #[serde(default)]
    timeout: Option<Unit<Duration>>,
    #[serde(default)]
    state_file: Option<PathBuf>,
    #[serde(default)]
    agent_send_wait: Option<Unit<Duration>>,
    #[serde(default)]
    max_connections: Option<usize>,
}

/// The validated agent config.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The local database.
    pub database: Database,
    /// Listener addresses.
    pub listen: Listen,
    /// A replica further behind than this is not healthy (`None`: no limit).
    pub max_lag: Option<LagLimit>,
    /// How often the database is polled and the state file re-read.
    pub inter: Duration,
    /// Bound on one poll (connect and queries); past it the node is `down`.
    pub timeout: Duration,
    /// Where `rolelb-agent state` keeps the admin state.
    pub state_file: PathBuf,
    /// How long an agent-check connection waits for an `agent-send` line before answering
    /// with the role-neutral line (0: never wait, ignore what the client sends).
    pub agent_send_wait: Duration,
    /// Connections served at once per listener; more wait in the kernel's backlog.
    pub max_connections: usize,
}

impl Config {
    /// Default `inter`.
    pub const DEFAULT_INTER: Duration = Duration::from_secs(1);
    /// Default `timeout`.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
    /// Default `max_connections`.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 1000;

    /// Reads and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(path, &text)
    }

    /// Validates `text` as the contents of the config file `path` (named in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let invalid = |line: usize, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            line,
            message,
        };
        let raw: RawConfig = serde_yaml_ng::from_str(text).map_err(|e| {
            let line = e.location().map_or(0, |l| l.line());
            invalid(line, strip_location(&e.to_string()))
        })?;
        let value = |u: Option<Unit<Duration>>, default| u.map_or(default, |u| u.0);
        let inter = value(raw.inter, Config::DEFAULT_INTER);
        let timeout = value(raw.timeout, Config::DEFAULT_TIMEOUT);
        if inter.is_zero() {
            return Err(invalid(line_of(text, "inter"), "inter must be > 0".into()));
        }
        if timeout.is_zero() {
            return Err(invalid(
                line_of(text, "timeout"),
                "timeout must be > 0".into(),
            ));
        }
        let max_lag = raw.max_lag.map(|u| u.0);
        if raw.database.kind == DbKind::Mysql && matches!(max_lag, Some(LagLimit::Bytes(_))) {
            return Err(invalid(
                line_of(text, "max_lag"),
                "max_lag in bytes needs PostgreSQL: MySQL reports lag in seconds only (write e.g. 10s)"
                    .into(),
            ));
        }
        let max_connections = raw
            .max_connections
            .unwrap_or(Config::DEFAULT_MAX_CONNECTIONS);
        if max_connections == 0 {
            return Err(invalid(
                line_of(text, "max_connections"),
                "max_connections must be > 0".into(),
            ));
        }
        if raw.listen.agent == raw.listen.http {
            return Err(invalid(
                line_of(text, "http"),
                format!("listen.agent and listen.http are both {}", raw.listen.http),
            ));
        }
        Ok(Config {
            database: raw.database,
            listen: raw.listen,
            max_lag,
            inter,
            timeout,
            state_file: raw
                .state_file
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_FILE)),
            agent_send_wait: value(raw.agent_send_wait, Duration::ZERO),
            max_connections,
        })
    }
}

/// serde_yaml's messages end in " at line L column C"; the line is already in our prefix.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message.to_string(),
    }
}

/// The 1-based line where the mapping key `key` first appears (0 if it does not).
fn line_of(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
        })
        .map_or(0, |i| i + 1)
}

/// A value written with units (`2s`, `16MB`), as a YAML string or a bare number.
#[derive(Debug)]
struct Unit<T>(T);

/// Types that [`Unit`] can read.
trait FromUnit: Sized {
    /// What the field takes, for serde's "invalid type" message.
    const EXPECTING: &'static str;
    /// Reads the value from its text.
    fn from_unit(text: &str) -> Result<Self, units::UnitError>;
}

impl FromUnit for Duration {
    const EXPECTING: &'static str = "a duration such as 500ms or 2s";
    fn from_unit(text: &str) -> Result<Self, units::UnitError> {
        units::parse_duration(text)
    }
}

impl FromUnit for LagLimit {
    const EXPECTING: &'static str = "a size such as 16MB or a duration such as 10s";
    fn from_unit(text: &str) -> Result<Self, units::UnitError> {
        units::parse_lag_limit(text)
    }
}

impl<'de, T: FromUnit> Deserialize<'de> for Unit<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct UnitVisitor<T>(std::marker::PhantomData<T>);
        impl<T: FromUnit> Visitor<'_> for UnitVisitor<T> {
            type Value = Unit<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(T::EXPECTING)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                T::from_unit(v).map(Unit).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                self.visit_str(&v.to_string())
            }
        }
        d.deserialize_any(UnitVisitor(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
database:
  kind: postgres
  host: 127.0.0.1
  port: 5432
  user: rolelb_agent
  password: secret
  dbname: postgres
listen:
  agent: 127.0.0.1:8009
  http: 127.0.0.1:8008
max_lag: 16MB
inter: 1s
timeout: 500ms
state_file: /tmp/agent-state
";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("agent.yaml"), text)
    }

    /// The `file:line: message` text of a rejected config.
    fn error(text: &str) -> String {
        match parse(text) {
            Ok(c) => panic!("accepted: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn full_config_parses() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.database.kind, DbKind::Postgres);
        assert_eq!(c.database.port(), 5432);
        assert_eq!(c.database.password.as_deref(), Some("secret"));
        assert_eq!(c.listen.agent, "127.0.0.1:8009".parse().unwrap());
        assert_eq!(c.max_lag, Some(LagLimit::Bytes(16 << 20)));
        assert_eq!(c.inter, Duration::from_secs(1));
        assert_eq!(c.timeout, Duration::from_millis(500));
        assert_eq!(c.state_file, PathBuf::from("/tmp/agent-state"));
        assert_eq!(c.agent_send_wait, Duration::ZERO);
    }

    #[test]
    fn defaults_fill_optional_keys() {
        let c = parse(
            "database: {kind: mysql, user: agent}\nlisten: {agent: '[::1]:1', http: '[::1]:2'}\n",
        )
        .unwrap();
        assert_eq!(c.database.host, "127.0.0.1");
        assert_eq!(c.database.port(), 3306);
        assert_eq!(c.max_lag, None);
        assert_eq!(c.inter, Config::DEFAULT_INTER);
        assert_eq!(c.timeout, Config::DEFAULT_TIMEOUT);
        assert_eq!(c.state_file, PathBuf::from(DEFAULT_STATE_FILE));
        assert_eq!(c.max_connections, Config::DEFAULT_MAX_CONNECTIONS);
    }

    #[test]
    fn bare_numbers_are_bytes_and_milliseconds() {
        let c = parse(
            &GOOD
                .replace("16MB", "1024")
                .replace("inter: 1s", "inter: 250"),
        )
        .unwrap();
        assert_eq!(c.max_lag, Some(LagLimit::Bytes(1024)));
        assert_eq!(c.inter, Duration::from_millis(250));
        let c = parse(&GOOD.replace("16MB", "10s")).unwrap();
        assert_eq!(c.max_lag, Some(LagLimit::Time(Duration::from_secs(10))));
    }

    #[test]
    fn unknown_key_names_its_line() {
        let e = error(&GOOD.replace("  dbname: postgres", "  dbnmae: postgres"));
        assert!(e.starts_with("agent.yaml:7: "), "{e}");
        assert!(e.contains("unknown field `dbnmae`"), "{e}");
        let e = error(&format!("{GOOD}colour: blue\n"));
        assert!(e.starts_with("agent.yaml:15: "), "{e}");
    }

    #[test]
    fn bad_units_name_their_line() {
        let e = error(&GOOD.replace("inter: 1s", "inter: 1MB"));
        assert!(e.starts_with("agent.yaml:12: "), "{e}");
        assert!(e.contains("expected a duration"), "{e}");
        let e = error(&GOOD.replace("16MB", "16 parsecs"));
        assert!(e.starts_with("agent.yaml:11: "), "{e}");
        assert!(e.contains("unknown unit"), "{e}");
    }

    #[test]
    fn bad_values_name_their_line() {
        let e = error(&GOOD.replace("kind: postgres", "kind: oracle"));
        assert!(e.starts_with("agent.yaml:2: "), "{e}");
        let e = error(&GOOD.replace("127.0.0.1:8008", "localhost-8008"));
        assert!(e.starts_with("agent.yaml:10: "), "{e}");
        let e = error(&GOOD.replace("port: 5432", "port: 99999"));
        assert!(e.starts_with("agent.yaml:4: "), "{e}");
        let e = error(&GOOD.replace("  user: rolelb_agent\n", ""));
        assert!(e.contains("missing field `user`"), "{e}");
        let e = error("database: [\n");
        assert!(e.starts_with("agent.yaml:"), "{e}");
    }

    #[test]
    fn cross_field_checks_name_the_key_line() {
        let e = error(&GOOD.replace("kind: postgres", "kind: mysql"));
        assert!(e.starts_with("agent.yaml:11: max_lag in bytes"), "{e}");
        let e = error(&GOOD.replace("timeout: 500ms", "timeout: 0s"));
        assert!(e.starts_with("agent.yaml:13: timeout must be > 0"), "{e}");
        let e = error(&GOOD.replace("127.0.0.1:8008", "127.0.0.1:8009"));
        assert!(
            e.starts_with("agent.yaml:10: listen.agent and listen.http"),
            "{e}"
        );
    }

    #[test]
    fn shipped_example_is_valid() {
        let text = include_str!("../../conf/agent.yaml");
        parse(text).unwrap();
    }
}
