//! rolelb reading a real Patroni cluster straight from etcd (`discover ... schema patroni`):
//! Debian's Patroni 3.0 with the etcd3 DCS manages three PostgreSQL 15 nodes; rolelb has a
//! write listener (`role primary`, roles from etcd's leader key *and* the role check, which
//! must agree: the default with `discover`) and a read listener (`role replica`). Under a
//! steady stream of writes and reads, `patronictl switchover` moves the leader, and:
//! - writes reach the new leader through rolelb's write listener,
//! - no write is ever answered by a replica (no `read-only transaction` error),
//! - reads keep working.
//!
//! Writes may fail for a moment during the switchover (the old primary shuts down, and
//! rolelb refuses writes while etcd and the role checks disagree): that is the single-writer
//! guard doing its job, so those failures are counted and printed, not asserted on.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{Etcd, PatroniCluster, Rolelb, free_port, try_psql, wait_until};

#[derive(Debug, Default)]
struct Tally {
    /// (when, PostgreSQL port that answered) of each successful write.
    writes: Vec<(Instant, u16)>,
    /// Writes refused because the node was a replica: must stay 0.
    read_only: Vec<String>,
    /// Other write failures (connection refused or closed during the switchover).
    write_errors: Vec<String>,
    /// (when, ok) of each read.
    reads: Vec<(Instant, bool)>,
}

