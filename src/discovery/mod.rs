//! Where servers come from besides `server` lines: etcd (SPEC section 6).
//!
//! Every backend with `discover etcd NAME path PREFIX` gets one watch task ([`etcd::run`]):
//! it lists the keys under PREFIX once, then watches from the next revision, and after each
//! batch of events (all the events of every response waiting on the stream: a transaction
//! or a delete-range is one revision with several events) sends what changed in the
//! backend's member set ([`Discovered`]) to `control` on a channel. `control` applies every
//! message queued to its copy of each set ([`MemberTable`]) and builds the configuration the
//! table is made from with [`effective_config`]: the file's configuration with each
//! discovered member added to its backend as a server built from the backend's
//! `default-server` template. So one etcd revision, or a burst of them, is one table swap,
//! and servers that stay keep their live state (it is keyed by name). [`Watchers`] starts
//! and stops the tasks as the configuration changes, and
//! [`EtcdStatus`] holds what a watch reports about itself (connected, events, bad values,
//! revision, age of the last confirmed state) for logs and metrics.
//!
//! The watch tasks run on their own thread ([`runtime`]): a one-thread runtime at a lower
//! CPU priority, so decoding thousands of watch responses a second during a burst never runs
//! on the data path's threads, and on a busy machine the sessions get the CPU first.
//!
//! This module never touches the table: it reads the configuration and sends messages.

pub mod etcd;
pub mod members;
pub mod publish;
pub mod schema;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{Backend, Config, EtcdAuth, EtcdView, Schema, Server};

/// One discovered member, resolved and ready to become a server (its name is the key it is
/// sent and kept under).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredServer {
    /// Its address.
    pub ip: IpAddr,
    /// Its own (database) port.
    pub port: u16,
    /// `check_port` from etcd, if any.
    pub check_port: Option<u16>,
    /// `weight` from etcd, if any.
    pub weight: Option<u32>,
    /// Its role (the leader key applied) and state.
    pub view: EtcdView,
}

/// What changed in one backend's member set, as a watch sends it after a batch of events.
#[derive(Debug, Clone)]
pub struct Discovered {
    /// The backend.
    pub backend: String,
    /// Which watch task sent it (a restarted watch's late messages are ignored).
    pub watch: u64,
    /// Members added or changed (`Some`) and removed (`None`), by name, relative to what the
    /// same watch sent before.
    pub changes: Vec<publish::Change>,
    /// The etcd revision the set reflects after these changes.
    pub revision: i64,
    /// When the etcd response that led to this change arrived (to measure the swap latency).
    pub received: Instant,
    /// Whether it may move the primary (see [`publish::Published::take_urgent`]): control
    /// applies it at once, never holding it behind a burst.
    pub urgent: bool,
}

/// Where the watches send their messages: the channel, and a wake-up for messages that may
/// move the primary, which control listens for while it holds other changes.
#[derive(Debug, Clone)]
pub struct DiscoveredTx {
    /// The messages, in order.
    pub messages: mpsc::UnboundedSender<Discovered>,
    /// Notified after each urgent message is sent.
    pub urgent: Arc<tokio::sync::Notify>,
}

impl DiscoveredTx {
    /// Sends `message` (waking control if it is urgent); false when control is gone.
    pub fn send(&self, message: Discovered) -> bool {
        let urgent = message.urgent;
        let sent = self.messages.send(message).is_ok();
        if sent && urgent {
            self.urgent.notify_one();
        }
        sent
    }
}

/// One backend's member set as `control` holds it: the sum of one watch's messages.
#[derive(Debug, Clone, Default)]
pub struct MemberTable {
    /// The watch whose messages these are.
    pub watch: u64,
    /// The etcd revision the set reflects.
    pub revision: i64,
    /// The members, by name.
    pub servers: BTreeMap<Arc<str>, Found>,
}

/// One member in [`MemberTable`]: as the watch found it, and the server it became.
#[derive(Debug, Clone)]
pub struct Found {
    /// The member (shared with the watch that published it).
    pub member: Arc<DiscoveredServer>,
    /// The server made from it with the backend's `default-server` template, shared by
    /// every effective configuration and table while the member and the template stay;
    /// `None` when a `server` line of the backend has its name.
    pub server: Option<Arc<Server>>,
}

