//! One backend's watch on etcd: list once, then watch from the next revision, and send the
//! whole member set to `control` after every change.
//!
//! - **Disconnects**: the task reconnects with backoff (100 ms doubling to 2 s), trying the
//!   section's endpoints in turn, and resumes the watch from the last revision it had, so
//!   changes made meanwhile arrive as ordinary events. The last known members stay in force
//!   (nothing is sent while etcd is away). An outage is logged once when it starts and once
//!   when it ends, never per retry.
//! - **Compaction**: a watch cancelled because its start revision was compacted away is
//!   followed by a full listing and a new watch.
//! - **Distrust**: a watch can die silently (a lost TCP path with no reset). The task asks
//!   etcd for watch progress every [`PROGRESS_EVERY`] and drops a watch that stays silent
//!   for [`SILENT_LIMIT`]; and every [`RELIST_EVERY`] it lists the prefix again and takes the
//!   listing, warning when it differs from what the watch delivered. Every answer confirms
//!   the state ([`EtcdStatus::confirm`]), whose age is the `rolelb_etcd_state_age_seconds`
//!   metric.
//! - **Bad values** are logged with their key and reason, counted, and the member keeps its
//!   previous entry (see [`MemberSet`]).
//! - **Names**: member hosts that are names are resolved here (not in `control`), once per
//!   listing; an address already known is kept when a lookup fails.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, EventType, GetOptions, WatchOptions, WatchStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::members::{BadValue, MemberSet};
use super::{Discovered, DiscoveredServer, EtcdStatus, WatchSpec};
use crate::config::EtcdView;

/// How often the prefix is listed again, whatever the watch says.
pub const RELIST_EVERY: Duration = Duration::from_secs(30);
/// How often watch progress is requested from etcd.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// A watch silent for this long (no event, no progress answer) is taken as dead.
pub const SILENT_LIMIT: Duration = Duration::from_secs(15);
/// First wait before reconnecting.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest wait between reconnection attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Why a session with etcd ended; every variant names the endpoint.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// Connecting (or authenticating) failed.
    #[error("etcd {endpoint}: cannot connect: {source}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// The client's error.
        source: etcd_client::Error,
    },
    /// A request got no answer in time.
    #[error("etcd {endpoint}: no answer within {timeout:?} ({what})")]
    Timeout {
        /// The endpoint.
        endpoint: String,
        /// `dial-timeout`.
        timeout: Duration,
        /// What was asked.
        what: &'static str,
    },
    /// Listing the prefix failed.
    #[error("etcd {endpoint}: listing {prefix}/: {source}")]
    List {
        /// The endpoint.
        endpoint: String,
        /// The key prefix.
        prefix: String,
        /// The client's error.
        source: etcd_client::Error,
    },
    /// The watch failed or was refused.
    #[error("etcd {endpoint}: watching {prefix}/: {detail}")]
    Watch {
        /// The endpoint.
        endpoint: String,
        /// The key prefix.
        prefix: String,
        /// What happened.
        detail: String,
    },
}

/// Everything one watch task needs.
pub struct Watch {
    /// The backend whose servers this finds.
    pub backend: String,
    /// The cluster and prefix.
    pub spec: WatchSpec,
    /// This task's id (see [`Discovered::watch`]).
    pub id: u64,
    /// Shared report.
    pub status: Arc<EtcdStatus>,
    /// Where member sets go (`control`).
    pub tx: mpsc::UnboundedSender<Discovered>,
    /// Cancelled when the watch is no longer wanted.
    pub stop: CancellationToken,
}

/// How a session ended.
enum Ended {
    /// `stop` was cancelled, or `control` is gone.
    Stopped,
    /// etcd failed; `connected` says whether the session got as far as a live watch.
    Failed { error: EtcdError, connected: bool },
}

/// The watch task's own state, kept across sessions.
struct Task {
    w: Watch,
    set: MemberSet,
    /// Whether the set reflects a listing at all (else a session lists first).
    listed: bool,
    /// The highest revision the set reflects; watches resume after it.
    revision: i64,
    /// Resolved member hosts.
    resolved: HashMap<String, IpAddr>,
    /// Look names up again at the next publish (set by each listing).
    refresh_names: bool,
    /// Hosts whose lookup failure was logged.
    unresolved: HashSet<String>,
    /// When the current outage began, if etcd is away.
    outage: Option<Instant>,
    /// What was last sent, so an unchanged set is not sent again.
    sent: Option<Vec<DiscoveredServer>>,
}

