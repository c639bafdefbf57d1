//! The MariaDB chaos test's writers: threads that each open a new connection through a write
//! listener for every write (so every write is a routing decision of the proxy), insert one row
//! with a unique id in a transaction, and in the same transaction, before `COMMIT`, keep what
//! the committing node said about itself — `@@server_id`, `@@port`, `@@global.read_only` and
//! `NOW(6)` — or why the attempt failed. Only a write whose `COMMIT` returned OK is
//! acknowledged: MariaDB refuses the `COMMIT` of a user without `READ_ONLY ADMIN` once
//! `read_only` is set, so an acknowledged write was committed while its node was writable.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};
use tokio::time::timeout;

/// The application user the writers log in as: no `READ_ONLY ADMIN`, so `read_only` binds it.
pub const APP_USER: &str = "app";
/// Its password.
pub const APP_PASSWORD: &str = "app-pw";
/// The database holding `writes`.
pub const DATABASE: &str = "chaos";

/// What a node reported for a write it acknowledged.
#[derive(Debug, Clone)]
pub struct Ack {
    pub id: i64,
    pub port: u16,
    pub server_id: u32,
    /// `@@global.read_only` inside the transaction.
    pub read_only: bool,
    /// The node's `NOW(6)` inside the transaction (same host clock as the test's).
    pub committed: SystemTime,
}

/// Why an attempt was not acknowledged.
#[derive(Debug, Clone)]
pub enum Failure {
    /// The connection was closed or refused before MariaDB answered the login: what rolelb
    /// does when no server may take the write.
    Refused,
    /// Anything else: a MariaDB error (`read-only`), a session closed mid-transaction, a
    /// timeout.
    Other(String),
}

/// One write attempt: when it began and ended, and what came of it.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub started: SystemTime,
    pub ended: SystemTime,
    pub result: Result<Ack, Failure>,
}

/// Writer threads running against the write listeners until [`Writers::finish`].
pub struct Writers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Vec<Attempt>>>,
}

/// The pause between one writer's attempts.
const PAUSE: Duration = Duration::from_millis(10);

impl Writers {
    /// Starts `count` writers; writer `w` writes through `ports[w % ports.len()]` with ids
    /// `first_id + w * 10^7 + seq`.
    pub fn start(ports: &[u16], count: usize, first_id: i64) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..count)
            .map(|w| {
                let stop = Arc::clone(&stop);
                let port = ports[w % ports.len()];
                let base = first_id + w as i64 * 10_000_000;
                thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("a tokio runtime for a writer");
                    let mut attempts = Vec::new();
                    let mut seq = 0;
                    while !stop.load(Ordering::Relaxed) {
                        attempts.push(rt.block_on(attempt(port, base + seq, w)));
                        seq += 1;
                        thread::sleep(PAUSE);
                    }
                    attempts
                })
            })
            .collect();
        Writers { stop, threads }
    }

    /// Stops the writers and returns every attempt, in no particular order across writers.
    pub fn finish(self) -> Vec<Attempt> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .into_iter()
            .flat_map(|t| t.join().expect("a writer thread panicked"))
            .collect()
    }
}

/// Login options for the application user through 127.0.0.1:`port`.
fn app_opts(port: u16) -> OptsBuilder {
    OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some(APP_USER))
        .pass(Some(APP_PASSWORD))
        .db_name(Some(DATABASE))
        .prefer_socket(false)
}

/// Logs in as the application user through `port`; a login the proxy closed or refused is
/// [`Failure::Refused`].
async fn login(port: u16) -> Result<Conn, Failure> {
    match timeout(Duration::from_secs(3), Conn::new(app_opts(port))).await {
        Err(_) => Err(Failure::Other("login timed out".into())),
        Ok(Err(mysql_async::Error::Server(e))) => Err(Failure::Other(server_error(&e))),
        Ok(Err(_)) => Err(Failure::Refused),
        Ok(Ok(conn)) => Ok(conn),
    }
}

/// One write through `port`, in a connection of its own; used by the writers and to wait for
/// a cluster to take writes.
pub async fn attempt(port: u16, id: i64, writer: usize) -> Attempt {
    let started = SystemTime::now();
    let result = write_once(port, id, writer).await;
    Attempt {
        started,
        ended: SystemTime::now(),
        result,
    }
}

async fn write_once(port: u16, id: i64, writer: usize) -> Result<Ack, Failure> {
    let mut conn = login(port).await?;
    let sql = format!("INSERT INTO writes (id, writer) VALUES ({id}, {writer})");
    let txn = async {
        conn.query_drop("START TRANSACTION").await?;
        conn.query_drop(&sql).await?;
        let row: Option<(String, String, String, String)> = conn
            .query_first("SELECT @@server_id, @@port, @@global.read_only, UNIX_TIMESTAMP(NOW(6))")
            .await?;
        conn.query_drop("COMMIT").await?;
        Ok::<_, mysql_async::Error>(row)
    };
    let answer = timeout(Duration::from_secs(5), txn).await;
    let _ = timeout(Duration::from_secs(1), conn.disconnect()).await;
    let row = match answer {
        Err(_) => return Err(Failure::Other("transaction timed out".into())),
        Ok(Err(mysql_async::Error::Server(e))) => return Err(Failure::Other(server_error(&e))),
        Ok(Err(e)) => return Err(Failure::Other(format!("session failed: {e}"))),
        Ok(Ok(None)) => return Err(Failure::Other("the SELECT returned no row".into())),
        Ok(Ok(Some(row))) => row,
    };
    let bad = |what: &str| Failure::Other(format!("unreadable {what} in {row:?}"));
    let epoch: f64 = row.3.parse().map_err(|_| bad("NOW(6)"))?;
    Ok(Ack {
        id,
        server_id: row.0.parse().map_err(|_| bad("server_id"))?,
        port: row.1.parse().map_err(|_| bad("port"))?,
        read_only: row.2 != "0",
        committed: SystemTime::UNIX_EPOCH + Duration::from_secs_f64(epoch),
    })
}

/// `(@@server_id, @@global.read_only)` of the node behind `port`, asked as the application
/// user: where a listener sends a client.
pub async fn whoami(port: u16) -> Result<(u32, bool), String> {
    let mut conn = login(port)
        .await
        .map_err(|f| format!("login through :{port}: {f:?}"))?;
    let row = timeout(
        Duration::from_secs(3),
        conn.query_first::<(u32, u8), _>("SELECT @@server_id, @@global.read_only"),
    )
    .await;
    let _ = timeout(Duration::from_secs(1), conn.disconnect()).await;
    match row {
        Ok(Ok(Some((id, ro)))) => Ok((id, ro != 0)),
        Ok(Ok(None)) => Err("no row".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 3 s".into()),
    }
}

/// A server error as `message (code)`.
fn server_error(e: &mysql_async::ServerError) -> String {
    format!("{} ({})", e.message, e.code)
}
