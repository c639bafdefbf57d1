//! The one task that owns the table. Everything that changes what the data path sees —
//! `SIGHUP` and API reloads, check verdicts and admin commands (a rebuild request), both
//! through a [`ControlHandle`], etcd member set changes ([`Discovered`], one channel per
//! control task) and server addresses from DNS ([`dns::DnsUpdate`], likewise) — arrives
//! here, and this task builds the next [`Table`] and swaps it. One writer, so sources never
//! race each other into an inconsistent table. Rebuild requests queued together make one
//! table; whoever waits for one is answered with its generation.
//!
//! The table is built from the *effective* configuration: the files' configuration with the
//! member set of each `discover` backend added (`discovery::effective_config`) and DNS's last
//! word on each resolved server applied (`dns::apply`). It is kept between changes, so a
//! check verdict rebuilds without recomputing it. Every etcd message
//! already queued when one arrives is applied with it, so a burst of etcd changes costs one
//! merge and one table build per pass, with no I/O on this task. During a burst those passes
//! are spaced ([`ETCD_SPACING`]), and a table of more than [`BIG_TABLE`] servers is merged,
//! built and freed on a table builder thread of lower CPU priority: this task only swaps it
//! in, so sessions on the data threads (the one thread with `nbthread 1`) do not wait for a
//! 10,000-server build. The swap itself stays here, so there is still one writer.
//!
//! It also owns the listening sockets: a reload keeps the socket of every address that stays,
//! binds new ones before the swap (a bind failure aborts the reload and changes nothing), and
//! stops accepting on removed ones after it; their sessions run to their end. Each socket is
//! accepted on every data thread (one accept loop per thread, each with its own duplicate of
//! the descriptor); the socket closes once every loop of its address has returned.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::check::scheduler::Scheduler;
use crate::config::{self, Config, ConfigErrors};
use crate::discovery::{self, Discovered, MemberTable, Watchers};
use crate::dns;
use crate::proxy::listener::{self, Shared};
use crate::table::{self, Registry, Table};

mod handle;
mod sockets;
#[cfg(test)]
mod tests;

pub use handle::{ControlError, ControlHandle};
use handle::{RebuildReply, Request};
use sockets::{Accepting, Bound, ListenOptions, Prebind};

/// How often `slowstart` ramps are looked at; the table is rebuilt when one moved a step
/// (once a second per ramping server, as HAProxy's warm-up task).
const SLOWSTART_STEP: Duration = Duration::from_millis(100);

/// How long etcd stays quiet after a big change before the heap is trimmed again: what a
/// burst's watch responses and intermediate tables freed on other threads than the table
/// builder's goes back to the system once the burst is over.
const SETTLE: Duration = Duration::from_millis(300);

/// After an etcd change is applied, further etcd changes wait this many times as long as
/// building that table took: during a burst the table is rebuilt at most about a quarter of
/// the time (the rest goes to the data path), and each build takes in every change that
/// queued meanwhile. A change after a quiet spell, and any change that may move the primary
/// (`discovery::publish::Published::take_urgent`), is applied at once.
const ETCD_SPACING: u32 = 3;

/// After an etcd change to a big table (more than [`BIG_TABLE`] servers), further changes
/// that leave the primary alone wait at least this long: a burst of thousands of
/// single-member puts then makes about 4 tables a second instead of one every few
/// milliseconds (bench/etcd-swap, 10,000 members, the same loaded machine: the builder's CPU
/// for the burst was 0.47–0.60 s holding 50 ms, 0.17–0.19 s holding 250 ms). A change that
/// may move the primary is never held.
/// Small tables, the usual few database nodes, are not held.
const ETCD_SPACING_BIG: Duration = Duration::from_millis(250);

/// Tables with more servers than this are built away from the data path: for an etcd change
/// on the table builder thread (even with `nbthread 1`). A rebuild is built on this task's
/// thread, which with `nbthread` above 1 is not a data thread.
const BIG_TABLE: usize = 200;

/// The table builder thread's `nice` value: on a busy machine the data path's threads get
/// the CPU first and a burst's table builds take what is left (they then batch more).
const BUILDER_NICE: libc::c_int = 5;

