//! `balance source`: the same client address goes to the same server.
//!
//! The client's IP (IPv4, IPv6, or IPv4-mapped IPv6 treated as its IPv4 address; none hashes
//! as 0) is hashed with [`mix64`], then looked up one of two ways, after `hash-type`:
//! - `map-based` ([`MapBased`]): `hash % total weight` indexes the weighted map that
//!   `static-rr` builds. Any change in the server set or weights remaps most clients.
//! - `consistent` ([`Consistent`]): a ring with `weight * POINTS_PER_WEIGHT` points per server,
//!   placed by the server's stable key; a client goes to the first point at or after its hash.
//!   Adding or removing a server moves only about `1/N` of the clients.
//!
//! Either way an unusable server's turn falls through to the next entry (next map slot, next
//! point clockwise), so a full server spills its clients onto its neighbours only.

use std::net::IpAddr;

use super::{
    Candidate, Live, MAX_WEIGHT, Selector, WEIGHT_SCALE, cyclic, reduced_weights, static_rr,
    walk_usable,
};

/// Ring points per unit of weight for `hash-type consistent`.
///
/// HAProxy uses 16, which leaves a weight-1 server's share off by a third or more on a typical
/// ring; 100 brings a weight-1 share to within about 15% (100 * 12 bytes per unit of weight).
const POINTS_PER_WEIGHT: u64 = 100;

/// The `source` selector with `hash-type map-based`.
#[derive(Debug)]
pub struct MapBased {
    map: Box<[u32]>,
    candidates: usize,
}

impl MapBased {
    /// Builds the weighted map over `candidates`.
    pub fn new(candidates: &[Candidate]) -> Self {
        MapBased {
            map: static_rr::map(&reduced_weights(candidates)),
            candidates: candidates.len(),
        }
    }
}

impl Selector for MapBased {
    fn pick(&self, live: &dyn Live, client: Option<IpAddr>) -> Option<usize> {
        let len = self.map.len() as u64;
        if len == 0 {
            return None;
        }
        let start = (hash_client(client) % len) as usize;
        walk_usable(live, self.candidates, cyclic(&self.map, start))
    }
}

/// The `source` selector with `hash-type consistent`.
#[derive(Debug)]
pub struct Consistent {
    /// Point positions, sorted; `owners[k]` is the candidate at `positions[k]`.
    positions: Box<[u64]>,
    owners: Box<[u32]>,
    candidates: usize,
}

impl Consistent {
    /// Builds the hash ring over `candidates`.
    pub fn new(candidates: &[Candidate]) -> Self {
        let mut points: Vec<(u64, u64, u32)> = Vec::new();
        for (i, candidate) in candidates.iter().enumerate() {
            // Candidate weights are on HAProxy's x16 scale; points are per user weight.
            let weight = u64::from(candidate.weight.clamp(1, MAX_WEIGHT));
            let points_here = (weight * POINTS_PER_WEIGHT).div_ceil(u64::from(WEIGHT_SCALE));
            points.extend((0..points_here).map(|point| {
                (
                    point_position(candidate.key, point),
                    candidate.key,
                    i as u32,
                )
            }));
        }
        // Position first; the key breaks (astronomically rare) collisions the same way
        // whatever the declaration order, so removing a server never reorders the others.
        points.sort_unstable();
        Consistent {
            positions: points.iter().map(|p| p.0).collect(),
            owners: points.iter().map(|p| p.2).collect(),
            candidates: candidates.len(),
        }
    }
}

impl Selector for Consistent {
    fn pick(&self, live: &dyn Live, client: Option<IpAddr>) -> Option<usize> {
        if self.owners.is_empty() {
            return None;
        }
        let hash = hash_client(client);
        // First point at or after the hash, wrapping to the start of the ring.
        let start = self.positions.partition_point(|&p| p < hash) % self.owners.len();
        walk_usable(live, self.candidates, cyclic(&self.owners, start))
    }
}

/// The client address's hash; a missing address hashes as 0.
fn hash_client(client: Option<IpAddr>) -> u64 {
    match client.map(|ip| ip.to_canonical()) {
        None => 0,
        Some(IpAddr::V4(v4)) => mix64(u64::from(u32::from(v4))),
        Some(IpAddr::V6(v6)) => {
            let bits = u128::from(v6);
            mix64(mix64((bits >> 64) as u64) ^ bits as u64)
        }
    }
}

/// Position of point number `point` of the server whose key is `key`: the `point`-th output
/// of a SplitMix64 generator seeded with the key, so positions depend on nothing else.
fn point_position(key: u64, point: u64) -> u64 {
    mix64(mix64(key).wrapping_add(point.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15)))
}

