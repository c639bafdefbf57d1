//! PostgreSQL probe: `pg_is_in_recovery()` and, on a replica, the replay lag in bytes and
//! seconds, in one prepared statement on one kept-open session.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls, Statement};

use super::{Observation, PollError, Probe, error_chain};
use crate::config::Database;
use crate::status::{Lag, Role};

/// Role and lag in one round trip. On a replica the byte lag is WAL received but not yet
/// replayed, and the time lag is zero when everything received is replayed (an idle primary
/// must not make a caught-up replica look late), else the age of the last replayed commit.
const STATUS_SQL: &str = "\
SELECT pg_is_in_recovery(),
       CASE WHEN pg_is_in_recovery()
            THEN pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::bigint
       END,
       CASE WHEN pg_is_in_recovery()
            THEN (CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
                       ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())
                  END)::float8
       END";

/// An open session: the client, its prepared status query, and the connection task.
struct Session {
    client: Client,
    status: Statement,
    connection: JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        // The connection task would otherwise live on until the server closes the socket.
        self.connection.abort();
    }
}

/// Polls one PostgreSQL server.
pub struct PostgresProbe {
    config: tokio_postgres::Config,
    target: String,
    session: Option<Session>,
}

impl PostgresProbe {
    /// A probe for `db`; connects on the first poll.
    pub fn new(db: &Database, timeout: Duration) -> PostgresProbe {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&db.host)
            .port(db.port())
            .user(&db.user)
            .application_name("rolelb-agent")
            .connect_timeout(timeout);
        if let Some(p) = &db.password {
            config.password(p);
        }
        if let Some(d) = &db.dbname {
            config.dbname(d);
        }
        PostgresProbe {
            config,
            target: db.target(),
            session: None,
        }
    }
}

/// Opens a session and prepares the status query.
async fn connect(config: &tokio_postgres::Config, target: &str) -> Result<Session, PollError> {
    let connect_err = |e: tokio_postgres::Error| PollError::Connect {
        target: target.to_string(),
        message: error_chain(&e),
    };
    let (client, connection) = config.connect(NoTls).await.map_err(connect_err)?;
    let connection = tokio::spawn(async move {
        // Its error surfaces again as a failed query on the client, which is reported.
        let _ = connection.await;
    });
    let status = client.prepare(STATUS_SQL).await.map_err(connect_err)?;
    Ok(Session {
        client,
        status,
        connection,
    })
}

impl Probe for PostgresProbe {
    async fn poll(&mut self) -> Result<Observation, PollError> {
        let session = match self.session.take() {
            Some(s) if !s.client.is_closed() => s,
            _ => connect(&self.config, &self.target).await?,
        };
        let session = self.session.insert(session);
        let query_err = |e: tokio_postgres::Error| PollError::Query {
            target: self.target.clone(),
            message: error_chain(&e),
        };
        let row = session
            .client
            .query_one(&session.status, &[])
            .await
            .map_err(query_err)?;
        let in_recovery: bool = row.try_get(0).map_err(query_err)?;
        let bytes: Option<i64> = row.try_get(1).map_err(query_err)?;
        let seconds: Option<f64> = row.try_get(2).map_err(query_err)?;
        Ok(if in_recovery {
            Observation {
                role: Role::Replica,
                lag: Lag {
                    bytes: bytes.map(|b| b.max(0) as u64),
                    seconds: seconds.map(|s| s.max(0.0)),
                },
            }
        } else {
            Observation {
                role: Role::Primary,
                lag: Lag::ZERO,
            }
        })
    }

    fn reset(&mut self) {
        self.session = None;
    }

    fn target(&self) -> &str {
        &self.target
    }
}
