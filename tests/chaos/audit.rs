//! The auditor of the chaos test: given the ground truth the test controlled (which node etcd's
//! `leader` key named, which node was writable, each fact with the window in which it changed)
//! and every acknowledged write (the node that committed it, as that node reported it), it
//! decides for each write whether the node was the one primary at that moment, and counts the
//! acknowledged writes that the surviving primary does not have.
//!
//! "The one primary" at time t is the node that is writable and named by etcd at t. A fact
//! changes somewhere inside its event's window (`start`..`end`): the auditor never flags a
//! write that some order inside those windows would allow. After a change that takes the
//! `leader` name away from a node, rolelb needs a moment to see it (the etcd watch, the table
//! swap, closing the node's sessions); a write committed there within [`GRACE`] of that change
//! is counted as *late*, apart from the violations, and its lateness is reported.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

/// A node of the cluster: its index (`n1` is 0).
pub type NodeId = usize;

/// How long after etcd stops naming a node a write committed there counts as late rather than
/// as a violation: the watch and the swap that closes the node's sessions take milliseconds
/// (docs/config.md; measured here: under 5 ms), and a write already past rolelb when the swap
/// lands may still commit; the margin is for rolelb's etcd thread (`nice` 5) on a loaded
/// 2-core machine. A rolelb that ignored etcd (`role-source check`) keeps writing to the old
/// primary until it is fenced, at least the 300 ms operator's pause later, and is caught.
pub const GRACE: Duration = Duration::from_millis(250);

/// One fact of the ground truth, as the test changed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fact {
    /// etcd's `leader` key names this node.
    Leader(NodeId),
    /// The node accepts writes (true: a primary; false: stopped or a replica).
    Writable(NodeId, bool),
}

/// A change of the ground truth: it took effect at some moment between `start` and `end`.
#[derive(Debug, Clone, Copy)]
pub struct Event {
    pub start: SystemTime,
    pub end: SystemTime,
    pub fact: Fact,
}

/// An acknowledged write and what the node that committed it said about itself.
#[derive(Debug, Clone)]
pub struct Write {
    pub id: i64,
    /// `inet_server_port()` mapped to a node; `None`: a port that is no node of the cluster.
    pub node: Option<NodeId>,
    pub in_recovery: bool,
    pub timeline: u32,
    /// The node's `clock_timestamp()` in the INSERT (same host clock as the test's).
    pub committed: SystemTime,
}

/// What the audit found, summed over schedules.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Acknowledged writes audited.
    pub writes: usize,
    /// Committed by the one primary.
    pub on_primary: usize,
    /// Committed by a node within [`GRACE`] after etcd stopped naming it.
    pub late: usize,
    /// The latest such write, after the change.
    pub max_late: Duration,
    /// Committed by a node in recovery (must be 0).
    pub in_recovery: usize,
    /// Committed by a node that was not the one primary, beyond any grace (must be 0).
    pub not_primary: usize,
    /// Of those, committed while another node was writable and named by etcd: split brain.
    pub split_brain: usize,
    /// Committed by the named primary while another node was writable too (allowed by the
    /// ground truth; rolelb refuses new writes once its checks see the second primary).
    pub named_during_split: usize,
    /// The latest of those, after the split began (the later of the two became writable).
    pub max_split_exposure: Duration,
    /// Reported by a port that is no node (must be 0).
    pub unknown_node: usize,
    /// Acknowledged, absent from the surviving primary, committed on another node (a demoted
    /// or killed primary: expected with asynchronous replication).
    pub lost_on_demoted: usize,
    /// Acknowledged by the surviving primary itself and absent from it (must be 0).
    pub lost_on_survivor: usize,
}

impl Report {
    /// The count of broken invariants.
    pub fn violations(&self) -> usize {
        self.in_recovery + self.not_primary + self.unknown_node + self.lost_on_survivor
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Report) {
        self.writes += other.writes;
        self.on_primary += other.on_primary;
        self.late += other.late;
        self.max_late = self.max_late.max(other.max_late);
        self.in_recovery += other.in_recovery;
        self.not_primary += other.not_primary;
        self.split_brain += other.split_brain;
        self.named_during_split += other.named_during_split;
        self.max_split_exposure = self.max_split_exposure.max(other.max_split_exposure);
        self.unknown_node += other.unknown_node;
        self.lost_on_demoted += other.lost_on_demoted;
        self.lost_on_survivor += other.lost_on_survivor;
    }
}

