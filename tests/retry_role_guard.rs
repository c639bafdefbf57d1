//! The single-writer guard holds across a connect retry. A write listener (`role primary`)
//! whose connect to the primary is refused waits HAProxy's turn-around (`min(timeout connect,
//! 1s)`) before it tries that server again; when the server stopped being the primary during
//! the pause, the retry goes through the balancer to the new primary, never back to the old
//! one — even when the old one listens again by then (a restarted database that comes back
//! writable is exactly the node a write must not reach). Real etcd (the role moves with its
//! `leader` key), real TCP backends ([`NamedServer`]).

mod common;

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use common::{Etcd, NamedServer, Rolelb, free_port, open_named};

const PREFIX: &str = "/rolelb-test/retry-guard";

fn member(port: u16, role: &str) -> String {
    format!(r#"{{"host": "127.0.0.1", "port": {port}, "role": "{role}"}}"#)
}

#[test]
fn a_retry_after_the_turn_around_never_goes_to_a_server_that_lost_the_primary_role() {
    let etcd = Etcd::start();
    // Nothing listens on the old primary's port yet: rolelb's connects there are refused.
    let old_port = free_port();
    let new = NamedServer::start("new");
    etcd.put(
        &format!("{PREFIX}/members/old"),
        &member(old_port, "primary"),
    );
    etcd.put(
        &format!("{PREFIX}/members/new"),
        &member(new.port(), "replica"),
    );
    etcd.put(&format!("{PREFIX}/leader"), "old");
    let write = free_port();
    let lb = Rolelb::start(&format!(
        "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 30s\n    timeout server 30s\n\
         \x20   retries 3\n\
         etcd main\n    endpoints {}\n    dial-timeout 1s\n\
         listen writes\n    bind 127.0.0.1:{write}\n    role primary\n    role-source etcd\n\
         \x20   discover etcd main path {PREFIX}\n",
        etcd.endpoint()
    ));
    assert!(
        lb.wait_for_log("etcd lists 2 members", Duration::from_secs(10)),
        "rolelb did not list the members\n{}",
        lb.stderr_text()
    );

    let mark = lb.log_mark();
    let client = thread::spawn(move || open_named(SocketAddr::from(([127, 0, 0, 1], write))));
    assert!(
        lb.wait_for_log_since(mark, "server=old", Duration::from_secs(5)),
        "rolelb never tried the old primary\n{}",
        lb.stderr_text()
    );
    // During the turn-around: etcd names the new primary, then the old one listens again.
    let refused = Instant::now();
    etcd.put(
        &format!("{PREFIX}/members/old"),
        &member(old_port, "replica"),
    );
    etcd.put(
        &format!("{PREFIX}/members/new"),
        &member(new.port(), "primary"),
    );
    etcd.put(&format!("{PREFIX}/leader"), "new");
    assert!(
        lb.wait_for_log_since(mark, "etcd no longer names old", Duration::from_secs(5)),
        "rolelb did not see etcd move the primary\n{}",
        lb.stderr_text()
    );
    let old = NamedServer::start_on("old", SocketAddr::from(([127, 0, 0, 1], old_port)));
    eprintln!(
        "etcd moved and the old primary listens {:?} after the refusal was logged",
        refused.elapsed()
    );

    let (name, _conn) = client
        .join()
        .expect("the client thread panicked")
        .unwrap_or_else(|e| panic!("the write was not served: {e}\n{}", lb.stderr_text()));
    assert_eq!(
        name,
        "new",
        "a retried connect went back to the server that had lost the primary role \
         (old accepted {})\n{}",
        old.accepted(),
        lb.stderr_text()
    );
    assert_eq!(old.accepted(), 0, "the old primary got a connection");
}
