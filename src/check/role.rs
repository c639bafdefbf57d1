//! Role checks: ask the database itself whether it is the primary, and how far a replica
//! lags. PostgreSQL: `pg_is_in_recovery()` with the replay lag in bytes
//! (`pg_last_wal_receive_lsn()` vs `pg_last_wal_replay_lsn()`) and seconds; MySQL/MariaDB:
//! `@@global.read_only` / `@@global.super_read_only` and `Seconds_Behind_Master`.
//!
//! The probe keeps its connection open between checks and reopens it after any error. The
//! TCP connection is made here, before the driver's handshake, so that "could not reach the
//! port", "connection refused", "the database refused us" and "the answer was garbage or
//! hung" stay four different [`RoleProblem`]s.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

use crate::config::RoleCheck;
use crate::table::{NodeRole, RoleProblem};

/// What a role check found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoleReport {
    /// Primary or replica.
    pub role: NodeRole,
    /// Replay lag in bytes (0 on a primary); `None` = unknown.
    pub lag_bytes: Option<u64>,
    /// Replay lag in time (0 on a primary or a caught-up replica); `None` = unknown.
    pub lag: Option<Duration>,
}

/// Why a role check gave no role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleFailure {
    /// The kind of failure.
    pub problem: RoleProblem,
    /// The driver's or the system's words.
    pub detail: String,
}

impl RoleFailure {
    fn new(problem: RoleProblem, detail: impl Into<String>) -> RoleFailure {
        RoleFailure {
            problem,
            detail: detail.into(),
        }
    }
}

/// Limits of one role check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// For the TCP connection.
    pub connect: Duration,
    /// For the handshake and the query.
    pub answer: Duration,
}

fn io_problem(e: &io::Error) -> RoleProblem {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => RoleProblem::Refused,
        io::ErrorKind::TimedOut
        | io::ErrorKind::HostUnreachable
        | io::ErrorKind::NetworkUnreachable
        | io::ErrorKind::AddrNotAvailable => RoleProblem::Unreachable,
        _ => RoleProblem::BadAnswer,
    }
}

/// Opens the TCP connection, classifying failures.
async fn dial(addr: SocketAddr, limit: Duration) -> Result<TcpStream, RoleFailure> {
    match timeout(limit, TcpStream::connect(addr)).await {
        Err(_) => Err(RoleFailure::new(
            RoleProblem::Unreachable,
            format!("no TCP connection to {addr} within {}ms", limit.as_millis()),
        )),
        Ok(Err(e)) => Err(RoleFailure::new(io_problem(&e), format!("{addr}: {e}"))),
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
    }
}

/// The one query a PostgreSQL role check runs: role, lag in bytes, lag in seconds.
const PG_ROLE_SQL: &str = "SELECT pg_is_in_recovery(), \
    CASE WHEN pg_is_in_recovery() \
         THEN pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::bigint END, \
    CASE WHEN NOT pg_is_in_recovery() THEN NULL \
         WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0::float8 \
         ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8 END";

fn pg_failure(e: &tokio_postgres::Error) -> RoleFailure {
    if let Some(db) = e.as_db_error() {
        return RoleFailure::new(
            RoleProblem::Rejected,
            format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        );
    }
    let io = std::error::Error::source(e).and_then(|s| s.downcast_ref::<io::Error>());
    match io {
        Some(io) => RoleFailure::new(io_problem(io), e.to_string()),
        None => RoleFailure::new(RoleProblem::BadAnswer, e.to_string()),
    }
}

/// A PostgreSQL role probe with its kept-open connection.
pub struct PgProbe {
    addr: SocketAddr,
    config: tokio_postgres::Config,
    client: Option<tokio_postgres::Client>,
}

impl PgProbe {
    fn new(
        addr: SocketAddr,
        user: &str,
        password: Option<&str>,
        database: Option<&str>,
    ) -> PgProbe {
        let mut config = tokio_postgres::Config::new();
        config
            .user(user)
            .dbname(database.unwrap_or(user))
            .application_name("rolelb role-check");
        if let Some(p) = password {
            config.password(p);
        }
        PgProbe {
            addr,
            config,
            client: None,
        }
    }

    async fn connect(&mut self, limits: Limits) -> Result<(), RoleFailure> {
        let stream = dial(self.addr, limits.connect).await?;
        let (client, connection) = match timeout(
            limits.answer,
            self.config.connect_raw(stream, tokio_postgres::NoTls),
        )
        .await
        {
            Err(_) => {
                return Err(RoleFailure::new(
                    RoleProblem::BadAnswer,
                    format!(
                        "no PostgreSQL handshake from {} within {}ms",
                        self.addr,
                        limits.answer.as_millis()
                    ),
                ));
            }
            Ok(Err(e)) => return Err(pg_failure(&e)),
            Ok(Ok(pair)) => pair,
        };
        // The connection task ends when the client is dropped or the socket fails.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        self.client = Some(client);
        Ok(())
    }

