//! One backend's watch on etcd: list once, then watch from the next revision, and send what
//! changed in the member set to `control`.
//!
//! - **Batches**: every event of a watch response is applied — a transaction or a
//!   delete-range gives several events the same revision — and the responses already waiting
//!   on the stream are applied with it, so one revision, or a burst of them, is one message
//!   to `control` and one table swap. Only the members the batch touched are looked at again
//!   ([`Published`]), so a burst costs in proportion to its events, not to the member count.
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
//! - **Names**: member hosts that are names are resolved here (not in `control`), again after
//!   each listing; a member whose host does not resolve keeps its previous entry, and is
//!   logged and counted as a bad value is.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, EventType, GetOptions, WatchOptions, WatchStream};
use tokio_util::sync::CancellationToken;

use super::members::{BadValue, MemberSet};
use super::publish::Published;
use super::schema::{self, Key};
use super::{Discovered, DiscoveredTx, EtcdStatus, WatchSpec};

/// How often the prefix is listed again, whatever the watch says.
pub const RELIST_EVERY: Duration = Duration::from_secs(30);
/// How often watch progress is requested from etcd.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// A watch silent for this long (no event, no progress answer) is taken as dead.
pub const SILENT_LIMIT: Duration = Duration::from_secs(15);
/// At most this many waiting watch responses are applied together before publishing.
const BATCH_RESPONSES: usize = 4096;
/// Inside a burst (thousands of puts a second; see [`Pace`]) the watch reads at most once per
/// this span, so that the responses waiting meanwhile make one batch: one wake-up of the etcd
/// thread instead of one per response, which the data path's threads would otherwise feel on
/// a busy machine. A change arriving in a burst waits at most this long (the thread's other
/// watches too); a lone change is read at once.
const BURST_PACE: Duration = Duration::from_millis(5);
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
    pub tx: DiscoveredTx,
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
    /// The revision of the last listing: events up to it are already in the set.
    listed_at: i64,
    /// What `control` was told, and which members changed since.
    published: Published,
    /// When the current outage began, if etcd is away.
    outage: Option<Instant>,
}