#[test]
fn patroni_switchover_moves_writes_and_no_write_is_answered_by_a_replica() {
    let etcd = Etcd::start();
    let cluster = PatroniCluster::start(&etcd, "rolelbtest", 3);
    let leader = cluster.leader().expect("a leader");
    let candidate = cluster
        .names()
        .into_iter()
        .find(|n| *n != leader)
        .expect("a replica");
    let (wport, rport) = (free_port(), free_port());
    let cfg = format!(
        "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 60s\n    timeout server 60s\n    timeout check 1s\n\
         \x20   default-server inter 500ms fall 2 rise 1 check\n\
         etcd dcs\n    endpoints {endpoint}\n    dial-timeout 1s\n\
         listen writes\n    bind 127.0.0.1:{wport}\n    role primary\n    role-check pgsql user postgres\n\
         \x20   discover etcd dcs path /service/rolelbtest schema patroni\n\
         listen reads\n    bind 127.0.0.1:{rport}\n    balance roundrobin\n    role replica\n    role-check pgsql user postgres\n\
         \x20   discover etcd dcs path /service/rolelbtest schema patroni\n",
        endpoint = etcd.endpoint()
    );
    let rolelb = Rolelb::start(&cfg);
    let created = wait_until(Duration::from_secs(30), || {
        try_psql(
            wport,
            "CREATE TABLE IF NOT EXISTS w (id serial PRIMARY KEY, port int)",
        )
        .is_ok()
    });
    assert!(
        created,
        "no write through rolelb:\n{}",
        rolelb.stderr_text()
    );
    // The candidate has replayed the table before the switchover: a run on a busy machine
    // once switched to a replica that had not, and every write then failed on the new
    // leader with "relation \"w\" does not exist" (rolelb had routed them there).
    let candidate_port = cluster.pg_port(&candidate);
    assert!(
        wait_until(Duration::from_secs(30), || {
            try_psql(candidate_port, "SELECT to_regclass('w') IS NOT NULL").as_deref() == Ok("t")
        }),
        "the table never reached {candidate}"
    );
    assert!(
        wait_until(Duration::from_secs(30), || try_psql(rport, "SELECT 1")
            .is_ok()),
        "no read through rolelb:\n{}",
        rolelb.stderr_text()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let writer = {
        let (stop, tally) = (stop.clone(), tally.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let r = try_psql(
                    wport,
                    "INSERT INTO w (port) SELECT inet_server_port() RETURNING port",
                );
                let mut t = tally.lock().expect("tally");
                match r {
                    Ok(port) => t.writes.push((Instant::now(), port.parse().unwrap_or(0))),
                    Err(e) if e.contains("read-only transaction") => t.read_only.push(e),
                    Err(e) => t.write_errors.push(e),
                }
                drop(t);
                // Pacing of the write loop, not a wait.
                thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let reader = {
        let (stop, tally) = (stop.clone(), tally.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let ok = try_psql(rport, "SELECT pg_is_in_recovery()").as_deref() == Ok("t");
                tally
                    .lock()
                    .expect("tally")
                    .reads
                    .push((Instant::now(), ok));
                thread::sleep(Duration::from_millis(20));
            }
        })
    };

    // Traffic flows both ways before the switchover.
    let flowing = wait_until(Duration::from_secs(30), || {
        let t = tally.lock().expect("tally");
        t.writes.len() >= 5 && t.reads.iter().filter(|(_, ok)| *ok).count() >= 5
    });
    assert!(
        flowing,
        "no steady traffic before the switchover:\n{}",
        rolelb.stderr_text()
    );
    let switched_at = Instant::now();
    let out = cluster.switchover(&leader, &candidate);
    let new_port = cluster.pg_port(&candidate);
    let moved = wait_until(Duration::from_secs(60), || {
        tally
            .lock()
            .expect("tally")
            .writes
            .iter()
            .any(|(at, port)| *at > switched_at && *port == new_port)
    });
    // Let writes and reads run on the new topology for a while: 20 more reads and 10 writes on
    // the new leader, long enough for a write that went back to the old leader to show.
    let moved_at = Instant::now();
    let settled = wait_until(Duration::from_secs(30), || {
        let t = tally.lock().expect("tally");
        t.reads.iter().filter(|(at, _)| *at > moved_at).count() >= 20
            && t.writes
                .iter()
                .filter(|(at, p)| *at > moved_at && *p == new_port)
                .count()
                >= 10
    });
    stop.store(true, Ordering::SeqCst);
    writer.join().expect("writer");
    reader.join().expect("reader");

    let t = tally.lock().expect("tally");
    let old_port = cluster.pg_port(&leader);
    let before = t.writes.iter().filter(|(at, _)| *at < switched_at).count();
    let after_new = t
        .writes
        .iter()
        .filter(|(at, p)| *at > switched_at && *p == new_port)
        .count();
    let first_on_new = t
        .writes
        .iter()
        .find(|(_, p)| *p == new_port)
        .map(|(at, _)| *at);
    let back_on_old = t
        .writes
        .iter()
        .filter(|(at, p)| *p == old_port && first_on_new.is_some_and(|f| *at > f))
        .count();
    let reads_after = t
        .reads
        .iter()
        .filter(|(at, ok)| *at > switched_at && *ok)
        .count();
    let last_read_ok = t.reads.iter().rev().take(20).filter(|(_, ok)| *ok).count();
    eprintln!(
        "switchover {leader} -> {candidate}: {before} writes before, {after_new} on the new leader after; \
         {} write errors during the switchover, {} read-only answers; {} reads ({reads_after} ok after the switchover)",
        t.write_errors.len(),
        t.read_only.len(),
        t.reads.len()
    );
    // What the failed writes said, first and last (a failure names its cause).
    let errors = |v: &[String]| {
        let mut seen: Vec<&String> = Vec::new();
        for e in v.iter().take(3).chain(v.iter().rev().take(3)) {
            if !seen.contains(&e) {
                seen.push(e);
            }
        }
        seen.iter().map(|e| e.trim()).collect::<Vec<_>>().join("\n")
    };
    assert!(
        moved && settled,
        "writes did not reach {candidate} (port {new_port}) after `patronictl switchover`:\n{out}\n{:?}\nwrite errors, first and last:\n{}\n{}",
        cluster.members(),
        errors(&t.write_errors),
        rolelb.stderr_text()
    );
    assert!(
        t.read_only.is_empty(),
        "writes answered by a replica: {:?}",
        t.read_only
    );
    assert!(before > 0 && after_new > 0);
    assert_eq!(
        back_on_old, 0,
        "writes went back to the old leader after moving"
    );
    assert!(
        reads_after > 0 && last_read_ok > 10,
        "reads stopped working after the switchover: {reads_after} ok, last 20: {last_read_ok} ok"
    );
}