    async fn probe(&mut self, limits: Limits) -> Result<RoleReport, RoleFailure> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.connect(limits).await?;
        }
        let Some(client) = &self.client else {
            return Err(RoleFailure::new(RoleProblem::BadAnswer, "no connection"));
        };
        let row = match timeout(limits.answer, client.query_one(PG_ROLE_SQL, &[])).await {
            Err(_) => Err(RoleFailure::new(
                RoleProblem::BadAnswer,
                format!(
                    "role query unanswered within {}ms",
                    limits.answer.as_millis()
                ),
            )),
            Ok(Err(e)) => Err(pg_failure(&e)),
            Ok(Ok(row)) => Ok(row),
        };
        let row = row.inspect_err(|_| self.client = None)?;
        let parsed = (|| -> Result<RoleReport, tokio_postgres::Error> {
            let in_recovery: bool = row.try_get(0)?;
            let lag_bytes: Option<i64> = row.try_get(1)?;
            let lag_secs: Option<f64> = row.try_get(2)?;
            Ok(if in_recovery {
                RoleReport {
                    role: NodeRole::Replica,
                    lag_bytes: lag_bytes.map(|b| u64::try_from(b).unwrap_or(0)),
                    lag: lag_secs.and_then(|s| Duration::try_from_secs_f64(s.max(0.0)).ok()),
                }
            } else {
                RoleReport {
                    role: NodeRole::Primary,
                    lag_bytes: Some(0),
                    lag: Some(Duration::ZERO),
                }
            })
        })();
        parsed.map_err(|e| {
            self.client = None;
            RoleFailure::new(
                RoleProblem::BadAnswer,
                format!("unexpected role query result: {e}"),
            )
        })
    }
}

fn mysql_failure(e: &mysql_async::Error) -> RoleFailure {
    match e {
        mysql_async::Error::Server(s) => RoleFailure::new(
            RoleProblem::Rejected,
            format!("ERROR {} ({}): {}", s.code, s.state, s.message),
        ),
        mysql_async::Error::Io(mysql_async::IoError::Io(io)) => {
            RoleFailure::new(io_problem(io), e.to_string())
        }
        other => RoleFailure::new(RoleProblem::BadAnswer, other.to_string()),
    }
}

/// MySQL's error for `@@super_read_only` on servers without it (MariaDB).
const ER_UNKNOWN_SYSTEM_VARIABLE: u16 = 1193;
/// MySQL's syntax error (`SHOW REPLICA STATUS` on older servers).
const ER_PARSE_ERROR: u16 = 1064;

/// A MySQL/MariaDB role probe with its kept-open connection.
pub struct MysqlProbe {
    addr: SocketAddr,
    opts: mysql_async::Opts,
    conn: Option<mysql_async::Conn>,
}

impl MysqlProbe {
    fn new(addr: SocketAddr, user: &str, password: Option<&str>) -> MysqlProbe {
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname(addr.ip().to_string())
            .tcp_port(addr.port())
            .user(Some(user))
            .pass(password)
            .prefer_socket(false)
            .stmt_cache_size(0);
        MysqlProbe {
            addr,
            opts: opts.into(),
            conn: None,
        }
    }

    async fn query(conn: &mut mysql_async::Conn) -> Result<RoleReport, mysql_async::Error> {
        let read_only: Option<i64> = conn.query_first("SELECT @@global.read_only").await?;
        let super_read_only: Option<i64> =
            match conn.query_first("SELECT @@global.super_read_only").await {
                Ok(v) => v,
                Err(mysql_async::Error::Server(s)) if s.code == ER_UNKNOWN_SYSTEM_VARIABLE => None,
                Err(e) => return Err(e),
            };
        let replica = read_only.unwrap_or(0) != 0 || super_read_only.unwrap_or(0) != 0;
        if !replica {
            return Ok(RoleReport {
                role: NodeRole::Primary,
                lag_bytes: Some(0),
                lag: Some(Duration::ZERO),
            });
        }
        let rows: Vec<mysql_async::Row> = match conn.query("SHOW REPLICA STATUS").await {
            Ok(rows) => rows,
            Err(mysql_async::Error::Server(s)) if s.code == ER_PARSE_ERROR => {
                conn.query("SHOW SLAVE STATUS").await?
            }
            Err(e) => return Err(e),
        };
        // No replication configured, or the SQL thread stopped (NULL): the lag is unknown.
        let lag = rows.first().and_then(|row| {
            ["Seconds_Behind_Master", "Seconds_Behind_Source"]
                .iter()
                .find_map(|col| {
                    row.get_opt::<Option<u64>, _>(*col)
                        .and_then(Result::ok)
                        .flatten()
                })
        });
        Ok(RoleReport {
            role: NodeRole::Replica,
            lag_bytes: None,
            lag: lag.map(Duration::from_secs),
        })
    }

