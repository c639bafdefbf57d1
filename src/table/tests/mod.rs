//! Unit tests of the table, from configuration text: pools and picks (`pools.rs`),
//! `fullconn` and dynamic server limits (`limits.rs`), roles
//! and etcd's view (`roles.rs`), and that the build is a pure function whose changes are made
//! after the swap (`pure.rs`). Servers discovered in etcd go through the real path: a
//! [`MemberTable`] applying watch messages, then [`effective_config`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use super::testing::parse;
use super::*;
use crate::config::{EtcdRole, EtcdState, EtcdView};
use crate::discovery::{Discovered, DiscoveredServer, MemberTable, effective_config};

mod limits;
mod pools;
mod pure;
mod roles;

/// Picks `n` times from `be`, giving each slot back; the servers' names.
fn names(be: &BackendRt, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let idx = be.pick(None, None).expect("a server");
            be.release(idx);
            be.servers[idx].name().to_owned()
        })
        .collect()
}

/// The `etcd e` section every discovering backend's `discover etcd e` names.
const ETCD: &str = "etcd e\n    endpoints 127.0.0.1:2379\n";

/// A configuration file whose backend `be` discovers its servers in etcd, and the member set
/// `control` keeps of it: each change goes through [`MemberTable::apply`], as a watch's
/// message does, and the table is built from [`effective_config`].
struct Etcd {
    file: Config,
    set: MemberTable,
    revision: i64,
}

/// A member: its name, port, etcd role and state.
type Member<'a> = (&'a str, u16, EtcdRole, EtcdState);

impl Etcd {
    /// `text` ends with backend `be`, without its `discover` line.
    fn new(text: &str) -> Etcd {
        let text = format!("{text}    discover etcd e path /db\n{ETCD}");
        Etcd {
            file: Arc::unwrap_or_clone(parse(&text)),
            set: MemberTable::default(),
            revision: 0,
        }
    }

    /// etcd adds or changes `put` and removes `delete`; the effective configuration after it.
    fn change(&mut self, put: &[Member<'_>], delete: &[&str]) -> Arc<Config> {
        let mut changes: Vec<(Arc<str>, Option<Arc<DiscoveredServer>>)> = put
            .iter()
            .map(|&(name, port, role, state)| {
                let member = DiscoveredServer {
                    ip: IpAddr::from([127, 0, 0, 1]),
                    port,
                    check_port: None,
                    weight: None,
                    view: EtcdView { role, state },
                };
                (name.into(), Some(Arc::new(member)))
            })
            .collect();
        changes.extend(delete.iter().map(|name| ((*name).into(), None)));
        self.revision += 1;
        let message = Discovered {
            backend: "be".to_owned(),
            watch: 1,
            changes,
            revision: self.revision,
            received: Instant::now(),
            urgent: true,
        };
        let backend = self.file.backends.iter().find(|b| b.name == "be");
        self.set.apply(message, backend);
        let sets = HashMap::from([("be".to_owned(), self.set.clone())]);
        Arc::new(effective_config(&self.file, &sets))
    }

    /// etcd adds or changes `members`.
    fn put(&mut self, members: &[Member<'_>]) -> Arc<Config> {
        self.change(members, &[])
    }
}

const P: EtcdRole = EtcdRole::Primary;
const R: EtcdRole = EtcdRole::Replica;
const READY: EtcdState = EtcdState::Ready;
