//! The measurements, each run against one address for a bounded time, and the idle
//! sessions of the memory test.
//!
//! Every function takes the address to load (a proxy's bind or a backend directly), spawns
//! its workers on the bench runtime, and returns what was moved and how many operations
//! failed. Every loop ends at the deadline or after a fixed iteration cap, and every socket
//! operation has its own timeout, so a proxy that stalls costs errors, never a hang.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::backend::{CHUNK, Mode};
use crate::histogram::Histogram;

/// Longest any single connect, read or write may take before it counts as an error.
const OP_TIMEOUT: Duration = Duration::from_secs(2);

/// Extra time a whole measurement may take past its duration before it is abandoned.
const GRACE: Duration = Duration::from_secs(15);

/// Upper bound on iterations of any worker loop, whatever the clock says.
const MAX_ITERATIONS: u64 = 100_000_000;

/// Size of an echo message in the latency test.
pub const ECHO_MSG: usize = 64;

/// Payload of one short connection (after the mode byte).
const SHORT_PAYLOAD: &[u8] = b"rolelb-bench-ping";

/// Result of a bulk transfer: bytes that arrived at the far end.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bulk {
    /// Bytes counted by the receiver.
    pub bytes: u64,
    /// Wall time from the first connect until the last stream finished.
    pub elapsed: Duration,
    /// Streams that failed to connect or broke before their deadline.
    pub errors: u64,
}

/// Result of the short-connection test.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnRate {
    /// Connections that completed connect, send, echo and close.
    pub ok: u64,
    /// Connections that failed at any step or echoed the wrong bytes.
    pub errors: u64,
    /// Wall time of the measurement.
    pub elapsed: Duration,
}

/// Result of the echo round-trip test.
#[derive(Debug, Clone, Default)]
pub struct Latency {
    /// Round-trip times of every completed message.
    pub hist: Histogram,
    /// Connections that failed to connect or broke before their deadline.
    pub errors: u64,
    /// Wall time of the measurement.
    pub elapsed: Duration,
    /// Each connection's own RTT p99 in µs, lowest first (where the tail comes from: at
    /// `nbthread 2` the sessions of one proxy thread can all be slower than the other's).
    pub conn_p99: Vec<f64>,
}

/// Opens a connection with [`OP_TIMEOUT`] and Nagle off (we measure latency, not batching).
async fn connect(addr: SocketAddr) -> Result<TcpStream> {
    let stream = tokio::time::timeout(OP_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow!("connect to {addr} timed out"))?
        .with_context(|| format!("connect to {addr}"))?;
    stream.set_nodelay(true).context("TCP_NODELAY")?;
    Ok(stream)
}

/// Runs `fut` with [`OP_TIMEOUT`], folding the timeout into the error.
async fn op<T, F>(what: &str, fut: F) -> Result<T>
where
    F: std::future::Future<Output = std::io::Result<T>>,
{
    tokio::time::timeout(OP_TIMEOUT, fut)
        .await
        .map_err(|_| anyhow!("{what} timed out"))?
        .with_context(|| what.to_string())
}

/// Waits for every worker, bounded by `duration` + [`GRACE`]; workers still running then are
/// aborted and counted as errors.
async fn join_all<T: 'static>(mut set: JoinSet<T>, duration: Duration) -> (Vec<T>, u64) {
    let deadline = tokio::time::Instant::now() + duration + GRACE;
    let mut done = Vec::with_capacity(set.len());
    let mut lost = 0;
    loop {
        match tokio::time::timeout_at(deadline, set.join_next()).await {
            Ok(Some(Ok(v))) => done.push(v),
            Ok(Some(Err(_))) => lost += 1,
            Ok(None) => break,
            Err(_) => {
                lost += set.len() as u64;
                set.abort_all();
                break;
            }
        }
    }
    (done, lost)
}

/// `streams` connections each push data to the sink for `duration`, then half-close and
/// read back how many bytes the sink received.
pub async fn bulk_upload(addr: SocketAddr, streams: usize, duration: Duration) -> Bulk {
    bulk(streams, duration, |deadline| upload_one(addr, deadline)).await
}

/// Runs `one` on `streams` connections until `duration` has passed and adds up their bytes;
/// a stream that fails or does not finish in time counts as an error.
async fn bulk<F, Fut>(streams: usize, duration: Duration, one: F) -> Bulk
where
    F: Fn(Instant) -> Fut,
    Fut: std::future::Future<Output = Result<u64>> + Send + 'static,
{
    let start = Instant::now();
    let deadline = start + duration;
    let mut set = JoinSet::new();
    for _ in 0..streams {
        set.spawn(one(deadline));
    }
    let (results, lost) = join_all(set, duration).await;
    let mut out = Bulk {
        elapsed: start.elapsed(),
        errors: lost,
        ..Bulk::default()
    };
    for r in results {
        match r {
            Ok(bytes) => out.bytes += bytes,
            Err(_) => out.errors += 1,
        }
    }
    out
}

