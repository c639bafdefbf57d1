//! Server addresses from DNS at run time (HAProxy 2.6's `resolvers` sections).
//!
//! For every `resolvers` section that servers use, one task ([`Tasks::reconcile`] starts
//! them) resolves each of their names every `timeout resolve` ([`query`]), keeps the records
//! and picks each server's address as HAProxy does ([`resolution`]), and sends the servers
//! whose address or state changed ([`DnsUpdate`]) to `control` on a channel. `control` keeps
//! the last word for each server ([`Answers`]) and builds the configuration the table is
//! made from with [`apply`]: the server with its new address, or in MAINT (resolution) when
//! DNS left it without one. So an address change is one table swap; servers keep their live
//! state (it is keyed by name), and sessions, to that server or any other, are not closed.
//!
//! This module never touches the table: it reads the configuration and sends messages.

pub mod query;
pub mod resolution;
pub mod srv;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{AddrFamily, Config, Resolvers};
use query::Querier;
use resolution::{Failure, Owner, Resolution};
use srv::{SrvItem, SrvOwner, SrvResolution};

/// A server whose address or state DNS changed.
#[derive(Debug, Clone)]
pub struct DnsUpdate {
    /// Which start of the tasks sent it (a reload's late messages are ignored).
    pub epoch: u64,
    /// The backend.
    pub backend: String,
    /// The server.
    pub server: Arc<str>,
    /// The name it resolves.
    pub fqdn: String,
    /// Its address now.
    pub ip: IpAddr,
    /// Its port, from an SRV record (`None`: the configured one).
    pub port: Option<u16>,
    /// Its weight, from an SRV record (`None`: the configured one).
    pub weight: Option<u32>,
    /// In MAINT (resolution): no address to use.
    pub maint: bool,
}

/// What DNS last said about each server, by backend and server name.
pub type Answers = HashMap<(String, Arc<str>), DnsUpdate>;

/// `config` with DNS's word applied to each server that resolves the same name it did:
/// its address (and from an SRV record its port and weight) and whether it is in MAINT
/// (resolution).
pub fn apply(mut config: Config, answers: &Answers) -> Config {
    if answers.is_empty() {
        return config;
    }
    for b in &mut config.backends {
        for s in &mut b.servers {
            let Some(r) = &s.resolve else { continue };
            let Some(a) = answers.get(&(b.name.clone(), s.name.clone())) else {
                continue;
            };
            if a.fqdn != r.fqdn {
                continue;
            }
            let addr = SocketAddr::new(a.ip, a.port.unwrap_or(s.addr.port()));
            let weight = a.weight.unwrap_or(s.weight);
            if s.addr != addr || s.dns_maint != a.maint || s.weight != weight {
                let s = Arc::make_mut(s);
                s.addr = addr;
                s.dns_maint = a.maint;
                s.weight = weight;
            }
        }
    }
    config
}

/// The running resolver tasks.
#[derive(Debug, Default)]
pub struct Tasks {
    epoch: u64,
    stop: Option<CancellationToken>,
}

impl Tasks {
    /// Stops the running tasks and starts one for each section `config`'s servers use; the
    /// servers start from what DNS said before (`answers`), else from their `init-addr`.
    pub fn reconcile(
        &mut self,
        config: &Config,
        answers: &Answers,
        tx: &mpsc::UnboundedSender<DnsUpdate>,
    ) {
        self.stop();
        self.epoch += 1;
        let stop = CancellationToken::new();
        for section in &config.resolvers {
            let names = names(config, section, answers);
            if names.is_empty() {
                continue;
            }
            let task = Task {
                section: section.clone(),
                epoch: self.epoch,
                names,
                tx: tx.clone(),
            };
            tokio::spawn(task.run(stop.clone()));
        }
        self.stop = Some(stop);
    }

    /// Stops every task.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.cancel();
        }
    }

    /// The epoch of the running tasks (messages of older ones are stale).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
}

/// What one section resolves: one resolution per name (and preferred family), shared by the
/// servers that resolve it, as HAProxy shares one among them.
#[derive(Debug)]
enum Name {
    /// A host name's A/AAAA records.
    Addr(Resolution),
    /// An SRV name's records.
    Srv(SrvResolution, AddrFamily),
}

