//! Server selection, one file per `balance` algorithm, each behind [`Selector`].
//!
//! The table builder makes one selector per backend (and one for its backups) over the servers
//! that are eligible in that table, in declaration order. The data path calls
//! [`Selector::pick`] with a [`Live`] view of session counts and slot availability; nothing
//! here blocks or allocates on the hot path. State that must outlive a table swap (the rotation
//! position) lives in a [`Cursor`] kept by the backend's live state.
//!
//! Files are named after the config words: `roundrobin.rs`, `static_rr.rs`, `leastconn.rs`,
//! `first.rs`, `source.rs` (both `hash-type map-based` and `hash-type consistent`). This file
//! holds what they share: [`build`], the precomputed [`Rotation`] walked by the cursor, and the
//! skip-unusable walk.

mod first;
mod leastconn;
mod roundrobin;
mod source;
mod static_rr;

use std::fmt::Debug;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::{Balance, HashType};

/// Highest weight a selector honours: HAProxy's largest effective weight (`SRV_EWGHT_MAX`,
/// user weight 256 times its scale of 16); anything above is treated as this so a bad input
/// cannot blow up a precomputed sequence.
pub const MAX_WEIGHT: u32 = 256 * WEIGHT_SCALE;

/// HAProxy's `BE_WEIGHT_SCALE`: effective weights are user weights times 16, so `slowstart`
/// can ramp even a weight-1 server in 16 steps (`server_recalc_eweight`).
pub const WEIGHT_SCALE: u32 = 16;

/// What a selector knows about one candidate server, fixed when the table is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Effective weight on HAProxy's scale (user weight times 16, ramped by `slowstart`,
    /// after admin overrides); always >= 1 here. Only ratios matter.
    pub weight: u32,
    /// HAProxy's server id (`puid`: its `id`, else numbered in declaration order). It places
    /// the server's points for `hash-type consistent`.
    pub key: u64,
}

/// The live facts a selector reads at pick time.
pub trait Live {
    /// Whether candidate `i` can take one more session now (not full, not excluded by a retry).
    fn usable(&self, i: usize) -> bool;
    /// Sessions currently open on candidate `i` (for `leastconn`).
    fn sessions(&self, i: usize) -> u32;
}

/// Per-backend selection state that survives table swaps (e.g. the rotation position).
#[derive(Debug, Default)]
pub struct Cursor {
    /// Next position in the rotation.
    pub pos: AtomicU64,
    /// `leastconn`'s server order, which depends on history.
    pub leastconn: leastconn::Order,
}

impl Cursor {
    /// Takes the next rotation position (wraps silently after 2^64 picks).
    fn next(&self) -> u64 {
        // Relaxed: the position only spreads load; no other memory is published through it.
        self.pos.fetch_add(1, Ordering::Relaxed)
    }
}

/// A balancing algorithm over a fixed candidate list.
pub trait Selector: Send + Sync + Debug {
    /// Picks the index of the candidate for a new connection, or `None` when no candidate is
    /// usable. `client` is the client's address (for `source`).
    fn pick(&self, live: &dyn Live, client: Option<IpAddr>) -> Option<usize>;

    /// A session of the server with id `key` ([`Candidate::key`]) ended; it has `sessions`
    /// left. Only `leastconn` orders servers by what happened to them.
    fn released(&self, _key: u64, _sessions: u32) {}
}

/// Builds the selector for `balance` / `hash-type` over `candidates`.
///
/// `hash-type` only matters for `balance source`. An empty candidate list gives a selector
/// that always returns `None`.
pub fn build(
    balance: Balance,
    hash_type: HashType,
    candidates: &[Candidate],
    slots: MapSlots,
    cursor: Arc<Cursor>,
) -> Box<dyn Selector> {
    match (balance, hash_type) {
        (Balance::RoundRobin, _) => Box::new(roundrobin::RoundRobin::new(candidates, cursor)),
        (Balance::StaticRr, _) => {
            Box::new(static_rr::StaticRr::with_slots(candidates, slots, cursor))
        }
        (Balance::LeastConn, _) => Box::new(leastconn::LeastConn::new(candidates, cursor)),
        (Balance::First, _) => Box::new(first::First::new(candidates)),
        (Balance::Source, HashType::MapBased) => {
            Box::new(source::MapBased::with_slots(candidates, slots))
        }
        (Balance::Source, HashType::Consistent) => Box::new(source::Consistent::new(candidates)),
    }
}

