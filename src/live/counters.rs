//! Lock-free counters kept per server, backend and frontend: traffic and session times,
//! downtime, per-second rates and maxima, check-duration histograms. A server's session
//! counters and each kind of its check histograms are allocated on first use
//! ([`LazyTraffic`], [`LazyHistogram`]): of 10,000 discovered servers most never take a
//! session nor run a check, and until then they read as zeros, as untouched counters do.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// Samples in the sliding average of session times (HAProxy's `TIME_STATS_SAMPLES`).
const TIME_SAMPLES: u64 = 1024;

/// A lock-free average of the last [`TIME_SAMPLES`] values (a true average before that many),
/// in HAProxy's sliding-window style: adding `v` takes `sum / n` out and puts `v` in.
#[derive(Debug, Default)]
pub struct SlidingAverage {
    count: AtomicU64,
    sum: AtomicU64,
}

impl SlidingAverage {
    const fn new() -> SlidingAverage {
        SlidingAverage {
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
        }
    }

    /// Adds one sample.
    pub fn add(&self, value: u64) {
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |sum| {
                Some(if n <= TIME_SAMPLES {
                    sum.saturating_add(value)
                } else {
                    (sum - sum / TIME_SAMPLES).saturating_add(value)
                })
            });
    }

    /// The current average; 0 before the first sample.
    pub fn get(&self) -> u64 {
        let n = self.count.load(Ordering::Relaxed).min(TIME_SAMPLES);
        if n == 0 {
            return 0;
        }
        self.sum.load(Ordering::Relaxed) / n
    }
}

/// Per-server (and per-backend) session counters beyond the basic ones, all atomics so the
/// data path counts without a lock. Times are in milliseconds.
#[derive(Debug, Default)]
pub struct TrafficStats {
    /// Connection attempts (first tries and retries).
    pub connect_attempts: AtomicU64,
    /// Retries after a failed connection attempt.
    pub retries: AtomicU64,
    /// Sessions moved to another server after failed attempts (`option redispatch`).
    pub redispatches: AtomicU64,
    /// Sessions ended by a client reset or error.
    pub client_aborts: AtomicU64,
    /// Sessions ended by a server reset or error.
    pub server_aborts: AtomicU64,
    /// Average time spent queued.
    pub queue_ms: SlidingAverage,
    /// Average time to connect.
    pub connect_ms: SlidingAverage,
    /// Average total session time.
    pub total_ms: SlidingAverage,
    /// Longest time spent queued.
    pub max_queue_ms: AtomicU64,
    /// Longest time to connect.
    pub max_connect_ms: AtomicU64,
    /// Longest total session time.
    pub max_total_ms: AtomicU64,
    /// Unix time in seconds of the last session started; 0 = never.
    pub last_session: AtomicU64,
    /// Sessions started per second (for the highest rate seen).
    pub session_rate: RateMax,
}

impl TrafficStats {
    const fn new() -> TrafficStats {
        TrafficStats {
            connect_attempts: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            redispatches: AtomicU64::new(0),
            client_aborts: AtomicU64::new(0),
            server_aborts: AtomicU64::new(0),
            queue_ms: SlidingAverage::new(),
            connect_ms: SlidingAverage::new(),
            total_ms: SlidingAverage::new(),
            max_queue_ms: AtomicU64::new(0),
            max_connect_ms: AtomicU64::new(0),
            max_total_ms: AtomicU64::new(0),
            last_session: AtomicU64::new(0),
            session_rate: RateMax::new(),
        }
    }

    /// Records that a session got connected after `queue` waiting and `connect` connecting.
    pub fn record_start(&self, queue: Duration, connect: Duration) {
        let (q, c) = (millis(queue), millis(connect));
        self.queue_ms.add(q);
        self.connect_ms.add(c);
        self.max_queue_ms.fetch_max(q, Ordering::Relaxed);
        self.max_connect_ms.fetch_max(c, Ordering::Relaxed);
    }

    /// Counts a session in the session rate (HAProxy: a server's per connect started, with
    /// `stot`; a backend's per session routed to it).
    pub fn tick_session_rate(&self) {
        self.session_rate.tick();
    }

    /// Records that a session was just assigned to (a backend) or sent to (a server) its
    /// target: `lastsess`.
    pub fn mark_last_session(&self) {
        self.last_session.store(unix_secs(), Ordering::Relaxed);
    }

