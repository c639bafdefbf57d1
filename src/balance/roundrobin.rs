//! `balance roundrobin`: smooth weighted round robin.
//!
//! At build time the whole cycle (the sum of the reduced weights) is laid out with the
//! "smooth" weighted round-robin rule: at every slot each server's running score grows by its
//! weight, the highest score wins (ties to the first declared) and the winner's score drops by
//! the total. Heavier servers are interleaved with the others (weights 3,1 give `a a b a`,
//! never `a a a b`) and over each full cycle every server is picked exactly its weight times.
//! Picks walk the cycle with the backend's shared [`Cursor`], so a rebuilt table continues
//! where the previous one stopped.

use std::net::IpAddr;
use std::sync::Arc;

use super::{Candidate, Cursor, Live, Rotation, Selector, reduced_weights};

/// The `roundrobin` selector.
#[derive(Debug)]
pub struct RoundRobin {
    rotation: Rotation,
    candidates: usize,
}

impl RoundRobin {
    /// Lays out one smooth cycle over `candidates`.
    pub fn new(candidates: &[Candidate], cursor: Arc<Cursor>) -> Self {
        RoundRobin {
            rotation: Rotation {
                sequence: smooth_cycle(&reduced_weights(candidates)),
                cursor,
            },
            candidates: candidates.len(),
        }
    }
}

impl Selector for RoundRobin {
    fn pick(&self, live: &dyn Live, _client: Option<IpAddr>) -> Option<usize> {
        self.rotation.pick(live, self.candidates)
    }
}

/// One cycle of smooth weighted round robin over `weights`.
fn smooth_cycle(weights: &[u64]) -> Box<[u32]> {
    let total: u64 = weights.iter().sum();
    // Scores stay within -total..=total, so i64 cannot overflow for u32-sized weights.
    let mut scores = vec![0i64; weights.len()];
    let mut cycle = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, &weight) in weights.iter().enumerate() {
            scores[i] += weight as i64;
            if scores[i] > scores[best] {
                best = i;
            }
        }
        scores[best] -= total as i64;
        cycle.push(best as u32);
    }
    cycle.into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing::{FakeLive, assert_exact_weight_per_cycle, letters, weighted};

    fn roundrobin(weights: &[u32]) -> RoundRobin {
        RoundRobin::new(&weighted(weights), Arc::default())
    }

    #[test]
    fn sequences_are_interleaved() {
        let live = FakeLive::all_usable(4);
        assert_eq!(letters(&roundrobin(&[1, 1, 1]), &live, 6), "abcabc");
        assert_eq!(letters(&roundrobin(&[3, 1]), &live, 8), "aabaaaba");
        assert_eq!(letters(&roundrobin(&[5, 3, 1]), &live, 9), "abacababa");
        assert_eq!(letters(&roundrobin(&[2, 2, 1]), &live, 5), "abcab");
    }

    #[test]
    fn every_cycle_gives_each_server_exactly_its_weight() {
        assert_exact_weight_per_cycle(roundrobin);
    }

    #[test]
    fn heavy_server_never_takes_a_whole_cycle_in_one_run() {
        let live = FakeLive::all_usable(2);
        let seq = letters(&roundrobin(&[256, 1]), &live, 257);
        assert_eq!(seq.matches('b').count(), 1);
        // The light server sits mid-cycle, not at either end.
        let at = seq.find('b').unwrap();
        assert!((64..192).contains(&at), "b at {at}");
    }

    #[test]
    fn unusable_server_is_skipped_in_order() {
        let selector = roundrobin(&[1, 1, 1]);
        let live = FakeLive::all_usable(3);
        live.set_usable(1, false);
        // Positions a b c a b c: b's turns fall through to the next in the cycle, c.
        assert_eq!(letters(&selector, &live, 6), "accacc");
    }

    #[test]
    fn nothing_usable_gives_none() {
        let selector = roundrobin(&[3, 1]);
        let live = FakeLive::all_usable(2);
        live.set_usable(0, false);
        live.set_usable(1, false);
        assert_eq!(selector.pick(&live, None), None);
    }

    #[test]
    fn cursor_survives_a_rebuild() {
        let cursor = Arc::new(Cursor::default());
        let live = FakeLive::all_usable(3);
        let first = RoundRobin::new(&weighted(&[1, 1, 1]), cursor.clone());
        assert_eq!(letters(&first, &live, 2), "ab");
        let second = RoundRobin::new(&weighted(&[1, 1, 1]), cursor);
        assert_eq!(letters(&second, &live, 4), "cabc");
    }
}
