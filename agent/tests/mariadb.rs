//! MariaDB (which has no `super_read_only`): the agent reads the role from `read_only` and
//! the lag from `SHOW REPLICA STATUS`, logs in with a password over TCP, and reports wrong
//! credentials as `down` with the server's reason.

mod common;

use std::time::Duration;

use common::{Agent, Mariadb};

const EXTRA: &str = "inter: 300ms\ntimeout: 1s\nmax_lag: 10s\n";
const WAIT: Duration = Duration::from_secs(10);

/// The `database:` section for the agent's user on `db`.
fn database(db: &Mariadb, password: &str) -> String {
    format!(
        "database:\n  kind: mysql\n  host: 127.0.0.1\n  port: {}\n  user: agent\n  password: {password}\n",
        db.port()
    )
}

#[test]
fn mariadb_role_follows_read_only_and_replication_status() {
    let db = Mariadb::start();
    // Grants are enforced: a status-only user (MariaDB 10.5.9+ needs SLAVE MONITOR for
    // SHOW REPLICA STATUS), reached over TCP by address.
    db.sql("CREATE USER 'agent'@'127.0.0.1' IDENTIFIED BY 's3cret'; GRANT SLAVE MONITOR ON *.* TO 'agent'@'127.0.0.1'");
    let agent = Agent::start(&database(&db, "s3cret"), EXTRA);
    agent.wait_line(WAIT, |l| l == "up ready 100% #role=primary lag=0 lag_s=0\n");
    assert_eq!(agent.get("/primary").0, 200);
    assert_eq!(agent.get("/replica").0, 503);

    // read_only on and no replication configured: a replica whose lag is unknown, so it is
    // out of the read pool (max_lag is set) but still healthy.
    db.sql("SET GLOBAL read_only = ON");
    agent.wait_line(WAIT, |l| {
        l.starts_with("down ready 100% #role=replica lag=unknown lag_s=unknown reason=replication lag in seconds is unknown")
    });
    assert_eq!(agent.get("/primary").0, 503);
    assert_eq!(agent.get("/replica").0, 503);
    assert_eq!(agent.get("/health").0, 200);

    // Replication configured but not running: SHOW REPLICA STATUS now has a row (before, it
    // had none) whose Seconds_Behind_Master is NULL; the agent must read that row as unknown
    // lag, not as 0.
    db.sql("CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=1, MASTER_USER='x'");
    assert!(
        !db.sql("SHOW REPLICA STATUS").is_empty(),
        "CHANGE MASTER must leave a replication channel"
    );
    // Wait for two of the agent's polls after the change (each runs SHOW REPLICA STATUS
    // once): the first of them has then been published.
    let polls = || -> u64 {
        db.sql("SHOW GLOBAL STATUS LIKE 'Com_show_slave_status'")
            .split_whitespace()
            .last()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let seen = polls();
    assert!(
        common::wait_until(WAIT, || polls() >= seen + 2),
        "the agent did not poll after CHANGE MASTER ({} polls, want {})",
        polls(),
        seen + 2
    );
    let (code, body) = agent.get("/replica");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("\"role\":\"replica\""), "{body}");
    assert!(body.contains("lag in seconds is unknown"), "{body}");

    // Writable again: primary.
    db.sql("SET GLOBAL read_only = OFF");
    agent.wait_status("/primary", 200, WAIT);
}

#[test]
fn mariadb_wrong_password_is_down_with_reason() {
    let db = Mariadb::start();
    db.sql("CREATE USER 'agent'@'127.0.0.1' IDENTIFIED BY 's3cret'");
    let agent = Agent::start(&database(&db, "wrong"), EXTRA);
    agent.wait_line(WAIT, |l| l.starts_with("down ready"));
    let (code, body) = agent.get("/health");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("Access denied"), "{body}");
    println!("{body}");
}
