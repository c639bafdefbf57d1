//! `balance leastconn`: the server with the fewest live sessions relative to its weight.
//!
//! A server's load is `(sessions + 1) / weight`, the load it would have after taking this
//! connection; loads are compared by integer cross-multiplication, so no rounding. Servers
//! with equal load share the work: each pick starts its scan at the next position of the
//! backend's shared [`Cursor`] and the first least-loaded server from there wins.

use std::net::IpAddr;
use std::sync::Arc;

use super::{Candidate, Cursor, Live, MAX_WEIGHT, Selector};

/// The `leastconn` selector.
#[derive(Debug)]
pub struct LeastConn {
    weights: Box<[u64]>,
    cursor: Arc<Cursor>,
}

impl LeastConn {
    /// A `leastconn` selector over `candidates`.
    pub fn new(candidates: &[Candidate], cursor: Arc<Cursor>) -> Self {
        LeastConn {
            weights: candidates
                .iter()
                .map(|c| u64::from(c.weight.clamp(1, MAX_WEIGHT)))
                .collect(),
            cursor,
        }
    }
}

impl Selector for LeastConn {
    fn pick(&self, live: &dyn Live, _client: Option<IpAddr>) -> Option<usize> {
        let n = self.weights.len();
        if n == 0 {
            return None;
        }
        let start = (self.cursor.next() % n as u64) as usize;
        // (index, sessions + 1, weight) of the least loaded usable server so far.
        let mut best: Option<(usize, u64, u64)> = None;
        for i in (start..n).chain(0..start) {
            if !live.usable(i) {
                continue;
            }
            let load = u64::from(live.sessions(i)) + 1;
            let weight = self.weights[i];
            let lighter = match best {
                None => true,
                Some((_, best_load, best_weight)) => load * best_weight < best_load * weight,
            };
            if lighter {
                best = Some((i, load, weight));
            }
        }
        best.map(|(i, _, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing::{FakeLive, counts, weighted};

    fn leastconn(weights: &[u32]) -> LeastConn {
        LeastConn::new(&weighted(weights), Arc::default())
    }

    #[test]
    fn picks_the_least_loaded() {
        let selector = leastconn(&[1, 1, 1]);
        let live = FakeLive::all_usable(3);
        live.set_sessions(0, 5);
        live.set_sessions(1, 2);
        live.set_sessions(2, 7);
        for _ in 0..5 {
            assert_eq!(selector.pick(&live, None), Some(1));
        }
    }

    #[test]
    fn load_is_relative_to_weight() {
        // (6+1)/3 < (2+1)/1: the heavier server is less loaded.
        let selector = leastconn(&[3, 1]);
        let live = FakeLive::all_usable(2);
        live.set_sessions(0, 6);
        live.set_sessions(1, 2);
        assert_eq!(selector.pick(&live, None), Some(0));
        // (9+1)/3 > (2+1)/1.
        live.set_sessions(0, 9);
        assert_eq!(selector.pick(&live, None), Some(1));
    }

    #[test]
    fn ties_rotate() {
        let selector = leastconn(&[1, 1, 1]);
        let live = FakeLive::all_usable(3);
        assert_eq!(counts(&selector, &live, 3, 300), vec![100, 100, 100]);
    }

    #[test]
    fn sessions_follow_weights_when_picks_are_kept() {
        for weights in [&[1, 1, 1][..], &[3, 1], &[5, 3, 1], &[256, 1]] {
            let selector = leastconn(weights);
            let live = FakeLive::all_usable(weights.len());
            let mut open = vec![0u32; weights.len()];
            let cycle: u32 = weights.iter().sum();
            for cycles in 1..=3 {
                for _ in 0..cycle {
                    let i = selector.pick(&live, None).unwrap();
                    open[i] += 1;
                    live.set_sessions(i, open[i]);
                }
                let want: Vec<u32> = weights.iter().map(|w| w * cycles).collect();
                assert_eq!(open, want, "weights {weights:?}");
            }
        }
    }

    #[test]
    fn unusable_server_is_skipped() {
        let selector = leastconn(&[1, 1, 1]);
        let live = FakeLive::all_usable(3);
        live.set_sessions(1, 5);
        live.set_usable(0, false);
        assert_eq!(counts(&selector, &live, 3, 10), vec![0, 0, 10]);
        live.set_usable(2, false);
        assert_eq!(selector.pick(&live, None), Some(1));
        live.set_usable(1, false);
        assert_eq!(selector.pick(&live, None), None);
    }

    #[test]
    fn cursor_survives_a_rebuild() {
        let cursor = Arc::new(Cursor::default());
        let live = FakeLive::all_usable(3);
        let first = LeastConn::new(&weighted(&[1, 1, 1]), cursor.clone());
        assert_eq!(first.pick(&live, None), Some(0));
        assert_eq!(first.pick(&live, None), Some(1));
        let second = LeastConn::new(&weighted(&[1, 1, 1]), cursor);
        assert_eq!(second.pick(&live, None), Some(2));
    }
}
