//! MySQL / MariaDB probe: runs the role queries of `rolelb_roles::mysql` (`read_only` and
//! `super_read_only` give the role, `SHOW REPLICA STATUS` the lag in seconds) on one
//! kept-open session.

use mysql_async::{Conn, OptsBuilder};
use rolelb_roles::Reading;
use rolelb_roles::mysql::RoleQuery;

use super::{PollError, Probe, error_chain};
use crate::config::Database;

/// Polls one MySQL or MariaDB server.
pub struct MysqlProbe {
    opts: OptsBuilder,
    target: String,
    conn: Option<Conn>,
    /// The role queries (they remember which replica status statement the server knows).
    query: RoleQuery,
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
            query: RoleQuery::default(),
        }
    }
}

impl Probe for MysqlProbe {
    async fn poll(&mut self) -> Result<Reading, PollError> {
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => Conn::new(self.opts.clone())
                .await
                .map_err(|e| PollError::Connect {
                    target: self.target.clone(),
                    message: error_chain(&e),
                })?,
        };
        let seen = self
            .query
            .read(&mut conn)
            .await
            .map_err(|e| PollError::Query {
                target: self.target.clone(),
                message: error_chain(&e),
            });
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