/// Returns the heap's free memory to the system (glibc's `malloc_trim`), after a big table
/// was freed: glibc otherwise keeps the pages of a 10,000-server table and its builds
/// (spread over its per-thread arenas) in the process after the servers are gone.
fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own heap structures, under their locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Fixes glibc's mmap threshold at its default, 128 KiB, once the first big table is built.
/// glibc otherwise raises the threshold to the size of each big block freed (up to 32 MiB),
/// so after a few 10,000-server tables (and the admin API's answers about them) big blocks
/// come from the heap, which then keeps megabytes it no longer uses. With the threshold
/// fixed, every block over 128 KiB is mapped on its own and goes back to the system when
/// freed.
fn fix_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a glibc allocator parameter, under its lock.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Work for the table builder thread.
type Job = Box<dyn FnOnce() + Send>;

/// Why a reload (or the first load) changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The configuration has errors, each with `FILE:LINE`.
    #[error("{0}")]
    Config(ConfigErrors),
    /// A new listening address could not be bound.
    #[error("{loc}: cannot bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Where the `bind` line is.
        loc: String,
        /// The system's error.
        source: io::Error,
    },
    /// A `bind` line asks a kept address for options only a new socket can have.
    #[error(
        "{loc}: {addr} was bound with {was}, now {now}: these options apply when an address is \
         bound, so changing them needs a restart (the address keeps its socket; this reload \
         changed nothing)"
    )]
    Rebind {
        /// The address.
        addr: SocketAddr,
        /// Where the `bind` line is.
        loc: String,
        /// Its options before.
        was: String,
        /// What the new configuration asks.
        now: String,
    },
    /// The control task is gone, or a soft stop began: nothing was read.
    #[error("rolelb is stopping")]
    Stopped,
}

/// The control task's state.
pub struct Control {
    files: Vec<PathBuf>,
    /// The configuration read from the files.
    config: Arc<Config>,
    /// `config` with the discovered servers added: what the table is built from.
    effective: Arc<Config>,
    /// The member set of each `discover` backend.
    discovered: Arc<HashMap<String, MemberTable>>,
    watchers: Watchers,
    /// Where the watches' statuses are published for the admin side.
    etcd_board: discovery::StatusBoard,
    discovered_tx: discovery::DiscoveredTx,
    discovered_rx: Option<mpsc::UnboundedReceiver<Discovered>>,
    /// What DNS last said about each server that resolves its name at run time.
    dns: Arc<dns::Answers>,
    dns_tasks: dns::Tasks,
    dns_tx: mpsc::UnboundedSender<dns::DnsUpdate>,
    dns_rx: Option<mpsc::UnboundedReceiver<dns::DnsUpdate>>,
    shared: Shared,
    registry: Arc<Registry>,
    listeners: HashMap<SocketAddr, Accepting>,
    /// Accept loops told to stop whose sockets may not be closed yet: a reload or a stop
    /// answers only once they are (see [`Control::closed_listeners`]).
    closing: Vec<tokio::task::JoinHandle<()>>,
    generation: u64,
    checks: Scheduler,
    /// Given to the check tasks; [`Control::handle`] hands out clones.
    handle: ControlHandle,
    requests: Option<mpsc::UnboundedReceiver<Request>>,
    /// A soft stop began: the listeners are closed and the table no longer changes.
    stopped: bool,
    /// Etcd changes are not applied before this (see [`ETCD_SPACING`]).
    etcd_hold: tokio::time::Instant,
    /// The table builder thread, started with the first big etcd change.
    builder: Option<std::sync::mpsc::Sender<Job>>,
    /// The last big table replaced and when, until it is freed and etcd has been quiet for
    /// [`SETTLE`]: then the heap is trimmed once more (see [`trim`]).
    freeing: Option<(std::sync::Weak<Table>, tokio::time::Instant)>,
}

