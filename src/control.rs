//! The one task that owns the table. Everything that changes what the data path sees —
//! `SIGHUP` reloads now; check verdicts, etcd and admin commands later — arrives here as a
//! [`Command`], and this task builds the next [`Table`] and swaps it. One writer, so sources
//! never race each other into an inconsistent table.
//!
//! It also owns the listening sockets: a reload keeps the socket of every address that stays,
//! binds new ones before the swap (a bind failure aborts the reload and changes nothing), and
//! stops accepting on removed ones after it; their sessions run to their end.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::check::scheduler::{self, Scheduler};
use crate::config::{self, Config, ConfigErrors};
use crate::proxy::listener::{self, Shared};
use crate::table::{Registry, Table};

/// How often the table is rebuilt while a server ramps up under `slowstart`.
const SLOWSTART_STEP: Duration = Duration::from_millis(500);

/// Listen backlog of every bound socket.
const BACKLOG: i32 = 1024;

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
}

/// A request to the control task.
#[derive(Debug)]
pub enum Command {
    /// Re-read the configuration files; reply with the new generation or what was wrong.
    Reload(Option<oneshot::Sender<Result<u64, ReloadError>>>),
    /// Stop accepting on every listener (soft stop); reply once they are closed.
    StopAccepting(oneshot::Sender<()>),
}

/// The control task's state.
pub struct Control {
    files: Vec<PathBuf>,
    config: Config,
    shared: Shared,
    registry: Registry,
    listeners: HashMap<SocketAddr, CancellationToken>,
    generation: u64,
    checks: Scheduler,
    rebuild_tx: mpsc::UnboundedSender<()>,
    rebuild_rx: Option<mpsc::UnboundedReceiver<()>>,
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        // `:::PORT` takes IPv4 too, as HAProxy's `v4v6` on most systems.
        let _ = socket.set_only_v6(false);
    }
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket.into())
}

impl Control {
    /// Binds every listener of `config`, publishes the first table, and starts accepting.
    pub fn start(
        files: Vec<PathBuf>,
        config: Config,
        shared: Shared,
    ) -> Result<Control, ReloadError> {
        let (rebuild_tx, rebuild_rx) = mpsc::unbounded_channel();
        let mut control = Control {
            files,
            config: config.clone(),
            shared,
            registry: Registry::default(),
            listeners: HashMap::new(),
            generation: 0,
            checks: Scheduler::default(),
            rebuild_tx,
            rebuild_rx: Some(rebuild_rx),
        };
        control.apply(config)?;
        Ok(control)
    }

    /// A handle that asks this task to rebuild the table from the live state (after a check
    /// verdict or an operator's command changed eligibility).
    pub fn rebuild_handle(&self) -> mpsc::UnboundedSender<()> {
        self.rebuild_tx.clone()
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The addresses currently listened on.
    pub fn bound(&self) -> Vec<SocketAddr> {
        self.listeners.keys().copied().collect()
    }

    /// Binds what is new, swaps the table, then stops what was removed.
    fn apply(&mut self, config: Config) -> Result<u64, ReloadError> {
        let mut wanted: Vec<(SocketAddr, String)> = Vec::new();
        for fe in config.frontends.iter().filter(|f| !f.disabled) {
            for b in &fe.binds {
                wanted.push((b.addr, b.loc.to_string()));
            }
        }
        let mut fresh = Vec::new();
        for (addr, loc) in &wanted {
            if self.listeners.contains_key(addr) || fresh.iter().any(|(a, _)| a == addr) {
                continue;
            }
            match bind(*addr) {
                Ok(l) => fresh.push((*addr, l)),
                // Dropping `fresh` closes what this attempt bound; the old table stays.
                Err(source) => {
                    return Err(ReloadError::Bind {
                        addr: *addr,
                        loc: loc.clone(),
                        source,
                    });
                }
            }
        }
        self.generation += 1;
        let table = Table::build(
            &config,
            &self.registry,
            self.generation,
            std::time::Instant::now(),
        );
        let table = Arc::new(table);
        self.shared.table.store(table.clone());
        self.registry.retain(&table);
        for (addr, l) in fresh {
            let token = CancellationToken::new();
            tokio::spawn(listener::accept_loop(
                l,
                addr,
                self.shared.clone(),
                token.clone(),
            ));
            self.listeners.insert(addr, token);
            tracing::info!(%addr, "listening");
        }
        self.listeners.retain(|addr, token| {
            let keep = table.listeners.contains_key(addr);
            if !keep {
                token.cancel();
                tracing::info!(%addr, "stopped listening (removed from the configuration)");
            }
            keep
        });
        // Queued connections re-pick against the new table.
        for b in table.backends.values() {
            b.live.slot_freed.notify_waiters();
        }
        self.checks.reconcile(
            &config,
            &scheduler::Env {
                table: self.shared.table.clone(),
                rebuild: self.rebuild_tx.clone(),
            },
        );
        self.config = config;
        Ok(self.generation)
    }

    fn reload(&mut self) -> Result<u64, ReloadError> {
        let config = config::load(&self.files).map_err(ReloadError::Config)?;
        for w in &config.warnings {
            tracing::warn!("{w}");
        }
        self.apply(config)
    }

    /// Rebuilds the table from the current configuration (live state changed).
    fn rebuild(&mut self) {
        let config = self.config.clone();
        if let Err(e) = self.apply(config) {
            tracing::error!("rebuilding the table failed: {e}");
        }
    }

    /// Serves commands until the sender side is dropped.
    pub async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut tick = tokio::time::interval(SLOWSTART_STEP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let Some(mut rebuilds) = self.rebuild_rx.take() else {
            return;
        };
        loop {
            tokio::select! {
                Some(()) = rebuilds.recv() => {
                    // Several verdicts at once make one table.
                    while rebuilds.try_recv().is_ok() {}
                    self.rebuild();
                }
                cmd = commands.recv() => match cmd {
                    None => return,
                    Some(Command::Reload(reply)) => {
                        let result = self.reload();
                        match &result {
                            Ok(generation) => tracing::info!(generation, "configuration reloaded"),
                            Err(ReloadError::Config(errors)) => {
                                for e in &errors.0 {
                                    tracing::error!("reload refused: {e}");
                                }
                            }
                            Err(e) => tracing::error!("reload refused: {e}"),
                        }
                        if let Some(reply) = reply {
                            let _ = reply.send(result);
                        }
                    }
                    Some(Command::StopAccepting(reply)) => {
                        self.checks.stop();
                        for (addr, token) in self.listeners.drain() {
                            token.cancel();
                            tracing::info!(%addr, "stopped listening (stopping)");
                        }
                        let _ = reply.send(());
                    }
                },
                _ = tick.tick() => {
                    if self.shared.table.load().ramping(std::time::Instant::now()) {
                        self.rebuild();
                    }
                }
            }
        }
    }
}
