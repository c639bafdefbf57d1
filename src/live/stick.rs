//! The entries of a backend's stick table: key → the server a connection with that key went
//! to. They live in the backend's [`super::BackendLive`], so they outlive table swaps and
//! reloads (a reload that changes the key type empties the table). The data path looks keys
//! up when it picks a server and stores them once the connection to the server is made; the
//! runtime socket's `show table` reads them.
//!
//! As HAProxy: an entry names its server by name and is not dropped when that server goes
//! down (the pick ignores it and the next store points it at the new server); a lookup or a
//! store refreshes an entry's expiry; a store into a full table first drops the entry that
//! expires first (or, without `expire`, the oldest one), unless `nopurge`, which stores
//! nothing then.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::config::stick::{KeyType, StickKey, StickTable};

/// The entries of one stick table.
#[derive(Debug, Default)]
pub struct StickEntries {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The key type the entries were made for.
    key_type: Option<KeyType>,
    entries: HashMap<StickKey, Entry>,
    /// Entries by age: the first one is dropped first.
    order: BTreeMap<u64, StickKey>,
    next_stamp: u64,
}

#[derive(Debug)]
struct Entry {
    server: Stored,
    stamp: u64,
    expires: Option<Instant>,
}

/// The server an entry names: HAProxy stores its name (`server_key`) and its id in the
/// backend that stored it (`server_id`); a match looks the name up first, then the id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The server's name.
    pub name: Arc<str>,
    /// The server's id (`puid`) in the backend whose rule stored it.
    pub id: u32,
}

/// One entry as `show table` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StickView {
    /// Its key.
    pub key: StickKey,
    /// The server it names.
    pub server: Stored,
    /// Time left before it expires (zero without `expire`).
    pub expires_in: Duration,
    /// A number that stays with the entry while it lives (HAProxy prints its address).
    pub stamp: u64,
}

impl Inner {
    /// Forgets everything when the key type changed, and the entries that expired.
    fn sync(&mut self, table: &StickTable, now: Instant) {
        if self.key_type != Some(table.key) {
            *self = Inner {
                key_type: Some(table.key),
                ..Inner::default()
            };
        }
        while let Some((&stamp, key)) = self.order.first_key_value() {
            let expired = self
                .entries
                .get(key)
                .is_none_or(|e| e.expires.is_some_and(|at| at <= now));
            if !expired {
                break;
            }
            if let Some(key) = self.order.remove(&stamp) {
                self.entries.remove(&key);
            }
        }
    }

    /// Refreshes `key`'s expiry (and its place among the oldest) when the table expires.
    fn touch(&mut self, table: &StickTable, key: &StickKey, now: Instant) {
        let Some(expire) = table.expire else { return };
        let stamp = self.next_stamp;
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        self.next_stamp += 1;
        self.order.remove(&entry.stamp);
        entry.stamp = stamp;
        entry.expires = Some(now + expire);
        self.order.insert(stamp, key.clone());
    }
}

