//! Events per second as HAProxy 2.6 counts them for its rate limits (`rate-limit sessions`,
//! `maxconnrate`, `maxsessrate`): its `freq_ctr`, a one-second period that starts at the first
//! event, with the previous period's count weighed by the share of it still inside the last
//! second. A limit of N lets N events through at once, then about N per second.
//!
//! A listener reserves its place in a rate before it accepts ([`FreqCtr::reserve`]); the
//! place counts as an event until the connection is counted or found not to be one
//! ([`FreqCtr::settle`]), so the limit holds however many threads accept at once, and while a
//! session is not counted yet (rolelb's sessions run on their own tasks).

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// The period of every rate: one second, in milliseconds.
const PERIOD: u64 = 1000;

/// Milliseconds since the first call in this process: the clock of every [`FreqCtr`].
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// One rate: the count of the current period, of the one before, and when the current one
/// began.
#[derive(Debug, Default)]
pub struct FreqCtr(Mutex<Periods>);

#[derive(Debug, Default, Clone, Copy)]
struct Periods {
    /// When the current period began; `None` before the first event.
    start: Option<u64>,
    curr: u64,
    prev: u64,
    /// Places reserved and not settled yet: counted as events of the current period.
    pending: u64,
}

impl Periods {
    /// HAProxy's `freq_ctr_total`: events over the last period, times the period, counting
    /// `pend` more in the current one.
    fn total(self, now: u64, pend: u64) -> u64 {
        let Some(start) = self.start else {
            return pend * PERIOD;
        };
        let (mut curr, mut prev) = (self.curr, self.prev);
        let elapsed = now.saturating_sub(start);
        // What is left of the current period, or of the next one once it is over.
        let remain = if elapsed < PERIOD {
            PERIOD - elapsed
        } else if elapsed < 2 * PERIOD {
            prev = curr;
            curr = 0;
            2 * PERIOD - elapsed
        } else {
            prev = 0;
            curr = 0;
            0
        };
        prev * remain + (curr + pend) * PERIOD
    }
}

