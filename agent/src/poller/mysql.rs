//! MySQL / MariaDB probe: `read_only` (and `super_read_only` where it exists) give the role,
//! `SHOW REPLICA STATUS` (or `SHOW SLAVE STATUS` on older servers) gives the lag in seconds.
//! MySQL reports no byte lag.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Row, Value};

use super::{Observation, PollError, Probe, error_chain};
use crate::config::Database;
use crate::status::{Lag, Role};

/// Both variables in one query that works on MySQL and on MariaDB, which has no
/// `super_read_only` (asking for it by `@@global.` would be an error there).
const READ_ONLY_SQL: &str =
    "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('read_only', 'super_read_only')";

/// MySQL's "syntax error": an older server without `SHOW REPLICA STATUS`.
const ER_PARSE_ERROR: u16 = 1064;

/// Polls one MySQL or MariaDB server.
pub struct MysqlProbe {
    opts: OptsBuilder,
    target: String,
    conn: Option<Conn>,
    /// `SHOW REPLICA STATUS` or, once that failed as a syntax error, `SHOW SLAVE STATUS`.
    replica_status_sql: &'static str,
}

impl MysqlProbe {
    /// A probe for `db`; connects on the first poll.
    pub fn new(db: &Database) -> MysqlProbe {
        let mut opts = OptsBuilder::default()
            .user(Some(db.user.clone()))
            .pass(db.password.clone())
            .db_name(db.dbname.clone())
            .prefer_socket(false);
        opts = if db.host.starts_with('/') {
            opts.socket(Some(db.host.clone()))
        } else {
            opts.ip_or_hostname(db.host.clone()).tcp_port(db.port())
        };
        MysqlProbe {
            opts,
            target: db.target(),
            conn: None,
            replica_status_sql: "SHOW REPLICA STATUS",
        }
    }

    fn query_err(&self, e: &mysql_async::Error) -> PollError {
        PollError::Query {
            target: self.target.clone(),
            message: error_chain(e),
        }
    }

    /// The replica status rows, falling back to the old statement on a syntax error.
    async fn replica_status(&mut self, conn: &mut Conn) -> Result<Vec<Row>, PollError> {
        match conn.query::<Row, _>(self.replica_status_sql).await {
            Err(mysql_async::Error::Server(e))
                if e.code == ER_PARSE_ERROR && self.replica_status_sql != "SHOW SLAVE STATUS" =>
            {
                self.replica_status_sql = "SHOW SLAVE STATUS";
                conn.query::<Row, _>(self.replica_status_sql)
                    .await
                    .map_err(|e| self.query_err(&e))
            }
            other => other.map_err(|e| self.query_err(&e)),
        }
    }

    async fn observe(&mut self, conn: &mut Conn) -> Result<Observation, PollError> {
        let vars: Vec<(String, String)> = conn
            .query(READ_ONLY_SQL)
            .await
            .map_err(|e| self.query_err(&e))?;
        let read_only = vars
            .iter()
            .any(|(_, v)| v.eq_ignore_ascii_case("ON") || v == "1");
        if !read_only {
            return Ok(Observation {
                role: Role::Primary,
                lag: Lag::ZERO,
            });
        }
        let rows = self.replica_status(conn).await?;
        Ok(Observation {
            role: Role::Replica,
            lag: Lag {
                bytes: None,
                seconds: seconds_behind(&rows),
            },
        })
    }
}

/// The largest `Seconds_Behind_Master` (or `_Source`) over all replication channels; unknown
/// when there is no channel or any channel says NULL (its replication is not running).
fn seconds_behind(rows: &[Row]) -> Option<f64> {
    if rows.is_empty() {
        return None;
    }
    let mut worst: f64 = 0.0;
    for row in rows {
        let idx = row.columns_ref().iter().position(|c| {
            let name = c.name_str();
            name == "Seconds_Behind_Master" || name == "Seconds_Behind_Source"
        })?;
        let secs = match row.as_ref(idx)? {
            Value::Int(n) => *n as f64,
            Value::UInt(n) => *n as f64,
            Value::Bytes(b) => std::str::from_utf8(b).ok()?.trim().parse::<f64>().ok()?,
            _ => return None,
        };
        worst = worst.max(secs);
    }
    Some(worst)
}

impl Probe for MysqlProbe {
    async fn poll(&mut self) -> Result<Observation, PollError> {
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => Conn::new(self.opts.clone())
                .await
                .map_err(|e| PollError::Connect {
                    target: self.target.clone(),
                    message: error_chain(&e),
                })?,
        };
        let seen = self.observe(&mut conn).await;
        // Kept only after a good poll: any error reopens the session next time.
        if seen.is_ok() {
            self.conn = Some(conn);
        }
        seen
    }

    fn reset(&mut self) {
        self.conn = None;
    }

    fn target(&self) -> &str {
        &self.target
    }
}