/// Runs one backend's watch until `stop` is cancelled.
pub async fn run(w: Watch) {
    let set = MemberSet::new(w.spec.schema, &w.spec.path);
    let published = Published::new(
        &format!("backend '{}'", w.backend),
        &w.spec.path,
        w.spec.dial_timeout,
    );
    let mut task = Task {
        w,
        set,
        listed: false,
        revision: 0,
        listed_at: 0,
        published,
        outage: None,
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
                if self.publish(Instant::now()).await.is_none() {
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
        self.listed_at = revision;
        self.revision = self.revision.max(revision);
        status.last_revision.store(self.revision, Ordering::Release);
        // Every member is looked at again, and names are looked up again.
        self.published.touch_all(true);
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
        let mut paced = Pace::default();
        let stop = self.w.stop.clone();
        loop {
            if let Some(until) = paced.hold(Instant::now()) {
                if super::on_etcd_thread() {
                    // The whole thread pauses, on purpose: waiting in the runtime would still
                    // wake it for every response the connection's reader takes off the socket.
                    std::thread::sleep(until.saturating_duration_since(Instant::now()));
                } else {
                    tokio::select! {
                        _ = stop.cancelled() => return Followed::Stopped,
                        _ = tokio::time::sleep_until(until.into()) => {}
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return Followed::Stopped,
                message = stream.message() => {
                    let received = Instant::now();
                    heard = received;
                    // This response and those already waiting behind it make one batch.
                    let mut next = Some(message);
                    let mut taken = 0;
                    while let Some(message) = next.take() {
                        if let Err(end) = self.take(message, endpoint, connected) {
                            // What the batch applied is not lost with the stream.
                            if self.publish(received).await.is_none() {
                                return Followed::Stopped;
                            }
                            return end;
                        }
                        taken += 1;
                        if taken < BATCH_RESPONSES {
                            next = waiting(&mut stream).await;
                        }
                    }
                    self.w.status.confirm();
                    match self.publish(received).await {
                        Some(urgent) => paced.batch(received, urgent),
                        None => return Followed::Stopped,
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
                    // Even an unchanged listing may change addresses (names are looked up again).
                    match self.list(client, endpoint).await {
                        Ok(_) => {
                            if self.publish(Instant::now()).await.is_none() {
                                return Followed::Stopped;
                            }
                        }
                        Err(e) => return Followed::Failed(e),
                    }
                }
            }
        }
    }

    /// Takes one message of the watch stream: applies a response's events; `Err` when the
    /// watch ended (failed, cancelled, compacted away).
    fn take(
        &mut self,
        message: Result<Option<etcd_client::WatchResponse>, etcd_client::Error>,
        endpoint: &str,
        connected: &mut bool,
    ) -> Result<(), Followed> {
        let response = match message {
            Ok(Some(r)) => r,
            Ok(None) => {
                return Err(Followed::Failed(
                    self.watch_error(endpoint, "the stream ended".into()),
                ));
            }
            Err(e) => return Err(Followed::Failed(self.watch_error(endpoint, e.to_string()))),
        };
        if response.canceled() {
            let compacted = response.compact_revision();
            if compacted > 0 {
                tracing::warn!(
                    "etcd watch of {} starts at revision {} but etcd compacted up to {compacted}: listing again",
                    self.what(),
                    self.revision + 1
                );
                return Err(Followed::Relist);
            }
            let reason = format!("cancelled by etcd: {}", response.cancel_reason());
            return Err(Followed::Failed(self.watch_error(endpoint, reason)));
        }
        if response.created() {
            *connected = true;
            self.reached(endpoint);
            return Ok(());
        }
        self.apply(&response);
        Ok(())
    }

    /// Applies every event of a watch response to the set, marking the members it touched.
    fn apply(&mut self, response: &etcd_client::WatchResponse) {
        let events = response.events();
        if events.is_empty() {
            // A progress notification: proof of life only. Its revision is not taken as a
            // resume point, because etcd 3.4 may send one ahead of events still on their
            // way to a watcher that is catching up; listings and events move the revision.
            return;
        }
        self.w
            .status
            .events
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        let mut bad = Vec::new();
        for event in events {
            let Some(kv) = event.kv() else { continue };
            // Already reflected by a later listing. The events of one revision (a
            // transaction, a delete-range) share their mod revision: each is compared with
            // the listing, never with its sibling before it.
            if kv.mod_revision() <= self.listed_at {
                continue;
            }
            self.revision = self.revision.max(kv.mod_revision());
            let changed = match event.event_type() {
                EventType::Put => match self.set.put(kv.key(), kv.value(), kv.mod_revision()) {
                    Ok(c) => c,
                    Err(b) => {
                        bad.push(b);
                        false
                    }
                },
                EventType::Delete => self.set.delete(kv.key()),
            };
            if changed {
                match schema::classify(&self.w.spec.path, kv.key()) {
                    Key::Member(name) => self.published.touch(name),
                    // The leader key gives every member its role.
                    Key::Leader => self.published.touch_all(false),
                    Key::Other => {}
                }
            }
        }
        self.report(bad);
        self.w
            .status
            .last_revision
            .store(self.revision, Ordering::Release);
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

    /// Sends `control` what changed in the set since the last time, if anything: whether it
    /// may move the primary, or `None` when `control` is gone.
    async fn publish(&mut self, received: Instant) -> Option<bool> {
        if !self.published.pending() {
            return Some(false);
        }
        let changes = self.published.flush(&self.set).await;
        let unresolved = self.published.take_unresolved();
        self.w
            .status
            .parse_errors
            .fetch_add(unresolved, Ordering::Relaxed);
        if changes.is_empty() {
            return Some(false);
        }
        tracing::debug!(
            backend = %self.w.backend,
            revision = self.revision,
            changed = changes.len(),
            members = self.set.len(),
            "etcd members changed"
        );
        let urgent = self.published.take_urgent();
        self.w
            .tx
            .send(Discovered {
                backend: self.w.backend.clone(),
                watch: self.w.id,
                changes,
                revision: self.revision,
                received,
                urgent,
            })
            .then_some(urgent)
    }
}

/// When the watch reads next: at once, unless it is inside a burst — at least
/// [`BURST_RUN`] batches in a row, none of which may move the primary, each received less
/// than twice [`BURST_PACE`] after the one before (see there).
#[derive(Debug, Default)]
struct Pace {
    /// When the last batch was received.
    last: Option<Instant>,
    /// How many batches in a row came that close, none of them urgent.
    run: u32,
}

/// How many close batches in a row make a burst: a switchover written as a few separate puts
/// is no burst, and a batch that may move the primary ends one (the read after it is not
/// held).
const BURST_RUN: u32 = 8;

impl Pace {
    /// A batch received at `at` was applied; `urgent` when it may move the primary.
    fn batch(&mut self, at: Instant, urgent: bool) {
        let close = self
            .last
            // Twice the pace: the batch read right after a hold still belongs to the burst.
            .is_some_and(|prev| at.saturating_duration_since(prev) < BURST_PACE * 2);
        self.run = if close && !urgent { self.run + 1 } else { 0 };
        self.last = Some(at);
    }

    /// Until when to wait, at `now`, before reading again: `None` outside a burst.
    fn hold(&self, now: Instant) -> Option<Instant> {
        let last = self.last.filter(|_| self.run >= BURST_RUN)?;
        Some(last + BURST_PACE).filter(|t| *t > now)
    }
}

/// The next message of `stream` if one is already there, without waiting for one.
async fn waiting(
    stream: &mut WatchStream,
) -> Option<Result<Option<etcd_client::WatchResponse>, etcd_client::Error>> {
    let mut next = std::pin::pin!(stream.message());
    std::future::poll_fn(|cx| match next.as_mut().poll(cx) {
        Poll::Ready(message) => Poll::Ready(Some(message)),
        Poll::Pending => Poll::Ready(None),
    })
    .await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_run_of_close_batches_that_leave_the_primary_alone_holds_the_next_read() {
        let mut pace = Pace::default();
        let mut at = Instant::now();
        assert_eq!(pace.hold(at), None, "nothing read yet");
        pace.batch(at, false);
        assert_eq!(pace.hold(at), None, "a lone batch: read the next at once");
        // A few close batches (a switchover written as separate puts): not a burst.
        for _ in 1..BURST_RUN {
            at += BURST_PACE / 2;
            pace.batch(at, false);
        }
        assert_eq!(pace.hold(at), None, "fewer than BURST_RUN in a row");
        // The batch read right after a hold still counts as close.
        at += BURST_PACE + Duration::from_micros(100);
        pace.batch(at, false);
        let t = at;
        assert_eq!(
            pace.hold(at),
            Some(t + BURST_PACE),
            "a burst: the next read waits"
        );
        // A batch that may move the primary ends the burst at once.
        at += BURST_PACE / 2;
        pace.batch(at, true);
        assert_eq!(
            pace.hold(at),
            None,
            "an urgent batch is never followed by a hold"
        );
        // Batches far apart are no burst either.
        for _ in 0..=BURST_RUN {
            at += BURST_PACE * 3;
            pace.batch(at, false);
        }
        assert_eq!(pace.hold(at), None);
    }
}
