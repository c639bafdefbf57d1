//! The production example `conf/pgbouncer-roles.cfg`, run as shipped (only its addresses
//! moved to the test's ports) in front of real PostgreSQL 15 and PgBouncer: its checks log in
//! through each node's PgBouncer, so a node counts as up only when its PgBouncer accepts a
//! login **and** the database behind it reports the role. A node whose PostgreSQL is fine but
//! whose PgBouncer refuses logins (here: it cannot reach its database, as after a restart
//! with a wrong `[databases]` entry) gets no client: every read lands on the healthy replica,
//! every write on the primary; once the healthy replica's PgBouncer is gone as well, reads
//! fall back to the primary, as the example promises. The same example with its checks sent to PostgreSQL's port
//! instead (`check port PGPORT`, the pairing the example used to have) lets clients reach
//! that node and fail: the test shows both, so it cannot pass by accident.

mod common;

use std::time::Duration;

use common::{PgBouncer, Postgres, Rolelb, free_port, try_psql, wait_until};

/// Which PostgreSQL answered (its port) through `port`, or the error a client saw.
fn who(port: u16) -> Result<String, String> {
    try_psql(port, "SELECT current_setting('port')").map(|out| out.trim().to_string())
}

/// The ports of three PgBouncers.
fn ports_of(bouncers: &[PgBouncer; 3]) -> [u16; 3] {
    [bouncers[0].port(), bouncers[1].port(), bouncers[2].port()]
}

/// The example's text with its listeners and PgBouncers moved to the test's ports, and
/// each server line's check sent where `check` says.
fn example(writes: u16, reads: u16, bouncers: [u16; 3], check: &dyn Fn(usize) -> String) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/pgbouncer-roles.cfg");
    let text = std::fs::read_to_string(path).expect("reading conf/pgbouncer-roles.cfg");
    let mut text = text
        .replace("127.0.0.1:5001", &format!("127.0.0.1:{writes}"))
        .replace("127.0.0.1:5002", &format!("127.0.0.1:{reads}"));
    for (i, port) in bouncers.iter().enumerate() {
        let shipped = format!("127.0.0.1:{} check\n", 6432 + i);
        assert!(
            text.contains(&shipped),
            "the example's pg{} line no longer reads '{shipped}'",
            i + 1
        );
        text = text.replace(&shipped, &format!("127.0.0.1:{port} {}\n", check(i)));
    }
    text
}

#[test]
fn a_node_whose_pgbouncer_refuses_logins_gets_no_client() {
    let primary = Postgres::primary();
    primary.psql("CREATE ROLE rolelb_monitor LOGIN; GRANT pg_monitor TO rolelb_monitor;");
    let good = Postgres::replica_of(&primary);
    let broken = Postgres::replica_of(&primary);
    // The broken node's PostgreSQL is a healthy replica; its PgBouncer points at a port
    // where nothing listens, so every login through it fails.
    let dead = free_port();
    let monitor = ["rolelb_monitor"];
    let bouncers = [
        PgBouncer::with_users(primary.port(), &monitor),
        PgBouncer::with_users(good.port(), &monitor),
        PgBouncer::with_users(dead, &monitor),
    ];
    assert!(
        who(bouncers[2].port()).is_err(),
        "the broken PgBouncer must refuse logins"
    );
    assert_eq!(
        who(bouncers[1].port()).as_deref(),
        Ok(&*good.port().to_string())
    );
    let ports = ports_of(&bouncers);
    let (primary_port, good_port) = (primary.port().to_string(), good.port().to_string());

    // As shipped: the checks go through PgBouncer.
    let (writes, reads) = (free_port(), free_port());
    let shipped = Rolelb::start(&example(writes, reads, ports, &|_| "check".to_string()));
    assert!(
        wait_until(Duration::from_secs(30), || who(reads).as_deref()
            == Ok(&*good_port)
            && who(writes).as_deref() == Ok(&*primary_port)),
        "reads never reached the healthy replica, or writes the primary; rolelb:\n{}",
        shipped.stderr_text()
    );
    for _ in 0..12 {
        assert_eq!(
            who(reads).as_deref(),
            Ok(&*good_port),
            "a read went elsewhere than the healthy replica"
        );
        assert_eq!(who(writes).as_deref(), Ok(&*primary_port));
    }
    // The read fallback: with the healthy replica's PgBouncer gone too, no replica is
    // eligible and reads go to the primary.
    let [primary_bouncer, good_bouncer, broken_bouncer] = bouncers;
    drop(good_bouncer);
    assert!(
        wait_until(Duration::from_secs(30), || who(reads).as_deref()
            == Ok(&*primary_port)),
        "reads did not fall back to the primary once no replica was eligible; rolelb:\n{}",
        shipped.stderr_text()
    );
    drop(shipped);
    let bouncers = [
        primary_bouncer,
        PgBouncer::with_users(good.port(), &monitor),
        broken_bouncer,
    ];

    // The old pairing: role checks to PostgreSQL's port while traffic goes to PgBouncer.
    let pg_ports = [primary.port(), good.port(), broken.port()];
    let (writes, reads) = (free_port(), free_port());
    let old = Rolelb::start(&example(writes, reads, ports_of(&bouncers), &|i| {
        format!("check port {}", pg_ports[i])
    }));
    assert!(
        wait_until(Duration::from_secs(30), || who(reads).as_deref()
            == Ok(&*good_port)),
        "reads never reached the healthy replica with the old pairing; rolelb:\n{}",
        old.stderr_text()
    );
    let failed = (0..6).filter(|_| who(reads).is_err()).count();
    assert!(
        failed > 0,
        "with checks on PostgreSQL's port, clients should reach the node whose PgBouncer \
         refuses logins (else this test could not tell the pairings apart); rolelb:\n{}",
        old.stderr_text()
    );
}
