//! [`ControlHandle`]: how the rest of the process talks to the control task. Check tasks,
//! the admin API, the runtime socket and the signal handler each hold a clone; every request
//! goes down one channel to the task, and those that want an answer (a rebuild to wait for,
//! a reload's outcome, the end of a soft stop's first step) get it back on a oneshot. When the
//! task is gone every method returns [`ControlError::Stopped`] (or [`ReloadError::Stopped`])
//! at once: nothing here waits on a task that cannot answer.

use tokio::sync::{mpsc, oneshot};

use super::ReloadError;
use crate::table::TableHandle;

/// The answer to a rebuild request: the generation of the table built for it.
pub(super) type RebuildReply = oneshot::Sender<Result<u64, ControlError>>;

/// A request to the control task.
#[derive(Debug)]
pub(super) enum Request {
    /// Rebuild the table from the live state; answer with its generation if asked.
    /// Requests queued together make one table.
    Rebuild(Option<RebuildReply>),
    /// Re-read the configuration files; answer with the new generation or what was wrong.
    Reload(oneshot::Sender<Result<u64, ReloadError>>),
    /// Stop accepting on every listener (soft stop); answer once they are closed.
    StopAccepting(oneshot::Sender<()>),
}

/// Why the control task did not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The control task is gone, or a soft stop began: the table no longer changes.
    #[error("rolelb is stopping")]
    Stopped,
    /// The table could not be rebuilt; the one in force stays.
    #[error("rebuilding the table failed: {0}")]
    Rebuild(String),
}

/// A cheap, cloneable way to reach the control task and read the table it publishes.
#[derive(Debug, Clone)]
pub struct ControlHandle {
    requests: mpsc::UnboundedSender<Request>,
    table: TableHandle,
}

impl ControlHandle {
    /// A handle sending to `requests`, reading `table`.
    pub(super) fn new(requests: mpsc::UnboundedSender<Request>, table: TableHandle) -> Self {
        ControlHandle { requests, table }
    }

    /// The table in force (only the control task swaps it).
    pub fn table(&self) -> &TableHandle {
        &self.table
    }

    /// Asks for a table rebuilt from the live state (after a check verdict or an operator's
    /// command changed eligibility), without waiting. Requests queued while the task is busy
    /// make one table.
    pub fn rebuild(&self) -> Result<(), ControlError> {
        self.requests
            .send(Request::Rebuild(None))
            .map_err(|_| ControlError::Stopped)
    }

    /// Asks for a rebuilt table and returns its generation once it is in force: a table built
    /// after this call, so it reflects every live state change made before it.
    pub async fn rebuild_and_wait(&self) -> Result<u64, ControlError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Rebuild(Some(reply)))
            .map_err(|_| ControlError::Stopped)?;
        answer.await.unwrap_or(Err(ControlError::Stopped))
    }

    /// Re-reads the configuration files; returns the new table's generation, or why nothing
    /// changed.
    pub async fn reload(&self) -> Result<u64, ReloadError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Reload(reply))
            .map_err(|_| ReloadError::Stopped)?;
        answer.await.unwrap_or(Err(ReloadError::Stopped))
    }

    /// Stops the checks, the etcd watches and accepting on every listener (the first step of
    /// a soft stop); returns once the listeners are closed. From then on the table no longer
    /// changes: rebuilds and reloads answer [`ControlError::Stopped`].
    pub async fn stop_accepting(&self) -> Result<(), ControlError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::StopAccepting(reply))
            .map_err(|_| ControlError::Stopped)?;
        answer.await.map_err(|_| ControlError::Stopped)
    }
}