async fn upload_one(addr: SocketAddr, deadline: Instant) -> Result<u64> {
    let mut s = connect(addr).await?;
    op("send mode", s.write_all(&[Mode::Sink.byte()])).await?;
    let buf = vec![0xa5u8; CHUNK];
    for _ in 0..MAX_ITERATIONS {
        if Instant::now() >= deadline {
            break;
        }
        op("upload write", s.write_all(&buf)).await?;
    }
    op("upload half-close", s.shutdown()).await?;
    let mut count = [0u8; 8];
    // The sink may still be draining the proxy's buffers: allow for that.
    tokio::time::timeout(GRACE, s.read_exact(&mut count))
        .await
        .map_err(|_| anyhow!("sink count timed out"))?
        .context("read sink count")?;
    Ok(u64::from_be_bytes(count))
}

/// `streams` connections each read from the source for `duration`.
pub async fn bulk_download(addr: SocketAddr, streams: usize, duration: Duration) -> Bulk {
    bulk(streams, duration, |deadline| download_one(addr, deadline)).await
}

async fn download_one(addr: SocketAddr, deadline: Instant) -> Result<u64> {
    let mut s = connect(addr).await?;
    op("send mode", s.write_all(&[Mode::Source.byte()])).await?;
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    for _ in 0..MAX_ITERATIONS {
        if Instant::now() >= deadline {
            return Ok(total);
        }
        let n = op("download read", s.read(&mut buf)).await?;
        if n == 0 {
            return Err(anyhow!("source closed early"));
        }
        total += n as u64;
    }
    Ok(total)
}