impl FreqCtr {
    fn periods(&self) -> Periods {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one event at `now` (HAProxy's `update_freq_ctr`).
    pub fn tick(&self, now: u64) {
        let mut p = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match p.start {
            Some(start) if now.saturating_sub(start) < PERIOD => {}
            Some(start) if now.saturating_sub(start) < 2 * PERIOD => {
                p.prev = p.curr;
                p.curr = 0;
                p.start = Some(start + PERIOD);
            }
            _ => {
                // The first event, or two periods or more went by without one.
                *p = Periods {
                    start: Some(now),
                    curr: 0,
                    prev: 0,
                    pending: p.pending,
                };
            }
        }
        p.curr += 1;
    }

    /// Events that may still happen at `now` under `freq` per second with `pend` more
    /// counted (HAProxy's `freq_ctr_remain`).
    pub fn remain(&self, now: u64, freq: u32, pend: u32) -> u32 {
        let avg = self.periods().total(now, u64::from(pend)) / PERIOD;
        u32::try_from(u64::from(freq).saturating_sub(avg)).unwrap_or(0)
    }

    /// When `freq` per second is reached at `now` (with `pend` more counted): how long to
    /// wait until one more event fits; `None` when one fits now. HAProxy's
    /// `next_event_delay` answers 1 ms while the count sits exactly at the limit, and its
    /// listener looks again every millisecond; this gives the first millisecond at which the
    /// count is below the limit, so the listener wakes once, at the same moment.
    pub fn wait(&self, now: u64, freq: u32, pend: u32) -> Option<Duration> {
        let p = self.periods();
        let fits = |t: u64| p.total(t, u64::from(pend)) / PERIOD < u64::from(freq);
        if fits(now) {
            return None;
        }
        let (freq, pend) = (u64::from(freq), u64::from(pend));
        let start = p.start.unwrap_or(now);
        let elapsed = now.saturating_sub(start);
        // The count falls only as the previous period's weight does, or as periods end.
        if pend >= freq {
            // Only the pending connections settling can make room: look again shortly.
            return Some(Duration::from_millis(1));
        }
        let mut at = if elapsed < PERIOD && p.curr + pend < freq && p.prev > 0 {
            // Within the current period: prev * (P - e) + (curr + pend) * P < freq * P.
            let room = (freq - p.curr - pend) * PERIOD;
            start + (PERIOD - room.div_ceil(p.prev).min(PERIOD)) + 1
        } else {
            // Once the current period ends its count weighs as the previous one:
            // curr * (2P - e) + pend * P < freq * P.
            let e = if p.curr == 0 {
                PERIOD
            } else {
                (2 * PERIOD).saturating_sub(((freq - pend) * PERIOD).div_ceil(p.curr)) + 1
            };
            start + e.clamp(PERIOD, 2 * PERIOD)
        };
        // Rounding: step to the first millisecond that fits (a few steps at most).
        while !fits(at) && at < now + 2 * PERIOD {
            at += 1;
        }
        Some(Duration::from_millis(at.saturating_sub(now).max(1)))
    }
}

impl FreqCtr {
    /// Takes a place under `freq` per second at `now`, the places reserved and not settled
    /// counting as events; else how long to wait before one may be free.
    pub fn reserve(&self, now: u64, freq: u32) -> Result<(), Duration> {
        let mut p = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let pend = u32::try_from(p.pending).unwrap_or(u32::MAX);
        let avg = p.total(now, p.pending) / PERIOD;
        if avg < u64::from(freq) {
            p.pending += 1;
            return Ok(());
        }
        drop(p);
        Err(self
            .wait(now, freq, pend)
            .unwrap_or(Duration::from_millis(1)))
    }

    /// Gives back a place [`FreqCtr::reserve`] took, counting an event at `now` when
    /// `counted`.
    pub fn settle(&self, now: u64, counted: bool) {
        let mut p = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        p.pending = p.pending.saturating_sub(1);
        drop(p);
        if counted {
            self.tick(now);
        }
    }
}

/// Places a connection holds in the rates its listener is limited by, taken before it was
/// accepted: the connection rate's is settled once it is accepted
/// ([`RateTicket::accepted`]), the session rates' once it becomes a session
/// ([`RateTicket::count`]); dropped, the places are given back uncounted.
#[derive(Debug, Default)]
pub struct RateTicket {
    conns: Option<Arc<FreqCtr>>,
    sessions: Vec<Arc<FreqCtr>>,
}

impl RateTicket {
    /// Takes a place at `now` in each of `conns` (the connection rate) and `sessions`, each
    /// with its limit; else gives back those taken and says how long to wait.
    pub fn reserve(
        now: u64,
        conns: Option<(&Arc<FreqCtr>, u32)>,
        sessions: &[(&Arc<FreqCtr>, u32)],
    ) -> Result<RateTicket, Duration> {
        let mut ticket = RateTicket::default();
        if let Some((freq, limit)) = conns {
            freq.reserve(now, limit)?;
            ticket.conns = Some(freq.clone());
        }
        for &(freq, limit) in sessions {
            // On a refusal, dropping `ticket` gives back what it holds.
            freq.reserve(now, limit)?;
            ticket.sessions.push(freq.clone());
        }
        Ok(ticket)
    }

    /// Whether it holds places in session rates (the session must count them).
    pub fn has_sessions(&self) -> bool {
        !self.sessions.is_empty()
    }

    /// The connection was accepted: counted in the connection rate.
    pub fn accepted(&mut self) {
        if let Some(freq) = self.conns.take() {
            freq.settle(now_ms(), true);
        }
    }

    /// The connection is a session: counted in every session rate.
    pub fn count(mut self) {
        let now = now_ms();
        for freq in self.sessions.drain(..) {
            freq.settle(now, true);
        }
    }
}

impl Drop for RateTicket {
    /// Not counted (never accepted, refused, or closed before it became a session).
    fn drop(&mut self) {
        let now = now_ms();
        for freq in self.conns.take().into_iter().chain(self.sessions.drain(..)) {
            freq.settle(now, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_lets_a_burst_through_then_about_its_rate() {
        let f = FreqCtr::default();
        assert_eq!(f.remain(0, 10, 0), 10);
        for _ in 0..10 {
            assert!(f.wait(5, 10, 0).is_none());
            f.tick(5);
        }
        // Ten in the period that began at 5: full until the next one starts at 1005, and
        // then the ten weigh by what is left of the last second.
        assert_eq!(f.remain(500, 10, 0), 0);
        // The first moment the count is below 10: 1006 (1005 still weighs the ten fully).
        assert_eq!(f.wait(500, 10, 0), Some(Duration::from_millis(506)));
        assert_eq!(f.remain(1005, 10, 0), 0);
        assert_eq!(
            f.remain(1105, 10, 0),
            1,
            "a tenth of the last second is over"
        );
        f.tick(1105);
        assert_eq!(f.remain(1105, 10, 0), 0);
        // The ten weigh a little less every millisecond: one more fits at 1106.
        assert_eq!(f.wait(1105, 10, 0), Some(Duration::from_millis(1)));
        assert_eq!(f.remain(1505, 10, 0), 4);
        // Two periods without events: everything is forgotten.
        assert_eq!(f.remain(3005, 10, 0), 10);
        f.tick(3005);
        assert_eq!(f.remain(3005, 10, 0), 9);
    }

    #[test]
    fn pending_events_count_as_if_they_had_happened() {
        let f = FreqCtr::default();
        assert_eq!(f.remain(0, 3, 2), 1);
        assert_eq!(f.remain(0, 3, 3), 0);
        f.tick(0);
        assert_eq!(f.remain(10, 3, 1), 1);
        assert_eq!(f.remain(10, 3, 5), 0, "never below zero");
        assert_eq!(
            f.wait(10, 3, 5),
            Some(Duration::from_millis(1)),
            "only settling makes room: look again soon"
        );
    }

    #[test]
    fn reserved_places_count_until_settled_and_only_counted_ones_stay() {
        let f = Arc::new(FreqCtr::default());
        // Three places of three: full while they are pending, whatever happens to them.
        for _ in 0..3 {
            assert_eq!(f.reserve(0, 3), Ok(()));
        }
        assert!(f.reserve(0, 3).is_err());
        f.settle(1, false);
        assert_eq!(
            f.reserve(1, 3),
            Ok(()),
            "a place given back uncounted is free again"
        );
        f.settle(2, true);
        f.settle(2, true);
        f.settle(2, false);
        assert_eq!(f.remain(3, 3, 0), 1, "two counted");
        // A ticket: a refusal in one rate gives back the place taken in another.
        let (conns, full) = (Arc::new(FreqCtr::default()), Arc::new(FreqCtr::default()));
        full.tick(now_ms());
        assert!(RateTicket::reserve(now_ms(), Some((&conns, 1)), &[(&full, 1)]).is_err());
        assert_eq!(conns.remain(now_ms(), 1, 0), 1, "given back");
        let mut t = RateTicket::reserve(now_ms(), Some((&conns, 1)), &[(&f, 100)]).expect("room");
        assert!(conns.reserve(now_ms(), 1).is_err(), "held by the ticket");
        t.accepted();
        assert!(t.has_sessions());
        drop(t);
        assert_eq!(conns.remain(now_ms(), 1, 0), 0, "the connection counted");
        assert_eq!(f.remain(now_ms(), 100, 0), 98, "the session did not");
    }

    #[test]
    fn the_wait_ends_at_the_first_millisecond_the_count_is_below_the_limit() {
        // Every state of a few small rates, against a search millisecond by millisecond.
        for freq in [1, 2, 3, 7, 10] {
            for ticks in [(0, 1), (0, 7), (0, 30), (3, 0), (5, 2), (12, 4), (2, 9)] {
                let f = FreqCtr::default();
                for _ in 0..ticks.0 {
                    f.tick(100);
                }
                for _ in 0..ticks.1 {
                    f.tick(1300);
                }
                for now in [1300, 1301, 1650, 1999, 2050] {
                    for pend in 0..freq {
                        let first = (now..now + 3000)
                            .find(|&t| f.remain(t, freq, pend) > 0)
                            .expect("room within two periods");
                        let want = (first > now).then(|| Duration::from_millis(first - now));
                        assert_eq!(
                            f.wait(now, freq, pend),
                            want,
                            "freq {freq} ticks {ticks:?} now {now} pend {pend}"
                        );
                    }
                }
            }
        }
    }
}