impl StickEntries {
    fn locked(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The server stored for `key`, refreshing the entry.
    pub fn lookup(&self, table: &StickTable, key: &StickKey, now: Instant) -> Option<Stored> {
        let mut inner = self.locked();
        inner.sync(table, now);
        let server = inner.entries.get(key)?.server.clone();
        inner.touch(table, key, now);
        Some(server)
    }

    /// Stores `server` for `key`.
    pub fn store(&self, table: &StickTable, key: StickKey, server: &Stored, now: Instant) {
        let mut inner = self.locked();
        inner.sync(table, now);
        // As HAProxy: a full table makes room before it looks whether the key is there.
        while inner.entries.len() >= table.size as usize {
            if table.nopurge {
                return;
            }
            let Some((_, oldest)) = inner.order.pop_first() else {
                break;
            };
            inner.entries.remove(&oldest);
        }
        if let Some(entry) = inner.entries.get_mut(&key) {
            entry.server = server.clone();
        } else {
            let stamp = inner.next_stamp;
            inner.next_stamp += 1;
            inner.order.insert(stamp, key.clone());
            let expires = table.expire.map(|d| now + d);
            inner.entries.insert(
                key.clone(),
                Entry {
                    server: server.clone(),
                    stamp,
                    expires,
                },
            );
        }
        inner.touch(table, &key, now);
    }

    /// The entries in key order, as `show table` lists them.
    pub fn view(&self, table: &StickTable, now: Instant) -> Vec<StickView> {
        let mut inner = self.locked();
        inner.sync(table, now);
        let mut all: Vec<StickView> = inner
            .entries
            .iter()
            .map(|(key, e)| StickView {
                key: key.clone(),
                server: e.server.clone(),
                expires_in: e.expires.map_or(Duration::ZERO, |at| at - now),
                stamp: e.stamp,
            })
            .collect();
        all.sort_by(|a, b| a.key.cmp(&b.key));
        all
    }

    /// How many entries the table holds.
    pub fn used(&self, table: &StickTable, now: Instant) -> usize {
        let mut inner = self.locked();
        inner.sync(table, now);
        inner.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::config::model::Loc;

    fn table(size: u32, expire: Option<Duration>, nopurge: bool) -> StickTable {
        StickTable {
            key: KeyType::Ip,
            size,
            expire,
            nopurge,
            loc: Loc {
                file: "t.cfg".into(),
                line: 1,
            },
        }
    }

    fn stored(name: &str, id: u32) -> Stored {
        Stored {
            name: name.into(),
            id,
        }
    }

    fn key(n: u8) -> StickKey {
        StickKey::Ip(Ipv4Addr::new(127, 0, 0, n))
    }

    #[test]
    fn a_full_table_drops_its_oldest_entry() {
        let t = table(2, None, false);
        let e = StickEntries::default();
        let (a, b) = (stored("a", 1), stored("b", 2));
        let now = Instant::now();
        e.store(&t, key(1), &a, now);
        e.store(&t, key(2), &b, now);
        // Without expire, a lookup does not make an entry younger.
        assert_eq!(
            e.lookup(&t, &key(1), now)
                .map(|s| s.name.to_string())
                .as_deref(),
            Some("a")
        );
        e.store(&t, key(3), &b, now);
        assert_eq!(e.lookup(&t, &key(1), now), None, "the oldest went");
        assert_eq!(e.used(&t, now), 2);
        // HAProxy makes room before it finds the key already there.
        e.store(&t, key(3), &a, now);
        assert_eq!(e.lookup(&t, &key(2), now), None);
        assert_eq!(
            e.lookup(&t, &key(3), now)
                .map(|s| s.name.to_string())
                .as_deref(),
            Some("a")
        );
        let kept = table(1, None, true);
        let e = StickEntries::default();
        e.store(&kept, key(1), &a, now);
        e.store(&kept, key(2), &b, now);
        assert_eq!(e.view(&kept, now).len(), 1);
        assert_eq!(
            e.lookup(&kept, &key(1), now)
                .map(|s| s.name.to_string())
                .as_deref(),
            Some("a"),
            "nopurge"
        );
    }

    #[test]
    fn entries_expire_unless_touched() {
        let t = table(10, Some(Duration::from_secs(10)), false);
        let e = StickEntries::default();
        let a = stored("a", 1);
        let t0 = Instant::now();
        e.store(&t, key(1), &a, t0);
        e.store(&t, key(2), &a, t0);
        let t1 = t0 + Duration::from_secs(8);
        assert!(e.lookup(&t, &key(1), t1).is_some());
        let t2 = t0 + Duration::from_secs(11);
        assert!(e.lookup(&t, &key(2), t2).is_none(), "expired");
        let left = e.view(&t, t2);
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].expires_in, Duration::from_secs(7));
    }
}
