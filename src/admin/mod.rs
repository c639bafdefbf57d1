//! Operator interfaces beside the data path: the runtime API on `stats socket` (`runtime` for
//! the sockets, `cli` for the commands, `stats` and `servers_state` for HAProxy's report
//! formats), the HTTP admin API and stats page (`http`, with `http_conn` for its connections,
//! `stats_auth` for the stats page's access rules, `api` for the JSON documents and `page` for
//! the HTML), Prometheus `/metrics` (`metrics`, one file per family group), `ops` for the
//! changes both APIs make, and `view`, which derives every value the reports show (HAProxy's numbering and encodings, status words, weights,
//! limits, counts) so that each report only formats it.
//!
//! Data enters as commands from operators and leaves as reports read from the current table
//! and the servers' live state. Changes are written to live state (which outlives tables and
//! reloads) and `control` is asked to rebuild the table; nothing here touches the data path.

mod api;
mod cli;
pub mod http;
mod http_conn;
pub mod metrics;
mod ops;
mod page;
pub mod runtime;
mod servers_state;
mod show_table;
mod stats;
mod stats_auth;
pub(crate) mod view;

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::control::ControlHandle;
use crate::logging::Throttle;
use crate::proxy::listener::{Limits, Shared};
use crate::table::TableHandle;

/// What the operator interfaces read and whom they tell about changes.
#[derive(Debug, Clone)]
pub struct Env {
    /// The control task: the current table, rebuilds after live state changed, reloads.
    pub control: ControlHandle,
    /// Process-wide connection counters.
    pub limits: Arc<Limits>,
    /// Global `maxconn` when the configuration sets none.
    pub default_maxconn: u32,
    /// The data path's threads (`Nbthread`).
    pub nbthread: usize,
    /// When the process started serving (for `Uptime`).
    pub started: Instant,
    /// The same moment on the wall clock (`Start_time_sec`).
    pub started_wall: SystemTime,
    /// The etcd watches' statuses (`rolelb_etcd_*`), published by `control`.
    pub etcd: crate::discovery::StatusBoard,
    /// Cancelled when a soft stop begins: `/healthz` answers 503 from then on.
    pub stopping: CancellationToken,
}

impl Env {
    /// The environment of a process that starts serving now; call from inside the runtime.
    pub fn new(shared: &Shared, control: ControlHandle) -> Env {
        let nbthread = shared.threads.count();
        Env {
            control,
            limits: shared.limits.clone(),
            default_maxconn: shared.default_maxconn,
            nbthread,
            started: Instant::now(),
            started_wall: SystemTime::now(),
            etcd: crate::discovery::StatusBoard::default(),
            stopping: shared.stopping.clone(),
        }
    }

    /// The current table.
    pub fn table(&self) -> &TableHandle {
        self.control.table()
    }
}

/// `accept` failed on an operator interface, all of them together.
static ACCEPT_FAILED: Throttle = Throttle::new();
/// Pause after a failed `accept` (HAProxy's for a want of resources).
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Accepts connections until `stop`, at most as many served at once as `slots` has permits
/// (shared by every listener given the same `slots`): waits for a connection, then for a
/// free slot, and hands both to `serve`, whose task holds the slot's permit until the
/// connection ends. A listener holds no slot while it waits for a client (so one sharing
/// `slots` with idle others is never starved), and at most one accepted connection waits
/// for a slot; the rest wait in the kernel's backlog. A failed accept (out of file
/// descriptors, say) is logged as `what`'s, at most once a second with a count, and retried
/// after 100 ms.
async fn accept_limited<C, A>(
    slots: Arc<Semaphore>,
    stop: &CancellationToken,
    what: &str,
    mut accept: impl FnMut() -> A,
    mut serve: impl FnMut(C, OwnedSemaphorePermit),
) where
    A: Future<Output = io::Result<C>>,
{
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            r = accept() => r,
        };
        match accepted {
            Ok(conn) => {
                let permit = tokio::select! {
                    _ = stop.cancelled() => return,
                    p = slots.clone().acquire_owned() => p,
                };
                let Ok(permit) = permit else { return };
                serve(conn, permit);
            }
            Err(e) => {
                if let Some(n) = ACCEPT_FAILED.hit() {
                    tracing::error!(
                        "{what}: accept failed: {e} [{n} occurrences since the last such line]"
                    );
                }
                tokio::time::sleep(ACCEPT_RETRY).await;
            }
        }
    }
}
