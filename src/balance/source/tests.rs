//! Unit tests of `balance source`: HAProxy 2.6's hash and lookups, computed from its algorithm
//! (`get_server_sh`, `map_get_server_hash`, `chash_get_server_hash`), for IPv4 and IPv6.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::*;
use crate::balance::WEIGHT_SCALE;
use crate::balance::testing::FakeLive;

/// Candidates with these user weights and HAProxy's default ids 1, 2, 3, ...
fn servers(weights: &[u32]) -> Vec<Candidate> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| Candidate {
            weight: w * WEIGHT_SCALE,
            key: i as u64 + 1,
        })
        .collect()
}

fn v4(h: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(h))
}

/// Spread test addresses over the whole 32-bit hash space (a fixed LCG).
fn spread(n: u32) -> impl Iterator<Item = u32> {
    (0..n).map(|k| k.wrapping_mul(2_654_435_761).wrapping_add(0x9e37_79b9))
}

#[test]
fn full_hash_matches_haproxy() {
    // Values of HAProxy's `full_hash` (Bob Jenkins' integer hash times 3221225473).
    for (input, want) in [
        (0, 0xab4e_d927),
        (1, 0x3486_81b6),
        (4096, 0x49c2_008b),
        (4097, 0xa497_2c87),
        (8192, 0x405a_fe73),
        (0x7f00_0001, 0x8a1b_584b),
        (u32::MAX, 0x7e64_c182),
    ] {
        assert_eq!(full_hash(input), want, "full_hash({input:#x})");
    }
}

#[test]
fn address_hash_is_haproxys_xor_of_words() {
    assert_eq!(hash_client(None), 0);
    assert_eq!(hash_client(Some("192.0.2.7".parse().unwrap())), 0xc000_0207);
    assert_eq!(
        hash_client(Some("2001:db8::1".parse().unwrap())),
        0x2001_0db9
    );
    assert_eq!(hash_client(Some("::1".parse().unwrap())), 1);
    assert_eq!(
        hash_client(Some("2001:db8:1:2:3:4:5:6".parse().unwrap())),
        0x2001_0db8 ^ 0x0001_0002 ^ 0x0003_0004 ^ 0x0005_0006
    );
    // An IPv4-mapped IPv6 client (a listener on `::`) is an IPv6 address to HAProxy.
    let mapped = IpAddr::V6(Ipv4Addr::new(1, 2, 3, 4).to_ipv6_mapped());
    assert_eq!(hash_client(Some(mapped)), 0xffff ^ 0x0102_0304);
}

#[test]
fn map_based_picks_the_map_slot_at_hash_modulo_total_weight() {
    for weights in [&[1, 1, 1][..], &[1, 2, 3], &[5, 3, 1], &[256, 1]] {
        let candidates = servers(weights);
        let map = static_rr::map(&weights.iter().map(|&w| u64::from(w)).collect::<Vec<_>>());
        let total: u32 = weights.iter().sum();
        let selector = MapBased::new(&candidates);
        let live = FakeLive::all_usable(weights.len());
        for h in spread(5000).chain(0..300).chain([u32::MAX]) {
            let want = map[(h % total) as usize] as usize;
            assert_eq!(
                selector.pick(&live, Some(v4(h))),
                Some(want),
                "{weights:?} {h:#x}"
            );
        }
    }
    // Hash h goes to slot h of the map.
    let live = FakeLive::all_usable(3);
    let selector = MapBased::new(&servers(&[1, 2, 3]));
    let picks: Vec<_> = (0..6).map(|h| selector.pick(&live, Some(v4(h)))).collect();
    let letters: String = picks
        .iter()
        .map(|p| char::from(b'a' + p.unwrap() as u8))
        .collect();
    assert_eq!(letters, static_letters(&[1, 2, 3]));
}

#[test]
fn backups_without_allbackups_all_take_the_first_slot_of_the_map() {
    // Backups 3 and 5: the map is [a, b, b], but HAProxy counts one server in use and does
    // not hash, so every client gets slot 0; with 2 and 5 the map is [b, b].
    let live = FakeLive::all_usable(2);
    let slots = MapSlots::FirstWeight { unit: WEIGHT_SCALE };
    for (weights, want) in [([3, 5], 0), ([2, 5], 1)] {
        let selector = MapBased::with_slots(&servers(&weights), slots);
        for h in spread(300) {
            assert_eq!(selector.pick(&live, Some(v4(h))), Some(want), "{weights:?}");
        }
    }
}

