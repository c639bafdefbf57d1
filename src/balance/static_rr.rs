//! `balance static-rr`: HAProxy's fixed weighted map, walked in turn.
//!
//! The map has one slot per unit of (reduced) weight and is filled the way HAProxy fills it:
//! for each slot every server's score grows by its weight, the server with the highest
//! `floor((score + total) / total)` wins (ties to the first declared) and the winner's score
//! drops by the total. This keeps HAProxy's exact order, which is clumpier than `roundrobin`
//! (weights 3,1 give `a a a b`). Picks walk the map with the backend's shared [`Cursor`].
//! `balance source` with `hash-type map-based` indexes the same map.

use std::net::IpAddr;
use std::sync::Arc;

use super::{Candidate, Cursor, Live, MapSlots, Rotation, Selector};

/// The `static-rr` selector.
#[derive(Debug)]
pub struct StaticRr {
    rotation: Rotation,
    candidates: usize,
}

impl StaticRr {
    /// Fills HAProxy's map over `candidates`, one slot per unit of weight.
    #[cfg(test)]
    pub fn new(candidates: &[Candidate], cursor: Arc<Cursor>) -> Self {
        Self::with_slots(candidates, MapSlots::Every, cursor)
    }

    /// Fills HAProxy's map over `candidates` with as many slots as `slots` says.
    pub fn with_slots(candidates: &[Candidate], slots: MapSlots, cursor: Arc<Cursor>) -> Self {
        let (weights, total) = slots.weights(candidates);
        StaticRr {
            rotation: Rotation {
                sequence: map_of(&weights, total),
                cursor,
            },
            candidates: candidates.len(),
        }
    }
}

impl Selector for StaticRr {
    fn pick(&self, live: &dyn Live, _client: Option<IpAddr>) -> Option<usize> {
        self.rotation.pick(live, self.candidates)
    }
}

/// HAProxy's weighted map over `weights`: one slot per unit of weight.
#[cfg(test)]
pub(super) fn map(weights: &[u64]) -> Box<[u32]> {
    map_of(weights, weights.iter().sum())
}

