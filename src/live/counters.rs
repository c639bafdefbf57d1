//! Lock-free counters kept per server, backend and frontend: traffic and session times,
//! downtime, per-second rates and maxima, check-duration histograms.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
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
    /// Records that a session got connected after `queue` waiting and `connect` connecting.
    pub fn record_start(&self, queue: Duration, connect: Duration) {
        let (q, c) = (millis(queue), millis(connect));
        self.queue_ms.add(q);
        self.connect_ms.add(c);
        self.max_queue_ms.fetch_max(q, Ordering::Relaxed);
        self.max_connect_ms.fetch_max(c, Ordering::Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.last_session.store(now, Ordering::Relaxed);
        self.session_rate.tick();
    }

    /// Records that a session ended after `total` in all.
    pub fn record_end(&self, total: Duration) {
        let t = millis(total);
        self.total_ms.add(t);
        self.max_total_ms.fetch_max(t, Ordering::Relaxed);
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
    /// Counts one event now.
    pub fn tick(&self) {
        let sec = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            & 0xffff_ffff;
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
        let sec = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            & 0xffff_ffff;
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

/// How long each kind of check of one server takes.
#[derive(Debug, Default)]
pub struct CheckDurations {
    /// Health checks (`check`).
    pub health: Histogram,
    /// Agent checks (`agent-check`).
    pub agent: Histogram,
    /// Role checks (`role-check`).
    pub role: Histogram,
}
