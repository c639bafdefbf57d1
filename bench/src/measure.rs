//! One measurement of one target: the tests, the targets, and what each measurement adds
//! to the totals and prints in the per-measurement list.
//!
//! `main` decides what runs when; this module runs one test against one target (reading
//! the proxy's CPU time around it), the idle-session memory reading, and one etcd churn
//! pass, and describes each in one line.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Result, bail};

use crate::churn;
use crate::proxy::Proxy;
use crate::report::{Idle, Shape, Totals};
use crate::workload;

/// The tests, in the order they run within a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Test {
    ShortConns,
    Echo,
    Upload,
    Download,
    Churn,
}

/// The order in which `n` targets take test `test` in round `round` (all from 0).
///
/// Rounds go in pairs: the second of a pair runs the first's order backwards, so over a pair
/// every target's mean position in the pass is the same, `(n - 1) / 2`, and the target that
/// ran just before another in one round runs just after it in the other. Both matter because
/// a measurement leaves state behind for the next one: short connections leave tens of
/// thousands of `TIME_WAIT` sockets, and once the kernel's cap on them (`tcp_max_tw_buckets`)
/// is reached, closes later in the pass no longer create any and get cheaper. Each pair
/// starts one place further on, and each test one place further than the one before.
pub fn pass_order(n: usize, round: usize, test: usize) -> Vec<usize> {
    if n == 0 {
        return Vec::new();
    }
    let start = (round / 2 + test) % n;
    let forward = (0..n).map(|k| (k + start) % n);
    if round.is_multiple_of(2) {
        forward.collect()
    } else {
        forward.rev().collect()
    }
}

/// Parallel openers of idle sessions, and how long opening them may take per proxy.
const IDLE_OPENERS: usize = 32;
const IDLE_OPEN_LIMIT: Duration = Duration::from_secs(60);

/// What the churn test loads for a target: rolelb's etcd-watching twin, or the target itself.
pub struct ChurnVia {
    /// Index of the proxy whose CPU is read, `None` for direct.
    pub proxy: Option<usize>,
    /// Where the echo goes.
    pub addr: SocketAddr,
    /// Where the members are put.
    pub prefix: String,
    /// The watching rolelb's admin API, polled until its table has every member.
    pub watcher: Option<SocketAddr>,
}

/// One thing to load: a proxy, or a backend directly.
pub struct Target {
    /// Its name in the output (`direct`, `rolelb/t1`, ...).
    pub name: String,
    /// Where the load goes.
    pub addr: SocketAddr,
    /// Index into the proxies, `None` for direct.
    pub proxy: Option<usize>,
    /// What the etcd churn test loads instead.
    pub churn: ChurnVia,
}

/// A few short connections to `addr`; a target that forwards none is a setup failure.
pub async fn warm_up(name: &str, addr: SocketAddr, proxy: Option<&Proxy>) -> Result<()> {
    let r = workload::conn_rate(addr, 2, Duration::from_millis(300)).await;
    if r.ok == 0 {
        let log = proxy.map(Proxy::log_tail).unwrap_or_default();
        bail!(
            "{name} on {addr} forwarded no connection during warm-up ({} errors); its output:\n{log}",
            r.errors
        );
    }
    Ok(())
}

/// Opens `n` idle sessions through `p` and reads its RSS before and with them open.
pub async fn measure_idle(p: &Proxy, addr: SocketAddr, n: usize) -> (Option<Idle>, String) {
    let before = p.rss();
    let open = workload::open_idle(addr, n, IDLE_OPENERS, IDLE_OPEN_LIMIT).await;
    // Let the proxy finish whatever each session's first bytes started.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = p.rss();
    let sessions = open.streams.len() as u64;
    drop(open.streams);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let result = match (before, after) {
        (Some(rss_before), Some(rss_after)) => Some(Idle {
            sessions,
            rss_before,
            rss_after,
        }),
        _ => None,
    };
    let mib = |b: Option<u64>| b.map_or("?".into(), |b| format!("{:.1}", b as f64 / 1048576.0));
    let per = result
        .and_then(|i| i.kib_per_session())
        .map_or("?".into(), |k| format!("{k:.2}"));
    let line = format!(
        "idle     {:<20} {sessions} sessions ({} failed)  VmRSS {} -> {} MiB  {per} KiB/session",
        p.label(),
        open.errors,
        mib(before),
        mib(after)
    );
    (result, line)
}

/// One etcd churn pass against `t`, added to `totals`, described in one line.
pub async fn measure_churn(
    etcd: &mut churn::Etcd,
    t: &Target,
    proxies: &[Proxy],
    members: usize,
    totals: &mut Totals,
) -> String {
    let proxy = t.churn.proxy.map(|i| &proxies[i]);
    let cpu0 = proxy.and_then(Proxy::cpu_time);
    let pass = churn::pass(
        etcd,
        t.churn.addr,
        &t.churn.prefix,
        members,
        t.churn.watcher,
    )
    .await;
    let cpu = match (cpu0, proxy.and_then(Proxy::cpu_time)) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let who = proxy.map_or(t.name.as_str(), Proxy::label);
    match pass {
        Ok(mut p) => {
            totals.add_churn(&p.echo, cpu);
            let table = match p.converged {
                None => "no watcher".to_string(),
                Some(Some(d)) => format!(
                    "all in its table {:.0} ms after the last put",
                    d.as_secs_f64() * 1e3
                ),
                Some(None) => "NOT all in its table within the limit".to_string(),
            };
            format!(
                "{who:<20} churn  echo p50 {:.1} µs  p99 {:.1} µs  ({} samples)  {members} puts in {:.2} s; {table}  errors {}{}",
                p.echo.hist.quantile_us(0.5).unwrap_or(f64::NAN),
                p.echo.hist.quantile_us(0.99).unwrap_or(f64::NAN),
                p.echo.hist.count(),
                p.puts.as_secs_f64(),
                p.echo.errors,
                cpu.map_or(String::new(), |c| format!(
                    "  proxy CPU {:.0} ms",
                    c.as_secs_f64() * 1e3
                )),
            )
        }
        Err(e) => {
            totals.churn.errors += 1;
            format!("{who:<20} churn  failed: {e:#}")
        }
    }
}

