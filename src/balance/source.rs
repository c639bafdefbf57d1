//! `balance source`: a client address goes to the server HAProxy 2.6 sends it to.
//!
//! The address is hashed as HAProxy's `get_server_sh` hashes it: its 32-bit big-endian words
//! XORed together (an IPv4 address is its own hash; an IPv6 address, an IPv4-mapped one
//! included, XORs its four words). The `hash-type` function (`sdbm`, `djb2`, `wt6`, `crc32`)
//! plays no part for `source` in HAProxy, so none here either; the `avalanche` modifier
//! ([`full_hash`] over that value) does, and HAProxy applies it to `hash-type consistent`
//! unless a function is named without it. The config accepts only the combinations where
//! `consistent` means avalanche and `map-based` means none (see `hash_type` in the proxy
//! keywords). The hash is then looked up one of two ways, after `hash-type`:
//! - `map-based` ([`MapBased`]): `hash % total weight` indexes the weighted map that
//!   `static-rr` builds (HAProxy's `map_get_server_hash`). Any change in the server set or
//!   weights remaps most clients. The backups without `option allbackups` are not hashed:
//!   every client takes the map's first slot (HAProxy's `tot_used == 1`).
//! - `consistent` ([`Consistent`]): HAProxy's tree of points (`lb_chash.c`): a server has one
//!   point per unit of effective weight (16 per unit of user weight, fewer while `slowstart`
//!   ramps it), point `n` of the server with id `puid` sits at [`full_hash`]`(puid * 4096 + n)`,
//!   and a client goes to the nearer of the two points around its avalanched hash (the one
//!   before on a tie). Adding or removing a server moves only about `1/N` of the clients.
//!
//! The candidate's [`Candidate::key`] is HAProxy's server id (`puid`). A server that is down
//! is not a candidate at all, as HAProxy rebuilds its map or tree without it. An unusable
//! candidate (full, or the server a redispatch moves away from) passes its turn to the next
//! entry: the next map slot, or the next point after the chosen one (HAProxy's walk for the
//! server to avoid; for a full server HAProxy would instead queue the client on it).

use std::net::IpAddr;

use super::{Candidate, Live, MAX_WEIGHT, MapSlots, Selector, cyclic, static_rr, walk_usable};

/// HAProxy's `SRV_EWGHT_RANGE` (user weight range 256 times the weight scale 16): the stride
/// between the point keys of two consecutive server ids.
const EWEIGHT_RANGE: u32 = 256 * super::WEIGHT_SCALE;

/// The `source` selector with `hash-type map-based`.
#[derive(Debug)]
pub struct MapBased {
    map: Box<[u32]>,
    candidates: usize,
    /// Whether the client's hash picks the slot: HAProxy skips hashing when it counts one
    /// server in use (`tot_used == 1`), as for the backups without `option allbackups`,
    /// so every client starts at the first slot.
    hashed: bool,
}

impl MapBased {
    /// Builds the weighted map over `candidates`.
    ///
    /// HAProxy fills its map over weights divided by the GCD of every server's weight in the
    /// backend; dividing by the (possibly larger) GCD of the candidates gives the same map
    /// repeated fewer times, so `hash % len` lands on the same server.
    #[cfg(test)]
    pub fn new(candidates: &[Candidate]) -> Self {
        Self::with_slots(candidates, MapSlots::Every)
    }

    /// Builds the map over `candidates` with as many slots as `slots` says.
    pub fn with_slots(candidates: &[Candidate], slots: MapSlots) -> Self {
        let (weights, total) = slots.weights(candidates);
        MapBased {
            map: static_rr::map_of(&weights, total),
            candidates: candidates.len(),
            hashed: slots == MapSlots::Every,
        }
    }
}

impl Selector for MapBased {
    fn pick(&self, live: &dyn Live, client: Option<IpAddr>) -> Option<usize> {
        let len = self.map.len() as u64;
        if len == 0 {
            return None;
        }
        let hash = if self.hashed { hash_client(client) } else { 0 };
        let start = (u64::from(hash) % len) as usize;
        walk_usable(live, self.candidates, cyclic(&self.map, start))
    }
}

/// The `source` selector with `hash-type consistent`.
#[derive(Debug)]
pub struct Consistent {
    /// Point keys, sorted; `owners[k]` is the candidate at `keys[k]`.
    keys: Box<[u32]>,
    owners: Box<[u32]>,
    candidates: usize,
}

impl Consistent {
    /// Builds the tree of points over `candidates`.
    pub fn new(candidates: &[Candidate]) -> Self {
        let mut points: Vec<(u32, u32)> = Vec::new();
        for (i, candidate) in candidates.iter().enumerate() {
            // HAProxy's `next_eweight` (user weight x 16, ramped): one point each.
            let weight = candidate.weight.clamp(1, MAX_WEIGHT);
            // Server ids are `int`s in HAProxy; the key arithmetic wraps as its does.
            let base = (candidate.key as u32).wrapping_mul(EWEIGHT_RANGE);
            points.extend((0..weight).map(|n| (full_hash(base.wrapping_add(n)), i as u32)));
        }
        // Stable: equal keys keep insertion order (server order, then point number), as
        // duplicates do in HAProxy's tree.
        points.sort_by_key(|p| p.0);
        Consistent {
            keys: points.iter().map(|p| p.0).collect(),
            owners: points.iter().map(|p| p.1).collect(),
            candidates: candidates.len(),
        }
    }

    /// Position of the point nearest to `hash` (`chash_get_server_hash`).
    fn nearest(&self, hash: u32) -> usize {
        let len = self.keys.len();
        // The first point at or after the hash (wrapping), and the one before it.
        let next = self.keys.partition_point(|&k| k < hash) % len;
        let prev = (next + len - 1) % len;
        let after = self.keys[next].wrapping_sub(hash);
        let before = hash.wrapping_sub(self.keys[prev]);
        if before <= after { prev } else { next }
    }
}

impl Selector for Consistent {
    fn pick(&self, live: &dyn Live, client: Option<IpAddr>) -> Option<usize> {
        if self.owners.is_empty() {
            return None;
        }
        let start = self.nearest(full_hash(hash_client(client)));
        walk_usable(live, self.candidates, cyclic(&self.owners, start))
    }
}

/// The client address's hash as HAProxy's `get_server_sh` computes it, before `avalanche`;
/// a missing address hashes as 0.
fn hash_client(client: Option<IpAddr>) -> u32 {
    match client {
        None => 0,
        Some(IpAddr::V4(v4)) => u32::from(v4),
        Some(IpAddr::V6(v6)) => v6
            .octets()
            .chunks_exact(4)
            .map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
            .fold(0, |h, w| h ^ w),
    }
}

/// HAProxy's `full_hash`: one of Bob Jenkins' 32-bit integer hashes, then a multiplication by
/// a large prime close to 3/4 of the 32-bit range. It places the consistent-hash points.
pub(crate) fn full_hash(mut a: u32) -> u32 {
    a = a.wrapping_add(0x7ed5_5d16).wrapping_add(a << 12);
    a = (a ^ 0xc761_c23c) ^ (a >> 19);
    a = a.wrapping_add(0x1656_67b1).wrapping_add(a << 5);
    a = a.wrapping_add(0xd3a2_646c) ^ (a << 9);
    a = a.wrapping_add(0xfd70_46c5).wrapping_add(a << 3);
    a = (a ^ 0xb55a_4f09) ^ (a >> 16);
    a.wrapping_mul(3_221_225_473)
}

#[cfg(test)]
mod tests;
