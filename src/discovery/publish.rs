//! What a watch has told `control` about its members: each member of the [`MemberSet`] with
//! its host resolved to an address and the leader key applied to its role.
//!
//! The watch applies a batch of events to its [`MemberSet`] and marks the members they
//! touched ([`Published::touch`]; [`Published::touch_all`] after a listing or a change of the
//! leader key, which changes every member's role). [`Published::flush`] then looks at those
//! members only, resolves the hosts that need it, and returns what changed for `control`
//! (nothing when the table would not change). So a burst of N single-member events costs
//! O(N) here, not O(N × members).
//!
//! A member whose host does not resolve keeps the entry published before (address, state,
//! weight; its role still follows the leader key), exactly as a value that does not parse
//! does: a lookup failure never removes a member, least of all the primary, and never closes
//! its sessions. It is logged with its key and counted (as a bad value is) once per value, looked up again at the next
//! listing or when its value changes, and a member never published before stays out until
//! its host resolves.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::DiscoveredServer;
use super::members::MemberSet;
use super::schema::Member;
use crate::config::{EtcdRole, EtcdView};

/// One change for `control`: a member added or changed (`Some`), or removed (`None`).
pub type Change = (Arc<str>, Option<Arc<DiscoveredServer>>);

/// The published state of one watch's members.
#[derive(Debug)]
pub struct Published {
    /// `backend 'NAME'`, for logs.
    backend: String,
    /// The key prefix (without the trailing `/`), for logs.
    prefix: String,
    /// Bound on one lookup.
    lookup_timeout: Duration,
    /// Per member: the value published and what it became.
    taken: BTreeMap<Arc<str>, (Arc<Member>, Arc<DiscoveredServer>)>,
    /// Per member: the newest value whose host did not resolve (logged once).
    failed: HashMap<String, Member>,
    /// Members touched since the last flush.
    dirty: BTreeSet<String>,
    /// Every member is to be looked at (a listing, a leader change).
    all_dirty: bool,
    /// Names are to be looked up again at the next flush (after each listing).
    refresh: bool,
    /// Hosts resolved before.
    resolved: HashMap<String, IpAddr>,
    /// Values found unresolvable (each counted once, when logged) since the last
    /// [`Published::take_unresolved`].
    unresolved: u64,
    /// Whether what was flushed since the last [`Published::take_urgent`] may move the
    /// primary; true until the first flush (a new watch's first set replaces the last).
    urgent: bool,
}

impl Published {
    /// Nothing published yet, for `backend`'s watch of `prefix`.
    pub fn new(backend: &str, prefix: &str, lookup_timeout: Duration) -> Published {
        Published {
            backend: backend.to_owned(),
            prefix: prefix.to_owned(),
            lookup_timeout,
            taken: BTreeMap::new(),
            failed: HashMap::new(),
            dirty: BTreeSet::new(),
            all_dirty: false,
            refresh: false,
            resolved: HashMap::new(),
            unresolved: 0,
            urgent: true,
        }
    }

    /// How many values were found unresolvable since the last call (each value once, as it
    /// is logged), for `rolelb_etcd_parse_errors_total`.
    pub fn take_unresolved(&mut self) -> u64 {
        std::mem::take(&mut self.unresolved)
    }

    /// Whether the changes flushed since the last call may move the primary: one names a
    /// member primary, or adds, changes or removes the member published as primary; and the
    /// first flush of a watch (its set replaces whatever the last watch sent). Control holds
    /// other changes during a burst, never these.
    pub fn take_urgent(&mut self) -> bool {
        std::mem::take(&mut self.urgent)
    }

    /// Marks member `name` as changed in the set.
    pub fn touch(&mut self, name: &str) {
        if !self.all_dirty {
            self.dirty.insert(name.to_owned());
        }
    }

    /// Marks every member as changed; with `refresh`, host names are looked up again.
    pub fn touch_all(&mut self, refresh: bool) {
        self.all_dirty = true;
        self.dirty.clear();
        self.refresh |= refresh;
    }

    /// Whether anything was touched since the last flush.
    pub fn pending(&self) -> bool {
        self.all_dirty || !self.dirty.is_empty()
    }