impl Name {
    fn fqdn(&self) -> &str {
        match self {
            Name::Addr(r) => &r.fqdn,
            Name::Srv(r, _) => &r.fqdn,
        }
    }
}

/// The names `section` resolves and their servers, starting from what DNS said before.
fn names(config: &Config, section: &Resolvers, answers: &Answers) -> Vec<Name> {
    let now = Instant::now();
    let mut names: Vec<Name> = Vec::new();
    for b in &config.backends {
        for s in &b.servers {
            let Some(r) = s.resolve.as_ref().filter(|r| r.resolvers == section.name) else {
                continue;
            };
            let before = answers
                .get(&(b.name.clone(), s.name.clone()))
                .filter(|a| a.fqdn == r.fqdn);
            if r.is_srv() {
                // A reload frees the servers: the first answer fills them again.
                let owner = SrvOwner::new(&b.name, s.name.clone(), r.ignore_weight);
                match names.iter_mut().find_map(|n| match n {
                    Name::Srv(x, _) if x.fqdn == r.fqdn => Some(x),
                    _ => None,
                }) {
                    Some(x) => x.add(owner),
                    None => names.push(Name::Srv(
                        SrvResolution::new(r.fqdn.clone(), vec![owner], now),
                        r.prefer,
                    )),
                }
                continue;
            }
            let (ip, maint) = match before {
                Some(a) => (a.ip, a.maint),
                None => (s.addr.ip(), s.dns_maint),
            };
            let owner = Owner::new(&b.name, s.name.clone(), ip, maint);
            match names.iter_mut().find_map(|n| match n {
                Name::Addr(x) if x.fqdn == r.fqdn && x.prefer == r.prefer => Some(x),
                _ => None,
            }) {
                Some(x) => x.owners.push(owner),
                None => names.push(Name::Addr(Resolution::new(
                    r.fqdn.clone(),
                    r.prefer,
                    vec![owner],
                    now,
                ))),
            }
        }
    }
    names
}

/// One section's resolver task.
struct Task {
    section: Resolvers,
    epoch: u64,
    names: Vec<Name>,
    tx: mpsc::UnboundedSender<DnsUpdate>,
}

/// What a query found, for [`Task::take`].
enum Found {
    Addr(Result<Vec<IpAddr>, Failure>),
    Srv(Result<Vec<SrvItem>, Failure>),
}

