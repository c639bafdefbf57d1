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

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Resolvers};
use query::Querier;
use resolution::{Owner, Resolution};

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
    /// In MAINT (resolution): no address to use.
    pub maint: bool,
}

/// What DNS last said about each server, by backend and server name.
pub type Answers = HashMap<(String, Arc<str>), DnsUpdate>;

/// `config` with DNS's word applied to each server that resolves the same name it did:
/// its address (the port stays) and whether it is in MAINT (resolution).
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
            let addr = SocketAddr::new(a.ip, s.addr.port());
            if s.addr != addr || s.dns_maint != a.maint {
                let s = Arc::make_mut(s);
                s.addr = addr;
                s.dns_maint = a.maint;
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
            let resolutions = resolutions(config, section, answers);
            if resolutions.is_empty() {
                continue;
            }
            let task = Task {
                section: section.clone(),
                epoch: self.epoch,
                resolutions,
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

/// The names `section` resolves and their servers: one resolution per name and preferred
/// family, as HAProxy shares one among the servers that resolve the same name.
fn resolutions(config: &Config, section: &Resolvers, answers: &Answers) -> Vec<Resolution> {
    let now = Instant::now();
    let mut by_name: Vec<Resolution> = Vec::new();
    for b in &config.backends {
        for s in &b.servers {
            let Some(r) = s.resolve.as_ref().filter(|r| r.resolvers == section.name) else {
                continue;
            };
            let (ip, maint) = match answers.get(&(b.name.clone(), s.name.clone())) {
                Some(a) if a.fqdn == r.fqdn => (a.ip, a.maint),
                _ => (s.addr.ip(), s.dns_maint),
            };
            let owner = Owner::new(&b.name, s.name.clone(), ip, maint);
            match by_name
                .iter_mut()
                .find(|x| x.fqdn == r.fqdn && x.prefer == r.prefer)
            {
                Some(x) => x.owners.push(owner),
                None => by_name.push(Resolution::new(r.fqdn.clone(), r.prefer, vec![owner], now)),
            }
        }
    }
    by_name
}

/// One section's resolver task.
struct Task {
    section: Resolvers,
    epoch: u64,
    resolutions: Vec<Resolution>,
    tx: mpsc::UnboundedSender<DnsUpdate>,
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
            for (i, r) in self.resolutions.iter().enumerate() {
                let (querier, fqdn, prefer) = (querier.clone(), r.fqdn.clone(), r.prefer);
                queries.spawn(async move { (i, querier.resolve(&fqdn, prefer).await) });
            }
            let mut results = Vec::with_capacity(self.resolutions.len());
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = async { while let Some(Ok(done)) = queries.join_next().await { results.push(done) } } => {}
            }
            results.sort_by_key(|(i, _)| *i);
            for (i, result) in results {
                self.take(i, result);
            }
        }
    }

    /// Applies one name's result and sends what changed.
    fn take(&mut self, i: usize, result: Result<Vec<IpAddr>, resolution::Failure>) {
        let hold = self.section.hold;
        let now = Instant::now();
        let Some(r) = self.resolutions.get_mut(i) else {
            return;
        };
        let changed = match &result {
            Ok(ips) => r.answer(ips, &hold, now),
            Err(failure) => r.failed(*failure, &hold, now),
        };
        for o in changed {
            if o.maint {
                tracing::warn!(
                    backend = %o.backend,
                    server = %o.server,
                    "server {}/{} is going into maintenance: no address for '{}' from resolvers '{}' ({})",
                    o.backend,
                    o.server,
                    r.fqdn,
                    self.section.name,
                    match &result {
                        Ok(_) => "no free record in the answer".to_owned(),
                        Err(f) => format!("{f:?}"),
                    }
                );
            } else {
                tracing::info!(
                    backend = %o.backend,
                    server = %o.server,
                    "server {}/{} takes address {} for '{}' from resolvers '{}'",
                    o.backend,
                    o.server,
                    o.ip,
                    r.fqdn,
                    self.section.name
                );
            }
            let _ = self.tx.send(DnsUpdate {
                epoch: self.epoch,
                backend: o.backend,
                server: o.server,
                fqdn: r.fqdn.clone(),
                ip: o.ip,
                maint: o.maint,
            });
        }
    }
}