    /// Brings what is published up to date with `set` for the members touched since the last
    /// flush; returns the changes, by name.
    pub async fn flush(&mut self, set: &MemberSet) -> Vec<Change> {
        let names: Vec<String> = if std::mem::take(&mut self.all_dirty) {
            let mut all: BTreeSet<String> = self.taken.keys().map(|k| k.to_string()).collect();
            all.extend(set.members().map(|m| m.name.to_string()));
            all.into_iter().collect()
        } else {
            std::mem::take(&mut self.dirty).into_iter().collect()
        };
        let refresh = std::mem::take(&mut self.refresh);
        // With `refresh`, each host is looked up once, not once per member.
        let mut looked_up = HashSet::new();
        let mut changes = Vec::new();
        for name in names {
            let Some(m) = set.member(&name) else {
                self.failed.remove(&name);
                if let Some((key, (_, was))) = self.taken.remove_entry(name.as_str()) {
                    self.urgent |= was.view.role == EtcdRole::Primary;
                    changes.push((key, None));
                }
                continue;
            };
            let known = self.taken.get(name.as_str());
            let ip = match known {
                // The value published: its address stands until a listing refreshes names.
                Some((was, server)) if was == m && !refresh => Some(server.ip),
                // A value already found unresolvable: the previous entry stands.
                _ if !refresh && self.failed.get(&name) == Some(&**m) => None,
                _ => {
                    let fresh = refresh && looked_up.insert(m.host.clone());
                    self.resolve(&m.host, m.port, fresh).await
                }
            };
            let next: Option<(Arc<Member>, IpAddr)> = match ip {
                Some(ip) => {
                    self.failed.remove(&name);
                    Some((m.clone(), ip))
                }
                None => {
                    self.unresolved(m);
                    // Keep the entry published before, if any.
                    self.taken
                        .get(name.as_str())
                        .map(|(was, server)| (was.clone(), server.ip))
                }
            };
            let Some((member, ip)) = next else { continue };
            let server = DiscoveredServer {
                ip,
                port: member.port,
                check_port: member.check_port,
                weight: member.weight,
                view: EtcdView {
                    role: set.role_of(&member),
                    state: member.state,
                },
            };
            match self.taken.get_mut(name.as_str()) {
                Some((was, published)) if **published == server => {
                    // Same server; remember the value it now comes from.
                    *was = member;
                }
                was => {
                    self.urgent |= server.view.role == EtcdRole::Primary
                        || was.is_some_and(|(_, w)| w.view.role == EtcdRole::Primary);
                    let server = Arc::new(server);
                    let key = member.name.clone();
                    changes.push((key.clone(), Some(server.clone())));
                    self.taken.insert(key, (member, server));
                }
            }
        }
        changes
    }

    /// Logs, once per value, that `m`'s host does not resolve.
    fn unresolved(&mut self, m: &Member) {
        if self.failed.get(&*m.name) == Some(m) {
            return;
        }
        let outcome = if self.taken.contains_key(&*m.name) {
            "keeping its previous entry"
        } else {
            "leaving the member out until it resolves"
        };
        tracing::warn!(
            "etcd key {}/members/{} for {}: host '{}' does not resolve; {outcome}",
            self.prefix,
            m.name,
            self.backend,
            m.host
        );
        self.failed.insert(m.name.to_string(), m.clone());
        self.unresolved += 1;
    }