/// The history of one yes/no fact: `(start, end, value)` per change, in order.
type History = Vec<(SystemTime, SystemTime, bool)>;

fn history(events: &[Event], of: impl Fn(Fact) -> Option<bool>) -> History {
    let mut h: History = events
        .iter()
        .filter_map(|e| of(e.fact).map(|v| (e.start, e.end, v)))
        .collect();
    h.sort_by_key(|&(start, _, _)| start);
    h
}

/// Whether the fact may hold at `t`: a change to true began by `t`, and the next change had
/// not certainly ended `grace` before `t`.
fn possibly(h: &History, t: SystemTime, grace: Duration) -> bool {
    h.iter().enumerate().any(|(k, &(start, _, value))| {
        value && start <= t && h.get(k + 1).is_none_or(|&(_, end, _)| t <= end + grace)
    })
}

/// Whether the fact certainly holds at `t`: a change to true had ended, the next had not begun.
fn certainly(h: &History, t: SystemTime) -> bool {
    h.iter().enumerate().any(|(k, &(_, end, value))| {
        value && end <= t && h.get(k + 1).is_none_or(|&(start, _, _)| t < start)
    })
}

/// When the fact last became certainly true at or before `t`.
fn since(h: &History, t: SystemTime) -> Option<SystemTime> {
    h.iter()
        .filter(|&&(_, end, value)| value && end <= t)
        .map(|&(_, end, _)| end)
        .next_back()
}

/// When the fact last stopped being true (the end of that change) at or before `t`.
fn stopped(h: &History, t: SystemTime) -> Option<SystemTime> {
    h.windows(2)
        .filter(|w| w[0].2 && !w[1].2 && w[1].1 <= t)
        .map(|w| w[1].1)
        .next_back()
}

