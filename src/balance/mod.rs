//! Server selection, one file per `balance` algorithm, each behind [`Selector`].
//!
//! The table builder makes one selector per backend (and one for its backups) over the servers
//! that are eligible in that table, in declaration order. The data path calls
//! [`Selector::pick`] with a [`Live`] view of session counts and slot availability; nothing
//! here blocks or allocates on the hot path. State that must outlive a table swap (the rotation
//! position) lives in a [`Cursor`] kept by the backend's live state.

use std::fmt::Debug;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use crate::config::{Balance, HashType};

/// What a selector knows about one candidate server, fixed when the table is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Effective weight (after `slowstart` and admin overrides); always >= 1 here.
    pub weight: u32,
    /// Stable identity of the server (hash of backend/server name), for consistent hashing.
    pub key: u64,
}

/// The live facts a selector reads at pick time.
pub trait Live {
    /// Whether candidate `i` can take one more session now (not full, not excluded by a retry).
    fn usable(&self, i: usize) -> bool;
    /// Sessions currently open on candidate `i` (for `leastconn`).
    fn sessions(&self, i: usize) -> u32;
}

/// Per-backend selection state that survives table swaps (e.g. the rotation position).
#[derive(Debug, Default)]
pub struct Cursor {
    /// Next position in the rotation.
    pub pos: AtomicU64,
}

/// A balancing algorithm over a fixed candidate list.
pub trait Selector: Send + Sync + Debug {
    /// Picks the index of the candidate for a new connection, or `None` when no candidate is
    /// usable. `client` is the client's address (for `source`).
    fn pick(&self, live: &dyn Live, client: Option<IpAddr>) -> Option<usize>;
}

/// Builds the selector for `balance` / `hash-type` over `candidates`.
pub fn build(
    balance: Balance,
    hash_type: HashType,
    candidates: &[Candidate],
    cursor: Arc<Cursor>,
) -> Box<dyn Selector> {
    let _ = (balance, hash_type, candidates, cursor);
    unimplemented!("selectors: being written")
}