fn static_letters(weights: &[u64]) -> String {
    static_rr::map(weights)
        .iter()
        .map(|&i| char::from(b'a' + i as u8))
        .collect()
}

/// HAProxy divides weights by the GCD of all the backend's servers, down ones included; rolelb
/// by the GCD of the servers it can pick. That is harmless only because a map over weights
/// times `k` is the map over the weights repeated `k` times.
#[test]
fn map_over_scaled_weights_repeats_the_map() {
    for a in 1..=7u64 {
        for b in 1..=7 {
            for c in 0..=5 {
                let weights: Vec<u64> = [a, b, c].into_iter().filter(|&w| w > 0).collect();
                let base = static_rr::map(&weights);
                for k in 2..=4 {
                    let scaled: Vec<u64> = weights.iter().map(|w| w * k).collect();
                    assert_eq!(
                        static_rr::map(&scaled).to_vec(),
                        base.repeat(k as usize),
                        "{weights:?} x{k}"
                    );
                }
            }
        }
    }
}

/// HAProxy's lookup for address hash `addr` written out plainly over every point: `avalanche`,
/// then the nearest point forwards and the nearest backwards, the backward one on a tie.
fn chash_oracle(candidates: &[Candidate], addr: u32) -> usize {
    let h = full_hash(addr);
    let mut points = Vec::new();
    for (i, c) in candidates.iter().enumerate() {
        for n in 0..c.weight {
            points.push((full_hash(c.key as u32 * 4096 + n), i));
        }
    }
    let forward = points
        .iter()
        .min_by_key(|(k, _)| k.wrapping_sub(h))
        .copied()
        .unwrap();
    let backward = points
        .iter()
        .filter(|(k, _)| *k != forward.0)
        .min_by_key(|(k, _)| h.wrapping_sub(*k))
        .copied()
        .unwrap_or(forward);
    if h.wrapping_sub(backward.0) <= forward.0.wrapping_sub(h) {
        backward.1
    } else {
        forward.1
    }
}

#[test]
fn consistent_picks_the_nearest_of_haproxys_points() {
    for weights in [&[1, 1, 1][..], &[1, 2, 3], &[4, 1], &[1, 1, 1, 1, 1]] {
        let candidates = servers(weights);
        let selector = Consistent::new(&candidates);
        assert_eq!(
            selector.keys.len() as u32,
            weights.iter().sum::<u32>() * WEIGHT_SCALE,
            "16 points per unit of weight"
        );
        let live = FakeLive::all_usable(weights.len());
        for h in spread(3000).chain(0..50).chain([u32::MAX]) {
            assert_eq!(
                selector.pick(&live, Some(v4(h))),
                Some(chash_oracle(&candidates, h)),
                "{weights:?} {h:#x}"
            );
        }
    }
}

#[test]
fn consistent_points_follow_the_server_id() {
    // Ids 7 and 3 (`id` or position) place the points, not the order of the candidates.
    let a = Candidate { weight: 16, key: 7 };
    let b = Candidate { weight: 16, key: 3 };
    let live = FakeLive::all_usable(2);
    let ab = Consistent::new(&[a, b]);
    let ba = Consistent::new(&[b, a]);
    for h in spread(2000) {
        let x = ab.pick(&live, Some(v4(h))).unwrap();
        let y = ba.pick(&live, Some(v4(h))).unwrap();
        assert_eq!(x, 1 - y, "{h:#x}");
    }
}

#[test]
fn consistent_slowstart_keeps_the_first_points_only() {
    // A server ramping at 5/16 of weight 1 has its points 0..5, as HAProxy inserts them.
    let mut candidates = servers(&[1, 1, 1]);
    candidates[1].weight = 5;
    let selector = Consistent::new(&candidates);
    let mine: Vec<u32> = (0..5).map(|n| full_hash(2 * 4096 + n)).collect();
    let held: Vec<u32> = selector
        .keys
        .iter()
        .zip(selector.owners.iter())
        .filter(|(_, o)| **o == 1)
        .map(|(k, _)| *k)
        .collect();
    let mut want = mine.clone();
    want.sort_unstable();
    assert_eq!(held, want);
    let live = FakeLive::all_usable(3);
    for h in spread(2000) {
        assert_eq!(
            selector.pick(&live, Some(v4(h))),
            Some(chash_oracle(&candidates, h))
        );
    }
}

