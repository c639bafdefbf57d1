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
//!   transaction, the new node promoted with whatever it had received;
//! - `partition`: `n1` (in a network namespace of its own) cut off by setting its veth link
//!   down while the writers run (sessions in flight hang), etcd moved in one transaction and
//!   the new node promoted (the operator's failover), the cut kept 1–5 s; then either `n1`
//!   fenced and the link brought up, or the link brought up with `n1` still writable for
//!   0.3–1 s (a split brain after the partition heals) before it is fenced;
//! - `etcd-stop`, `etcd-pause`, `etcd-compact`, `rolelb-kill`, `replica-lag`, `bouncer-pause`,
//!   `rejoin`: a switchover with etcd, rolelb, a replica, PgBouncer or the old primary
//!   failing around it (`tests/chaos/outages.rs` carries them out and says how).

use std::fmt;
use std::thread;
use std::time::{Duration, SystemTime};

use crate::audit::NodeId;
use crate::cluster::Cluster;
use crate::outages;
use crate::readers::Paused;

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
    SighupSwitchover,
    CrashFailover,
    EtcdStop,
    EtcdPause,
    EtcdCompact,
    RolelbKill,
    ReplicaLag,
    BouncerPause,
    Rejoin,
    Partition,
}

impl Kind {
    pub const ALL: [Kind; 13] = [
        Kind::SwitchoverPuts,
        Kind::SwitchoverTxn,
        Kind::SplitBrain,
        Kind::SighupSwitchover,
        Kind::CrashFailover,
        Kind::EtcdStop,
        Kind::EtcdPause,
        Kind::EtcdCompact,
        Kind::RolelbKill,
        Kind::ReplicaLag,
        Kind::BouncerPause,
        Kind::Rejoin,
        Kind::Partition,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::SwitchoverPuts => "switchover-puts",
            Kind::SwitchoverTxn => "switchover-txn",
            Kind::SplitBrain => "split-brain",
            Kind::SighupSwitchover => "sighup-switchover",
            Kind::CrashFailover => "crash-failover",
            Kind::EtcdStop => "etcd-stop",
            Kind::EtcdPause => "etcd-pause",
            Kind::EtcdCompact => "etcd-compact",
            Kind::RolelbKill => "rolelb-kill",
            Kind::ReplicaLag => "replica-lag",
            Kind::BouncerPause => "bouncer-pause",
            Kind::Rejoin => "rejoin",
            Kind::Partition => "partition",
        }
    }

    /// Whether the schedule runs against an etcd of its own: it stops that one, which the
    /// other schedules of the run must not see.
    pub fn own_etcd(self) -> bool {
        matches!(self, Kind::EtcdStop | Kind::EtcdPause | Kind::EtcdCompact)
    }

    /// How long the kind's outage lasts, from a draw in `0..=1000`: etcd stopped 0.5–3 s or
    /// paused 0.5–5 s, PgBouncer paused 0.5–3 s, a replica's replay paused 3–4 s (it must get
    /// past `max-lag` and the slack), `n1` partitioned 1–5 s.
    fn outage(self, draw: u64) -> Duration {
        let (from, span) = match self {
            Kind::EtcdPause => (500, 4500),
            Kind::Partition => (1000, 4000),
            Kind::ReplicaLag => (3000, 1000),
            _ => (500, 2500),
        };
        Duration::from_millis(from + span * draw / 1000)
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
    /// etcd, PgBouncer or a replica's replay: how long the outage lasts.
    pub outage: Duration,
    /// Where in the switchover the outage falls (0..3; each kind says what its steps are).
    pub step: usize,
    /// `rolelb-kill`: which of the two rolelb instances is killed (0: the first).
    pub which_lb: usize,
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
            Kind::CrashFailover | Kind::Rejoin => Ok(()),
            Kind::Partition if self.fence_first => {
                write!(f, " (cut {:?}, fenced, then healed)", self.outage)
            }
            Kind::Partition => write!(
                f,
                " (cut {:?}, healed, writable {:?} more, then fenced)",
                self.outage, self.pause
            ),
            Kind::SwitchoverPuts | Kind::SwitchoverTxn => write!(f, " ({})", order(self)),
            _ => write!(f, " ({})", crate::outages::describe(self)),
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

/// One round of kinds (30): every kind at least once, a plain switchover written as one etcd
/// transaction ten times (the way a DBaaS backend publishes it, and the case that once sent
/// writes to a demoted node), a split brain five times, and twice each the faults with more
/// than one shape (where the outage falls) and no long wait of their own (one crash-failover
/// gave its place to the partition).
pub const ROUND: [Kind; 30] = [
    Kind::SwitchoverTxn,
    Kind::SwitchoverTxn,
    Kind::SwitchoverTxn,
    Kind::SwitchoverTxn,
    Kind::SwitchoverTxn,
    Kind::SwitchoverTxn,
    Kind::SwitchoverTxn,
    Kind::SwitchoverTxn,
    Kind::SwitchoverTxn,
    Kind::SwitchoverTxn,
    Kind::SplitBrain,
    Kind::SplitBrain,
    Kind::SplitBrain,
    Kind::SplitBrain,
    Kind::SplitBrain,
    Kind::SwitchoverPuts,
    Kind::SighupSwitchover,
    Kind::SighupSwitchover,
    Kind::CrashFailover,
    Kind::Partition,
    Kind::EtcdStop,
    Kind::EtcdStop,
    Kind::EtcdPause,
    Kind::EtcdCompact,
    Kind::EtcdCompact,
    Kind::RolelbKill,
    Kind::RolelbKill,
    Kind::ReplicaLag,
    Kind::BouncerPause,
    Kind::Rejoin,
];

/// `count` schedules from `seed`: a round of kinds in a seeded order, repeated, so every kind
/// runs in any 30 consecutive schedules (the first 30: 10 transactions, 5 split brains).
pub fn schedules(seed: u64, count: usize) -> Vec<Schedule> {
    let mut rng = Rng::new(seed);
    let mut kinds = ROUND;
    for i in (1..kinds.len()).rev() {
        kinds.swap(i, rng.below(i as u64 + 1) as usize);
    }
    (0..count)
        .map(|i| {
            let kind = kinds[i % kinds.len()];
            Schedule {
                kind,
                new: 1 + rng.below(2) as usize,
                fence_first: rng.below(2) == 0,
                split: Duration::from_millis(100 + rng.below(4901)),
                pause: Duration::from_millis(300 + rng.below(701)),
                sighup_after: rng.below(3) as usize,
                warmup: Duration::from_millis(500 + rng.below(1000)),
                check_via_bouncer: rng.below(2) == 0,
                outage: kind.outage(rng.below(1001)),
                step: rng.below(3) as usize,
                which_lb: rng.below(2) as usize,
            }
        })
        .collect()
}

/// When a fault began and when its last action ended (from then on the cluster again has one
/// writable node that etcd names).
#[derive(Debug, Clone, Copy)]
pub struct FaultRun {
    pub began: SystemTime,
    pub resolved: SystemTime,
    /// `replica-lag`: the replica whose replay was held paused, and when.
    pub paused: Option<Paused>,
    /// `rejoin`: the old primary, back as a replica of the new one from this moment.
    pub rejoined: Option<(NodeId, SystemTime)>,
}

/// Carries out `s` on `cluster` (the primary is `n1`).
pub fn run(cluster: &mut Cluster, s: &Schedule) -> FaultRun {
    let (old, new) = (0, s.new);
    let began = SystemTime::now();
    let mut extra = outages::Extra::default();
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
        Kind::Partition => {
            cluster.partition(old, true);
            cluster.txn_switch(old, new);
            cluster.promote(new);
            thread::sleep(s.outage);
            if s.fence_first {
                cluster.stop(old);
                cluster.partition(old, false);
            } else {
                cluster.partition(old, false);
                thread::sleep(s.pause);
                cluster.stop(old);
            }
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
        _ => extra = outages::run(cluster, s),
    }
    FaultRun {
        began,
        resolved: SystemTime::now(),
        paused: extra.paused,
        rejoined: extra.rejoined,
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