impl Task {
    /// Resolves every name every `timeout resolve` (the first time at once) until `stop`.
    async fn run(mut self, stop: CancellationToken) {
        let querier = Arc::new(Querier::new(&self.section));
        let mut tick = tokio::time::interval(self.section.timeout_resolve);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let mut queries = JoinSet::new();
            for (i, n) in self.names.iter().enumerate() {
                let querier = querier.clone();
                let fqdn = n.fqdn().to_owned();
                match n {
                    Name::Addr(r) => {
                        let prefer = r.prefer;
                        queries.spawn(async move {
                            (i, Found::Addr(querier.resolve(&fqdn, prefer).await))
                        })
                    }
                    Name::Srv(_, prefer) => {
                        let prefer = *prefer;
                        queries
                            .spawn(async move { (i, Found::Srv(querier.srv(&fqdn, prefer).await)) })
                    }
                };
            }
            let mut results = Vec::with_capacity(self.names.len());
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = async { while let Some(Ok(done)) = queries.join_next().await { results.push(done) } } => {}
            }
            results.sort_by_key(|(i, _)| *i);
            for (i, found) in results {
                self.take(i, found);
            }
        }
    }

    /// Applies one name's result and sends what changed.
    fn take(&mut self, i: usize, found: Found) {
        let hold = self.section.hold;
        let now = Instant::now();
        let Some(name) = self.names.get_mut(i) else {
            return;
        };
        let fqdn = name.fqdn().to_owned();
        let update = |backend, server, ip, port, weight, maint| DnsUpdate {
            epoch: self.epoch,
            backend,
            server,
            fqdn: fqdn.clone(),
            ip,
            port,
            weight,
            maint,
        };
        let (changed, failure): (Vec<DnsUpdate>, Option<Failure>) = match (name, found) {
            (Name::Addr(r), Found::Addr(result)) => {
                let changed = match &result {
                    Ok(ips) => r.answer(ips, &hold, now),
                    Err(failure) => r.failed(*failure, &hold, now),
                };
                let changed = changed.into_iter();
                let changed =
                    changed.map(|o| update(o.backend, o.server, o.ip, None, None, o.maint));
                (changed.collect(), result.err())
            }
            (Name::Srv(r, _), Found::Srv(result)) => {
                let changed = match &result {
                    Ok(items) => r.answer(items, &hold, now),
                    Err(failure) => r.failed(*failure, &hold, now),
                };
                let changed = changed.into_iter().map(|o| {
                    let port = (o.port != 0).then_some(o.port);
                    update(o.backend, o.server, o.ip, port, o.weight, o.maint)
                });
                (changed.collect(), result.err())
            }
            _ => return,
        };
        for u in changed {
            let name = format!("{}/{}", u.backend, u.server);
            if u.maint {
                let why = match failure {
                    Some(f) => format!("{f:?}"),
                    None => "no record left for it in the answer".to_owned(),
                };
                tracing::warn!(
                    "server {name} is going into maintenance: no address for '{fqdn}' from resolvers '{}' ({why})",
                    self.section.name
                );
            } else {
                tracing::info!(
                    "server {name} takes address {}{} for '{fqdn}' from resolvers '{}'",
                    u.ip,
                    u.port.map(|p| format!(":{p}")).unwrap_or_default(),
                    self.section.name
                );
            }
            let _ = self.tx.send(u);
        }
    }
}

/// Forgets, on a reload, what DNS said about servers filled from SRV records: their records
/// are given out again by the first answer (HAProxy also starts them without one).
pub fn keep_on_reload(answers: &mut Answers) {
    answers.retain(|_, a| !a.fqdn.starts_with('_'));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_sources;

    fn answer(server: &str, fqdn: &str, ip: [u8; 4], srv: Option<(u16, u32)>) -> DnsUpdate {
        DnsUpdate {
            epoch: 1,
            backend: "b".into(),
            server: server.into(),
            fqdn: fqdn.into(),
            ip: IpAddr::from(ip),
            port: srv.map(|(p, _)| p),
            weight: srv.map(|(_, w)| w),
            maint: false,
        }
    }

    #[test]
    fn apply_takes_dns_word_for_servers_that_still_resolve_the_same_name() {
        let config = parse_sources(&[(
            "t.cfg",
            "resolvers dns\n    nameserver a 127.0.0.1:53\nbackend b\n    server s1 db.invalid:5432 resolvers dns init-addr none weight 7\n    server s2 other.invalid:5432 resolvers dns init-addr none\n    server-template t 1 _pg._tcp.x resolvers dns\n",
        )])
        .unwrap();
        let mut answers = Answers::new();
        for a in [
            answer("s1", "db.invalid", [10, 0, 0, 1], None),
            // Stale: the name of s2 is not the one it resolved.
            answer("s2", "renamed.invalid", [10, 0, 0, 2], None),
            answer("t1", "_pg._tcp.x", [10, 0, 0, 3], Some((6432, 4))),
        ] {
            answers.insert((a.backend.clone(), a.server.clone()), a);
        }
        let applied = apply(config, &answers);
        let s = &applied.backends[0].servers;
        assert_eq!(s[0].addr, "10.0.0.1:5432".parse().unwrap());
        assert!(!s[0].dns_maint);
        assert_eq!(s[0].weight, 7);
        assert!(s[1].dns_maint, "a stale answer is not applied");
        assert_eq!(s[2].addr, "10.0.0.3:6432".parse().unwrap());
        assert_eq!(s[2].weight, 4);
        keep_on_reload(&mut answers);
        assert_eq!(
            answers.len(),
            2,
            "SRV servers are given out again after a reload"
        );
    }
}
