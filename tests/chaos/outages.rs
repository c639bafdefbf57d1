//! The chaos schedules in which something besides PostgreSQL fails around a switchover from
//! `n1` to the schedule's new node, carried out on a [`Cluster`] while the writers run:
//! - `etcd-stop`: etcd stopped (SIGTERM) and started again on the same data and ports after
//!   0.5–3 s; step 0: `n1` fenced and the new node promoted while etcd is down, etcd moved
//!   (one transaction) once it is back, so rolelb must refuse writes on its last good table
//!   and catch up; steps 1–2: etcd moved first, then stopped, the promotion and fencing done
//!   while it is down;
//! - `etcd-pause`: the same with etcd frozen (SIGSTOP, SIGCONT after 0.5–5 s) instead;
//! - `etcd-compact`: step 0: `n1` fenced, etcd stopped, etcd moved on a second etcd process
//!   rolelb does not watch and compacted to the revision that leaves, etcd started again and
//!   the new node promoted: rolelb's watch resumes in compacted history and must list again
//!   (no write ever reaches the new node otherwise); steps 1–2: etcd moved, then compacted to
//!   the current revision while rolelb watches, then the promotion and fencing;
//! - `rolelb-kill`: a second rolelb beside the first, both taking writes; one of them (drawn)
//!   SIGKILLed before step N of an etcd-first switchover (etcd moved, the new node promoted,
//!   `n1` fenced) and started again after that step: it must not route a write before it
//!   knows the roles;
//! - `replica-lag`: the replica that stays a replica has its WAL replay paused
//!   (`pg_wal_replay_pause()`) until it is past `max-lag` and the slack and at least 3–4 s,
//!   then the switchover runs and the replay resumes; readers must not read from it while it
//!   is past `max-lag` (tests/chaos/readers.rs);
//! - `bouncer-pause`: `PAUSE` on `n1`'s PgBouncer, then an etcd-first switchover, `RESUME`
//!   0.5–3 s after the pause and after step N (etcd moved, promoted, fenced);
//! - `rejoin`: `n1` crashed (SIGKILL), etcd moved, the new node promoted, then `n1` brought
//!   back as a replica of it (`pg_rewind`, else a fresh `pg_basebackup`) and its member
//!   written as a replica: writes must never reach it, reads may once it caught up.
//!
//! etcd: the schedules that stop it (`etcd-*`) run against an etcd server of their own
//! ([`crate::faults::Kind::own_etcd`]), so the etcd the rest of the run shares is never
//! touched.

use std::thread;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;

use crate::audit::NodeId;
use crate::cluster::Cluster;
use crate::common::wait_until;
use crate::faults::{Kind, Schedule};
use crate::readers::{LAG_SLACK, MAX_LAG, Paused, read};

/// What a fault leaves for the read audit.
#[derive(Debug, Default, Clone, Copy)]
pub struct Extra {
    pub paused: Option<Paused>,
    pub rejoined: Option<(NodeId, SystemTime)>,
}

/// A step done to the cluster.
type Action = fn(&mut Cluster);

/// How long a rejoined node gets to serve a read through the read listener.
const REJOIN_READ_WAIT: Duration = Duration::from_secs(20);

/// The schedule's parameters that matter for its kind, for the schedule's line.
pub fn describe(s: &Schedule) -> String {
    let steps = ["etcd moved", "promoted", "fenced"];
    match s.kind {
        Kind::EtcdStop | Kind::EtcdPause => {
            let how = if s.kind == Kind::EtcdStop {
                "stopped"
            } else {
                "paused"
            };
            match s.step {
                0 => format!("etcd {how} {:?} while n1 fenced and promoted", s.outage),
                _ => format!("etcd {how} {:?} after etcd moved", s.outage),
            }
        }
        Kind::EtcdCompact => match s.step {
            0 => "moved while rolelb cut off, compacted, re-list".to_owned(),
            _ => "compacted while watched".to_owned(),
        },
        Kind::RolelbKill => format!(
            "rolelb #{} killed before '{}', restarted after",
            s.which_lb + 1,
            steps[s.step]
        ),
        Kind::ReplicaLag => format!("other replica's replay paused {:?}+", s.outage),
        Kind::BouncerPause => format!(
            "n1's PgBouncer paused, resumed after {:?} and '{}'",
            s.outage, steps[s.step]
        ),
        _ => String::new(),
    }
}

