//! Acceptance: rolelb in the seed deployment's place. A write listener (5001-style) forwards to
//! the primary's PgBouncer, a read listener (5002-style) round-robins over two replicas'
//! PgBouncers; real PostgreSQL 15, real PgBouncer, real `psql` and `pgbench`, ephemeral ports.

mod common;

use std::collections::HashSet;

use common::{PgBouncer, Postgres, Rolelb, free_port, pgbench, psql, try_psql};

/// A primary and two streaming replicas, a PgBouncer in front of each, and rolelb in front.
struct Stack {
    // Fields drop in order: rolelb first, then PgBouncers, then replicas before their primary.
    _rolelb: Rolelb,
    _bouncers: Vec<PgBouncer>,
    replicas: [Postgres; 2],
    primary: Postgres,
    write_port: u16,
    read_port: u16,
}

impl Stack {
    fn start() -> Stack {
        let primary = Postgres::primary();
        let replicas = [
            Postgres::replica_of(&primary),
            Postgres::replica_of(&primary),
        ];
        let bouncers = vec![
            PgBouncer::new(primary.port()),
            PgBouncer::new(replicas[0].port()),
            PgBouncer::new(replicas[1].port()),
        ];
        let (write_port, read_port) = (free_port(), free_port());
        let cfg = format!(
            "global\n    maxconn 500\n\
             defaults\n    mode tcp\n    timeout connect 3s\n    timeout client 5m\n    timeout server 5m\n\
             listen writes\n    bind 127.0.0.1:{write_port}\n\
             \x20   server primary 127.0.0.1:{}\n\
             listen reads\n    bind 127.0.0.1:{read_port}\n    balance roundrobin\n\
             \x20   server replica1 127.0.0.1:{}\n    server replica2 127.0.0.1:{}\n",
            bouncers[0].port(),
            bouncers[1].port(),
            bouncers[2].port()
        );
        let rolelb = Rolelb::start(&cfg);
        Stack {
            _rolelb: rolelb,
            _bouncers: bouncers,
            replicas,
            primary,
            write_port,
            read_port,
        }
    }

    fn wait_replicas_replayed(&self) {
        for replica in &self.replicas {
            replica.wait_replayed(&self.primary);
        }
    }
}

const WHO: &str = "SELECT pg_is_in_recovery(), current_setting('port')";

#[test]
fn psql_writes_land_on_the_primary_and_reads_alternate_between_replicas() {
    let stack = Stack::start();
    let primary_port = stack.primary.port();

    for _ in 0..3 {
        assert_eq!(
            psql(stack.write_port, WHO),
            format!("f|{primary_port}"),
            "every connection to the write listener must reach the primary"
        );
    }
    psql(
        stack.write_port,
        "CREATE TABLE e2e (v int); INSERT INTO e2e SELECT generate_series(1, 10)",
    );
    assert_eq!(stack.primary.psql("SELECT count(*) FROM e2e"), "10");

    stack.wait_replicas_replayed();
    let replica_ports: HashSet<String> = stack
        .replicas
        .iter()
        .map(|r| r.port().to_string())
        .collect();
    let mut served = Vec::new();
    for _ in 0..6 {
        let answer = psql(stack.read_port, WHO);
        let (in_recovery, port) = answer
            .split_once('|')
            .unwrap_or_else(|| panic!("unexpected psql answer {answer:?}"));
        assert_eq!(
            in_recovery, "t",
            "reads must reach a replica, got {answer:?}"
        );
        assert!(
            replica_ports.contains(port),
            "port {port} is not a replica's"
        );
        served.push(port.to_string());
    }
    for pair in served.windows(2) {
        assert_ne!(
            pair[0], pair[1],
            "roundrobin must alternate replicas: {served:?}"
        );
    }
    assert_eq!(
        served.iter().cloned().collect::<HashSet<_>>(),
        replica_ports
    );

    assert_eq!(psql(stack.read_port, "SELECT count(*) FROM e2e"), "10");
    let refused = try_psql(stack.read_port, "INSERT INTO e2e VALUES (11)");
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("read-only")),
        "a write through the read listener must hit a read-only replica: {refused:?}"
    );
}

#[test]
fn pgbench_runs_through_the_write_and_read_listeners() {
    let stack = Stack::start();

    pgbench(stack.write_port, &["-i", "-s", "1", "-q"]);
    let writes = pgbench(stack.write_port, &["-c", "4", "-j", "2", "-t", "50"]);
    assert!(
        writes.contains("number of transactions actually processed: 200/200"),
        "pgbench (read-write) through the write listener:\n{writes}"
    );
    assert!(
        writes.contains("number of failed transactions: 0 "),
        "pgbench (read-write) through the write listener:\n{writes}"
    );
    assert_eq!(
        stack
            .primary
            .psql("SELECT count(*) > 0 FROM pgbench_history"),
        "t",
        "pgbench's writes must be on the primary"
    );

    stack.wait_replicas_replayed();
    let reads = pgbench(
        stack.read_port,
        &["-S", "-n", "-c", "4", "-j", "2", "-t", "100"],
    );
    assert!(
        reads.contains("number of transactions actually processed: 400/400"),
        "pgbench (select-only) through the read listener:\n{reads}"
    );
    assert!(
        reads.contains("number of failed transactions: 0 "),
        "pgbench (select-only) through the read listener:\n{reads}"
    );
}
