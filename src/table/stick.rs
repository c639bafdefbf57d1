//! A backend's stick rules as the data path applies them, in HAProxy 2.6's order
//! (`process_sticking_rules`, `process_store_rules`): each rule with the table it uses — the
//! backend's own or, with `table NAME`, the one declared by backend NAME, whose entries live
//! in that backend's live state — and the rules whose `if|unless` condition held for the
//! session (evaluated once, before the server is picked, by the proxy's rules code).
//!
//! - Match (`stick match`, `stick on`): every applying rule whose key is found refreshes its
//!   entry; the first entry that names a server of this backend (by name, else by the id it
//!   was stored with) that is running assigns the session to it.
//! - Store (`stick store-request`, `stick on`), once the connection to the server is made:
//!   the first applying rule with a key of each table, at most [`MAX_STORES`] tables, stores
//!   the server — unless it is `non-stick`.

use std::sync::Arc;
use std::time::Instant;

use super::{BackendRt, ConnAddrs};
use crate::config::Role;
pub use crate::config::stick::MAX_STICK_RULES;
use crate::config::stick::{StickRule, StickTable};
use crate::live::{AdminState, BackendLive, Health, Stored};
use crate::roles::admits;

/// HAProxy keeps at most this many pending stores per session (its `s->store[]`).
pub const MAX_STORES: usize = 8;

/// A backend's stick table and rules, resolved.
#[derive(Debug)]
pub struct StickRt {
    /// The backend's own `stick-table` (its entries are in the backend's live state).
    pub own: Option<StickTable>,
    /// The rules, in order.
    pub rules: Vec<StickRuleRt>,
}

/// One rule with the table it uses.
#[derive(Debug)]
pub struct StickRuleRt {
    /// The rule as configured (its condition is evaluated by the proxy's rules code).
    pub rule: StickRule,
    /// The name of the table (the backend that declares it).
    pub table_name: String,
    /// The table's definition.
    pub table: StickTable,
    /// The live state of the table's backend, which holds the entries.
    pub owner: Arc<BackendLive>,
}

impl StickRt {
    /// Resolves the rules of `be` against the tables `find` knows (by backend name: its
    /// `stick-table` and live state); a rule whose table is missing is left out
    /// (`config::load` refuses such a configuration).
    pub fn resolve(
        be: &crate::config::Backend,
        find: impl Fn(&str) -> Option<(StickTable, Arc<BackendLive>)>,
    ) -> Option<StickRt> {
        let stick = be.stick.as_ref()?;
        let rules = stick
            .rules
            .iter()
            .filter_map(|rule| {
                let name = rule.table_name(&be.name);
                let (table, owner) = find(name)?;
                Some(StickRuleRt {
                    rule: rule.clone(),
                    table_name: name.to_string(),
                    table,
                    owner,
                })
            })
            .collect();
        Some(StickRt {
            own: stick.table.clone(),
            rules,
        })
    }
}

impl ConnAddrs {
    /// Whether stick rule `i` applies to this connection (its condition held).
    pub fn applies(&self, i: usize) -> bool {
        i < MAX_STICK_RULES && self.stick_rules & (1 << i) != 0
    }
}

impl BackendRt {
    /// The server the stick tables name for `conn` (HAProxy's `stick match` and `stick on`),
    /// if one of this backend can take it: running (not down, not in maintenance; a draining
    /// server still takes it), not `exclude`, and in a `role` backend admitted by the
    /// single-writer guard. An entry for a server that cannot take the connection is
    /// ignored, not dropped: the balancer picks, and the store that follows points the entry
    /// there.
    pub(super) fn stuck(&self, conn: ConnAddrs, exclude: Option<usize>) -> Option<usize> {
        let stick = self.settings.stick.as_ref()?;
        let now = Instant::now();
        let mut assigned = None;
        for (i, r) in stick.rules.iter().enumerate() {
            if !r.rule.action.matches() || !conn.applies(i) {
                continue;
            }
            let Some(key) = r.table.key.to_key(r.rule.fetch.of(conn.src, conn.dst)) else {
                continue;
            };
            // The lookup refreshes the entry, also when an earlier rule already assigned.
            let Some(found) = r.owner.stick.lookup(&r.table, &key, now) else {
                continue;
            };
            if assigned.is_none() {
                assigned = self.stuck_server(&found, exclude);
            }
        }
        assigned
    }