/// Audits one schedule: `events` on `nodes` nodes, the acknowledged `writes`, and the ids the
/// surviving primary `survivor` holds once everything settled.
pub fn audit(
    nodes: usize,
    events: &[Event],
    writes: &[Write],
    survivor: NodeId,
    present: &HashSet<i64>,
) -> Report {
    let named: Vec<History> = (0..nodes)
        .map(|n| {
            history(events, |f| {
                matches!(f, Fact::Leader(_)).then_some(f == Fact::Leader(n))
            })
        })
        .collect();
    let writable: Vec<History> = (0..nodes)
        .map(|n| {
            history(events, |f| match f {
                Fact::Writable(m, v) if m == n => Some(v),
                _ => None,
            })
        })
        .collect();
    let mut r = Report {
        writes: writes.len(),
        ..Report::default()
    };
    for w in writes {
        let Some(n) = w.node.filter(|&n| n < nodes) else {
            r.unknown_node += 1;
            continue;
        };
        if !present.contains(&w.id) {
            if n == survivor {
                r.lost_on_survivor += 1;
            } else {
                r.lost_on_demoted += 1;
            }
        }
        if w.in_recovery {
            r.in_recovery += 1;
            continue;
        }
        let t = w.committed;
        let others = (0..nodes).filter(|&m| m != n);
        if !possibly(&writable[n], t, Duration::ZERO) {
            // The ground truth says the node could not take writes: count it, never excuse it.
            r.not_primary += 1;
        } else if possibly(&named[n], t, Duration::ZERO) {
            r.on_primary += 1;
            // The split began when the later of the two became writable.
            let split_began = others
                .filter(|&m| certainly(&writable[m], t))
                .filter_map(|m| since(&writable[m], t))
                .max()
                .map(|other| since(&writable[n], t).map_or(other, |own| own.max(other)));
            if let Some(since) = split_began {
                r.named_during_split += 1;
                let exposure = t.duration_since(since).unwrap_or_default();
                r.max_split_exposure = r.max_split_exposure.max(exposure);
            }
        } else if possibly(&named[n], t, GRACE) {
            r.late += 1;
            let after = stopped(&named[n], t).and_then(|s| t.duration_since(s).ok());
            r.max_late = r.max_late.max(after.unwrap_or_default());
        } else {
            r.not_primary += 1;
            if others
                .clone()
                .any(|m| certainly(&writable[m], t) && certainly(&named[m], t))
            {
                r.split_brain += 1;
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000) + Duration::from_millis(ms)
    }

    fn ev(start: u64, end: u64, fact: Fact) -> Event {
        Event {
            start: at(start),
            end: at(end),
            fact,
        }
    }

    fn write(id: i64, node: NodeId, ms: u64) -> Write {
        Write {
            id,
            node: Some(node),
            in_recovery: false,
            timeline: 1,
            committed: at(ms),
        }
    }

    /// n0 primary from 0; n1 promoted during 1000..1100 while etcd still names n0; n0 stopped
    /// during 3000..3050; etcd names n1 during 3100..3110.
    fn split_brain() -> Vec<Event> {
        vec![
            ev(0, 0, Fact::Leader(0)),
            ev(0, 0, Fact::Writable(0, true)),
            ev(0, 0, Fact::Writable(1, false)),
            ev(1000, 1100, Fact::Writable(1, true)),
            ev(3000, 3050, Fact::Writable(0, false)),
            ev(3100, 3110, Fact::Leader(1)),
        ]
    }

    #[test]
    fn writes_on_the_unnamed_of_two_writable_nodes_are_split_brain() {
        let writes = [write(1, 0, 500), write(2, 1, 2000), write(3, 1, 4000)];
        let present: HashSet<i64> = [2, 3].into();
        let r = audit(2, &split_brain(), &writes, 1, &present);
        assert_eq!((r.on_primary, r.not_primary, r.split_brain), (2, 1, 1));
        // Write 1 was on n0, which the survivor n1 never saw.
        assert_eq!((r.lost_on_demoted, r.lost_on_survivor), (1, 0));
        assert_eq!(r.violations(), 1);
    }

    #[test]
    fn the_named_primary_during_a_split_is_allowed_and_its_exposure_measured() {
        let r = audit(
            2,
            &split_brain(),
            &[write(1, 0, 1600)],
            0,
            &HashSet::from([1]),
        );
        assert_eq!((r.on_primary, r.named_during_split), (1, 1));
        assert_eq!(r.max_split_exposure, Duration::from_millis(500));
        assert_eq!(r.violations(), 0);
    }

    #[test]
    fn split_exposure_counts_from_the_later_of_the_two_writable_nodes() {
        // n1 named and promoted at 1000..1100; n0 (writable since 0) fenced at 3000..3050.
        let events = [
            ev(0, 0, Fact::Leader(0)),
            ev(0, 0, Fact::Writable(0, true)),
            ev(0, 0, Fact::Writable(1, false)),
            ev(500, 510, Fact::Leader(1)),
            ev(1000, 1100, Fact::Writable(1, true)),
            ev(3000, 3050, Fact::Writable(0, false)),
        ];
        let r = audit(2, &events, &[write(1, 1, 1300)], 1, &HashSet::from([1]));
        assert_eq!((r.on_primary, r.named_during_split), (1, 1));
        assert_eq!(r.max_split_exposure, Duration::from_millis(200));
    }

    #[test]
    fn a_write_shortly_after_the_name_moves_is_late_and_later_is_a_violation() {
        let events = [
            ev(0, 0, Fact::Leader(0)),
            ev(0, 0, Fact::Writable(0, true)),
            ev(0, 0, Fact::Writable(1, true)),
            ev(1000, 1010, Fact::Leader(1)),
        ];
        let writes = [write(1, 0, 1005), write(2, 0, 1080), write(3, 0, 1300)];
        let present: HashSet<i64> = [1, 2, 3].into();
        let r = audit(2, &events, &writes, 1, &present);
        assert_eq!((r.on_primary, r.late, r.not_primary), (1, 1, 1));
        assert_eq!(r.max_late, Duration::from_millis(70));
    }

    #[test]
    fn writes_on_a_stopped_node_a_replica_or_an_unknown_port_count() {
        let mut in_recovery = write(2, 0, 100);
        in_recovery.in_recovery = true;
        let unknown = Write {
            node: None,
            ..write(3, 0, 100)
        };
        let writes = [write(1, 0, 3060), in_recovery, unknown, write(4, 1, 100)];
        let present: HashSet<i64> = [1, 2, 3].into();
        let r = audit(2, &split_brain(), &writes, 1, &present);
        assert_eq!((r.not_primary, r.in_recovery, r.unknown_node), (2, 1, 1));
        assert_eq!(r.lost_on_survivor, 1);
    }
}