/// Carries out a kind of this file on `cluster` (the primary is `n1`).
pub fn run(c: &mut Cluster, s: &Schedule) -> Extra {
    let (old, new) = (0, s.new);
    let mut extra = Extra::default();
    match s.kind {
        Kind::EtcdStop | Kind::EtcdPause => {
            let (down, up): (Action, Action) = if s.kind == Kind::EtcdStop {
                (Cluster::stop_etcd, Cluster::restart_etcd)
            } else {
                (
                    |c| c.signal_etcd(Signal::SIGSTOP),
                    |c| c.signal_etcd(Signal::SIGCONT),
                )
            };
            let at = Instant::now();
            if s.step == 0 {
                c.stop(old);
                down(c);
                c.promote(new);
                sleep_until(at + s.outage);
                up(c);
                c.txn_switch(old, new);
            } else {
                c.txn_switch(old, new);
                down(c);
                c.wait_replayed(new, old);
                c.promote(new);
                c.stop(old);
                sleep_until(at + s.outage);
                up(c);
            }
        }
        Kind::EtcdCompact => {
            if s.step == 0 {
                c.stop(old);
                c.stop_etcd();
                c.offline_switch_and_compact(old, new);
                c.restart_etcd();
                c.promote(new);
                // The fault is the compacted resume point: prove rolelb met it (HAProxy
                // reads no etcd).
                let relisted = c.read_port.is_none()
                    || wait_until(Duration::from_secs(15), || {
                        c.log().contains("compacted up to")
                    });
                assert!(
                    relisted,
                    "rolelb's watch never found its resume point compacted\n{}",
                    c.log()
                );
            } else {
                c.txn_switch(old, new);
                c.compact_etcd();
                thread::sleep(s.pause);
                c.wait_replayed(new, old);
                c.promote(new);
                c.stop(old);
            }
        }
        Kind::RolelbKill => {
            for step in 0..3 {
                if step == s.step {
                    c.kill_lb(s.which_lb);
                }
                switch_step(c, s, step);
                if step == s.step {
                    c.restart_lb(s.which_lb);
                }
            }
        }
        Kind::BouncerPause => {
            let at = Instant::now();
            c.pause_bouncer(old);
            for step in 0..3 {
                switch_step(c, s, step);
                if step == s.step {
                    sleep_until(at + s.outage);
                    c.resume_bouncer(old);
                }
            }
        }
        Kind::ReplicaLag => {
            let lagging = 3 - new;
            c.nodes[lagging].pg.psql("SELECT pg_wal_replay_pause()");
            let from = SystemTime::now();
            let at = Instant::now();
            let past = wait_until(Duration::from_secs(20), || {
                c.replay_lag(lagging) > MAX_LAG + LAG_SLACK + Duration::from_millis(500)
            });
            assert!(
                past,
                "{}'s replay was paused 20 s, yet it never reported more than {:?} behind",
                Cluster::name(lagging),
                MAX_LAG + LAG_SLACK
            );
            sleep_until(at + s.outage);
            for step in 0..3 {
                switch_step(c, s, step);
            }
            let until = SystemTime::now();
            c.nodes[lagging].pg.psql("SELECT pg_wal_replay_resume()");
            extra.paused = Some(Paused {
                node: lagging,
                from,
                until,
            });
        }
        Kind::Rejoin => {
            c.crash(old);
            c.txn_switch(old, new);
            c.promote(new);
            let rewound = c.rejoin(old, new);
            let since = SystemTime::now();
            eprintln!(
                "  {} back as a replica of {} ({})",
                Cluster::name(old),
                Cluster::name(new),
                if rewound {
                    "pg_rewind"
                } else {
                    "pg_rewind failed: pg_basebackup"
                }
            );
            extra.rejoined = Some((old, since));
            if let Some(port) = c.read_port {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a tokio runtime for a read");
                let old_port = c.nodes[old].pg.port();
                // Reads may reach it once rolelb's checks and etcd agree it is a replica;
                // the readers count them, this only gives them the time.
                let served = wait_until(REJOIN_READ_WAIT, || {
                    rt.block_on(read(port))
                        .result
                        .is_ok_and(|ack| ack.port == old_port)
                });
                if !served {
                    let state = crate::common::try_psql(
                        old_port,
                        "SELECT pg_is_in_recovery(), pg_last_wal_receive_lsn(), \
                         pg_last_wal_replay_lsn(), (SELECT status FROM pg_stat_wal_receiver)",
                    );
                    eprintln!(
                        "{}",
                        crate::common::log_tail(&c.nodes[old].pg.log_path(), 25)
                    );
                    let log = c.log();
                    let tail: Vec<&str> = log.lines().rev().take(30).collect();
                    eprintln!(
                        "  no read reached {} within {REJOIN_READ_WAIT:?}: it reports {state:?}; rolelb's log ends:\n{}",
                        Cluster::name(old),
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    );
                }
            }
        }
        _ => unreachable!("{} is carried out in faults.rs", s.kind.name()),
    }
    extra
}

/// Step `step` of an etcd-first switchover: 0 etcd moved (one transaction) and the
/// operator's pause, 1 the new node promoted once it replayed everything, 2 `n1` fenced.
fn switch_step(c: &mut Cluster, s: &Schedule, step: usize) {
    let (old, new) = (0, s.new);
    match step {
        0 => {
            c.txn_switch(old, new);
            thread::sleep(s.pause);
        }
        1 => {
            c.wait_replayed(new, old);
            c.promote(new);
        }
        _ => c.stop(old),
    }
}

fn sleep_until(t: Instant) {
    if let Some(left) = t.checked_duration_since(Instant::now()) {
        thread::sleep(left);
    }
}