/// Whether `balance`/`hash_type` is one of HAProxy's map-based algorithms (`lb_map.c`):
/// `static-rr`, and `source` with `hash-type map-based`.
pub fn map_based(balance: Balance, hash_type: HashType) -> bool {
    matches!(
        (balance, hash_type),
        (Balance::StaticRr, _) | (Balance::Source, HashType::MapBased)
    )
}

/// How many slots the map of a map-based algorithm has ([`map_based`]; the others ignore it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapSlots {
    /// One per unit of every candidate's weight (weights reduced by their GCD).
    Every,
    /// HAProxy's backup map without `option allbackups` (`update_backend_weight` with
    /// `fbck`): the map is filled over every candidate (the usable backups) but has only as
    /// many slots as the first candidate's weight, so a heavier later backup takes slots from
    /// it. Weights are divided by `unit`, rounded up: 16 times the GCD of the configured
    /// weights of the backend's servers (HAProxy's `wmult`).
    FirstWeight {
        /// The weight divisor, on the candidates' scale.
        unit: u32,
    },
}

impl MapSlots {
    /// The map's weights and its number of slots for `candidates`.
    fn weights(self, candidates: &[Candidate]) -> (Vec<u64>, u64) {
        match self {
            MapSlots::Every => {
                let weights = reduced_weights(candidates);
                let total = weights.iter().sum();
                (weights, total)
            }
            MapSlots::FirstWeight { unit } => {
                let unit = u64::from(unit.max(1));
                let weights: Vec<u64> = candidates
                    .iter()
                    .map(|c| u64::from(c.weight.clamp(1, MAX_WEIGHT)).div_ceil(unit))
                    .collect();
                let total = weights.first().copied().unwrap_or(0);
                (weights, total)
            }
        }
    }
}

/// Candidate weights clamped to `1..=MAX_WEIGHT` and divided by their greatest common divisor.
///
/// Scaling every weight by the same factor repeats the same order, so `roundrobin`,
/// `static-rr` and `map-based` build their one-cycle sequences over the reduced weights
/// (weights 100/100/50 make a 5-slot cycle, not a 250-slot one).
fn reduced_weights(candidates: &[Candidate]) -> Vec<u64> {
    let weights: Vec<u64> = candidates
        .iter()
        .map(|c| u64::from(c.weight.clamp(1, MAX_WEIGHT)))
        .collect();
    let divisor = weights.iter().copied().fold(0, gcd).max(1);
    weights.into_iter().map(|w| w / divisor).collect()
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// A precomputed order of candidate indices over one cycle, walked by the shared [`Cursor`].
///
/// Used by `roundrobin` and `static-rr`; each pick takes the next position and, when that
/// candidate is unusable, continues along the sequence to the next usable one.
#[derive(Debug)]
struct Rotation {
    sequence: Box<[u32]>,
    cursor: Arc<Cursor>,
}

impl Rotation {
    fn pick(&self, live: &dyn Live, candidates: usize) -> Option<usize> {
        let len = self.sequence.len() as u64;
        if len == 0 {
            return None;
        }
        let start = (self.cursor.next() % len) as usize;
        walk_usable(live, candidates, cyclic(&self.sequence, start))
    }
}

/// `order` from `start`, wrapping around once.
fn cyclic(order: &[u32], start: usize) -> impl Iterator<Item = usize> + '_ {
    let (head, tail) = order.split_at(start.min(order.len()));
    tail.iter().chain(head).map(|&i| i as usize)
}