    async fn probe(&mut self, limits: Limits) -> Result<RoleReport, RoleFailure> {
        if self.conn.is_none() {
            // Our own dial first tells "unreachable" and "refused" apart from the handshake.
            drop(dial(self.addr, limits.connect).await?);
            let conn = match timeout(limits.answer, mysql_async::Conn::new(self.opts.clone())).await
            {
                Err(_) => {
                    return Err(RoleFailure::new(
                        RoleProblem::BadAnswer,
                        format!(
                            "no MySQL handshake from {} within {}ms",
                            self.addr,
                            limits.answer.as_millis()
                        ),
                    ));
                }
                Ok(Err(e)) => return Err(mysql_failure(&e)),
                Ok(Ok(c)) => c,
            };
            self.conn = Some(conn);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(RoleFailure::new(RoleProblem::BadAnswer, "no connection"));
        };
        let result = match timeout(limits.answer, MysqlProbe::query(conn)).await {
            Err(_) => Err(RoleFailure::new(
                RoleProblem::BadAnswer,
                format!(
                    "role query unanswered within {}ms",
                    limits.answer.as_millis()
                ),
            )),
            Ok(Err(e)) => Err(mysql_failure(&e)),
            Ok(Ok(r)) => Ok(r),
        };
        if result.is_err() {
            // Drop without the polite disconnect: the connection may be wedged.
            self.conn = None;
        }
        result
    }
}

/// A role probe for one server.
pub enum Probe {
    /// `role-check pgsql`.
    Pgsql(Box<PgProbe>),
    /// `role-check mysql`.
    Mysql(MysqlProbe),
}

impl Probe {
    /// The probe for `check` at `addr`; `None` for `role-check agent` (the agent loop reads
    /// the role from the agent's reply instead).
    pub fn new(check: &RoleCheck, addr: SocketAddr) -> Option<Probe> {
        match check {
            RoleCheck::Pgsql {
                user,
                password,
                database,
            } => Some(Probe::Pgsql(Box::new(PgProbe::new(
                addr,
                user,
                password.as_deref(),
                database.as_deref(),
            )))),
            RoleCheck::Mysql { user, password } => Some(Probe::Mysql(MysqlProbe::new(
                addr,
                user,
                password.as_deref(),
            ))),
            RoleCheck::Agent => None,
        }
    }

    /// Runs one role check; returns the report and how long it took.
    pub async fn probe(&mut self, limits: Limits) -> (Result<RoleReport, RoleFailure>, Duration) {
        let started = Instant::now();
        let result = match self {
            Probe::Pgsql(p) => p.probe(limits).await,
            Probe::Mysql(p) => p.probe(limits).await,
        };
        (result, started.elapsed())
    }
}

/// Reads `role=primary|replica lag=BYTES lag_s=SECONDS` from the text after `#` in an
/// agent-check reply (`role-check agent`). Words it does not know are ignored; a missing or
/// unknown role is an error.
pub fn from_agent_description(text: &str) -> Result<RoleReport, String> {
    let mut role = None;
    let mut lag_bytes = None;
    let mut lag = None;
    for word in text.split([' ', '\t', ',']).filter(|w| !w.is_empty()) {
        let Some((key, value)) = word.split_once('=') else {
            continue;
        };
        match key.to_ascii_lowercase().as_str() {
            "role" => {
                role = Some(match value.to_ascii_lowercase().as_str() {
                    "primary" | "master" => NodeRole::Primary,
                    "replica" | "standby" | "slave" => NodeRole::Replica,
                    other => return Err(format!("unknown role '{other}' in agent reply")),
                })
            }
            "lag" => lag_bytes = value.parse::<u64>().ok(),
            "lag_s" => {
                lag = value
                    .parse::<f64>()
                    .ok()
                    .and_then(|s| Duration::try_from_secs_f64(s.max(0.0)).ok())
            }
            _ => {}
        }
    }
    let role = role.ok_or_else(|| "agent reply has no #role= word".to_owned())?;
    Ok(match role {
        NodeRole::Primary => RoleReport {
            role,
            lag_bytes: Some(0),
            lag: Some(Duration::ZERO),
        },
        _ => RoleReport {
            role,
            lag_bytes,
            lag,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_description_gives_role_and_lag() {
        let r = from_agent_description("role=replica lag=4096 lag_s=1.5").expect("parses");
        assert_eq!(r.role, NodeRole::Replica);
        assert_eq!(r.lag_bytes, Some(4096));
        assert_eq!(r.lag, Some(Duration::from_millis(1500)));
        let p = from_agent_description("role=primary lag=0").expect("parses");
        assert_eq!((p.role, p.lag_bytes), (NodeRole::Primary, Some(0)));
        let unknown_lag = from_agent_description("role=replica lag=unknown").expect("parses");
        assert_eq!(
            unknown_lag.lag_bytes, None,
            "unparseable lag is unknown, not zero"
        );
    }

    #[test]
    fn agent_description_without_a_known_role_is_an_error() {
        assert!(from_agent_description("lag=0").is_err());
        assert!(from_agent_description("role=leader").is_err());
        assert!(from_agent_description("").is_err());
    }

    #[test]
    fn io_errors_keep_refused_and_unreachable_apart() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        let timeout = io::Error::from(io::ErrorKind::TimedOut);
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(io_problem(&refused), RoleProblem::Refused);
        assert_eq!(io_problem(&timeout), RoleProblem::Unreachable);
        assert_eq!(io_problem(&reset), RoleProblem::BadAnswer);
    }
}
