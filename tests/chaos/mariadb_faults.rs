//! The MariaDB chaos test's fault schedules: drawn from a seed (the same splitmix64 stream as
//! `tests/chaos/faults.rs`, so a seed replays the same schedules), and carried out on a
//! [`Cluster`] while the writers run.
//!
//! Every schedule moves the primary from `n1` to `n2` or `n3`, the way MariaDB is switched
//! over: the old primary fenced with `SET GLOBAL read_only = 1`, the new one caught up
//! (`MASTER_GTID_WAIT`), its replication stopped and `read_only = 0`, the others re-pointed
//! at it (`CHANGE MASTER TO ... MASTER_USE_GTID=slave_pos`).
//! - `switchover-puts`: a planned switchover written to etcd as single puts (`n1`'s member →
//!   replica, the new one's → primary, `leader`), in one of three orders: fence first (fence,
//!   etcd, promote), etcd first (etcd, an operator's pause of 0.3–1 s, fence, promote), or
//!   promote first (fence, promote, pause, etcd: the new node is writable before etcd names it);
//! - `switchover-txn`: the same with the three etcd changes in ONE transaction;
//! - `split-brain`: a replica's replication stopped and `read_only = 0` while etcd still names
//!   `n1`, which stays writable for 0.1–5 s; then `n1` is fenced and etcd moved in one
//!   transaction;
//! - `kill-primary`: `n1`'s mariadbd killed (SIGKILL), etcd moved in one transaction, the new
//!   node promoted once it applied what it had received.

use std::fmt;
use std::thread;
use std::time::{Duration, SystemTime};

use crate::audit::NodeId;
use crate::cluster::Cluster;

/// The seed's random stream, shared with the other chaos variant.
#[path = "rng.rs"]
mod rng;
pub use rng::Rng;

/// The kinds of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    SwitchoverPuts,
    SwitchoverTxn,
    SplitBrain,
    KillPrimary,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::SwitchoverPuts,
        Kind::SwitchoverTxn,
        Kind::SplitBrain,
        Kind::KillPrimary,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::SwitchoverPuts => "switchover-puts",
            Kind::SwitchoverTxn => "switchover-txn",
            Kind::SplitBrain => "split-brain",
            Kind::KillPrimary => "kill-primary",
        }
    }
}

/// Which of a planned switchover's three steps comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum First {
    /// Fence the old primary, move etcd, promote the new one.
    Fence,
    /// Move etcd, pause, fence, promote.
    Etcd,
    /// Fence, promote, pause, move etcd: the new primary is writable before etcd names it.
    Promote,
}

/// One schedule: which fault, onto which node, and its timings.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub kind: Kind,
    /// The node that becomes the primary (`n1` = 0 is the old one).
    pub new: NodeId,
    /// Planned switchovers: which step comes first.
    pub first: First,
    /// Planned switchovers: the operator's pause (see [`First`]).
    pub pause: Duration,
    /// Split brain: how long both nodes stay writable.
    pub split: Duration,
    /// Writes before the fault.
    pub warmup: Duration,
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} n1→{}", self.kind.name(), Cluster::name(self.new))?;
        match self.kind {
            Kind::SplitBrain => write!(f, " (both writable {:?})", self.split),
            Kind::KillPrimary => Ok(()),
            Kind::SwitchoverPuts | Kind::SwitchoverTxn => match self.first {
                First::Fence => write!(f, " (fence first)"),
                First::Etcd => write!(f, " (etcd first, pause {:?})", self.pause),
                First::Promote => write!(f, " (promote first, pause {:?})", self.pause),
            },
        }
    }
}

/// One round of kinds: the switchover written as one etcd transaction twice (the way a DBaaS
/// backend publishes it), each other kind once.
const ROUND: [Kind; 5] = [
    Kind::SwitchoverPuts,
    Kind::SwitchoverTxn,
    Kind::SwitchoverTxn,
    Kind::SplitBrain,
    Kind::KillPrimary,
];