    /// The address of `host`: parsed when it is one, else looked up (bounded by the lookup
    /// timeout) when not known yet or when `fresh`; a failed lookup keeps the address known
    /// before, if any.
    async fn resolve(&mut self, host: &str, port: u16, fresh: bool) -> Option<IpAddr> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Some(ip);
        }
        let known = self.resolved.get(host).copied();
        if known.is_some() && !fresh {
            return known;
        }
        let lookup = tokio::net::lookup_host((host, port));
        let found = match tokio::time::timeout(self.lookup_timeout, lookup).await {
            Ok(Ok(mut addrs)) => addrs.next().map(|a| a.ip()),
            _ => None,
        };
        match found {
            Some(ip) => {
                self.resolved.insert(host.to_owned(), ip);
                Some(ip)
            }
            None => known,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{EtcdRole, Schema};

    const P: &str = "/db";

    fn value(host: &str, port: u16, role: &str) -> Vec<u8> {
        format!(r#"{{"host": "{host}", "port": {port}, "role": "{role}"}}"#).into_bytes()
    }

    fn key(name: &str) -> Vec<u8> {
        format!("{P}/members/{name}").into_bytes()
    }

    /// Puts `name` into `set` and marks it, as the watch does.
    fn put(set: &mut MemberSet, p: &mut Published, name: &str, v: &[u8], rev: i64) {
        if set.put(&key(name), v, rev).unwrap_or(false) {
            p.touch(name);
        }
    }

    fn summary(changes: &[Change]) -> Vec<(String, Option<(u16, EtcdRole)>)> {
        changes
            .iter()
            .map(|(n, s)| (n.to_string(), s.as_ref().map(|s| (s.port, s.view.role))))
            .collect()
    }

    #[tokio::test]
    async fn only_touched_members_are_sent_and_a_leader_change_resends_the_roles() {
        let mut set = MemberSet::new(Schema::Native, P);
        let mut p = Published::new("backend 'b'", P, Duration::from_secs(1));
        put(&mut set, &mut p, "a", &value("10.0.0.1", 1, "replica"), 2);
        put(&mut set, &mut p, "b", &value("10.0.0.2", 2, "replica"), 3);
        let sent = p.flush(&set).await;
        assert_eq!(
            summary(&sent),
            [
                ("a".into(), Some((1, EtcdRole::Replica))),
                ("b".into(), Some((2, EtcdRole::Replica)))
            ]
        );
        assert!(!p.pending());
        assert!(p.take_urgent(), "a watch's first set may move the primary");
        // One member changes: only it is sent.
        put(&mut set, &mut p, "b", &value("10.0.0.2", 3, "replica"), 4);
        assert_eq!(
            summary(&p.flush(&set).await),
            [("b".into(), Some((3, EtcdRole::Replica)))]
        );
        assert!(!p.take_urgent(), "a replica changed: the primary stays");
        // The leader key: every member is looked at, only roles that moved are sent.
        assert_eq!(set.put(format!("{P}/leader").as_bytes(), b"a", 5), Ok(true));
        p.touch_all(false);
        assert_eq!(
            summary(&p.flush(&set).await),
            [("a".into(), Some((1, EtcdRole::Primary)))]
        );
        assert!(p.take_urgent(), "a member named primary");
        // A replica removed, then the primary's value changed, then the primary removed.
        assert!(set.delete(&key("b")));
        p.touch("b");
        assert_eq!(summary(&p.flush(&set).await), [("b".into(), None)]);
        assert!(!p.take_urgent(), "a replica removed: the primary stays");
        put(&mut set, &mut p, "a", &value("10.0.0.1", 7, "replica"), 6);
        assert_eq!(
            summary(&p.flush(&set).await),
            [("a".into(), Some((7, EtcdRole::Primary)))]
        );
        assert!(p.take_urgent(), "the primary's entry changed");
        p.touch_all(true);
        assert!(p.flush(&set).await.is_empty());
        assert!(!p.take_urgent(), "an unchanged listing");
        assert!(set.delete(format!("{P}/leader").as_bytes()));
        assert!(set.delete(&key("a")));
        p.touch_all(false);
        assert_eq!(summary(&p.flush(&set).await), [("a".into(), None)]);
        assert!(p.take_urgent(), "the primary removed");
    }

    #[tokio::test]
    async fn a_host_that_does_not_resolve_keeps_the_previous_entry() {
        let mut set = MemberSet::new(Schema::Native, P);
        let mut p = Published::new("backend 'b'", P, Duration::from_secs(1));
        put(&mut set, &mut p, "a", &value("10.0.0.1", 1, "primary"), 2);
        assert_eq!(p.flush(&set).await.len(), 1);
        // An empty label makes the name invalid: no lookup can succeed.
        put(
            &mut set,
            &mut p,
            "a",
            &value("bad..name.invalid", 9, "primary"),
            3,
        );
        put(
            &mut set,
            &mut p,
            "new",
            &value("bad..name.invalid", 9, "replica"),
            4,
        );
        assert!(p.flush(&set).await.is_empty(), "nothing changes");
        assert_eq!(p.take_unresolved(), 2, "each unresolvable value counts");
        assert_eq!(p.take_unresolved(), 0);
        // Its role still follows the leader key.
        set.put(format!("{P}/leader").as_bytes(), b"new", 5)
            .unwrap();
        p.touch_all(false);
        assert_eq!(
            summary(&p.flush(&set).await),
            [("a".into(), Some((1, EtcdRole::Replica)))]
        );
        // A value that resolves again is taken.
        put(&mut set, &mut p, "a", &value("10.0.0.7", 7, "replica"), 6);
        let sent = p.flush(&set).await;
        assert_eq!(summary(&sent), [("a".into(), Some((7, EtcdRole::Replica)))]);
        assert_eq!(sent[0].1.as_ref().map(|s| s.ip), Some([10, 0, 0, 7].into()));
    }
}
