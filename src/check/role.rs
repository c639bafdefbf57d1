//! Role checks: ask the database itself whether it is the primary, and how far a replica
//! lags. The queries and the reading of their answers are `rolelb_roles`' (shared with
//! rolelb-agent): PostgreSQL's `pg_is_in_recovery()` with the replay lag in bytes and time,
//! MySQL/MariaDB's `read_only` / `super_read_only` and `Seconds_Behind_Master`. This file owns
//! the connections and the classification of what went wrong.
//!
//! The probe keeps its connection open between checks and reopens it after any error. The
//! TCP connection is made here, before the driver's handshake, so that "could not reach the
//! port", "connection refused", "the database refused us" and "the answer was garbage or
//! hung" stay four different [`RoleProblem`]s.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use rolelb_roles::{Reading, Role, mysql as mysql_roles, pgsql as pg_roles};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

use crate::config::RoleCheck;
use crate::table::{NodeRole, RoleProblem};

/// What a role check found: the role and, on a replica, the lag.
pub type RoleReport = Reading;

/// rolelb's role for a role the database reported.
pub fn node_role(role: Role) -> NodeRole {
    match role {
        Role::Primary => NodeRole::Primary,
        Role::Replica => NodeRole::Replica,
    }
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
async fn dial(
    addr: SocketAddr,
    limit: Duration,
    source: Option<&crate::config::model::Source>,
) -> Result<TcpStream, RoleFailure> {
    match timeout(
        limit,
        crate::proxy::connect::connect_nonblocking(addr, false, source),
    )
    .await
    {
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

/// Writes the PROXY header a health check would send (see
/// [`crate::proxy::proxy_protocol::check_header`]) within `limit`.
async fn send_proxy_header(
    stream: &mut TcpStream,
    version: crate::config::ProxyProtocol,
    addr: SocketAddr,
    limit: Duration,
) -> Result<(), RoleFailure> {
    use tokio::io::AsyncWriteExt;
    let local = stream
        .local_addr()
        .map_err(|e| RoleFailure::new(io_problem(&e), format!("{addr}: {e}")))?;
    let header = crate::proxy::proxy_protocol::check_header(version, local, addr);
    match timeout(limit, stream.write_all(&header)).await {
        Err(_) => Err(RoleFailure::new(
            RoleProblem::Unreachable,
            format!(
                "{addr}: the PROXY header not sent within {}ms",
                limit.as_millis()
            ),
        )),
        Ok(Err(e)) => Err(RoleFailure::new(io_problem(&e), format!("{addr}: {e}"))),
        Ok(Ok(())) => Ok(()),
    }
}

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
    /// The PROXY header sent first, as the server's health checks send it.
    proxy_header: Option<crate::config::ProxyProtocol>,
    /// The server's `source`.
    source: Option<crate::config::model::Source>,
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
            proxy_header: None,
            source: None,
        }
    }

    async fn connect(&mut self, limits: Limits) -> Result<(), RoleFailure> {
        let mut stream = dial(self.addr, limits.connect, self.source.as_ref()).await?;
        if let Some(version) = self.proxy_header {
            send_proxy_header(&mut stream, version, self.addr, limits.connect).await?;
        }
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
        let row = match timeout(limits.answer, client.query_one(pg_roles::ROLE_SQL, &[])).await {
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
        let parsed = pg_roles::from_row(&row);
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

/// A MySQL/MariaDB role probe with its kept-open connection.
pub struct MysqlProbe {
    addr: SocketAddr,
    opts: mysql_async::Opts,
    conn: Option<mysql_async::Conn>,
    query: mysql_roles::RoleQuery,
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
            query: mysql_roles::RoleQuery::default(),
        }
    }

    async fn probe(&mut self, limits: Limits) -> Result<RoleReport, RoleFailure> {
        if self.conn.is_none() {
            // Our own dial first tells "unreachable" and "refused" apart from the handshake.
            drop(dial(self.addr, limits.connect, None).await?);
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
        let result = match timeout(limits.answer, self.query.read(conn)).await {
            Err(_) => Err(RoleFailure::new(
                RoleProblem::BadAnswer,
                format!(
                    "role query unanswered within {}ms",
                    limits.answer.as_millis()
                ),
            )),
            Ok(Err(mysql_roles::QueryError::Driver(e))) => Err(mysql_failure(&e)),
            Ok(Err(mysql_roles::QueryError::Answer(why))) => {
                Err(RoleFailure::new(RoleProblem::BadAnswer, why))
            }
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
    /// the role from the agent's reply instead). `proxy_header`: the PROXY header the
    /// server's health checks send first; a PostgreSQL probe sends it too, and connects from
    /// `source` (the MySQL client opens its own connection and can do neither: the
    /// configuration warns about it).
    pub fn new(
        check: &RoleCheck,
        addr: SocketAddr,
        proxy_header: Option<crate::config::ProxyProtocol>,
        source: Option<crate::config::model::Source>,
    ) -> Option<Probe> {
        match check {
            RoleCheck::Pgsql {
                user,
                password,
                database,
            } => {
                let mut probe = PgProbe::new(addr, user, password.as_deref(), database.as_deref());
                probe.proxy_header = proxy_header;
                probe.source = source;
                Some(Probe::Pgsql(Box::new(probe)))
            }
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
/// agent-check reply (`role-check agent`), as rolelb-agent writes it.
pub use rolelb_roles::description::parse as from_agent_description;

#[cfg(test)]
mod tests {
    use super::*;

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