#[test]
fn ipv6_clients_go_where_their_hash_sends_an_ipv4_client() {
    let addrs: Vec<Ipv6Addr> = spread(2000)
        .map(|k| {
            Ipv6Addr::new(
                0x2001,
                0xdb8,
                (k >> 16) as u16,
                k as u16,
                0,
                k.rotate_left(7) as u16,
                0x1234,
                (k >> 5) as u16,
            )
        })
        .collect();
    for weights in [&[1, 1, 1][..], &[1, 2, 3]] {
        let candidates = servers(weights);
        let live = FakeLive::all_usable(weights.len());
        let map = MapBased::new(&candidates);
        let ring = Consistent::new(&candidates);
        let mut used = HashMap::new();
        for &a in &addrs {
            let words = a.octets();
            let h = words.chunks(4).fold(0u32, |h, w| {
                h ^ u32::from_be_bytes([w[0], w[1], w[2], w[3]])
            });
            let total: u32 = weights.iter().sum();
            let slot = static_letters(&weights.iter().map(|&w| u64::from(w)).collect::<Vec<_>>())
                .as_bytes()[(h % total) as usize];
            let by_map = map.pick(&live, Some(IpAddr::V6(a)));
            assert_eq!(by_map, Some(usize::from(slot - b'a')), "{a}");
            let by_ring = ring.pick(&live, Some(IpAddr::V6(a)));
            assert_eq!(by_ring, Some(chash_oracle(&candidates, h)), "{a}");
            *used.entry(by_ring).or_insert(0) += 1;
        }
        assert_eq!(used.len(), weights.len(), "{weights:?}: {used:?}");
    }
}

#[test]
fn same_client_same_server() {
    let live = FakeLive::all_usable(4);
    let candidates = servers(&[1, 2, 3, 4]);
    let selectors: [Box<dyn Selector>; 2] = [
        Box::new(MapBased::new(&candidates)),
        Box::new(Consistent::new(&candidates)),
    ];
    for selector in &selectors {
        for h in spread(300) {
            for ip in [
                v4(h),
                IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0, 1, h as u16)),
            ] {
                let first = selector.pick(&live, Some(ip));
                assert!(first.is_some());
                assert_eq!(selector.pick(&live, Some(ip)), first, "{ip}");
            }
        }
        assert_eq!(
            selector.pick(&live, None),
            selector.pick(&live, Some(v4(0)))
        );
    }
}

#[test]
fn unusable_server_passes_its_turn_to_the_next_entry() {
    let candidates = servers(&[1, 1, 1]);
    let live = FakeLive::all_usable(3);
    let map = MapBased::new(&candidates);
    let ring = Consistent::new(&candidates);
    let before: Vec<_> = spread(1000)
        .map(|h| (map.pick(&live, Some(v4(h))), ring.pick(&live, Some(v4(h)))))
        .collect();
    live.set_usable(1, false);
    for (h, &(m, r)) in spread(1000).zip(&before) {
        let (m2, r2) = (map.pick(&live, Some(v4(h))), ring.pick(&live, Some(v4(h))));
        // Map: the next slot of `a b c` after b is c.
        assert_eq!(m2, if m == Some(1) { Some(2) } else { m });
        if r == Some(1) {
            assert!(matches!(r2, Some(0 | 2)));
        } else {
            assert_eq!(r2, r, "clients of usable servers stay put");
        }
    }
    live.set_usable(0, false);
    live.set_usable(2, false);
    assert_eq!(map.pick(&live, Some(v4(1))), None);
    assert_eq!(ring.pick(&live, Some(v4(1))), None);
}

#[test]
fn consistent_removing_a_server_moves_only_its_clients() {
    let all = servers(&[2, 1, 3, 1]);
    let mut without = all.clone();
    let removed = without.remove(1);
    let live = FakeLive::all_usable(4);
    let (a, b) = (Consistent::new(&all), Consistent::new(&without));
    let mut moved = 0;
    for h in spread(5000) {
        let before = all[a.pick(&live, Some(v4(h))).unwrap()].key;
        let after = without[b.pick(&live, Some(v4(h))).unwrap()].key;
        if before == removed.key {
            moved += 1;
        } else {
            assert_eq!(after, before, "{h:#x}");
        }
    }
    assert!(moved > 0);
}
