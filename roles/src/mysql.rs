//! The MySQL / MariaDB role queries: `read_only` and `super_read_only` give the role,
//! `SHOW REPLICA STATUS` (`SHOW SLAVE STATUS` on servers older than MySQL 8.0.22 / MariaDB
//! 10.5.1) gives a replica's lag in seconds. MySQL reports no byte lag.
//!
//! A server with either variable set is a replica, even when no replication is configured
//! or it is stopped: it refuses writes, which is what matters for routing them. Its lag is
//! then unknown. A value other than `OFF`/`0` counts as set (newer MariaDB has `NO_LOCK` and
//! `NO_LOCK_NO_ADMIN`, which are read-only too): mistaking a read-only node for the primary
//! is the one wrong answer that matters.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};

use crate::{Lag, Reading};

/// Both variables in one query that works on MySQL and on MariaDB, which has no
/// `super_read_only` (asking for it by `@@global.` would be an error there).
pub const READ_ONLY_SQL: &str =
    "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('read_only', 'super_read_only')";

/// The replica status statement of MySQL 8.0.22+ and MariaDB 10.5.1+.
pub const REPLICA_STATUS_SQL: &str = "SHOW REPLICA STATUS";

/// The same on older servers, which answer [`REPLICA_STATUS_SQL`] with a syntax error.
pub const SLAVE_STATUS_SQL: &str = "SHOW SLAVE STATUS";

/// MySQL's "syntax error": a server without `SHOW REPLICA STATUS`.
pub const ER_PARSE_ERROR: u16 = 1064;

/// The lag column, by its old (MariaDB, MySQL before 8.0.22) and new names.
const LAG_COLUMNS: [&str; 2] = ["Seconds_Behind_Master", "Seconds_Behind_Source"];

/// Why the role queries gave no reading.
#[derive(Debug)]
pub enum QueryError {
    /// The driver or the server failed.
    Driver(mysql_async::Error),
    /// The server answered something the role cannot be read from.
    Answer(String),
}

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueryError::Driver(e) => e.fmt(f),
            QueryError::Answer(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for QueryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            QueryError::Driver(e) => e.source(),
            QueryError::Answer(_) => None,
        }
    }
}

impl From<mysql_async::Error> for QueryError {
    fn from(e: mysql_async::Error) -> QueryError {
        QueryError::Driver(e)
    }
}

/// Whether a `read_only`/`super_read_only` value means the server refuses writes.
pub fn is_set(value: &str) -> bool {
    !(value.eq_ignore_ascii_case("OFF") || value == "0")
}

/// The role from the `(Variable_name, Value)` rows of [`READ_ONLY_SQL`]: a replica when
/// either variable is set; an error when `read_only` is missing (then nothing is known).
pub fn read_only(vars: &[(String, String)]) -> Result<bool, String> {
    if !vars
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("read_only"))
    {
        return Err("the server did not report read_only".to_owned());
    }
    Ok(vars.iter().any(|(_, value)| is_set(value)))
}

/// The lag over all replication channels, one entry per channel (`None`: its lag column is
/// NULL or missing): the worst channel's; unknown when there is no channel or any channel
/// does not say (its replication is not running).
pub fn worst_channel(channels: &[Option<u64>]) -> Option<Duration> {
    if channels.is_empty() {
        return None;
    }
    channels
        .iter()
        .try_fold(0u64, |worst, c| c.map(|s| worst.max(s)))
        .map(Duration::from_secs)
}

/// A channel's seconds behind, if its row says.
fn channel_seconds(row: &Row) -> Option<u64> {
    LAG_COLUMNS.iter().find_map(|col| {
        row.get_opt::<Option<u64>, _>(*col)
            .and_then(Result::ok)
            .flatten()
    })
}

/// Runs the role queries on an open connection; remembers which replica status statement
/// the server understands.
#[derive(Debug, Clone)]
pub struct RoleQuery {
    replica_status_sql: &'static str,
}

impl Default for RoleQuery {
    fn default() -> RoleQuery {
        RoleQuery {
            replica_status_sql: REPLICA_STATUS_SQL,
        }
    }
}

impl RoleQuery {
    /// The replica status rows, falling back to the old statement on a syntax error.
    async fn replica_status(&mut self, conn: &mut Conn) -> Result<Vec<Row>, mysql_async::Error> {
        match conn.query::<Row, _>(self.replica_status_sql).await {
            Err(mysql_async::Error::Server(e))
                if e.code == ER_PARSE_ERROR && self.replica_status_sql != SLAVE_STATUS_SQL =>
            {
                self.replica_status_sql = SLAVE_STATUS_SQL;
                conn.query::<Row, _>(self.replica_status_sql).await
            }
            other => other,
        }
    }

    /// The role and lag of the server behind `conn`.
    pub async fn read(&mut self, conn: &mut Conn) -> Result<Reading, QueryError> {
        let vars: Vec<(String, String)> = conn.query(READ_ONLY_SQL).await?;
        if !read_only(&vars).map_err(QueryError::Answer)? {
            return Ok(Reading::PRIMARY);
        }
        let rows = self.replica_status(conn).await?;
        let channels: Vec<Option<u64>> = rows.iter().map(channel_seconds).collect();
        Ok(Reading::replica(Lag {
            bytes: None,
            time: worst_channel(&channels),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn either_variable_makes_a_replica_and_only_off_is_off() {
        assert_eq!(read_only(&vars(&[("read_only", "OFF")])), Ok(false));
        assert_eq!(read_only(&vars(&[("read_only", "ON")])), Ok(true));
        assert_eq!(
            read_only(&vars(&[("read_only", "OFF"), ("super_read_only", "ON")])),
            Ok(true)
        );
        assert_eq!(
            read_only(&vars(&[("read_only", "0"), ("super_read_only", "off")])),
            Ok(false)
        );
        // MariaDB 11's enum values refuse writes too.
        assert_eq!(read_only(&vars(&[("read_only", "NO_LOCK")])), Ok(true));
        assert_eq!(read_only(&vars(&[("read_only", "1")])), Ok(true));
        assert!(read_only(&vars(&[])).is_err());
        assert!(read_only(&vars(&[("super_read_only", "OFF")])).is_err());
    }

    #[test]
    fn lag_is_the_worst_channel_and_unknown_if_any_is_silent() {
        assert_eq!(worst_channel(&[]), None);
        assert_eq!(worst_channel(&[Some(3)]), Some(Duration::from_secs(3)));
        assert_eq!(
            worst_channel(&[Some(3), Some(7), Some(0)]),
            Some(Duration::from_secs(7))
        );
        assert_eq!(worst_channel(&[Some(3), None]), None);
        assert_eq!(worst_channel(&[None]), None);
    }
}
