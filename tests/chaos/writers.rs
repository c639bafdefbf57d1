//! The chaos test's writers: threads that each open a new connection through the write
//! listener for every write (so every write is a routing decision of rolelb), insert one row
//! with a unique id, and keep what the committing node said about itself in the same
//! statement — `inet_server_port()`, `pg_is_in_recovery()`, its timeline (from the current WAL
//! file name) and `clock_timestamp()` — or why the attempt failed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime};

use tokio_postgres::{NoTls, SimpleQueryMessage};

/// What a node reported for a write it acknowledged.
#[derive(Debug, Clone)]
pub struct Ack {
    pub id: i64,
    pub port: u16,
    pub in_recovery: bool,
    pub timeline: u32,
    pub committed: SystemTime,
}

/// Why an attempt was not acknowledged.
#[derive(Debug, Clone)]
pub enum Failure {
    /// The connection was closed or refused before PostgreSQL answered the login: what
    /// rolelb does when no server may take the write.
    Refused,
    /// Anything else: a PgBouncer or PostgreSQL error, a timeout.
    Other(String),
}

/// One write attempt: when it began and ended, and what came of it.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub started: SystemTime,
    pub ended: SystemTime,
    pub result: Result<Ack, Failure>,
}

/// Writer threads running against one port until [`Writers::finish`].
pub struct Writers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Vec<Attempt>>>,
}

/// The pause between one writer's attempts.
const PAUSE: Duration = Duration::from_millis(10);

impl Writers {
    /// Starts `count` writers on 127.0.0.1:`port`; writer `w` uses ids `first_id + w * 10^7 + seq`.
    pub fn start(port: u16, count: usize, first_id: i64) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..count)
            .map(|w| {
                let stop = Arc::clone(&stop);
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
    use tokio::time::timeout;
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user("postgres")
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(2));
    let (client, conn) = match timeout(Duration::from_secs(3), config.connect(NoTls)).await {
        Err(_) => return Err(Failure::Other("login timed out".into())),
        Ok(Err(e)) if e.as_db_error().is_none() => return Err(Failure::Refused),
        Ok(Err(e)) => return Err(Failure::Other(describe(&e))),
        Ok(Ok(pair)) => pair,
    };
    let driver = tokio::spawn(conn);
    let sql = format!(
        "INSERT INTO chaos_writes (id, writer) VALUES ({id}, {writer}) RETURNING \
         inet_server_port(), pg_is_in_recovery(), \
         pg_walfile_name(pg_current_wal_insert_lsn()), \
         extract(epoch FROM clock_timestamp())"
    );
    let answer = timeout(Duration::from_secs(5), client.simple_query(&sql)).await;
    drop(client);
    let _ = timeout(Duration::from_secs(1), driver).await;
    let messages = match answer {
        Err(_) => return Err(Failure::Other("INSERT timed out".into())),
        Ok(Err(e)) => return Err(Failure::Other(describe(&e))),
        Ok(Ok(messages)) => messages,
    };
    let row = messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        })
        .ok_or_else(|| Failure::Other("INSERT returned no row".into()))?;
    let col = |i: usize| row.get(i).unwrap_or_default();
    let bad = |what: &str| Failure::Other(format!("unreadable {what} in {:?}", col(0)));
    let port = col(0).parse().map_err(|_| bad("port"))?;
    let timeline = col(2)
        .get(..8)
        .and_then(|hex| u32::from_str_radix(hex, 16).ok())
        .ok_or_else(|| bad("WAL file name"))?;
    let epoch: f64 = col(3).parse().map_err(|_| bad("clock_timestamp"))?;
    Ok(Ack {
        id,
        port,
        in_recovery: col(1) == "t",
        timeline,
        committed: SystemTime::UNIX_EPOCH + Duration::from_secs_f64(epoch),
    })
}

/// A client error with the server's message when there is one (`Display` says only "db error").
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}