/// Runs one backend's watch until `stop` is cancelled.
pub async fn run(w: Watch) {
    let set = MemberSet::new(w.spec.schema, &w.spec.path);
    let mut task = Task {
        w,
        set,
        listed: false,
        revision: 0,
        resolved: HashMap::new(),
        refresh_names: false,
        unresolved: HashSet::new(),
        outage: None,
        sent: None,
    };
    let mut endpoint = 0;
    let mut backoff = BACKOFF_MIN;
    loop {
        let endpoints = &task.w.spec.endpoints;
        let Some(ep) = endpoints.get(endpoint % endpoints.len().max(1)).cloned() else {
            return;
        };
        match task.session(&ep).await {
            Ended::Stopped => return,
            Ended::Failed { error, connected } => {
                task.lost(&error);
                if connected {
                    backoff = BACKOFF_MIN;
                } else {
                    // This endpoint did not work: try the next one after a pause.
                    endpoint += 1;
                }
            }
        }
        tokio::select! {
            _ = task.w.stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

impl Task {
    /// `backend/prefix` for logs.
    fn what(&self) -> String {
        format!(
            "backend '{}' (etcd '{}' {}/)",
            self.w.backend, self.w.spec.cluster, self.w.spec.path
        )
    }

    /// Marks etcd unreachable; logs only when an outage starts.
    fn lost(&mut self, error: &EtcdError) {
        self.w.status.connected.store(false, Ordering::Release);
        if self.outage.is_none() {
            self.outage = Some(Instant::now());
            tracing::warn!(
                "etcd unreachable for {}: {error}; keeping the last known {} members and retrying",
                self.what(),
                self.set.len()
            );
        } else {
            tracing::debug!("etcd still unreachable for {}: {error}", self.what());
        }
    }

    /// Marks etcd reachable; logs when an outage ends.
    fn reached(&mut self, endpoint: &str) {
        self.w.status.connected.store(true, Ordering::Release);
        self.w.status.confirm();
        if let Some(since) = self.outage.take() {
            tracing::info!(
                "etcd reachable again for {} at {endpoint} after {:.1}s; resyncing from revision {}",
                self.what(),
                since.elapsed().as_secs_f64(),
                self.revision
            );
        }
    }

    async fn connect(&self, endpoint: &str) -> Result<Client, EtcdError> {
        let spec = &self.w.spec;
        let mut options = ConnectOptions::new()
            .with_connect_timeout(spec.dial_timeout)
            // HTTP/2 pings notice a dead connection even while the watch is idle.
            .with_keep_alive(Duration::from_secs(2), spec.dial_timeout)
            .with_keep_alive_while_idle(true);
        if let Some(auth) = &spec.auth {
            options = options.with_user(auth.user.clone(), auth.password.clone());
        }
        let connect = Client::connect([endpoint], Some(options));
        match tokio::time::timeout(spec.dial_timeout, connect).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(source)) => Err(EtcdError::Connect {
                endpoint: endpoint.to_owned(),
                source,
            }),
            Err(_) => Err(EtcdError::Timeout {
                endpoint: endpoint.to_owned(),
                timeout: spec.dial_timeout,
                what: "connect",
            }),
        }
    }

    /// One connection to `endpoint`: list if needed, then watch until something fails.
    async fn session(&mut self, endpoint: &str) -> Ended {
        let stop = self.w.stop.clone();
        let mut client = tokio::select! {
            _ = stop.cancelled() => return Ended::Stopped,
            c = self.connect(endpoint) => match c {
                Ok(c) => c,
                Err(error) => return Ended::Failed { error, connected: false },
            },
        };
        let mut connected = false;
        loop {
            if !self.listed {
                let listed = tokio::select! {
                    _ = stop.cancelled() => return Ended::Stopped,
                    r = self.list(&mut client, endpoint) => r,
                };
                if let Err(error) = listed {
                    return Ended::Failed { error, connected };
                }
                if !self.publish(Instant::now()).await {
                    return Ended::Stopped;
                }
            }
            let options = WatchOptions::new()
                .with_prefix()
                .with_progress_notify()
                .with_start_revision(self.revision + 1);
            let watch = client.watch(self.watch_prefix(), Some(options));
            let stream = tokio::select! {
                _ = stop.cancelled() => return Ended::Stopped,
                r = tokio::time::timeout(self.w.spec.dial_timeout, watch) => r,
            };
            let stream = match stream {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    return Ended::Failed {
                        error: self.watch_error(endpoint, e.to_string()),
                        connected,
                    };
                }
                Err(_) => {
                    let error = EtcdError::Timeout {
                        endpoint: endpoint.to_owned(),
                        timeout: self.w.spec.dial_timeout,
                        what: "watch",
                    };
                    return Ended::Failed { error, connected };
                }
            };
            match self
                .follow(&mut client, stream, endpoint, &mut connected)
                .await
            {
                Followed::Stopped => return Ended::Stopped,
                Followed::Failed(error) => return Ended::Failed { error, connected },
                // Compacted: list again, on the same connection.
                Followed::Relist => self.listed = false,
            }
        }
    }

    fn watch_prefix(&self) -> String {
        format!("{}/", self.w.spec.path)
    }

    fn watch_error(&self, endpoint: &str, detail: String) -> EtcdError {
        EtcdError::Watch {
            endpoint: endpoint.to_owned(),
            prefix: self.w.spec.path.clone(),
            detail,
        }
    }

    /// Lists the prefix and takes the listing; returns whether the set changed.
    async fn list(&mut self, client: &mut Client, endpoint: &str) -> Result<bool, EtcdError> {
        let get = client.get(self.watch_prefix(), Some(GetOptions::new().with_prefix()));
        let response = match tokio::time::timeout(self.w.spec.dial_timeout, get).await {
            Ok(Ok(r)) => r,
            Ok(Err(source)) => {
                return Err(EtcdError::List {
                    endpoint: endpoint.to_owned(),
                    prefix: self.w.spec.path.clone(),
                    source,
                });
            }
            Err(_) => {
                return Err(EtcdError::Timeout {
                    endpoint: endpoint.to_owned(),
                    timeout: self.w.spec.dial_timeout,
                    what: "list",
                });
            }
        };
        let revision = response.header().map_or(0, |h| h.revision());
        let kvs = response
            .kvs()
            .iter()
            .map(|kv| (kv.key(), kv.value(), kv.mod_revision()));
        let (changed, bad) = self.set.relist(kvs);
        self.report(bad);
        let status = &self.w.status;
        status.lists.fetch_add(1, Ordering::Relaxed);
        if self.listed && changed {
            tracing::warn!(
                "etcd re-list of {} at revision {revision} differs from what the watch delivered (up to revision {}): taking the listing",
                self.what(),
                self.revision
            );
        }
        self.listed = true;
        self.revision = self.revision.max(revision);
        status.last_revision.store(self.revision, Ordering::Release);
        // Names are looked up again after each listing.
        self.refresh_names = true;
        if status.lists.load(Ordering::Relaxed) == 1 {
            tracing::info!(
                "etcd lists {} members for {} at revision {revision}",
                self.set.len(),
                self.what()
            );
        }
        self.reached(endpoint);
        Ok(changed)
    }

    /// Follows a watch stream until it fails, is compacted away, or `stop`.
    async fn follow(
        &mut self,
        client: &mut Client,
        mut stream: WatchStream,
        endpoint: &str,
        connected: &mut bool,
    ) -> Followed {
        let start = tokio::time::Instant::now();
        let mut relist = tokio::time::interval_at(start + RELIST_EVERY, RELIST_EVERY);
        let mut progress = tokio::time::interval_at(start + PROGRESS_EVERY, PROGRESS_EVERY);
        let mut heard = Instant::now();
        let stop = self.w.stop.clone();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Followed::Stopped,
                message = stream.message() => {
                    let received = Instant::now();
                    heard = received;
                    let response = match message {
                        Ok(Some(r)) => r,
                        Ok(None) => return Followed::Failed(self.watch_error(endpoint, "the stream ended".into())),
                        Err(e) => return Followed::Failed(self.watch_error(endpoint, e.to_string())),
                    };
                    if response.canceled() {
                        let compacted = response.compact_revision();
                        if compacted > 0 {
                            tracing::warn!(
                                "etcd watch of {} starts at revision {} but etcd compacted up to {compacted}: listing again",
                                self.what(),
                                self.revision + 1
                            );
                            return Followed::Relist;
                        }
                        let reason = format!("cancelled by etcd: {}", response.cancel_reason());
                        return Followed::Failed(self.watch_error(endpoint, reason));
                    }
                    if response.created() {
                        *connected = true;
                        self.reached(endpoint);
                        continue;
                    }
                    let changed = self.apply(&response);
                    self.w.status.confirm();
                    if changed && !self.publish(received).await {
                        return Followed::Stopped;
                    }
                }
                _ = progress.tick() => {
                    if heard.elapsed() > SILENT_LIMIT {
                        return Followed::Failed(self.watch_error(endpoint, format!("no answer for {SILENT_LIMIT:?}")));
                    }
                    if let Err(e) = stream.request_progress().await {
                        return Followed::Failed(self.watch_error(endpoint, e.to_string()));
                    }
                }
                _ = relist.tick() => {
                    match self.list(client, endpoint).await {
                        Ok(true) => {
                            if !self.publish(Instant::now()).await {
                                return Followed::Stopped;
                            }
                        }
                        Ok(false) => {}
                        Err(e) => return Followed::Failed(e),
                    }
                }
            }
        }
    }

    /// Applies a watch response's events; returns whether the set changed.
    fn apply(&mut self, response: &etcd_client::WatchResponse) -> bool {
        let events = response.events();
        if events.is_empty() {
            // A progress notification: proof of life only. Its revision is not taken as a
            // resume point, because etcd 3.4 may send one ahead of events still on their
            // way to a watcher that is catching up; listings and events move the revision.
            return false;
        }
        self.w
            .status
            .events
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        let mut changed = false;
        let mut bad = Vec::new();
        for event in events {
            let Some(kv) = event.kv() else { continue };
            // Already reflected by a later listing.
            if kv.mod_revision() <= self.revision {
                continue;
            }
            self.revision = kv.mod_revision();
            changed |= match event.event_type() {
                EventType::Put => match self.set.put(kv.key(), kv.value(), kv.mod_revision()) {
                    Ok(c) => c,
                    Err(b) => {
                        bad.push(b);
                        false
                    }
                },
                EventType::Delete => self.set.delete(kv.key()),
            };
        }
        self.report(bad);
        self.w
            .status
            .last_revision
            .store(self.revision, Ordering::Release);
        changed
    }

    /// Logs and counts values that were not taken.
    fn report(&self, bad: Vec<BadValue>) {
        for b in bad {
            self.w.status.parse_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                "etcd key {} for backend '{}': {}; keeping its previous entry",
                b.key,
                self.w.backend,
                b.error
            );
        }
    }

    /// Resolves the set and sends it to `control` when it differs from the last one sent;
    /// false when `control` is gone.
    async fn publish(&mut self, received: Instant) -> bool {
        let members: Vec<_> = self.set.members().cloned().collect();
        let refresh = std::mem::take(&mut self.refresh_names);
        let mut servers = Vec::with_capacity(members.len());
        for m in &members {
            let Some(ip) = self.resolve(&m.host, m.port, refresh).await else {
                continue;
            };
            servers.push(DiscoveredServer {
                name: m.name.clone(),
                ip,
                port: m.port,
                check_port: m.check_port,
                weight: m.weight,
                view: EtcdView {
                    role: self.set.role_of(m),
                    state: m.state,
                },
            });
        }
        if self.sent.as_ref() == Some(&servers) {
            return true;
        }
        self.sent = Some(servers.clone());
        tracing::debug!(
            backend = %self.w.backend,
            revision = self.revision,
            members = servers.len(),
            "etcd members changed"
        );
        self.w
            .tx
            .send(Discovered {
                backend: self.w.backend.clone(),
                watch: self.w.id,
                servers,
                revision: self.revision,
                received,
            })
            .is_ok()
    }

    /// The address of `host`: parsed when it is one, else looked up (bounded by
    /// `dial-timeout`) when not known yet or on `refresh`; a failed lookup keeps the address
    /// known before, if any.
    async fn resolve(&mut self, host: &str, port: u16, refresh: bool) -> Option<IpAddr> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Some(ip);
        }
        let known = self.resolved.get(host).copied();
        if known.is_some() && !refresh {
            return known;
        }
        let lookup = tokio::net::lookup_host((host, port));
        let found = match tokio::time::timeout(self.w.spec.dial_timeout, lookup).await {
            Ok(Ok(mut addrs)) => addrs.next().map(|a| a.ip()),
            _ => None,
        };
        match found {
            Some(ip) => {
                self.unresolved.remove(host);
                self.resolved.insert(host.to_owned(), ip);
                Some(ip)
            }
            None if known.is_some() => known,
            None => {
                if self.unresolved.insert(host.to_owned()) {
                    tracing::warn!(
                        "etcd member host '{host}' of backend '{}' does not resolve; leaving the member out until it does",
                        self.w.backend
                    );
                }
                None
            }
        }
    }
}

/// How following a watch ended.
enum Followed {
    /// `stop`, or `control` gone.
    Stopped,
    /// etcd failed.
    Failed(EtcdError),
    /// The watch's start revision was compacted: list again.
    Relist,
}
