//! The state under one `discover` prefix: the members by name and the leader, changed by the
//! watch's puts and deletes or replaced whole by a listing (the first list, a re-list after
//! compaction, the slow re-list timer). A value that does not parse never removes anything:
//! the member (or leader) keeps its previous entry, and the bad value is reported once per
//! revision of its key, not again at every re-list.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::schema::{self, Key, Member, ValueError};
use crate::config::{EtcdRole, Schema};

/// A value that was not taken, for the caller to log with its key and count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadValue {
    /// The key, as text (lossy).
    pub key: String,
    /// Why.
    pub error: ValueError,
}

/// Members and leader under one prefix.
#[derive(Debug, Clone)]
pub struct MemberSet {
    schema: Schema,
    prefix: String,
    /// Shared with what the watch published from them (no copy per member).
    members: BTreeMap<Arc<str>, Arc<Member>>,
    leader: Option<String>,
    /// Keys whose current value is bad, with the mod revision already reported.
    bad: HashMap<Vec<u8>, i64>,
}

impl MemberSet {
    /// An empty set for `prefix` (without a trailing `/`) in `schema`.
    pub fn new(schema: Schema, prefix: &str) -> MemberSet {
        MemberSet {
            schema,
            prefix: prefix.to_owned(),
            members: BTreeMap::new(),
            leader: None,
            bad: HashMap::new(),
        }
    }