impl MemberTable {
    /// Applies a message of the same watch, making a server from each added or changed
    /// member with `backend`'s template; a message of another (newer) watch starts over
    /// from an empty set, as that watch's messages are relative to nothing it sent before.
    pub fn apply(&mut self, message: Discovered, backend: Option<&Backend>) {
        if message.watch != self.watch {
            self.servers.clear();
            self.watch = message.watch;
        }
        self.revision = message.revision;
        for (name, member) in message.changes {
            match member {
                Some(member) => {
                    let server = backend
                        .and_then(|b| discovered_server(b, &name, &member))
                        .map(Arc::new);
                    self.servers.insert(name, Found { member, server });
                }
                None => {
                    self.servers.remove(&name);
                }
            }
        }
    }

    /// Makes every member's server again from `backend` (a reload may have changed its
    /// template or its `server` lines).
    pub fn rebase(&mut self, backend: Option<&Backend>) {
        for (name, found) in &mut self.servers {
            found.server = backend
                .and_then(|b| discovered_server(b, name, &found.member))
                .map(Arc::new);
        }
    }
}

/// What a watch reports about itself; shared with whoever reads it (logs, metrics).
#[derive(Debug, Default)]
pub struct EtcdStatus {
    /// Whether the watch is connected to etcd now.
    pub connected: AtomicBool,
    /// Watch events received.
    pub events: AtomicU64,
    /// Values that were not taken: did not parse (each key revision counted once), or name a
    /// host that does not resolve (each value counted once).
    pub parse_errors: AtomicU64,
    /// Full listings done (the first, after compaction, and the periodic ones).
    pub lists: AtomicU64,
    /// The etcd revision the member set reflects.
    pub last_revision: AtomicI64,
    /// When etcd last confirmed the member set (a listing, or a watch response).
    last_confirmed: Mutex<Option<Instant>>,
}

impl EtcdStatus {
    /// Records that etcd confirmed the state now.
    pub fn confirm(&self) {
        *self
            .last_confirmed
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
    }

    /// How old the last confirmed state is (`rolelb_etcd_state_age_seconds`); `None` before
    /// the first confirmation.
    pub fn state_age(&self) -> Option<Duration> {
        self.last_confirmed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map(|t| t.elapsed())
    }

    /// Whether the watch is connected now.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }
}

/// The etcd thread's `nice` value: on a busy machine the data path's threads get the CPU
/// first, and a burst's watch responses queue meanwhile (and are then applied in bigger
/// batches).
const ETCD_NICE: libc::c_int = 5;

/// The runtime the watch tasks run on: one thread, `rolelb-etcd`, at [`ETCD_NICE`], started
/// with the first watch and kept for the life of the process. `None` (logged once) if it
/// cannot be started; the watches then run on the caller's runtime.
pub fn runtime() -> Option<&'static tokio::runtime::Handle> {
    static ETCD: OnceLock<Option<tokio::runtime::Handle>> = OnceLock::new();
    ETCD.get_or_init(|| match start_runtime() {
        Ok(handle) => Some(handle),
        Err(e) => {
            tracing::warn!(
                "cannot start the etcd thread ({e}); etcd watches run beside the sessions"
            );
            None
        }
    })
    .as_ref()
}

thread_local! {
    /// Whether this thread is `rolelb-etcd`, whose runtime runs nothing but the watches.
    static ON_ETCD_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the caller runs on `rolelb-etcd` (see [`runtime`]), where pausing the whole
/// thread holds up only etcd watches.
pub(crate) fn on_etcd_thread() -> bool {
    ON_ETCD_THREAD.with(std::cell::Cell::get)
}

fn start_runtime() -> std::io::Result<tokio::runtime::Handle> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("rolelb-etcd-lookup")
        .build()?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name("rolelb-etcd".into())
        .spawn(move || {
            // The lookup threads it starts inherit the priority.
            crate::sched::background_thread(ETCD_NICE, "the etcd thread");
            ON_ETCD_THREAD.with(|on| on.set(true));
            runtime.block_on(std::future::pending::<()>());
        })?;
    Ok(handle)
}

/// Everything that decides how a backend's watch runs; a watch is restarted when it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchSpec {
    /// The `etcd` section's name.
    pub cluster: String,
    /// Its endpoints.
    pub endpoints: Vec<String>,
    /// Its credentials.
    pub auth: Option<EtcdAuth>,
    /// Its `dial-timeout`.
    pub dial_timeout: Duration,
    /// The key prefix (the section's `prefix` included).
    pub path: String,
    /// The schema.
    pub schema: Schema,
}

impl WatchSpec {
    /// The watch `backend` asks for, if it has `discover`.
    pub fn of(config: &Config, backend: &Backend) -> Option<WatchSpec> {
        let d = backend.discover.as_ref()?;
        let cluster = config.etcd.iter().find(|c| c.name == d.etcd)?;
        Some(WatchSpec {
            cluster: cluster.name.clone(),
            endpoints: cluster.endpoints.clone(),
            auth: cluster.auth.clone(),
            dial_timeout: cluster.dial_timeout,
            path: d.path.clone(),
            schema: d.schema,
        })
    }
}

