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
///
/// Servers of equal weight have equal score increments, so among them the least picked wins,
/// ties to the first declared: they take their turns in declaration order, and only the next
/// one of each weight can have the highest score. So each slot compares one candidate per
/// distinct weight (at most [`super::MAX_WEIGHT`]) instead of every server, and a backend
/// of 10,000 equal servers is laid out in O(servers), with the same cycle as scanning all.
fn smooth_cycle(weights: &[u64]) -> Box<[u32]> {
    let total: u64 = weights.iter().sum();
    // (weight, its servers in declaration order, how many times the group was picked)
    let mut groups: Vec<(u64, Vec<u32>, u64)> = Vec::new();
    for (i, &weight) in weights.iter().enumerate() {
        match groups.iter_mut().find(|(w, _, _)| *w == weight) {
            Some((_, members, _)) => members.push(i as u32),
            None => groups.push((weight, vec![i as u32], 0)),
        }
    }
    let mut cycle = Vec::with_capacity(total as usize);
    for slot in 1..=total {
        // Every score after this slot's increments is `slot × weight − total × picks`
        // (i64: at most total × 256, far from overflowing).
        let mut best: Option<(i64, u32, usize)> = None;
        for (g, (weight, members, picked)) in groups.iter().enumerate() {
            let len = members.len() as u64;
            let index = members[(*picked % len) as usize];
            let score = (slot * weight) as i64 - (total * (*picked / len)) as i64;
            if best.is_none_or(|(s, i, _)| score > s || (score == s && index < i)) {
                best = Some((score, index, g));
            }
        }
        let Some((_, index, g)) = best else { break };
        groups[g].2 += 1;
        cycle.push(index);
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

    /// The rule as stated: every score grows by its weight, the highest (first declared on a
    /// tie) wins and drops by the total.
    fn scanning_all(weights: &[u64]) -> Vec<u32> {
        let total: u64 = weights.iter().sum();
        let mut scores = vec![0i64; weights.len()];
        let mut cycle = Vec::new();
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
        cycle
    }

    #[test]
    fn the_cycle_is_the_one_scanning_every_server_gives() {
        let cases: [&[u64]; 6] = [
            &[1, 1, 1, 1],
            &[3, 1],
            &[5, 3, 1, 3, 5, 1],
            &[2, 7, 2, 7, 7, 1, 256],
            &[4, 4, 9, 1, 1, 1, 9, 4, 6],
            &[256, 1, 255, 2, 2, 254],
        ];
        for weights in cases {
            assert_eq!(
                &*smooth_cycle(weights),
                &scanning_all(weights)[..],
                "{weights:?}"
            );
        }
        // 10,000 equal servers: declaration order, and quickly.
        let equal = smooth_cycle(&[1; 10_000]);
        assert!(equal.iter().enumerate().all(|(i, &s)| s as usize == i));
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
