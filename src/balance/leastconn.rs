//! `balance leastconn`, in HAProxy 2.6's order (`lb_fwlc.c`).
//!
//! HAProxy keeps a backend's usable servers in a tree sorted by a key, and gives a new
//! connection to the first server in tree order that is not full. The key of a server with
//! `n` sessions and effective weight `w` (user weight times 16) is 0 when `n` is 0, else
//! `(n + 1) * 4096 / w`, truncated (4096 is `SRV_EWGHT_MAX`). Servers with equal keys keep the
//! order they were (re)inserted in: a server moves to the end of its equal-key group each time
//! its key changes (it took or released a session), when it comes up, and when its weight
//! changes; a session count that ends up at the same key does not move it.
//!
//! That order is history, so it lives in the backend's [`Cursor`] ([`Order`], by server id)
//! and survives table swaps. A pick repositions the server it picks (it is about to take the
//! session); [`Selector::released`] repositions a server whose session ended. A new table's
//! selector first brings the order in line with its candidates: a server that left is
//! removed, one that arrived (came up, weight back above 0) is inserted last, one whose
//! weight changed is moved last with its new key. A session count that changed without
//! either (a slot taken by a stick-table match) is caught up at the next pick.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::{Candidate, Cursor, Live, MAX_WEIGHT, Selector};

/// HAProxy's `SRV_EWGHT_MAX`: the largest effective weight, the numerator of the key.
const EWGHT_MAX: u64 = MAX_WEIGHT as u64;

/// Numbers the selectors as they are built, so the order follows the newest table's
/// candidates and never goes back to an older one's.
static BUILDS: AtomicU64 = AtomicU64::new(1);

/// HAProxy's tree key of a server with `inflight` sessions and effective weight `eweight`.
fn key(inflight: u32, eweight: u64) -> u64 {
    if inflight == 0 {
        return 0;
    }
    (u64::from(inflight) + 1) * EWGHT_MAX / eweight.max(1)
}

/// The leastconn order of one backend's pool: each server's key and when it took its place.
#[derive(Debug, Default)]
pub struct Order {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The newest selector build whose candidates the entries follow.
    synced: u64,
    /// Next insertion stamp: a higher stamp sorts after a lower one with the same key.
    next_stamp: u64,
    /// By server id.
    entries: HashMap<u64, Entry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    key: u64,
    stamp: u64,
    eweight: u64,
}

impl Inner {
    fn place(&mut self, id: u64, key: u64, eweight: u64) {
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        self.entries.insert(
            id,
            Entry {
                key,
                stamp,
                eweight,
            },
        );
    }

    /// Moves server `id` to the end of its key group if its key changed (HAProxy's
    /// `fwlc_srv_reposition`); a server not in the order stays out.
    fn reposition(&mut self, id: u64, inflight: u32) {
        let Some(e) = self.entries.get(&id).copied() else {
            return;
        };
        let new = key(inflight, e.eweight);
        if new != e.key {
            self.place(id, new, e.eweight);
        }
    }
}

/// The `leastconn` selector.
#[derive(Debug)]
pub struct LeastConn {
    /// (server id, effective weight) of each candidate.
    candidates: Box<[(u64, u64)]>,
    cursor: Arc<Cursor>,
    build: u64,
}

