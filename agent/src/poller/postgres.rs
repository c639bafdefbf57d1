//! PostgreSQL probe: the role query of `rolelb_roles::pgsql` (`pg_is_in_recovery()` and, on
//! a replica, the replay lag in bytes and time), prepared once on one kept-open session.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls, Statement};

use rolelb_roles::{Reading, pgsql};

use super::{PollError, Probe, error_chain};
use crate::config::Database;

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
    let status = client.prepare(pgsql::ROLE_SQL).await.map_err(connect_err)?;
    Ok(Session {
        client,
        status,
        connection,
    })
}

impl Probe for PostgresProbe {
    async fn poll(&mut self) -> Result<Reading, PollError> {
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
        pgsql::from_row(&row).map_err(query_err)
    }

    fn reset(&mut self) {
        self.session = None;
    }

    fn target(&self) -> &str {
        &self.target
    }
}