    /// This backend's server an entry names, if it can take a connection.
    fn stuck_server(&self, found: &Stored, exclude: Option<usize>) -> Option<usize> {
        let idx = self
            .servers
            .iter()
            .position(|s| *s.config.name == *found.name)
            .or_else(|| self.servers.iter().position(|s| s.puid == found.id))?;
        let server = &self.servers[idx];
        let live = &server.live;
        let running =
            live.effective_health() == Health::Up && live.effective_admin() != AdminState::Maint;
        let admitted = self.role == Role::Any || admits(self.rule(), server);
        (running && admitted && exclude != Some(idx)).then_some(idx)
    }

    /// Stores server `idx`, to which `conn` is now connected, in the tables of the applying
    /// `stick on` / `stick store-request` rules (HAProxy stores once the connection to the
    /// server is established): the first such rule with a key of each table, unless the
    /// server is `non-stick`.
    pub fn stick_store(&self, conn: ConnAddrs, idx: usize) {
        let Some(stick) = self.settings.stick.as_ref() else {
            return;
        };
        let Some(server) = self.servers.get(idx) else {
            return;
        };
        let stored = Stored {
            name: server.config.name.clone(),
            id: server.puid,
        };
        let now = Instant::now();
        let mut tables: Vec<&str> = Vec::new();
        for (i, r) in stick.rules.iter().enumerate() {
            if !r.rule.action.stores()
                || !conn.applies(i)
                || tables.contains(&r.table_name.as_str())
                || tables.len() >= MAX_STORES
            {
                continue;
            }
            let Some(key) = r.table.key.to_key(r.rule.fetch.of(conn.src, conn.dst)) else {
                continue;
            };
            tables.push(&r.table_name);
            if !server.config.non_stick {
                r.owner.stick.store(&r.table, key, &stored, now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::config::stick::StickKey;
    use crate::live::Registry;
    use crate::table::Via;
    use crate::table::testing::{build, parse};

    #[test]
    fn a_later_rules_entry_assigns_when_the_first_names_a_stopped_server() {
        let c = parse(
            "backend be\n    stick-table type ip size 10\n    stick match src\n    \
             stick match dst\n    server a 127.0.0.1:1\n    server b 127.0.0.1:2\n    \
             server c 127.0.0.1:3\n",
        );
        let reg = Registry::default();
        let t = build(&c, &reg, 1);
        let be = &t.backends["be"];
        let stick = be.settings.stick.as_ref().expect("rules");
        let table = stick.own.as_ref().expect("table");
        let (src, dst) = (Ipv4Addr::new(127, 0, 0, 9), Ipv4Addr::new(127, 0, 0, 1));
        let now = Instant::now();
        for (key, server, id) in [(src, "a", 1), (dst, "c", 3)] {
            let stored = Stored {
                name: server.into(),
                id,
            };
            be.live.stick.store(table, StickKey::Ip(key), &stored, now);
        }
        let conn = ConnAddrs {
            src: IpAddr::V4(src),
            dst: IpAddr::V4(dst),
            stick_rules: u64::MAX,
        };
        let (idx, via) = be.pick_via(Some(conn), None, false).expect("a");
        assert_eq!((be.servers[idx].name(), via), ("a", Via::Stick));
        be.release(idx);
        be.servers[0].live.set_admin(AdminState::Maint);
        let t = build(&c, &reg, 2);
        let be = &t.backends["be"];
        let (idx, via) = be.pick_via(Some(conn), None, false).expect("c");
        assert_eq!((be.servers[idx].name(), via), ("c", Via::Stick));
        // Rules whose condition failed neither match nor store.
        let off = ConnAddrs {
            stick_rules: 0,
            ..conn
        };
        let (idx, via) = be.pick_via(Some(off), None, false).expect("balanced");
        assert_eq!(via, Via::Balance);
        be.stick_store(off, idx);
        assert_eq!(be.live.stick.used(table, Instant::now()), 2);
    }
}
