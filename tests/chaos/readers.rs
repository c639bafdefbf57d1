//! The chaos test's readers and their audit: threads that each open a new connection through
//! the read listener for every read and ask the node that answers who it is
//! (`inet_server_port()`), whether it is in recovery, and how far behind it is in time (the
//! same measure as rolelb's role check: zero when everything received is replayed, else the
//! age of the last replayed commit), keeping every failure with its time.
//!
//! The audit ([`audit_reads`]) allows read errors only inside the documented windows — from a
//! fault's first action until [`READ_SETTLE`] after its last ([`ORPHAN_RETRY`] more after a
//! crash) — and, while the test holds a
//! replica's replay paused, no read from that replica once it reported being more than
//! `max-lag` + [`LAG_SLACK`] behind.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime};

use tokio_postgres::{NoTls, SimpleQueryMessage};

use crate::audit::NodeId;

/// `max-lag` of the read listener, in the configuration under test.
pub const MAX_LAG: Duration = Duration::from_secs(1);
/// How long past `max-lag` a replica may still serve a read: rolelb checks every 300 ms and
/// a read already routed may still be answered. Five check intervals: a margin for a loaded
/// 2-core machine; a rolelb that ignored `max-lag` serves the paused replica for the whole
/// pause (it reports 3 s and more behind).
pub const LAG_SLACK: Duration = Duration::from_millis(1500);
/// How long after a fault's last action read errors are still within its window: rolelb's
/// etcd watch and role check (`inter` 300 ms, `fall 2`) put a replica that came back (or a
/// caught-up one) into the read table, and a read that began before may still fail.
pub const READ_SETTLE: Duration = Duration::from_secs(2);

/// How much longer a crash's window lasts: a replica that streamed from the crashed primary
/// may hold the start of a record that never arrived whole; its received position stays
/// ahead of its replay, so its lag (the age of its last replayed commit) grows and rolelb
/// keeps it out past `max-lag` until its WAL receiver retries and gives the torn record up
/// (`wal_retrieve_retry_interval`, 5 s), and reads may find no replica meanwhile.
pub const ORPHAN_RETRY: Duration = Duration::from_secs(6);

/// What the node that answered a read said about itself.
#[derive(Debug, Clone)]
pub struct ReadAck {
    pub port: u16,
    pub in_recovery: bool,
    /// The replay delay in time the node reported (zero on a primary or a caught-up replica).
    pub lag: Duration,
}

/// One read attempt: when it began and ended, and what came of it.
#[derive(Debug, Clone)]
pub struct Read {
    pub started: SystemTime,
    pub ended: SystemTime,
    pub result: Result<ReadAck, String>,
}

/// Reader threads running against one port until [`Readers::finish`].
pub struct Readers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Vec<Read>>>,
}

/// The pause between one reader's attempts.
const PAUSE: Duration = Duration::from_millis(20);

impl Readers {
    /// Starts `count` readers on 127.0.0.1:`port`.
    pub fn start(port: u16, count: usize) -> Readers {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..count)
            .map(|_| {
                let stop = Arc::clone(&stop);
                thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("a tokio runtime for a reader");
                    let mut reads = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        reads.push(rt.block_on(read(port)));
                        thread::sleep(PAUSE);
                    }
                    reads
                })
            })
            .collect();
        Readers { stop, threads }
    }

    /// Stops the readers and returns every read, in no particular order across readers.
    pub fn finish(self) -> Vec<Read> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .into_iter()
            .flat_map(|t| t.join().expect("a reader thread panicked"))
            .collect()
    }
}

/// Waits (up to `timeout`) until `n` reads in a row through `port` succeed: with writes
/// flowing, every replica has replayed a commit and has a known lag. Before its first replayed
/// commit a replica that received WAL reports an unknown lag (no replay timestamp), which
/// rolelb counts as over `max-lag`; that start-up state is no fault's doing.
pub fn wait_steady(port: u16, n: usize, timeout: Duration) -> bool {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime for a read");
    let mut in_a_row = 0;
    crate::common::wait_until(timeout, || {
        if rt.block_on(read(port)).result.is_ok() {
            in_a_row += 1;
        } else {
            in_a_row = 0;
        }
        in_a_row >= n
    })
}

/// The node's own account of itself; the lag as in rolelb's role query.
const READ_SQL: &str = "SELECT inet_server_port(), pg_is_in_recovery(), \
     CASE WHEN NOT pg_is_in_recovery() THEN 0::float8 \
          WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0::float8 \
          ELSE coalesce(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8, 0) END";

/// One read through `port`, in a connection of its own.
pub async fn read(port: u16) -> Read {
    let started = SystemTime::now();
    let result = read_once(port).await;
    Read {
        started,
        ended: SystemTime::now(),
        result,
    }
}