struct Running {
    spec: WatchSpec,
    id: u64,
    stop: CancellationToken,
    status: Arc<EtcdStatus>,
}

/// One watch's status as the admin side sees it (`rolelb_etcd_*` metrics).
#[derive(Debug, Clone)]
pub struct WatchStatus {
    /// The `etcd` section's name.
    pub etcd: String,
    /// The `discover` backend.
    pub backend: String,
    /// Its live counters.
    pub status: Arc<EtcdStatus>,
}

/// The statuses of the running watches, republished by `control` whenever the set of watches
/// changes; readers never wait on the control task.
pub type StatusBoard = Arc<arc_swap::ArcSwap<Vec<WatchStatus>>>;

/// The running watch tasks, one per `discover` backend; owned by `control`.
#[derive(Default)]
pub struct Watchers {
    running: HashMap<String, Running>,
    next_id: u64,
}

impl Watchers {
    /// Starts, restarts or stops watches so that exactly the ones `config` asks for run;
    /// a watch whose spec did not change keeps running (and its member set stays valid).
    pub fn reconcile(&mut self, config: &Config, tx: &DiscoveredTx) {
        let wanted: HashMap<&str, WatchSpec> = config
            .backends
            .iter()
            .filter_map(|b| Some((b.name.as_str(), WatchSpec::of(config, b)?)))
            .collect();
        self.running.retain(|backend, r| {
            let keep = wanted.get(backend.as_str()) == Some(&r.spec);
            if !keep {
                r.stop.cancel();
            }
            keep
        });
        for (backend, spec) in wanted {
            if self.running.contains_key(backend) {
                continue;
            }
            self.next_id += 1;
            let running = Running {
                spec: spec.clone(),
                id: self.next_id,
                stop: CancellationToken::new(),
                status: Arc::default(),
            };
            let watch = etcd::run(etcd::Watch {
                backend: backend.to_owned(),
                spec,
                id: running.id,
                status: running.status.clone(),
                tx: tx.clone(),
                stop: running.stop.clone(),
            });
            match runtime() {
                Some(etcd) => drop(etcd.spawn(watch)),
                None => drop(tokio::spawn(watch)),
            }
            self.running.insert(backend.to_owned(), running);
        }
    }

    /// Whether the watch running for `backend` goes on unchanged under `config` (so the
    /// member set it sent stays valid).
    pub fn keeps(&self, config: &Config, backend: &str) -> bool {
        let wanted = config
            .backends
            .iter()
            .find(|b| b.name == backend)
            .and_then(|b| WatchSpec::of(config, b));
        self.running
            .get(backend)
            .is_some_and(|r| Some(&r.spec) == wanted.as_ref())
    }

    /// Whether watch `id` is the one now running for `backend`.
    pub fn is_current(&self, backend: &str, id: u64) -> bool {
        self.running.get(backend).is_some_and(|r| r.id == id)
    }

    /// The status of each running watch, by backend.
    pub fn statuses(&self) -> Vec<(String, Arc<EtcdStatus>)> {
        self.running
            .iter()
            .map(|(b, r)| (b.clone(), r.status.clone()))
            .collect()
    }

    /// The running watches' statuses, sorted by backend, for the [`StatusBoard`].
    pub fn board(&self) -> Vec<WatchStatus> {
        let mut board: Vec<WatchStatus> = self
            .running
            .iter()
            .map(|(backend, r)| WatchStatus {
                etcd: r.spec.cluster.clone(),
                backend: backend.clone(),
                status: r.status.clone(),
            })
            .collect();
        board.sort_by(|a, b| a.backend.cmp(&b.backend));
        board
    }

    /// Stops every watch.
    pub fn stop(&mut self) {
        for (_, r) in self.running.drain() {
            r.stop.cancel();
        }
    }
}

/// The configuration the table is built from: `file` with each discovered member added to
/// its backend (after the `server` lines) as a server made from the backend's
/// `default-server` template. Sets for backends without `discover` are ignored.
pub fn effective_config(file: &Config, sets: &HashMap<String, MemberTable>) -> Config {
    let mut config = file.clone();
    for backend in &mut config.backends {
        if let (Some(_), Some(set)) = (&backend.discover, sets.get(&backend.name)) {
            let servers = set.servers.values().filter_map(|f| f.server.clone());
            backend.servers.extend(servers);
        }
    }
    config
}

