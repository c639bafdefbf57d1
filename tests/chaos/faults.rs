//! The chaos test's fault schedules: drawn from a seed (a splitmix64 stream, so a seed replays
//! the same schedules), and carried out on a [`Cluster`] while the writers run.
//!
//! Every schedule moves the primary from `n1` to `n2` or `n3`:
//! - `switchover-puts`: a planned switchover written to etcd as single puts (`n1`'s member →
//!   replica, the new one's → primary, `leader`), the new node promoted, `n1` fenced (stopped);
//!   either fenced first, or etcd first, then (after an operator's pause of 0.3–1 s) promote
//!   once the new node has replayed everything, then fence;
//! - `switchover-txn`: the same with the three etcd changes in ONE transaction;
//! - `split-brain`: a replica promoted while etcd still names `n1`, which stays writable for
//!   0.1–5 s; then `n1` is fenced and etcd moved in one transaction;
//! - `sighup-switchover`: `switchover-puts` with rolelb reloaded (SIGHUP) between two of the puts;
//! - `crash-failover`: `n1` killed outright (every process SIGKILLed), etcd moved in one
//!   transaction, the new node promoted with whatever it had received.

use std::fmt;
use std::thread;
use std::time::{Duration, SystemTime};

use crate::audit::NodeId;
use crate::cluster::Cluster;

/// A small deterministic random stream (splitmix64).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The kinds of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    SwitchoverPuts,
    SwitchoverTxn,
    SplitBrain,
    SighupSwitchover,
    CrashFailover,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::SwitchoverPuts,
        Kind::SwitchoverTxn,
        Kind::SplitBrain,
        Kind::SighupSwitchover,
        Kind::CrashFailover,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::SwitchoverPuts => "switchover-puts",
            Kind::SwitchoverTxn => "switchover-txn",
            Kind::SplitBrain => "split-brain",
            Kind::SighupSwitchover => "sighup-switchover",
            Kind::CrashFailover => "crash-failover",
        }
    }
}

/// One schedule: which fault, onto which node, and its timings.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub kind: Kind,
    /// The node that becomes the primary (`n1` = 0 is the old one).
    pub new: NodeId,
    /// Planned switchovers: fence the old primary before touching etcd (else after promoting).
    pub fence_first: bool,
    /// Split brain: how long both nodes stay writable.
    pub split: Duration,
    /// Planned switchovers, etcd first: the pause between etcd and the promotion.
    pub pause: Duration,
    /// SIGHUP: after which of the three puts (0..3).
    pub sighup_after: usize,
    /// Writes before the fault.
    pub warmup: Duration,
    /// The role checks log in through PgBouncer (else straight to PostgreSQL).
    pub check_via_bouncer: bool,
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} n1→{}", self.kind.name(), Cluster::name(self.new))?;
        match self.kind {
            Kind::SplitBrain => write!(f, " (both writable {:?})", self.split),
            Kind::SighupSwitchover => write!(
                f,
                " (SIGHUP after put {}, {})",
                self.sighup_after + 1,
                order(self)
            ),
            Kind::CrashFailover => Ok(()),
            _ => write!(f, " ({})", order(self)),
        }?;
        let via = if self.check_via_bouncer {
            "PgBouncer"
        } else {
            "PostgreSQL"
        };
        write!(f, ", checks via {via}")
    }
}

fn order(s: &Schedule) -> String {
    if s.fence_first {
        "fence first".to_owned()
    } else {
        format!("etcd first, pause {:?}", s.pause)
    }
}

/// One round of kinds: each once, the switchover written as one etcd transaction twice (the
/// way a DBaaS backend publishes it, and the case that once sent writes to a demoted node).
const ROUND: [Kind; 6] = [
    Kind::SwitchoverPuts,
    Kind::SwitchoverTxn,
    Kind::SwitchoverTxn,
    Kind::SplitBrain,
    Kind::SighupSwitchover,
    Kind::CrashFailover,
];

/// `count` schedules from `seed`: a round of kinds in a seeded order, repeated, so every kind
/// runs in any six consecutive schedules (30 schedules: 10 transactions, 5 of each other kind).
pub fn schedules(seed: u64, count: usize) -> Vec<Schedule> {
    let mut rng = Rng::new(seed);
    let mut kinds = ROUND;
    for i in (1..kinds.len()).rev() {
        kinds.swap(i, rng.below(i as u64 + 1) as usize);
    }
    (0..count)
        .map(|i| Schedule {
            kind: kinds[i % kinds.len()],
            new: 1 + rng.below(2) as usize,
            fence_first: rng.below(2) == 0,
            split: Duration::from_millis(100 + rng.below(4901)),
            pause: Duration::from_millis(300 + rng.below(701)),
            sighup_after: rng.below(3) as usize,
            warmup: Duration::from_millis(500 + rng.below(1000)),
            check_via_bouncer: rng.below(2) == 0,
        })
        .collect()
}

/// When a fault began and when its last action ended (from then on the cluster again has one
/// writable node that etcd names).
#[derive(Debug, Clone, Copy)]
pub struct FaultRun {
    pub began: SystemTime,
    pub resolved: SystemTime,
}

/// Carries out `s` on `cluster` (the primary is `n1`).
pub fn run(cluster: &mut Cluster, s: &Schedule) -> FaultRun {
    let (old, new) = (0, s.new);
    let began = SystemTime::now();
    match s.kind {
        Kind::SplitBrain => {
            cluster.promote(new);
            thread::sleep(s.split);
            cluster.stop(old);
            cluster.txn_switch(old, new);
        }
        Kind::CrashFailover => {
            cluster.crash(old);
            cluster.txn_switch(old, new);
            cluster.promote(new);
        }
        Kind::SwitchoverTxn => planned(cluster, s, |c| c.txn_switch(old, new)),
        Kind::SwitchoverPuts | Kind::SighupSwitchover => planned(cluster, s, |c| {
            let sighup = |c: &mut Cluster, step| {
                if s.kind == Kind::SighupSwitchover && s.sighup_after == step {
                    c.reload();
                }
            };
            c.put_member(old, "replica");
            sighup(c, 0);
            c.put_member(new, "primary");
            sighup(c, 1);
            c.put_leader(new);
            sighup(c, 2);
        }),
    }
    FaultRun {
        began,
        resolved: SystemTime::now(),
    }
}

/// A planned switchover from `n1` to `s.new`, with `etcd` writing the etcd side.
fn planned(cluster: &mut Cluster, s: &Schedule, etcd: impl FnOnce(&mut Cluster)) {
    let (old, new) = (0, s.new);
    if s.fence_first {
        // A fast shutdown sends every WAL record to the replicas before it ends.
        cluster.stop(old);
        etcd(cluster);
        cluster.promote(new);
    } else {
        etcd(cluster);
        thread::sleep(s.pause);
        cluster.wait_replayed(new, old);
        cluster.promote(new);
        cluster.stop(old);
    }
}