/// `workers` loops of connect, send a few bytes, read the echo, close, for `duration`.
pub async fn conn_rate(addr: SocketAddr, workers: usize, duration: Duration) -> ConnRate {
    let start = Instant::now();
    let deadline = start + duration;
    let mut set = JoinSet::new();
    for _ in 0..workers {
        set.spawn(async move {
            let (mut ok, mut errors) = (0u64, 0u64);
            for _ in 0..MAX_ITERATIONS {
                if Instant::now() >= deadline {
                    break;
                }
                match short_conn(addr).await {
                    Ok(()) => ok += 1,
                    Err(_) => {
                        errors += 1;
                        // A refusing proxy would otherwise make this a busy loop.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
            (ok, errors)
        });
    }
    let (results, lost) = join_all(set, duration).await;
    let mut out = ConnRate {
        elapsed: start.elapsed(),
        errors: lost,
        ..ConnRate::default()
    };
    for (ok, errors) in results {
        out.ok += ok;
        out.errors += errors;
    }
    out
}

/// Exactly `total` short connections (as [`conn_rate`]'s) shared by `workers`, bounded by
/// `limit`; a failed one counts as done, so the count is exact.
pub async fn conn_count(addr: SocketAddr, workers: usize, total: u64, limit: Duration) -> ConnRate {
    let start = Instant::now();
    let deadline = start + limit;
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut set = JoinSet::new();
    for _ in 0..workers.max(1) {
        let next = next.clone();
        set.spawn(async move {
            let (mut ok, mut errors) = (0u64, 0u64);
            while next.fetch_add(1, Ordering::Relaxed) < total && Instant::now() < deadline {
                match short_conn(addr).await {
                    Ok(()) => ok += 1,
                    Err(_) => errors += 1,
                }
            }
            (ok, errors)
        });
    }
    let (results, lost) = join_all(set, limit).await;
    let mut out = ConnRate {
        elapsed: start.elapsed(),
        errors: lost,
        ..ConnRate::default()
    };
    for (ok, errors) in results {
        out.ok += ok;
        out.errors += errors;
    }
    out
}

async fn short_conn(addr: SocketAddr) -> Result<()> {
    let mut s = connect(addr).await?;
    let mut msg = Vec::with_capacity(1 + SHORT_PAYLOAD.len());
    msg.push(Mode::Echo.byte());
    msg.extend_from_slice(SHORT_PAYLOAD);
    op("short write", s.write_all(&msg)).await?;
    let mut back = [0u8; SHORT_PAYLOAD.len()];
    op("short read", s.read_exact(&mut back)).await?;
    if back != SHORT_PAYLOAD {
        return Err(anyhow!("echo returned different bytes"));
    }
    Ok(())
}

/// `conns` persistent connections each ping-pong [`ECHO_MSG`]-byte messages for `duration`.
pub async fn echo_latency(addr: SocketAddr, conns: usize, duration: Duration) -> Latency {
    let start = Instant::now();
    let deadline = start + duration;
    let mut set = JoinSet::new();
    for i in 0..conns {
        set.spawn(ping_pong(addr, deadline, i as u8));
    }
    let (results, lost) = join_all(set, duration).await;
    let mut out = Latency {
        elapsed: start.elapsed(),
        errors: lost,
        ..Latency::default()
    };
    for (mut hist, failed) in results {
        out.conn_p99.extend(hist.quantile_us(0.99));
        out.hist.merge(&hist);
        if failed {
            out.errors += 1;
        }
    }
    out.conn_p99.sort_by(f64::total_cmp);
    out
}

/// One latency connection; returns its samples and whether it broke before the deadline.
async fn ping_pong(addr: SocketAddr, deadline: Instant, tag: u8) -> (Histogram, bool) {
    let mut hist = Histogram::default();
    let result: Result<()> = async {
        let mut s = connect(addr).await?;
        op("send mode", s.write_all(&[Mode::Echo.byte()])).await?;
        let mut msg = [0u8; ECHO_MSG];
        let mut back = [0u8; ECHO_MSG];
        for i in 0..MAX_ITERATIONS {
            if Instant::now() >= deadline {
                break;
            }
            msg[0] = tag;
            msg[1..9].copy_from_slice(&i.to_be_bytes());
            let t0 = Instant::now();
            op("echo write", s.write_all(&msg)).await?;
            op("echo read", s.read_exact(&mut back)).await?;
            hist.record(t0.elapsed());
            if back != msg {
                return Err(anyhow!("echo returned different bytes"));
            }
        }
        Ok(())
    }
    .await;
    (hist, result.is_err())
}

/// `conns` persistent connections each send one [`ECHO_MSG`]-byte message every `gap` and
/// time its echo, until `stop` is set or `cap` has passed: the data path's latency while
/// something else happens (an etcd burst), at a pace that leaves the CPU to that.
pub async fn echo_paced(
    addr: SocketAddr,
    conns: usize,
    gap: Duration,
    stop: Arc<AtomicBool>,
    cap: Duration,
) -> Latency {
    let start = Instant::now();
    let deadline = start + cap;
    let mut set = JoinSet::new();
    for i in 0..conns {
        let stop = stop.clone();
        set.spawn(async move {
            let mut hist = Histogram::default();
            let result: Result<()> = async {
                let mut s = connect(addr).await?;
                op("send mode", s.write_all(&[Mode::Echo.byte()])).await?;
                let mut msg = [i as u8; ECHO_MSG];
                let mut back = [0u8; ECHO_MSG];
                for n in 0..MAX_ITERATIONS {
                    if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
                        break;
                    }
                    msg[1..9].copy_from_slice(&n.to_be_bytes());
                    let t0 = Instant::now();
                    op("echo write", s.write_all(&msg)).await?;
                    op("echo read", s.read_exact(&mut back)).await?;
                    hist.record(t0.elapsed());
                    if back != msg {
                        return Err(anyhow!("echo returned different bytes"));
                    }
                    tokio::time::sleep(gap).await;
                }
                Ok(())
            }
            .await;
            (hist, result.is_err())
        });
    }
    let (results, lost) = join_all(set, cap).await;
    let mut out = Latency {
        elapsed: start.elapsed(),
        errors: lost,
        ..Latency::default()
    };
    for (hist, failed) in results {
        out.hist.merge(&hist);
        if failed {
            out.errors += 1;
        }
    }
    out
}

/// Idle sessions held open through a proxy; dropping this closes them.
pub struct IdleSessions {
    /// The client ends, each with one byte already echoed end to end.
    pub streams: Vec<TcpStream>,
    /// Sessions that failed to open.
    pub errors: u64,
}

/// Opens up to `count` sessions to `addr` with `parallel` openers, each proven end to end
/// (one byte echoed by the far end) and then left idle; stops at `limit`.
pub async fn open_idle(
    addr: SocketAddr,
    count: usize,
    parallel: usize,
    limit: Duration,
) -> IdleSessions {
    let deadline = Instant::now() + limit;
    let parallel = parallel.clamp(1, count.max(1));
    let mut set = JoinSet::new();
    for w in 0..parallel {
        // Worker `w` opens sessions w, w + parallel, ...: `count` in all.
        let mine = count / parallel + usize::from(w < count % parallel);
        set.spawn(async move {
            let mut streams = Vec::with_capacity(mine);
            let mut errors = 0u64;
            for _ in 0..mine {
                if Instant::now() >= deadline {
                    errors += 1;
                    continue;
                }
                match open_one_idle(addr).await {
                    Ok(s) => streams.push(s),
                    Err(_) => errors += 1,
                }
            }
            (streams, errors)
        });
    }
    let (results, lost) = join_all(set, limit).await;
    let mut out = IdleSessions {
        streams: Vec::with_capacity(count),
        errors: lost,
    };
    for (streams, errors) in results {
        out.streams.extend(streams);
        out.errors += errors;
    }
    out
}

async fn open_one_idle(addr: SocketAddr) -> Result<TcpStream> {
    let mut s = connect(addr).await?;
    op("idle write", s.write_all(&[Mode::Hold.byte(), b'i'])).await?;
    let mut back = [0u8; 1];
    op("idle read", s.read_exact(&mut back)).await?;
    if back[0] != b'i' {
        return Err(anyhow!("hold returned a different byte"));
    }
    Ok(s)
}