/// `count` schedules from `seed`: a round of kinds in a seeded order, repeated, so every kind
/// runs in any five consecutive schedules (10 schedules: 4 transactions, 2 of each other kind).
pub fn schedules(seed: u64, count: usize) -> Vec<Schedule> {
    let mut rng = Rng::new(seed);
    let mut kinds = ROUND;
    for i in (1..kinds.len()).rev() {
        kinds.swap(i, rng.below(i as u64 + 1) as usize);
    }
    const FIRSTS: [First; 3] = [First::Fence, First::Etcd, First::Promote];
    (0..count)
        .map(|i| Schedule {
            kind: kinds[i % kinds.len()],
            new: 1 + rng.below(2) as usize,
            first: FIRSTS[rng.below(3) as usize],
            pause: Duration::from_millis(300 + rng.below(701)),
            split: Duration::from_millis(100 + rng.below(4901)),
            warmup: Duration::from_millis(500 + rng.below(501)),
        })
        .collect()
}

/// When a fault began and when the action that left one writable node named by etcd ended.
#[derive(Debug, Clone, Copy)]
pub struct FaultRun {
    pub began: SystemTime,
    pub resolved: SystemTime,
}

/// The node that is neither `n1` nor `new`.
fn third(new: NodeId) -> NodeId {
    3 - new
}

/// Carries out `s` on `cluster` (the primary is `n1`).
pub fn run(cluster: &mut Cluster, s: &Schedule) -> FaultRun {
    let (old, new) = (0, s.new);
    let began = SystemTime::now();
    let resolved = match s.kind {
        Kind::SplitBrain => {
            cluster.stop_replication(new);
            cluster.set_read_only(new, false);
            thread::sleep(s.split);
            cluster.set_read_only(old, true);
            cluster.txn_switch(old, new);
            let resolved = SystemTime::now();
            // Both took writes the other lacks: MariaDB may refuse either (they stay read-only).
            let _ = cluster.repoint(third(new), new);
            let _ = cluster.repoint(old, new);
            resolved
        }
        Kind::KillPrimary => {
            cluster.kill(old);
            cluster.txn_switch(old, new);
            cluster.wait_relay_applied(new);
            cluster.promote(new);
            let resolved = SystemTime::now();
            // The third node may have received more of n1's last transactions than the new
            // primary: MariaDB then refuses to replicate from it (it stays read-only).
            let _ = cluster.repoint(third(new), new);
            resolved
        }
        Kind::SwitchoverTxn => planned(cluster, s, |c| c.txn_switch(old, new)),
        Kind::SwitchoverPuts => planned(cluster, s, |c| {
            c.put_member(old, "replica");
            c.put_member(new, "primary");
            c.put_leader(new);
        }),
    };
    FaultRun { began, resolved }
}

/// A planned switchover from `n1` to `s.new`, with `etcd` writing the etcd side; returns when
/// the last of its three steps ended. Then both other nodes replicate from the new primary.
fn planned(cluster: &mut Cluster, s: &Schedule, etcd: impl FnOnce(&mut Cluster)) -> SystemTime {
    let (old, new) = (0, s.new);
    let handover = |c: &mut Cluster| {
        c.set_read_only(old, true);
        c.wait_caught_up(new, old);
        c.wait_caught_up(third(new), old);
    };
    match s.first {
        First::Fence => {
            handover(cluster);
            etcd(cluster);
            cluster.promote(new);
        }
        First::Etcd => {
            etcd(cluster);
            thread::sleep(s.pause);
            handover(cluster);
            cluster.promote(new);
        }
        First::Promote => {
            handover(cluster);
            cluster.promote(new);
            thread::sleep(s.pause);
            etcd(cluster);
        }
    }
    let resolved = SystemTime::now();
    for n in [third(new), old] {
        if let Err(e) = cluster.repoint(n, new) {
            panic!(
                "re-pointing {} at {}: {e}",
                Cluster::name(n),
                Cluster::name(new)
            );
        }
    }
    resolved
}