impl Control {
    /// Binds every listener of `config`, publishes the first table, and starts accepting.
    pub fn start(
        files: Vec<PathBuf>,
        config: Config,
        shared: Shared,
    ) -> Result<Control, ReloadError> {
        let (requests_tx, requests) = mpsc::unbounded_channel();
        let handle = ControlHandle::new(requests_tx, shared.table.clone());
        let (messages, discovered_rx) = mpsc::unbounded_channel();
        let discovered_tx = discovery::DiscoveredTx {
            messages,
            urgent: Arc::default(),
        };
        let (dns_tx, dns_rx) = mpsc::unbounded_channel();
        let mut control = Control {
            files,
            config: Arc::new(config.clone()),
            effective: Arc::new(config.clone()),
            discovered: Arc::default(),
            watchers: Watchers::default(),
            etcd_board: discovery::StatusBoard::default(),
            discovered_tx,
            discovered_rx: Some(discovered_rx),
            dns: Arc::default(),
            dns_tasks: dns::Tasks::default(),
            dns_tx,
            dns_rx: Some(dns_rx),
            shared,
            registry: Arc::default(),
            listeners: HashMap::new(),
            closing: Vec::new(),
            generation: 0,
            checks: Scheduler::default(),
            handle,
            requests: Some(requests),
            stopped: false,
            etcd_hold: tokio::time::Instant::now(),
            builder: None,
            freeing: None,
        };
        control.apply(config)?;
        Ok(control)
    }