/// HAProxy's map (`recalc_server_map`) of `total` slots over `weights`; `total` is their sum
/// except for the backup map without `option allbackups`, where it is the first weight.
pub(super) fn map_of(weights: &[u64], total: u64) -> Box<[u32]> {
    if total == 1 && !weights.is_empty() {
        // HAProxy's shortcut for a one-slot map: the first server, whatever the others weigh.
        return Box::new([0]);
    }
    let total_i = total as i64;
    // Scores stay within -total..=total when `total` is the sum, and grow by at most the
    // sum per slot otherwise: i64 cannot overflow for the clamped weights.
    let mut scores = vec![0i64; weights.len()];
    let mut slots = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        let mut best_value = i64::MIN;
        for (i, &weight) in weights.iter().enumerate() {
            scores[i] += weight as i64;
            // Floor division as HAProxy does it; `score + total` is never negative here.
            let value = (scores[i] + total_i) / total_i;
            if value > best_value {
                best = i;
                best_value = value;
            }
        }
        scores[best] -= total_i;
        slots.push(best as u32);
    }
    slots.into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing::{FakeLive, assert_exact_weight_per_cycle, letters, weighted};

    fn static_rr(weights: &[u32]) -> StaticRr {
        StaticRr::new(&weighted(weights), Arc::default())
    }

    /// Orders observed from HAProxy 2.6.12 (`balance static-rr`, `nbthread 1`, one server per
    /// weight answering its own name on 127.0.0.1, sequential connections; the pattern repeats
    /// every cycle and starts at the first slot).
    #[test]
    fn sequences_match_haproxy_2_6() {
        let observed: &[(&[u32], &str)] = &[
            (&[1, 1, 1], "abc"),
            (&[3, 1], "aaab"),
            (&[1, 2], "abb"),
            (&[3, 2], "aabab"),
            (&[5, 3, 1], "aabababac"),
            (&[2, 2, 1], "ababc"),
            (&[4, 3, 2, 1], "ababcabacd"),
        ];
        for &(weights, cycle) in observed {
            let live = FakeLive::all_usable(weights.len());
            assert_eq!(
                letters(&static_rr(weights), &live, 3 * cycle.len()),
                cycle.repeat(3),
                "weights {weights:?}"
            );
        }
    }

    /// Also observed from HAProxy 2.6.12: with weights 256,1 the light server takes the last
    /// slot of each 257-slot cycle; 7,5,3 and 10,1,1 repeat the cycles below.
    #[test]
    fn long_sequences_match_haproxy_2_6() {
        let live = FakeLive::all_usable(3);
        let seq = letters(&static_rr(&[256, 1]), &live, 257 * 2);
        let at: Vec<usize> = seq.match_indices('b').map(|(i, _)| i).collect();
        assert_eq!(at, vec![256, 513]);
        let cycle = "ababcaabacababc";
        assert_eq!(letters(&static_rr(&[7, 5, 3]), &live, 30), cycle.repeat(2));
        let cycle = "aaaaaabaaaac";
        assert_eq!(letters(&static_rr(&[10, 1, 1]), &live, 24), cycle.repeat(2));
    }

    #[test]
    fn backup_map_without_allbackups_has_the_first_weight_in_slots() {
        // HAProxy 2.6: backups c weight 2, d weight 5 send everything to d; 3 and 5 alternate.
        let first = |weights: &[u32]| {
            let slots = MapSlots::FirstWeight { unit: 16 };
            let rr = StaticRr::with_slots(&weighted(weights), slots, Arc::default());
            letters(&rr, &FakeLive::all_usable(weights.len()), 6)
        };
        assert_eq!(first(&[2, 5]), "bbbbbb");
        assert_eq!(first(&[3, 5]), "abbabb");
        assert_eq!(first(&[1, 5]), "aaaaaa", "one slot: the first backup");
        assert_eq!(first(&[2, 2, 2]), "ababab");
        // The divisor is the backend's GCD, not the candidates': 4 and 6 with unit 16 make a
        // 4-slot map, not the 2-slot map of 2 and 3.
        let slots = MapSlots::FirstWeight { unit: 16 };
        assert_eq!(slots.weights(&weighted(&[4, 6])), (vec![4, 6], 4));
        assert_eq!(&*map_of(&[4, 6], 4), &[0, 1, 1, 1]);
        assert_eq!(&*map_of(&[2, 3], 2), &[0, 1]);
    }

    #[test]
    fn every_cycle_gives_each_server_exactly_its_weight() {
        assert_exact_weight_per_cycle(static_rr);
    }

    #[test]
    fn scaled_weights_keep_the_order() {
        // HAProxy scales weights internally (by 16); the order must not change with scale.
        let live = FakeLive::all_usable(3);
        assert_eq!(
            letters(&static_rr(&[80, 48, 16]), &live, 18),
            "aabababac".repeat(2)
        );
    }

    #[test]
    fn unusable_server_is_skipped_in_order() {
        let selector = static_rr(&[3, 1, 1]);
        let live = FakeLive::all_usable(3);
        live.set_usable(0, false);
        // Map a a b a c: each of a's turns falls through to the next slot holding b or c.
        assert_eq!(letters(&selector, &live, 5), "bbbcc");
    }

    #[test]
    fn cursor_survives_a_rebuild() {
        let cursor = Arc::new(Cursor::default());
        let live = FakeLive::all_usable(2);
        let first = StaticRr::new(&weighted(&[3, 1]), cursor.clone());
        assert_eq!(letters(&first, &live, 2), "aa");
        let second = StaticRr::new(&weighted(&[3, 1]), cursor);
        assert_eq!(letters(&second, &live, 6), "abaaab");
    }

    #[test]
    fn nothing_usable_gives_none() {
        let selector = static_rr(&[5, 3, 1]);
        let live = FakeLive::all_usable(3);
        (0..3).for_each(|i| live.set_usable(i, false));
        assert_eq!(selector.pick(&live, None), None);
    }
}