async fn read_once(port: u16) -> Result<ReadAck, String> {
    use tokio::time::timeout;
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user("postgres")
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(2));
    let (client, conn) = match timeout(Duration::from_secs(3), config.connect(NoTls)).await {
        Err(_) => return Err("login timed out".into()),
        Ok(Err(e)) => return Err(format!("login: {e}")),
        Ok(Ok(pair)) => pair,
    };
    let driver = tokio::spawn(conn);
    let answer = timeout(Duration::from_secs(3), client.simple_query(READ_SQL)).await;
    drop(client);
    let _ = timeout(Duration::from_secs(1), driver).await;
    let messages = match answer {
        Err(_) => return Err("SELECT timed out".into()),
        Ok(Err(e)) => return Err(format!("SELECT: {e}")),
        Ok(Ok(messages)) => messages,
    };
    let row = messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        })
        .ok_or("SELECT returned no row")?;
    let col = |i: usize| row.get(i).unwrap_or_default();
    let port = col(0)
        .parse()
        .map_err(|_| format!("unreadable port {:?}", col(0)))?;
    let lag: f64 = col(2)
        .parse()
        .map_err(|_| format!("unreadable lag {:?}", col(2)))?;
    Ok(ReadAck {
        port,
        in_recovery: col(1) == "t",
        lag: Duration::try_from_secs_f64(lag.max(0.0)).unwrap_or_default(),
    })
}

/// `t` in seconds from `from` (negative before it).
fn offset(t: SystemTime, from: SystemTime) -> f64 {
    match t.duration_since(from) {
        Ok(after) => after.as_secs_f64(),
        Err(before) => -before.duration().as_secs_f64(),
    }
}

/// A stretch of time in which read errors are expected (a fault's window).
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start: SystemTime,
    pub end: SystemTime,
}

impl Window {
    /// The window of a fault that began at `began` and whose last action ended at `resolved`.
    pub fn of_fault(began: SystemTime, resolved: SystemTime) -> Window {
        Window {
            start: began,
            end: resolved + READ_SETTLE,
        }
    }

    /// The window of a fault that crashed the primary: [`ORPHAN_RETRY`] longer.
    pub fn of_crash(began: SystemTime, resolved: SystemTime) -> Window {
        Window {
            start: began,
            end: resolved + ORPHAN_RETRY + READ_SETTLE,
        }
    }

    /// Whether the attempt `started..ended` overlaps this window.
    fn overlaps(&self, started: SystemTime, ended: SystemTime) -> bool {
        started <= self.end && ended >= self.start
    }
}

/// A replica whose replay the test held paused, and when.
#[derive(Debug, Clone, Copy)]
pub struct Paused {
    pub node: NodeId,
    pub from: SystemTime,
    pub until: SystemTime,
}

/// What the read audit found, summed over schedules.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadReport {
    pub tried: usize,
    pub served: usize,
    /// Served by a node that said it is not in recovery (a replica being promoted, before
    /// rolelb's check saw it: allowed, counted).
    pub on_primary: usize,
    /// Failed inside a fault's window.
    pub errors_in_window: usize,
    /// Failed outside every window (must be 0).
    pub errors_outside: usize,
    /// Up to three distinct reasons among those.
    pub outside_kinds: Vec<String>,
    /// When the first and the last of those began, in seconds from the first window's start.
    pub outside_span: Option<(f64, f64)>,
    /// Served by the paused replica while it reported more than `max-lag` behind, within
    /// [`LAG_SLACK`] (allowed, counted).
    pub lagging_within_slack: usize,
    /// Served by the paused replica while it reported more than `max-lag` + [`LAG_SLACK`]
    /// behind (must be 0).
    pub lagging_beyond_slack: usize,
    /// The paused replica's largest lag a read saw, and the largest a read saw anywhere.
    pub max_lag_seen: Duration,
    /// Reads the rejoined old primary served after it came back as a replica.
    pub on_rejoined: usize,
}

impl ReadReport {
    /// The count of broken read invariants.
    pub fn violations(&self) -> usize {
        self.errors_outside + self.lagging_beyond_slack
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &ReadReport) {
        self.tried += other.tried;
        self.served += other.served;
        self.on_primary += other.on_primary;
        self.errors_in_window += other.errors_in_window;
        self.errors_outside += other.errors_outside;
        for why in &other.outside_kinds {
            if self.outside_kinds.len() < 3 && !self.outside_kinds.contains(why) {
                self.outside_kinds.push(why.clone());
            }
        }
        self.lagging_within_slack += other.lagging_within_slack;
        self.lagging_beyond_slack += other.lagging_beyond_slack;
        self.max_lag_seen = self.max_lag_seen.max(other.max_lag_seen);
        self.on_rejoined += other.on_rejoined;
    }
}