    /// A handle to this task: rebuilds, reloads, soft stop, and the table it publishes.
    pub fn handle(&self) -> ControlHandle {
        self.handle.clone()
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The etcd watches' statuses, kept current by this task (for `rolelb_etcd_*` metrics).
    pub fn etcd_board(&self) -> discovery::StatusBoard {
        self.etcd_board.clone()
    }

    /// The addresses currently listened on.
    pub fn bound(&self) -> Vec<SocketAddr> {
        self.listeners.keys().copied().collect()
    }

    /// Applies a configuration read from the files: the member sets of watches that go on
    /// unchanged are kept, the table is swapped, then the watches are started or stopped.
    fn apply(&mut self, config: Config) -> Result<u64, ReloadError> {
        let mut sets = (*self.discovered).clone();
        sets.retain(|backend, set| {
            self.watchers.is_current(backend, set.watch) && self.watchers.keeps(&config, backend)
        });
        // The template or the `server` lines may have changed.
        for (name, set) in &mut sets {
            set.rebase(config.backends.iter().find(|b| &b.name == name));
        }
        // DNS's word stands for the servers that still resolve the same name.
        let mut answers = (*self.dns).clone();
        dns::keep_on_reload(&mut answers);
        let effective = Arc::new(dns::apply(
            discovery::effective_config(&config, &sets),
            &answers,
        ));
        let generation = self.swap(effective.clone())?;
        crate::proxy::connect::set_server_buffers(config.global.server_buffers);
        self.dns = Arc::new(answers);
        self.watchers.reconcile(&config, &self.discovered_tx);
        self.dns_tasks.reconcile(&config, &self.dns, &self.dns_tx);
        self.etcd_board.store(Arc::new(self.watchers.board()));
        self.discovered = Arc::new(sets);
        self.config = Arc::new(config);
        self.effective = effective;
        Ok(generation)
    }

    /// Takes member set changes, in the order the watches sent them, into the table: one
    /// swap for all.
    async fn apply_discovered(&mut self, messages: Vec<Discovered>) {
        let started = tokio::time::Instant::now();
        let mut fresh = Vec::new();
        for message in messages {
            if self.watchers.is_current(&message.backend, message.watch) {
                fresh.push((message.revision, message.received));
                let backend = self
                    .config
                    .backends
                    .iter()
                    .find(|b| b.name == message.backend);
                Arc::make_mut(&mut self.discovered)
                    .entry(message.backend.clone())
                    .or_default()
                    .apply(message, backend);
            }
        }
        let Some(oldest) = fresh.iter().map(|(_, received)| *received).min() else {
            return;
        };
        // Big before or after: building the new table or freeing the old one takes time.
        let servers = |c: &Config| c.backends.iter().map(|b| b.servers.len()).sum::<usize>();
        let discovered: usize = self.discovered.values().map(|s| s.servers.len()).sum();
        let big = discovered.max(servers(&self.effective)) > BIG_TABLE;
        self.generation += 1;
        let (file, sets, registry, answers) = (
            self.config.clone(),
            self.discovered.clone(),
            self.registry.clone(),
            self.dns.clone(),
        );
        let generation = self.generation;
        let default_maxconn = self.shared.default_maxconn;
        let build = move || {
            let effective = Arc::new(dns::apply(
                discovery::effective_config(&file, &sets),
                &answers,
            ));
            let prepared = table::prepare(effective.clone(), &registry, default_maxconn);
            let table = Table::build(&prepared, generation, std::time::Instant::now());
            table.retain_live(&registry);
            (effective, table)
        };
        let built = if big {
            self.aside(build).await
        } else {
            Ok(build())
        };
        match built {
            Ok((effective, table)) => {
                let was = std::mem::replace(&mut self.effective, effective.clone());
                let old = self.commit(&effective, table, Vec::new());
                if big {
                    // Freeing a big table and configuration takes milliseconds too, and
                    // the memory it frees goes back to the system (see [`trim`]).
                    // Nobody waits for this one: its receiver is dropped at once. When a
                    // reader (the admin API, a check) still holds the table, the last of
                    // them frees it: a tick trims again once it is gone and etcd settled.
                    self.freeing = Some((Arc::downgrade(&old), tokio::time::Instant::now()));
                    drop(self.aside(move || {
                        drop((old, was));
                        trim();
                    }));
                }
                tracing::debug!(
                    generation,
                    messages = fresh.len(),
                    revision = fresh.iter().map(|(r, _)| *r).max(),
                    micros = oldest.elapsed().as_micros() as u64,
                    "etcd change applied"
                );
            }
            Err(_) => tracing::error!(
                "building the table for an etcd change failed (the table builder stopped); the change is applied with the next one"
            ),
        }
        let now = tokio::time::Instant::now();
        let floor = if big {
            ETCD_SPACING_BIG
        } else {
            Duration::ZERO
        };
        self.etcd_hold = now + ((now - started) * ETCD_SPACING).max(floor);
    }

    /// Takes address changes from the resolver tasks into the table: one swap for all.
    fn apply_dns(&mut self, updates: Vec<dns::DnsUpdate>) {
        let epoch = self.dns_tasks.epoch();
        let mut fresh = false;
        for u in updates.into_iter().filter(|u| u.epoch == epoch) {
            fresh = true;
            Arc::make_mut(&mut self.dns).insert((u.backend.clone(), u.server.clone()), u);
        }
        if !fresh || self.stopped {
            return;
        }
        let effective = Arc::new(dns::apply(
            discovery::effective_config(&self.config, &self.discovered),
            &self.dns,
        ));
        match self.swap(effective.clone()) {
            Ok(generation) => {
                self.effective = effective;
                tracing::debug!(generation, "DNS change applied");
            }
            Err(e) => tracing::error!("applying a DNS change failed: {e}"),
        }
    }

    /// Runs `work` on the table builder thread (started on first use; inline if it cannot be
    /// started); its result, or `Err` if it panicked.
    fn aside<T: Send + 'static>(
        &mut self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> oneshot::Receiver<T> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(work());
        });
        if self.builder.is_none() {
            fix_mmap_threshold();
            let (jobs, queue) = std::sync::mpsc::channel::<Job>();
            let started = std::thread::Builder::new()
                .name("rolelb-tables".into())
                .spawn(move || {
                    crate::sched::background_thread(BUILDER_NICE, "the table builder thread");
                    for job in queue {
                        job();
                    }
                });
            match started {
                Ok(_) => self.builder = Some(jobs),
                Err(e) => tracing::warn!("cannot start the table builder thread: {e}"),
            }
        }
        let job = match &self.builder {
            Some(jobs) => jobs.send(job).err().map(|e| e.0),
            None => Some(job),
        };
        if let Some(job) = job {
            // No builder thread: build here.
            self.builder = None;
            job();
        }
        rx
    }

    /// Binds what is new, swaps the table built from `config`, then stops what was removed.
    fn swap(&mut self, config: Arc<Config>) -> Result<u64, ReloadError> {
        for addr in sockets::dead(&self.listeners) {
            tracing::error!(%addr, "no accept loop runs on this address any more: closing it to bind it again");
            self.stop_listening(addr, "its accept loops ended");
        }
        let plan = sockets::plan(
            &config,
            &self.listeners,
            self.shared.threads.count(),
            self.shared.default_maxconn,
        )?;
        let fresh = plan.apply(&mut self.listeners);
        self.generation += 1;
        let prepared = table::prepare(config.clone(), &self.registry, self.shared.default_maxconn);
        let table = Table::build(&prepared, self.generation, std::time::Instant::now());
        self.commit(&config, table, fresh);
        self.shared.table.load().retain_live(&self.registry);
        Ok(self.generation)
    }

    /// Puts `table` (built from `config`) in force and makes the changes the swap brings
    /// ([`Table::after_swap`]: the writer hand-over, the role-conflict flag), then starts
    /// accepting on the `fresh` sockets and stops what the table no longer has; returns the
    /// table it replaced.
    fn commit(
        &mut self,
        config: &Config,
        table: Table,
        fresh: Vec<(SocketAddr, Bound, ListenOptions, Prebind)>,
    ) -> Arc<Table> {
        let table = Arc::new(table);
        let old = self.shared.table.swap(table.clone());
        // At once: the sessions of a writer this table demotes must not go on.
        table.after_swap(&old);
        let threads = self.shared.threads.handles();
        for (addr, Bound { per_thread, kept }, options, prebind) in fresh {
            let stop = CancellationToken::new();
            let live = Arc::new(listener::ListenerLive::default());
            let tasks = per_thread
                .into_iter()
                .zip(&threads)
                .enumerate()
                .map(|(me, (l, thread))| {
                    thread.spawn(listener::accept_loop(
                        l,
                        me,
                        addr,
                        live.clone(),
                        self.shared.clone(),
                        stop.clone(),
                    ))
                })
                .collect();
            self.listeners.insert(
                addr,
                Accepting {
                    stop,
                    tasks,
                    kept,
                    options,
                    prebind,
                },
            );
            tracing::info!(%addr, "listening");
        }
        let removed: Vec<SocketAddr> = self
            .listeners
            .keys()
            .filter(|addr| !table.listeners.contains_key(addr))
            .copied()
            .collect();
        for addr in removed {
            self.stop_listening(addr, "removed from the configuration");
        }
        // Queued connections re-pick against the new table.
        for b in table.backends.values() {
            b.live.slot_freed.notify_waiters();
        }
        self.checks.reconcile(config, &self.handle);
        old
    }

    /// Tells the accept loop of `addr` to stop; its socket closes when the loop returns.
    fn stop_listening(&mut self, addr: SocketAddr, why: &str) {
        if let Some(Accepting { stop, tasks, .. }) = self.listeners.remove(&addr) {
            stop.cancel();
            self.closing.extend(tasks);
            tracing::info!(%addr, "stopped listening ({why})");
        }
    }

    /// Waits until the accept loops told to stop have returned (their sockets are closed):
    /// a client that connects after a reload removed its address, or after a soft stop
    /// began, is refused by the system instead of sitting in a backlog nobody accepts.
    /// Each loop returns at its next turn; one that takes more than a second is left to
    /// finish on its own.
    async fn closed_listeners(&mut self) {
        for task in std::mem::take(&mut self.closing) {
            if tokio::time::timeout(Duration::from_secs(1), task)
                .await
                .is_err()
            {
                tracing::warn!("a stopped listener took over a second to close");
            }
        }
    }

    fn reload(&mut self) -> Result<u64, ReloadError> {
        if self.stopped {
            return Err(ReloadError::Stopped);
        }
        let config = config::load(&self.files).map_err(ReloadError::Config)?;
        for w in &config.warnings {
            tracing::warn!("{w}");
        }
        self.apply(config)
    }

    /// Rebuilds the table from the current configuration (live state changed). After a soft
    /// stop began nothing is rebuilt: a new table would listen again.
    fn rebuild(&mut self) -> Result<u64, ControlError> {
        if self.stopped {
            return Err(ControlError::Stopped);
        }
        self.swap(self.effective.clone()).map_err(|e| {
            tracing::error!("rebuilding the table failed: {e}");
            ControlError::Rebuild(e.to_string())
        })
    }

    /// Serves a batch of requests that were queued together, in order, except that rebuild
    /// requests in a row make one table, whose generation answers every one that waits.
    async fn serve(&mut self, batch: Vec<Request>) {
        let mut rebuild: Option<Vec<RebuildReply>> = None;
        for request in batch {
            match request {
                Request::Rebuild(reply) => rebuild.get_or_insert_with(Vec::new).extend(reply),
                // A reload or a stop comes after the rebuilds asked before it.
                Request::Reload(reply) => {
                    self.rebuild_for(rebuild.take());
                    let result = self.reload();
                    // Answered once removed listeners no longer accept.
                    self.closed_listeners().await;
                    match &result {
                        Ok(generation) => tracing::info!(generation, "configuration reloaded"),
                        Err(ReloadError::Config(errors)) => {
                            for e in &errors.0 {
                                tracing::error!("reload refused: {e}");
                            }
                        }
                        Err(e) => tracing::error!("reload refused: {e}"),
                    }
                    let _ = reply.send(result);
                }
                Request::StopAccepting(reply) => {
                    self.rebuild_for(rebuild.take());
                    self.stopped = true;
                    self.checks.stop();
                    self.watchers.stop();
                    self.dns_tasks.stop();
                    let all: Vec<SocketAddr> = self.listeners.keys().copied().collect();
                    for addr in all {
                        self.stop_listening(addr, "stopping");
                    }
                    self.closed_listeners().await;
                    let _ = reply.send(());
                }
            }
        }
        self.rebuild_for(rebuild);
    }

    /// Builds one table for a run of rebuild requests (if there was one) and answers those
    /// that wait.
    fn rebuild_for(&mut self, waiters: Option<Vec<RebuildReply>>) {
        let Some(waiters) = waiters else { return };
        let result = self.rebuild();
        for waiter in waiters {
            let _ = waiter.send(result.clone());
        }
    }

    /// Serves requests from [`ControlHandle`]s, etcd changes and `slowstart` steps for as
    /// long as the runtime runs (this task holds a handle itself, for the check tasks).
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(SLOWSTART_STEP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (Some(mut requests), Some(mut discovered), Some(mut resolved)) = (
            self.requests.take(),
            self.discovered_rx.take(),
            self.dns_rx.take(),
        ) else {
            return;
        };
        // Taken from the channel during a hold by a wake-up that was not for an urgent change
        // (one already applied): applied, in order, before anything received later.
        let mut held: Vec<Discovered> = Vec::new();
        let urgent = self.discovered_tx.urgent.clone();
        loop {
            tokio::select! {
                // Held after a costly build: changes wait in the channel, and the loop
                // wakes when the hold ends or for a change that may move the primary
                // (never held: it takes what waits with it).
                _ = tokio::time::sleep_until(self.etcd_hold), if tokio::time::Instant::now() < self.etcd_hold => {
                    // What waited in the channel joins what was taken out: one table.
                    while let Ok(message) = discovered.try_recv() {
                        held.push(message);
                    }
                    if !held.is_empty() {
                        self.apply_discovered(std::mem::take(&mut held)).await;
                    }
                }
                _ = urgent.notified(), if tokio::time::Instant::now() < self.etcd_hold => {
                    let mut messages = Vec::new();
                    while let Ok(message) = discovered.try_recv() {
                        messages.push(message);
                    }
                    held.extend(messages);
                    if held.iter().any(|m| m.urgent) {
                        self.apply_discovered(std::mem::take(&mut held)).await;
                    }
                }
                Some(message) = discovered.recv(), if tokio::time::Instant::now() >= self.etcd_hold => {
                    // Changes queued meanwhile make one table.
                    let mut messages = std::mem::take(&mut held);
                    messages.push(message);
                    while let Ok(message) = discovered.try_recv() {
                        messages.push(message);
                    }
                    self.apply_discovered(messages).await;
                }
                Some(update) = resolved.recv() => {
                    let mut updates = vec![update];
                    while let Ok(update) = resolved.try_recv() {
                        updates.push(update);
                    }
                    self.apply_dns(updates);
                }
                Some(request) = requests.recv() => {
                    // Requests queued meanwhile are served together: several verdicts at
                    // once make one table.
                    let mut batch = vec![request];
                    while let Ok(request) = requests.try_recv() {
                        batch.push(request);
                    }
                    self.serve(batch).await;
                }
                _ = tick.tick() => {
                    if self.shared.table.load().ramping(std::time::Instant::now()) {
                        let _ = self.rebuild();
                    }
                    let settled = self.freeing.as_ref().is_some_and(|(table, at)| {
                        table.strong_count() == 0 && at.elapsed() >= SETTLE
                    });
                    if settled {
                        self.freeing = None;
                        drop(self.aside(trim));
                    }
                }
            }
        }
    }
}