    /// The members, by name.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values().map(Arc::as_ref)
    }

    /// Member `name`, if the set has it.
    pub fn member(&self, name: &str) -> Option<&Arc<Member>> {
        self.members.get(name)
    }

    /// How many members there are.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there is no member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The leader key's value, if the key exists and parsed.
    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    /// The role etcd gives `m`: the leader key, when present, is authoritative; else the
    /// member's own `role`.
    pub fn role_of(&self, m: &Member) -> EtcdRole {
        match &self.leader {
            Some(leader) if **leader == *m.name => EtcdRole::Primary,
            Some(_) => EtcdRole::Replica,
            None => m.role,
        }
    }

    /// Applies a put of `key` (at `mod_revision`); `Ok(true)` when the set changed. A bad
    /// value changes nothing and is returned once per revision of its key (`Ok(false)` after).
    pub fn put(&mut self, key: &[u8], value: &[u8], mod_revision: i64) -> Result<bool, BadValue> {
        let outcome = match schema::classify(&self.prefix, key) {
            Key::Other => return Ok(false),
            Key::Leader => schema::parse_leader(value).map(|name| {
                let changed = self.leader.as_deref() != Some(name.as_str());
                self.leader = Some(name);
                changed
            }),
            Key::Member(name) => schema::parse_member(self.schema, name, value).map(|m| {
                let changed = self.members.get(name).is_none_or(|was| **was != m);
                if changed {
                    self.members.insert(m.name.clone(), Arc::new(m));
                }
                changed
            }),
        };
        match outcome {
            Ok(changed) => {
                self.bad.remove(key);
                Ok(changed)
            }
            Err(error) => {
                if self.bad.insert(key.to_vec(), mod_revision) == Some(mod_revision) {
                    return Ok(false);
                }
                Err(BadValue {
                    key: String::from_utf8_lossy(key).into_owned(),
                    error,
                })
            }
        }
    }

    /// Applies a delete of `key`; true when the set changed.
    pub fn delete(&mut self, key: &[u8]) -> bool {
        self.bad.remove(key);
        match schema::classify(&self.prefix, key) {
            Key::Other => false,
            Key::Leader => self.leader.take().is_some(),
            Key::Member(name) => self.members.remove(name).is_some(),
        }
    }

    /// Replaces the state with a full listing of `(key, value, mod_revision)` under the
    /// prefix. Returns whether the set changed, and the bad values not reported before.
    pub fn relist<'a>(
        &mut self,
        kvs: impl IntoIterator<Item = (&'a [u8], &'a [u8], i64)>,
    ) -> (bool, Vec<BadValue>) {
        let mut next = MemberSet::new(self.schema, &self.prefix);
        let mut bad = Vec::new();
        for (key, value, rev) in kvs {
            // What was already reported for this key carries over, so it is not said again.
            if let Some(reported) = self.bad.get(key) {
                next.bad.insert(key.to_vec(), *reported);
            }
            if let Err(b) = next.put(key, value, rev) {
                bad.push(b);
            }
            // A bad value keeps the previous entry.
            if next.bad.contains_key(key) {
                match schema::classify(&self.prefix, key) {
                    Key::Leader => next.leader.clone_from(&self.leader),
                    Key::Member(name) => {
                        if let Some(old) = self.members.get(name) {
                            next.members.insert(old.name.clone(), old.clone());
                        }
                    }
                    Key::Other => {}
                }
            }
        }
        let changed = next.members != self.members || next.leader != self.leader;
        *self = next;
        (changed, bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EtcdState;

    const P: &str = "/db";

    fn member(host: &str, port: u16, role: &str) -> Vec<u8> {
        format!(r#"{{"host": "{host}", "port": {port}, "role": "{role}"}}"#).into_bytes()
    }

    fn names(s: &MemberSet) -> Vec<String> {
        s.members().map(|m| m.name.to_string()).collect()
    }

    #[test]
    fn puts_and_deletes() {
        let mut s = MemberSet::new(Schema::Native, P);
        assert_eq!(
            s.put(b"/db/members/a", &member("10.0.0.1", 1, "primary"), 2),
            Ok(true)
        );
        assert_eq!(
            s.put(b"/db/members/a", &member("10.0.0.1", 1, "primary"), 3),
            Ok(false)
        );
        assert_eq!(
            s.put(b"/db/members/b", &member("10.0.0.2", 1, "replica"), 4),
            Ok(true)
        );
        assert_eq!(s.put(b"/db/config", b"whatever", 5), Ok(false));
        assert_eq!(names(&s), ["a", "b"]);
        assert!(s.delete(b"/db/members/a"));
        assert!(!s.delete(b"/db/members/a"));
        assert!(!s.delete(b"/db/other"));
        assert_eq!(names(&s), ["b"]);
    }

    #[test]
    fn the_leader_key_is_authoritative() {
        let mut s = MemberSet::new(Schema::Native, P);
        s.put(b"/db/members/a", &member("h", 1, "primary"), 2)
            .unwrap();
        s.put(b"/db/members/b", &member("h", 2, "replica"), 3)
            .unwrap();
        let roles =
            |s: &MemberSet| -> Vec<EtcdRole> { s.members().map(|m| s.role_of(m)).collect() };
        assert_eq!(roles(&s), [EtcdRole::Primary, EtcdRole::Replica]);
        assert_eq!(s.put(b"/db/leader", b"b", 4), Ok(true));
        assert_eq!(roles(&s), [EtcdRole::Replica, EtcdRole::Primary]);
        assert_eq!(s.put(b"/db/leader", b"nobody", 5), Ok(true));
        assert_eq!(roles(&s), [EtcdRole::Replica, EtcdRole::Replica]);
        assert!(s.delete(b"/db/leader"));
        assert_eq!(roles(&s), [EtcdRole::Primary, EtcdRole::Replica]);
    }

    #[test]
    fn a_bad_value_keeps_the_previous_entry_and_is_reported_once() {
        let mut s = MemberSet::new(Schema::Native, P);
        s.put(b"/db/members/a", &member("10.0.0.1", 1, "primary"), 2)
            .unwrap();
        let before: Vec<Member> = s.members().cloned().collect();
        let bad = s.put(
            b"/db/members/a",
            br#"{"host": "h", "port": 70000, "role": "primary"}"#,
            3,
        );
        let bad = bad.unwrap_err();
        assert_eq!(bad.key, "/db/members/a");
        assert_eq!(bad.error.to_string(), "port 70000 is out of range 1-65535");
        assert_eq!(s.members().cloned().collect::<Vec<_>>(), before);
        // The same revision again (a re-delivery) is not reported twice; a new one is.
        assert_eq!(s.put(b"/db/members/a", b"{", 3), Ok(false));
        assert!(s.put(b"/db/members/a", b"{", 4).is_err());
        // A bad member never seen before is simply absent.
        assert!(s.put(b"/db/members/z", b"nonsense", 5).is_err());
        assert_eq!(names(&s), ["a"]);
        // A bad leader keeps the previous leader.
        s.put(b"/db/leader", b"a", 6).unwrap();
        assert!(s.put(b"/db/leader", b"a b", 7).is_err());
        assert_eq!(s.leader(), Some("a"));
    }

    #[test]
    fn relist_replaces_everything_but_keeps_entries_whose_value_is_bad() {
        let mut s = MemberSet::new(Schema::Native, P);
        s.put(b"/db/members/a", &member("10.0.0.1", 1, "primary"), 2)
            .unwrap();
        s.put(b"/db/members/b", &member("10.0.0.2", 1, "replica"), 3)
            .unwrap();
        s.put(b"/db/members/gone", &member("10.0.0.3", 1, "replica"), 4)
            .unwrap();
        let a2 = member("10.0.0.9", 1, "primary");
        let listing: Vec<(&[u8], &[u8], i64)> = vec![
            (b"/db/members/a", &a2, 7),
            (b"/db/members/b", b"{broken", 8),
            (
                b"/db/members/new",
                br#"{"host": "n", "port": 2, "role": "replica", "state": "maint"}"#,
                9,
            ),
        ];
        let (changed, bad) = s.relist(listing.clone());
        assert!(changed);
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert_eq!(bad[0].key, "/db/members/b");
        assert_eq!(names(&s), ["a", "b", "new"]);
        let hosts: Vec<&str> = s.members().map(|m| m.host.as_str()).collect();
        assert_eq!(hosts, ["10.0.0.9", "10.0.0.2", "n"]);
        assert_eq!(s.members().nth(2).map(|m| m.state), Some(EtcdState::Maint));
        // The same listing again: nothing changed, nothing reported again.
        assert_eq!(s.relist(listing), (false, Vec::new()));
    }

    #[test]
    fn patroni_keys() {
        let mut s = MemberSet::new(Schema::Patroni, "/service/pg");
        let v = br#"{"conn_url": "postgres://127.0.0.1:5433/postgres", "role": "replica", "state": "running"}"#;
        assert_eq!(s.put(b"/service/pg/members/pg-1", v, 2), Ok(true));
        assert_eq!(s.put(b"/service/pg/leader", b"pg-1", 3), Ok(true));
        assert_eq!(s.put(b"/service/pg/optime/leader", b"123", 4), Ok(false));
        assert_eq!(s.put(b"/service/pg/history", b"[]", 5), Ok(false));
        let m = s.members().next().unwrap();
        assert_eq!((m.port, s.role_of(m)), (5433, EtcdRole::Primary));
    }
}