/// What one test returned, before it is added to the totals.
enum Outcome {
    Upload(workload::Bulk),
    Download(workload::Bulk),
    Conns(workload::ConnRate),
    Echo(workload::Latency),
}

/// Runs one test against one target, adds it to `totals`, and describes it in one line.
pub async fn measure(
    test: Test,
    t: &Target,
    proxy: Option<&Proxy>,
    shape: &Shape,
    duration: Duration,
    totals: &mut Totals,
) -> String {
    let cpu0 = proxy.and_then(Proxy::cpu_time);
    let wait0 = proxy.and_then(Proxy::cpu_wait);
    let outcome = match test {
        Test::Upload => {
            Outcome::Upload(workload::bulk_upload(t.addr, shape.streams, duration).await)
        }
        Test::Download => {
            Outcome::Download(workload::bulk_download(t.addr, shape.streams, duration).await)
        }
        Test::ShortConns => {
            Outcome::Conns(workload::conn_rate(t.addr, shape.workers, duration).await)
        }
        Test::Echo | Test::Churn => {
            Outcome::Echo(workload::echo_latency(t.addr, shape.echo_conns, duration).await)
        }
    };
    let cpu = match (cpu0, proxy.and_then(Proxy::cpu_time)) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let waited = match (wait0, proxy.and_then(Proxy::cpu_wait)) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let per_sec = |n: u64, d: Duration| n as f64 / d.as_secs_f64().max(1e-9);
    let (summary, elapsed, errors) = match outcome {
        Outcome::Upload(r) => {
            totals.add_upload(&r, cpu);
            let s = format!(
                "upload    {:>9.2} Gbit/s",
                per_sec(r.bytes, r.elapsed) * 8.0 / 1e9
            );
            (s, r.elapsed, r.errors)
        }
        Outcome::Download(r) => {
            totals.add_download(&r, cpu);
            let s = format!(
                "download  {:>9.2} Gbit/s",
                per_sec(r.bytes, r.elapsed) * 8.0 / 1e9
            );
            (s, r.elapsed, r.errors)
        }
        Outcome::Conns(r) => {
            totals.add_conns(&r, cpu);
            let s = format!("conns     {:>9.0} conn/s", per_sec(r.ok, r.elapsed));
            (s, r.elapsed, r.errors)
        }
        Outcome::Echo(mut r) => {
            let p50 = r.hist.quantile_us(0.5).unwrap_or(f64::NAN);
            let p99 = r.hist.quantile_us(0.99).unwrap_or(f64::NAN);
            let spread = match (r.conn_p99.first(), r.conn_p99.last()) {
                (Some(lo), Some(hi)) => format!(
                    "  p99 per conn {lo:.0}/{:.0}/{hi:.0} µs",
                    r.conn_p99[r.conn_p99.len() / 2]
                ),
                _ => String::new(),
            };
            let s = format!(
                "echo      {:>9.0} msg/s  p50 {p50:.1} µs  p99 {p99:.1} µs{spread}",
                per_sec(r.hist.count(), r.elapsed)
            );
            totals.add_echo(&r, cpu);
            (s, r.elapsed, r.errors)
        }
    };
    // A time as a share of the measurement's wall time, e.g. `  busy 85%`.
    let share = |label: &str, d: Option<Duration>| {
        d.map(|d| {
            format!(
                "  {label} {:.0}%",
                100.0 * d.as_secs_f64() / elapsed.as_secs_f64().max(1e-9)
            )
        })
        .unwrap_or_default()
    };
    let (busy, waited) = (share("busy", cpu), share("waited", waited));
    format!("{:<20} {summary}  errors {errors}{busy}{waited}", t.name)
}

#[cfg(test)]
mod tests {
    use super::pass_order;

    #[test]
    fn every_round_runs_every_target_once() {
        for n in [1, 2, 5, 11] {
            for round in 0..7 {
                for test in 0..5 {
                    let mut order = pass_order(n, round, test);
                    order.sort_unstable();
                    assert_eq!(order, (0..n).collect::<Vec<_>>(), "n {n} round {round}");
                }
            }
        }
        assert!(pass_order(0, 3, 1).is_empty());
    }

    #[test]
    fn a_pair_of_rounds_gives_every_target_the_same_mean_position_and_swaps_neighbours() {
        let n = 11;
        for pair in 0..3 {
            for test in 0..5 {
                let a = pass_order(n, 2 * pair, test);
                let b = pass_order(n, 2 * pair + 1, test);
                for target in 0..n {
                    let pa = a.iter().position(|&t| t == target).expect("in round a");
                    let pb = b.iter().position(|&t| t == target).expect("in round b");
                    assert_eq!(pa + pb, n - 1, "target {target}, pair {pair}, test {test}");
                }
                for w in a.windows(2) {
                    let pb = b.iter().position(|&t| t == w[1]).expect("in round b");
                    assert_eq!(
                        b[pb + 1],
                        w[0],
                        "{} ran before {} in a, after it in b",
                        w[0],
                        w[1]
                    );
                }
            }
        }
        // The next pair starts one place further on.
        assert_ne!(pass_order(n, 0, 0)[0], pass_order(n, 2, 0)[0]);
    }
}