/// Candidates up to this many are tracked while walking, so a walk stops as soon as all of
/// them proved unusable instead of running to the end of a long sequence or ring.
const TRACKED: usize = 1024;

/// The first usable candidate along `order` (indices below `candidates`), or `None`.
///
/// Each candidate's `usable` is asked at most once per walk; no allocation.
fn walk_usable(
    live: &dyn Live,
    candidates: usize,
    order: impl Iterator<Item = usize>,
) -> Option<usize> {
    let mut unusable = [0u64; TRACKED / 64];
    let mut unusable_count = 0;
    for i in order {
        let tracked = i < TRACKED;
        let bit = 1u64 << (i % 64);
        if tracked && unusable[i / 64] & bit != 0 {
            continue;
        }
        if live.usable(i) {
            return Some(i);
        }
        if tracked {
            unusable[i / 64] |= bit;
            unusable_count += 1;
            if unusable_count == candidates {
                return None;
            }
        }
    }
    None
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers shared by the algorithm tests: a scriptable [`Live`] and pick counting.

    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    use super::{Candidate, Live, Selector};

    /// A [`Live`] whose usability and session counts the test sets.
    pub struct FakeLive {
        pub usable: Vec<AtomicBool>,
        pub sessions: Vec<AtomicU32>,
    }

    impl FakeLive {
        pub fn all_usable(n: usize) -> Self {
            FakeLive {
                usable: (0..n).map(|_| AtomicBool::new(true)).collect(),
                sessions: (0..n).map(|_| AtomicU32::new(0)).collect(),
            }
        }
        pub fn set_usable(&self, i: usize, usable: bool) {
            self.usable[i].store(usable, Ordering::Relaxed);
        }
        pub fn set_sessions(&self, i: usize, sessions: u32) {
            self.sessions[i].store(sessions, Ordering::Relaxed);
        }
    }

    impl Live for FakeLive {
        fn usable(&self, i: usize) -> bool {
            self.usable[i].load(Ordering::Relaxed)
        }
        fn sessions(&self, i: usize) -> u32 {
            self.sessions[i].load(Ordering::Relaxed)
        }
    }

    /// Candidates with these weights and keys 1000, 1001, ...
    pub fn weighted(weights: &[u32]) -> Vec<Candidate> {
        // User weights, scaled as the table scales them.
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| Candidate {
                weight: weight * super::WEIGHT_SCALE,
                key: 1000 + i as u64,
            })
            .collect()
    }

    /// `n` picks as letters (`a` = candidate 0), `-` for `None`.
    pub fn letters(selector: &dyn Selector, live: &dyn Live, n: usize) -> String {
        (0..n)
            .map(|_| match selector.pick(live, None) {
                Some(i) => char::from(b'a' + i as u8),
                None => '-',
            })
            .collect()
    }

    /// Asserts that over three consecutive cycles every server gets exactly its weight (reduced
    /// by the common divisor: 100/100/50 runs as 2/2/1, a 5-pick cycle), for the weight sets
    /// the weighted algorithms must all get right.
    pub fn assert_exact_weight_per_cycle<S: Selector>(build: impl Fn(&[u32]) -> S) {
        for weights in [
            &[1, 1, 1][..],
            &[3, 1],
            &[5, 3, 1],
            &[256, 1],
            &[100, 100, 50],
        ] {
            let selector = build(weights);
            let live = FakeLive::all_usable(weights.len());
            let want: Vec<usize> = super::reduced_weights(&weighted(weights))
                .iter()
                .map(|&w| w as usize)
                .collect();
            let cycle = want.iter().sum();
            for _ in 0..3 {
                assert_eq!(
                    counts(&selector, &live, weights.len(), cycle),
                    want,
                    "{weights:?}"
                );
            }
        }
    }

    /// How many of `n` picks went to each of `candidates` candidates.
    pub fn counts(
        selector: &dyn Selector,
        live: &dyn Live,
        candidates: usize,
        n: usize,
    ) -> Vec<usize> {
        let mut counts = vec![0; candidates];
        for _ in 0..n {
            if let Some(i) = selector.pick(live, None) {
                counts[i] += 1;
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::thread;

    use super::testing::{FakeLive, weighted};
    use super::*;

    #[test]
    fn reduced_weights_divide_by_gcd_and_clamp() {
        assert_eq!(reduced_weights(&weighted(&[100, 100, 50])), vec![2, 2, 1]);
        assert_eq!(reduced_weights(&weighted(&[3, 1])), vec![3, 1]);
        assert_eq!(reduced_weights(&weighted(&[1000, 256])), vec![1, 1]);
    }

    #[test]
    fn walk_stops_once_every_candidate_is_unusable() {
        struct Counting(std::sync::atomic::AtomicUsize);
        impl Live for Counting {
            fn usable(&self, _: usize) -> bool {
                self.0.fetch_add(1, Ordering::Relaxed);
                false
            }
            fn sessions(&self, _: usize) -> u32 {
                0
            }
        }
        let live = Counting(Default::default());
        let order = [0u32, 1, 0, 1, 0, 1, 0, 1, 0, 1];
        assert_eq!(walk_usable(&live, 2, cyclic(&order, 3)), None);
        assert_eq!(live.0.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn empty_candidate_list_picks_nothing() {
        let live = FakeLive::all_usable(0);
        for balance in [
            Balance::RoundRobin,
            Balance::StaticRr,
            Balance::LeastConn,
            Balance::First,
            Balance::Source,
        ] {
            for hash_type in [HashType::MapBased, HashType::Consistent] {
                let selector = build(balance, hash_type, &[], MapSlots::Every, Arc::default());
                assert_eq!(
                    selector.pick(&live, None),
                    None,
                    "{balance:?} {hash_type:?}"
                );
            }
        }
    }

    #[test]
    fn concurrent_picks_hit_exact_totals() {
        const THREADS: usize = 4;
        const CYCLES_PER_THREAD: usize = 500;
        let candidates = weighted(&[5, 3, 1]);
        let live = FakeLive::all_usable(3);
        for balance in [Balance::RoundRobin, Balance::StaticRr] {
            let selector = build(
                balance,
                HashType::MapBased,
                &candidates,
                MapSlots::Every,
                Arc::default(),
            );
            let totals = thread::scope(|scope| {
                let handles: Vec<_> = (0..THREADS)
                    .map(|_| {
                        scope.spawn(|| {
                            let mut counts = [0usize; 3];
                            for _ in 0..CYCLES_PER_THREAD * 9 {
                                if let Some(i) = selector.pick(&live, None) {
                                    counts[i] += 1;
                                }
                            }
                            counts
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap())
                    .fold([0usize; 3], |acc, c| {
                        [acc[0] + c[0], acc[1] + c[1], acc[2] + c[2]]
                    })
            });
            let cycles = THREADS * CYCLES_PER_THREAD;
            assert_eq!(totals, [5 * cycles, 3 * cycles, cycles], "{balance:?}");
        }
        // The other algorithms: no panic, every pick answered.
        for (balance, hash_type) in [
            (Balance::LeastConn, HashType::MapBased),
            (Balance::First, HashType::MapBased),
            (Balance::Source, HashType::MapBased),
            (Balance::Source, HashType::Consistent),
        ] {
            let selector = build(
                balance,
                hash_type,
                &candidates,
                MapSlots::Every,
                Arc::default(),
            );
            let picked: usize = thread::scope(|scope| {
                let handles: Vec<_> = (0..THREADS)
                    .map(|t| {
                        let selector = &selector;
                        let live = &live;
                        scope.spawn(move || {
                            (0..2000u32)
                                .filter(|n| {
                                    let ip = IpAddr::from([10, t as u8, (n >> 8) as u8, *n as u8]);
                                    selector.pick(live, Some(ip)).is_some()
                                })
                                .count()
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).sum()
            });
            assert_eq!(picked, THREADS * 2000, "{balance:?} {hash_type:?}");
        }
    }
}