impl LeastConn {
    /// A `leastconn` selector over `candidates`.
    pub fn new(candidates: &[Candidate], cursor: Arc<Cursor>) -> Self {
        LeastConn {
            candidates: candidates
                .iter()
                .map(|c| (c.key, u64::from(c.weight.clamp(1, MAX_WEIGHT))))
                .collect(),
            cursor,
            build: BUILDS.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Brings the order in line with this selector's candidates, once per build: servers
    /// gone are removed, new ones inserted last in candidate order, and those whose weight
    /// changed moved last with their new key (HAProxy's status-up and weight-change paths).
    fn sync(&self, inner: &mut Inner, live: &dyn Live) {
        if self.build <= inner.synced {
            return;
        }
        inner.synced = self.build;
        let ids: std::collections::HashSet<u64> = self.candidates.iter().map(|c| c.0).collect();
        inner.entries.retain(|id, _| ids.contains(id));
        for (i, &(id, eweight)) in self.candidates.iter().enumerate() {
            match inner.entries.get(&id) {
                Some(e) if e.eweight == eweight => {}
                _ => inner.place(id, key(live.sessions(i), eweight), eweight),
            }
        }
    }
}

impl Selector for LeastConn {
    fn pick(&self, live: &dyn Live, _client: Option<IpAddr>) -> Option<usize> {
        if self.candidates.is_empty() {
            return None;
        }
        let mut inner = self
            .cursor
            .leastconn
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.sync(&mut inner, live);
        // The first usable server in (key, stamp) order.
        let mut best: Option<(usize, (u64, u64))> = None;
        for (i, &(id, eweight)) in self.candidates.iter().enumerate() {
            let sessions = live.sessions(i);
            let place = match inner.entries.get(&id).copied() {
                // A count that changed unseen (a slot taken outside the pick) is caught up.
                Some(e) if e.key != key(sessions, e.eweight) => {
                    inner.reposition(id, sessions);
                    inner.entries.get(&id).map(|e| (e.key, e.stamp))
                }
                Some(e) => Some((e.key, e.stamp)),
                // Only for a selector older than the order's candidates: after all of them.
                None => Some((key(sessions, eweight), u64::MAX)),
            };
            let Some(place) = place else { continue };
            if best.is_some_and(|(_, b)| b <= place) || !live.usable(i) {
                continue;
            }
            best = Some((i, place));
        }
        let (i, _) = best?;
        // The picked server takes the session: it moves now, as in HAProxy's take_conn.
        inner.reposition(self.candidates[i].0, live.sessions(i).saturating_add(1));
        Some(i)
    }

    fn released(&self, id: u64, sessions: u32) {
        self.cursor
            .leastconn
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .reposition(id, sessions);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing::{FakeLive, weighted};

    fn leastconn(weights: &[u32]) -> LeastConn {
        LeastConn::new(&weighted(weights), Arc::default())
    }

    /// Picks `n` times, each pick keeping its session open.
    fn held(selector: &LeastConn, live: &FakeLive, n: usize) -> String {
        (0..n)
            .map(|_| match selector.pick(live, None) {
                Some(i) => {
                    let open = live.sessions(i) + 1;
                    live.set_sessions(i, open);
                    char::from(b'a' + i as u8)
                }
                None => '-',
            })
            .collect()
    }

    fn close(selector: &LeastConn, live: &FakeLive, i: usize) {
        let open = live.sessions(i) - 1;
        live.set_sessions(i, open);
        selector.released(1000 + i as u64, open);
    }

    #[test]
    fn keys_are_haproxys_truncated_quotients() {
        assert_eq!(key(0, 3200), 0);
        assert_eq!(key(1, 3200), 2);
        assert_eq!(key(1, 1600), 5);
        assert_eq!(key(4, 3200), 6);
        assert_eq!(key(1, 16), 512);
        assert_eq!(key(1, 0), 8192, "a zero weight never divides by zero");
    }

    #[test]
    fn load_is_relative_to_weight() {
        // Keys (6+1)*4096/48 = 597 < (2+1)*4096/16 = 768: the heavier server is less loaded.
        let selector = leastconn(&[3, 1]);
        let live = FakeLive::all_usable(2);
        live.set_sessions(0, 6);
        live.set_sessions(1, 2);
        assert_eq!(selector.pick(&live, None), Some(0));
        // (9+1)*4096/48 = 853 > 768.
        live.set_sessions(0, 9);
        assert_eq!(selector.pick(&live, None), Some(1));
    }

    #[test]
    fn held_sessions_follow_haproxys_tree_order() {
        // Worked by hand from lb_fwlc.c: keys 0,0,0 → a(2) b(5) c(5) a(3) a(5, after b and c)
        // b(7) c(7) a(6).
        let selector = leastconn(&[200, 100, 100]);
        let live = FakeLive::all_usable(3);
        assert_eq!(held(&selector, &live, 8), "abcaabca");
    }

    #[test]
    fn idle_servers_take_turns_whatever_their_weight() {
        // With no session held every key is 0: the one released longest ago goes first.
        let selector = leastconn(&[1, 10, 100]);
        let live = FakeLive::all_usable(3);
        let mut order = String::new();
        for _ in 0..6 {
            let i = selector.pick(&live, None).unwrap();
            live.set_sessions(i, 1);
            close(&selector, &live, i);
            order.push(char::from(b'a' + i as u8));
        }
        assert_eq!(order, "abcabc");
    }

    #[test]
    fn a_released_server_goes_after_its_equals() {
        let selector = leastconn(&[1, 1, 1]);
        let live = FakeLive::all_usable(3);
        assert_eq!(held(&selector, &live, 3), "abc");
        // c then a end their session: both back at key 0, c first.
        close(&selector, &live, 2);
        close(&selector, &live, 0);
        assert_eq!(held(&selector, &live, 2), "ca");
    }

    #[test]
    fn a_full_server_is_skipped_not_moved() {
        let selector = leastconn(&[1, 1, 1]);
        let live = FakeLive::all_usable(3);
        live.set_usable(0, false);
        assert_eq!(held(&selector, &live, 2), "bc");
        live.set_usable(0, true);
        assert_eq!(held(&selector, &live, 1), "a");
        live.set_usable(0, false);
        live.set_usable(1, false);
        live.set_usable(2, false);
        assert_eq!(selector.pick(&live, None), None);
    }

    #[test]
    fn a_weight_change_moves_the_server_last() {
        let cursor = Arc::new(Cursor::default());
        let live = FakeLive::all_usable(3);
        let first = LeastConn::new(&weighted(&[1, 1, 1]), cursor.clone());
        assert_eq!(held(&first, &live, 3), "abc");
        for i in 0..3 {
            close(&first, &live, i);
        }
        // `set weight` on a (same key 0, new weight): a goes after b and c.
        let second = LeastConn::new(&weighted(&[2, 1, 1]), cursor.clone());
        assert_eq!(held(&second, &live, 1), "b");
        // The same weights again change nothing.
        let third = LeastConn::new(&weighted(&[2, 1, 1]), cursor);
        assert_eq!(held(&third, &live, 2), "ca");
    }

    #[test]
    fn a_server_coming_back_is_inserted_last() {
        let cursor = Arc::new(Cursor::default());
        let live = FakeLive::all_usable(2);
        let both = LeastConn::new(&weighted(&[1, 1]), cursor.clone());
        assert_eq!(held(&both, &live, 1), "a");
        close(&both, &live, 0);
        // a is down: the table's candidates are b alone (ids follow the server, not the index).
        let only_b = LeastConn::new(&weighted(&[1, 1])[1..], cursor.clone());
        let live_b = FakeLive::all_usable(1);
        assert_eq!(only_b.pick(&live_b, None), Some(0));
        live_b.set_sessions(0, 1);
        live_b.set_sessions(0, 0);
        only_b.released(1001, 0);
        // a is back: inserted after b, although b was used since a was.
        let again = LeastConn::new(&weighted(&[1, 1]), cursor);
        assert_eq!(held(&again, &live, 2), "ba");
    }

    #[test]
    fn cursor_survives_a_rebuild() {
        let cursor = Arc::new(Cursor::default());
        let live = FakeLive::all_usable(3);
        let first = LeastConn::new(&weighted(&[1, 1, 1]), cursor.clone());
        assert_eq!(held(&first, &live, 2), "ab");
        let second = LeastConn::new(&weighted(&[1, 1, 1]), cursor);
        assert_eq!(held(&second, &live, 1), "c");
    }
}