/// Audits `reads`: errors against `windows`, reads from `paused` against `max-lag`;
/// `node_of_port` names the node behind a port; `rejoined` is the old primary once it came
/// back as a replica (and from when).
pub fn audit_reads(
    reads: &[Read],
    windows: &[Window],
    paused: Option<Paused>,
    rejoined: Option<(NodeId, SystemTime)>,
    node_of_port: impl Fn(u16) -> Option<NodeId>,
) -> ReadReport {
    let mut r = ReadReport {
        tried: reads.len(),
        ..ReadReport::default()
    };
    for read in reads {
        let ack = match &read.result {
            Ok(ack) => ack,
            Err(why) => {
                if windows.iter().any(|w| w.overlaps(read.started, read.ended)) {
                    r.errors_in_window += 1;
                } else {
                    r.errors_outside += 1;
                    let at = windows
                        .first()
                        .map_or(0.0, |w| offset(read.started, w.start));
                    let (first, last) = r.outside_span.unwrap_or((at, at));
                    r.outside_span = Some((first.min(at), last.max(at)));
                    if r.outside_kinds.len() < 3 && !r.outside_kinds.contains(why) {
                        r.outside_kinds.push(why.clone());
                    }
                }
                continue;
            }
        };
        r.served += 1;
        if !ack.in_recovery {
            r.on_primary += 1;
        }
        let node = node_of_port(ack.port);
        if let Some(p) = paused.filter(|p| Some(p.node) == node)
            && read.started >= p.from
            && read.started <= p.until
        {
            r.max_lag_seen = r.max_lag_seen.max(ack.lag);
            if ack.lag > MAX_LAG + LAG_SLACK {
                r.lagging_beyond_slack += 1;
            } else if ack.lag > MAX_LAG {
                r.lagging_within_slack += 1;
            }
        }
        if let Some((n, since)) = rejoined
            && node == Some(n)
            && read.started >= since
            && ack.in_recovery
        {
            r.on_rejoined += 1;
        }
    }
    r
}

/// The read audit's lines: one per schedule (`names` in order) and the totals.
pub fn read_summary(names: &[String], reports: &[ReadReport]) -> String {
    let mut out = String::from(
        "read audit (readers on the read listener)\n  #  fault                                                                                         served/tried  on-primary  errors in window  OUTSIDE  lag>max  LAG>max+slack  rejoined\n",
    );
    let mut total = ReadReport::default();
    for (i, (name, r)) in names.iter().zip(reports).enumerate() {
        total.add(r);
        out += &format!(
            "{:>3}  {:<92}  {:>6}/{:<6}  {:>10}  {:>16}  {:>7}  {:>7}  {:>13}  {:>8}\n",
            i + 1,
            name,
            r.served,
            r.tried,
            r.on_primary,
            r.errors_in_window,
            r.errors_outside,
            r.lagging_within_slack,
            r.lagging_beyond_slack,
            r.on_rejoined
        );
        if let Some((first, last)) = r.outside_span {
            out += &format!(
                "       read errors outside the window began {first:+.3} s .. {last:+.3} s from the fault's start\n"
            );
        }
        for why in &r.outside_kinds {
            out += &format!("       read error outside the windows: {why}\n");
        }
    }
    out += &format!(
        "  reads tried / served {} / {}; errors within the fault windows {}, OUTSIDE {}; \
         from the paused replica past max-lag {} (beyond the slack: {}, largest lag seen {} ms); \
         from a rejoined old primary {}\n",
        total.tried,
        total.served,
        total.errors_in_window,
        total.errors_outside,
        total.lagging_within_slack,
        total.lagging_beyond_slack,
        total.max_lag_seen.as_millis(),
        total.on_rejoined
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000) + Duration::from_millis(ms)
    }

    fn ok(ms: u64, port: u16, lag_ms: u64) -> Read {
        Read {
            started: at(ms),
            ended: at(ms + 5),
            result: Ok(ReadAck {
                port,
                in_recovery: true,
                lag: Duration::from_millis(lag_ms),
            }),
        }
    }

    fn failed(ms: u64) -> Read {
        Read {
            started: at(ms),
            ended: at(ms + 5),
            result: Err("login: closed".into()),
        }
    }

    #[test]
    fn errors_count_against_the_windows_and_lagging_reads_against_the_slack() {
        let windows = [Window::of_fault(at(1000), at(2000))];
        let reads = [
            failed(500),
            failed(1500),
            failed(3900),
            failed(4100),
            ok(5000, 2, 3000),
            ok(5100, 2, 2000),
            ok(5200, 3, 9000),
        ];
        let paused = Paused {
            node: 1,
            from: at(4500),
            until: at(6000),
        };
        let r = audit_reads(&reads, &windows, Some(paused), None, |p| {
            Some(p as usize - 1)
        });
        assert_eq!((r.errors_in_window, r.errors_outside), (2, 2));
        assert_eq!((r.lagging_beyond_slack, r.lagging_within_slack), (1, 1));
        assert_eq!(r.violations(), 3);
    }
}