/// The SplitMix64 finaliser (Steele, Lea and Flood, 2014): a bijective 64-bit mixer whose
/// every output bit depends on every input bit, so nearby inputs (consecutive addresses,
/// point numbers) land far apart.
fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::balance::testing::{FakeLive, weighted};

    fn ipv4(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
    }

    fn ipv6(n: u32) -> IpAddr {
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0,
            0,
            0,
            0,
            (n >> 16) as u16,
            n as u16,
        ))
    }

    fn selectors(weights: &[u32]) -> [(&'static str, Box<dyn Selector>); 2] {
        let candidates = weighted(weights);
        [
            ("map-based", Box::new(MapBased::new(&candidates))),
            ("consistent", Box::new(Consistent::new(&candidates))),
        ]
    }

    #[test]
    fn same_client_same_server() {
        let live = FakeLive::all_usable(4);
        for (name, selector) in selectors(&[1, 2, 3, 4]) {
            for n in 0..200 {
                for ip in [ipv4(n), ipv6(n)] {
                    let first = selector.pick(&live, Some(ip));
                    assert!(first.is_some());
                    assert_eq!(selector.pick(&live, Some(ip)), first, "{name} {ip}");
                }
            }
        }
    }

    #[test]
    fn missing_address_hashes_as_zero() {
        assert_eq!(hash_client(None), 0);
        let live = FakeLive::all_usable(3);
        for (_, selector) in selectors(&[1, 1, 1]) {
            let first = selector.pick(&live, None);
            assert!(first.is_some());
            assert_eq!(selector.pick(&live, None), first);
        }
    }

    #[test]
    fn mapped_ipv4_hashes_like_ipv4() {
        let v4 = Ipv4Addr::new(192, 0, 2, 7);
        assert_eq!(
            hash_client(Some(IpAddr::V4(v4))),
            hash_client(Some(IpAddr::V6(v4.to_ipv6_mapped())))
        );
        assert_ne!(
            hash_client(Some(IpAddr::V4(v4))),
            hash_client(Some(ipv6(7)))
        );
    }

    /// Share of 10,000 clients per server, for each address family.
    fn shares(
        selector: &dyn Selector,
        live: &dyn Live,
        n: usize,
        ip: fn(u32) -> IpAddr,
    ) -> Vec<f64> {
        let mut counts = vec![0usize; n];
        for k in 0..10_000 {
            counts[selector.pick(live, Some(ip(k))).unwrap()] += 1;
        }
        counts.iter().map(|&c| c as f64 / 10_000.0).collect()
    }

    #[test]
    fn clients_spread_by_weight() {
        let weights = [1, 2, 3, 4];
        let live = FakeLive::all_usable(4);
        for (name, selector) in selectors(&weights) {
            for (family, ip) in [("IPv4", ipv4 as fn(u32) -> IpAddr), ("IPv6", ipv6)] {
                let got = shares(selector.as_ref(), &live, 4, ip);
                for (i, &w) in weights.iter().enumerate() {
                    let want = f64::from(w) / 10.0;
                    // The ring's arcs are random-like: allow it a third off the ideal share.
                    let margin = if name == "map-based" { 0.1 } else { 0.33 };
                    assert!(
                        (got[i] / want - 1.0).abs() < margin,
                        "{name} {family}: server {i} got {:.3}, want {want:.3}",
                        got[i]
                    );
                }
            }
        }
    }

    #[test]
    fn unusable_server_spills_to_a_neighbour_only() {
        let live = FakeLive::all_usable(3);
        for (name, selector) in selectors(&[1, 1, 1]) {
            let before: Vec<_> = (0..1000)
                .map(|k| selector.pick(&live, Some(ipv4(k))))
                .collect();
            live.set_usable(1, false);
            for (k, &was) in before.iter().enumerate() {
                let now = selector.pick(&live, Some(ipv4(k as u32)));
                if was == Some(1) {
                    assert!(matches!(now, Some(0 | 2)), "{name}");
                } else {
                    assert_eq!(now, was, "{name}: clients of usable servers stay put");
                }
            }
            live.set_usable(0, false);
            live.set_usable(2, false);
            assert_eq!(selector.pick(&live, Some(ipv4(1))), None, "{name}");
            (0..3).for_each(|i| live.set_usable(i, true));
        }
    }

    /// Which server key each of 10,000 clients lands on.
    fn assignment(candidates: &[Candidate], ip: fn(u32) -> IpAddr) -> Vec<u64> {
        let selector = Consistent::new(candidates);
        let live = FakeLive::all_usable(candidates.len());
        (0..10_000)
            .map(|k| candidates[selector.pick(&live, Some(ip(k))).unwrap()].key)
            .collect()
    }

    #[test]
    fn consistent_adding_a_fifth_server_moves_about_a_fifth() {
        for ip in [ipv4 as fn(u32) -> IpAddr, ipv6] {
            let four = weighted(&[1, 1, 1, 1]);
            let five = weighted(&[1, 1, 1, 1, 1]);
            let before = assignment(&four, ip);
            let after = assignment(&five, ip);
            let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
            assert!((1500..=2500).contains(&moved), "moved {moved} of 10000");
            // Every client that moved went to the new server.
            let new_key = five[4].key;
            assert!(
                before
                    .iter()
                    .zip(&after)
                    .all(|(b, a)| b == a || *a == new_key)
            );
        }
    }

    #[test]
    fn consistent_removing_a_server_moves_only_its_clients() {
        for ip in [ipv4 as fn(u32) -> IpAddr, ipv6] {
            let all = weighted(&[2, 1, 3, 1]);
            let mut without = all.clone();
            let removed = without.remove(1);
            let before = assignment(&all, ip);
            let after = assignment(&without, ip);
            for (b, a) in before.iter().zip(&after) {
                if *b != removed.key {
                    assert_eq!(a, b);
                }
            }
            assert!(before.contains(&removed.key));
        }
    }

    #[test]
    fn map_based_rebuild_keeps_every_client() {
        let candidates = weighted(&[3, 1, 2]);
        let live = FakeLive::all_usable(3);
        let a = MapBased::new(&candidates);
        let b = MapBased::new(&candidates);
        let mut per_server = HashMap::new();
        for k in 0..1000 {
            let ip = ipv6(k);
            let pick = a.pick(&live, Some(ip));
            assert_eq!(pick, b.pick(&live, Some(ip)));
            *per_server.entry(pick).or_insert(0) += 1;
        }
        assert_eq!(per_server.len(), 3);
    }
}