    /// Records that a session ended after `total` in all.
    pub fn record_end(&self, total: Duration) {
        let t = millis(total);
        self.total_ms.add(t);
        self.max_total_ms.fetch_max(t, Ordering::Relaxed);
    }
}

/// The counters every server without a session yet reads: never written (only
/// [`LazyTraffic::counting`] hands out counters to write).
static NO_TRAFFIC: TrafficStats = TrafficStats::new();

/// A server's [`TrafficStats`], allocated when it takes its first session; lock-free (a
/// `OnceLock` is one atomic load once set).
#[derive(Debug, Default)]
pub struct LazyTraffic(OnceLock<Box<TrafficStats>>);

impl LazyTraffic {
    /// The counters to read: all zeros before the first session. Never count through it.
    pub fn get(&self) -> &TrafficStats {
        self.0.get().map_or(&NO_TRAFFIC, |t| t)
    }

    /// The counters to count in, allocated on the first call.
    pub fn counting(&self) -> &TrafficStats {
        self.0.get_or_init(Box::default)
    }

    /// Whether the counters were allocated (the server took a session).
    pub fn is_allocated(&self) -> bool {
        self.0.get().is_some()
    }
}

/// The wall clock in whole seconds, for the per-second counters (`lastsess`, the rates).
/// Read from the kernel's coarse clock, which the data path reads several times per
/// connection: it costs a memory read instead of a hardware clock read and trails the
/// precise clock by at most one scheduler tick (1–10 ms), nothing at this resolution.
pub fn unix_secs() -> u64 {
    use nix::time::{ClockId, clock_gettime};
    match clock_gettime(ClockId::CLOCK_REALTIME_COARSE) {
        Ok(t) => u64::try_from(t.tv_sec()).unwrap_or(0),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Time accumulated in a "stopped" state (a server down or in maintenance, a backend with
/// no usable server). Written only by the control plane, so a mutex is fine here.
#[derive(Debug, Default)]
pub struct Downtime {
    state: Mutex<DowntimeState>,
}

#[derive(Debug, Default)]
struct DowntimeState {
    total: Duration,
    since: Option<Instant>,
    /// Whether a state was recorded yet (the first one is where it starts, not a transition).
    seen: bool,
    /// Transitions from running to stopped.
    downs: u64,
}

impl Downtime {
    /// Records whether the object is stopped from `now` on.
    pub fn set(&self, stopped: bool, now: Instant) {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let first = !std::mem::replace(&mut st.seen, true);
        match (st.since, stopped) {
            (None, true) => {
                st.since = Some(now);
                if !first {
                    st.downs += 1;
                }
            }
            (Some(since), false) => {
                st.total += now.saturating_duration_since(since);
                st.since = None;
            }
            _ => {}
        }
    }

    /// How many times it went from running to stopped (its first state aside).
    pub fn transitions(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .downs
    }

    /// The time spent stopped up to `now`.
    pub fn total(&self, now: Instant) -> Duration {
        let st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        st.total
            + st.since
                .map_or(Duration::ZERO, |s| now.saturating_duration_since(s))
    }
}

/// Events per wall-clock second and the highest such count seen, lock-free: the current
/// second and its count share one atomic word.
#[derive(Debug, Default)]
pub struct RateMax {
    current: AtomicU64,
    max: AtomicU64,
}

impl RateMax {
    const fn new() -> RateMax {
        RateMax {
            current: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }

    /// Counts one event now.
    pub fn tick(&self) {
        let sec = unix_secs() & 0xffff_ffff;
        let mut count = 1;
        let _ = self
            .current
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |word| {
                count = if word >> 32 == sec {
                    (word & 0xffff_ffff) + 1
                } else {
                    1
                };
                Some(sec << 32 | count)
            });
        self.max.fetch_max(count, Ordering::Relaxed);
    }

    /// Events so far in the current second (0 when the last one is older).
    pub fn current(&self) -> u64 {
        let sec = unix_secs() & 0xffff_ffff;
        let word = self.current.load(Ordering::Relaxed);
        if word >> 32 == sec {
            word & 0xffff_ffff
        } else {
            0
        }
    }

    /// The highest count seen in one second.
    pub fn max(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }
}

/// Upper bounds (seconds) of the check duration histogram's buckets.
pub const CHECK_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A lock-free histogram of durations over [`CHECK_BUCKETS`].
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; CHECK_BUCKETS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    /// Adds one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = CHECK_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Cumulative counts per bucket (as Prometheus wants them), the total count and the sum
    /// in seconds.
    pub fn snapshot(&self) -> ([u64; CHECK_BUCKETS.len()], u64, f64) {
        let mut out = [0; CHECK_BUCKETS.len()];
        let mut acc = 0;
        for (o, b) in out.iter_mut().zip(&self.buckets) {
            acc += b.load(Ordering::Relaxed);
            *o = acc;
        }
        let count = self.count.load(Ordering::Relaxed).max(acc);
        #[allow(clippy::cast_precision_loss)]
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        (out, count, sum)
    }
}

/// A [`Histogram`] allocated at its first observation; before that it reads as an empty one.
#[derive(Debug, Default)]
pub struct LazyHistogram(OnceLock<Box<Histogram>>);

impl LazyHistogram {
    /// Adds one observation (allocating the histogram the first time).
    pub fn observe(&self, d: Duration) {
        self.0.get_or_init(Box::default).observe(d);
    }

    /// As [`Histogram::snapshot`]; all zeros before the first observation.
    pub fn snapshot(&self) -> ([u64; CHECK_BUCKETS.len()], u64, f64) {
        self.0
            .get()
            .map_or(([0; CHECK_BUCKETS.len()], 0, 0.0), |h| h.snapshot())
    }

    /// Whether anything was observed (the histogram was allocated).
    pub fn is_allocated(&self) -> bool {
        self.0.get().is_some()
    }
}

/// How long each kind of check of one server takes; each kind's histogram exists only once
/// that kind of check has run on the server.
#[derive(Debug, Default)]
pub struct CheckDurations {
    /// Health checks (`check`).
    pub health: LazyHistogram,
    /// Agent checks (`agent-check`).
    pub agent: LazyHistogram,
    /// Role checks (`role-check`).
    pub role: LazyHistogram,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_reads_zeros_until_the_first_session_then_counts() {
        let t = LazyTraffic::default();
        assert!(!t.is_allocated());
        let zero = t.get();
        for avg in [&zero.queue_ms, &zero.connect_ms, &zero.total_ms] {
            assert_eq!(avg.get(), 0);
        }
        for n in [
            &zero.connect_attempts,
            &zero.retries,
            &zero.max_connect_ms,
            &zero.last_session,
        ] {
            assert_eq!(n.load(Ordering::Relaxed), 0);
        }
        assert_eq!(zero.session_rate.max(), 0);
        assert!(!t.is_allocated(), "reading allocates nothing");

        t.counting()
            .connect_attempts
            .fetch_add(1, Ordering::Relaxed);
        t.counting()
            .record_start(Duration::from_millis(4), Duration::from_millis(7));
        t.counting().tick_session_rate();
        t.counting().mark_last_session();
        t.counting().record_end(Duration::from_millis(30));
        assert!(t.is_allocated());
        let got = t.get();
        assert_eq!(got.connect_attempts.load(Ordering::Relaxed), 1);
        assert_eq!(
            (got.queue_ms.get(), got.connect_ms.get(), got.total_ms.get()),
            (4, 7, 30)
        );
        assert_eq!(got.max_connect_ms.load(Ordering::Relaxed), 7);
        assert_eq!(got.session_rate.max(), 1);
        assert_ne!(got.last_session.load(Ordering::Relaxed), 0);
        // Another server that never took a session still reads zeros.
        let other = LazyTraffic::default();
        assert_eq!(other.get().connect_attempts.load(Ordering::Relaxed), 0);
        assert_eq!(other.get().connect_ms.get(), 0);
    }

    #[test]
    fn a_check_histogram_is_empty_until_its_first_observation() {
        let d = CheckDurations::default();
        for h in [&d.health, &d.agent, &d.role] {
            assert!(!h.is_allocated());
            assert_eq!(h.snapshot(), ([0; CHECK_BUCKETS.len()], 0, 0.0));
        }
        d.agent.observe(Duration::from_millis(3));
        assert!(d.agent.is_allocated());
        assert!(!d.health.is_allocated() && !d.role.is_allocated());
        let (buckets, count, sum) = d.agent.snapshot();
        assert_eq!(count, 1);
        assert_eq!(buckets[1], 0, "3 ms is above the 2.5 ms bucket");
        assert_eq!(buckets[2], 1, "and within the 5 ms one");
        assert!((sum - 0.003).abs() < 1e-9);
        assert_eq!(d.health.snapshot().1, 0);
    }
}