/// The server for member `m` of `backend`; `None` (logged) when `backend` has no `discover`
/// or a `server` line already has its name.
fn discovered_server(backend: &Backend, name: &Arc<str>, m: &DiscoveredServer) -> Option<Server> {
    let discover = backend.discover.as_ref()?;
    if backend.servers.iter().any(|s| s.name == *name) {
        tracing::warn!(
            backend = %backend.name,
            "etcd member '{name}' has the name of a 'server' line of the backend: the member is skipped"
        );
        return None;
    }
    let template = &backend.default_server;
    let mut s = template.clone();
    s.name = name.clone();
    s.loc = discover.loc.clone();
    s.addr = SocketAddr::new(m.ip, discover.port.unwrap_or(m.port));
    // With `port N` the traffic goes elsewhere (a pooler); the checks stay on the database.
    s.check_port = m
        .check_port
        .or(template.check_port)
        .or(discover.port.map(|_| m.port));
    if let Some(w) = m.weight {
        s.weight = w;
    }
    s.etcd = Some(m.view);
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{EtcdRole, EtcdState, parse_sources};

    fn member(
        name: &str,
        port: u16,
        check_port: Option<u16>,
        weight: Option<u32>,
    ) -> (Arc<str>, DiscoveredServer) {
        let member = DiscoveredServer {
            ip: IpAddr::from([10, 0, 0, 1]),
            port,
            check_port,
            weight,
            view: EtcdView {
                role: EtcdRole::Replica,
                state: EtcdState::Ready,
            },
        };
        (name.into(), member)
    }

    fn sets(
        file: &Config,
        backend: &str,
        servers: Vec<(Arc<str>, DiscoveredServer)>,
    ) -> HashMap<String, MemberTable> {
        let backend_cfg = file.backends.iter().find(|b| b.name == backend);
        let mut set = MemberTable::default();
        set.apply(
            Discovered {
                backend: backend.to_owned(),
                watch: 1,
                changes: servers
                    .into_iter()
                    .map(|(name, s)| (name, Some(Arc::new(s))))
                    .collect(),
                revision: 1,
                received: Instant::now(),
                urgent: true,
            },
            backend_cfg,
        );
        HashMap::from([(backend.to_owned(), set)])
    }

    const ETCD: &str = "etcd e\nendpoints 127.0.0.1:2379\n";

    #[test]
    fn members_become_servers_from_the_default_server_template() {
        let file = parse_sources(&[(
            "t.cfg",
            &format!(
                "backend b\ndefault-server inter 1s rise 5 check weight 7 maxconn 30\n\
                 server static 127.0.0.1:1\ndiscover etcd e path /db port 6432\n{ETCD}"
            ),
        )])
        .unwrap();
        let c = effective_config(
            &file,
            &sets(
                &file,
                "b",
                vec![
                    member("m1", 5432, None, None),
                    member("m2", 5433, Some(9000), Some(3)),
                    member("static", 1, None, None),
                ],
            ),
        );
        let s = &c.backends[0].servers;
        let names: Vec<&str> = s.iter().map(|s| &*s.name).collect();
        assert_eq!(names, ["static", "m1", "m2"]);
        let (m1, m2) = (&s[1], &s[2]);
        assert_eq!(m1.addr, "10.0.0.1:6432".parse().unwrap());
        assert_eq!(
            m1.check_port,
            Some(5432),
            "the member's port stays the check port"
        );
        assert_eq!(
            (m1.check, m1.inter, m1.rise, m1.weight, m1.maxconn),
            (true, Duration::from_secs(1), 5, 7, Some(30))
        );
        assert_eq!(m1.loc.line, 4);
        assert!(m1.etcd.is_some());
        assert_eq!((m2.check_port, m2.weight), (Some(9000), 3));
        assert!(s[0].etcd.is_none());
        // The file's configuration is untouched.
        assert_eq!(file.backends[0].servers.len(), 1);
    }

    #[test]
    fn without_port_override_the_member_port_is_the_traffic_port() {
        let file = parse_sources(&[(
            "t.cfg",
            &format!("backend b\ndefault-server check port 8008\ndiscover etcd e path /db\n{ETCD}"),
        )])
        .unwrap();
        let c = effective_config(
            &file,
            &sets(&file, "b", vec![member("m1", 5432, None, None)]),
        );
        let m1 = &c.backends[0].servers[0];
        assert_eq!((m1.addr.port(), m1.check_port), (5432, Some(8008)));
        // No set for a backend without discover, and no set at all: the file's servers.
        let c = effective_config(
            &file,
            &sets(&file, "other", vec![member("x", 1, None, None)]),
        );
        assert!(c.backends[0].servers.is_empty());
    }
}
