//! Stock HAProxy 2.6 in front of a real PostgreSQL primary + replica, each node with its own
//! rolelb-agent: agent-check alone, and the Patroni template, route writes to the primary and
//! reads to the replica and follow a promotion; `rolelb-agent state drain` drains a node in
//! HAProxy within one agent interval, `ready` undoes it, and the state survives a restart.
//!
//! NamedServers stand in for the nodes' traffic ports, so a test sees which node served it.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    Agent, Cluster, Haproxy, NamedServer, Postgres, addr, free_port, haproxy_status, pg_database,
    refusal_time, wait_routed, wait_until, who_answers,
};

/// Agent poll interval, HAProxy check interval: both 300 ms.
const INTER: Duration = Duration::from_millis(300);

/// The global and defaults sections, with a stats socket at `sock`.
fn haproxy_head(sock: &Path, writes: u16, reads: u16) -> String {
    format!(
        "global\n    stats socket {} level admin\n\
         defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 5s\n    timeout server 5s\n    timeout check 1s\n\
         frontend writes\n    bind 127.0.0.1:{writes}\n    default_backend be_writes\n\
         frontend reads\n    bind 127.0.0.1:{reads}\n    default_backend be_reads\n",
        sock.display()
    )
}

/// Routes via HAProxy until the promotion, then checks the new routes.
fn routes_and_follows_promotion(mut c: Cluster, cfg: &str, writes: u16, reads: u16) {
    let _haproxy = Haproxy::start(cfg);
    let (w, r) = (addr(writes), addr(reads));
    wait_routed(w, "node1", Duration::from_secs(10));
    wait_routed(r, "node2", Duration::from_secs(10));
    for _ in 0..20 {
        assert_eq!(who_answers(w).unwrap(), "node1");
        assert_eq!(who_answers(r).unwrap(), "node2");
    }
    let promoted = c.fail_over();
    let took = wait_routed(w, "node2", Duration::from_secs(10));
    println!("writes moved to the promoted node {took:?} after pg_promote returned");
    let since = promoted.elapsed();
    assert!(
        since < INTER * 2 + Duration::from_secs(2),
        "writes moved after {since:?}"
    );
    // No replica is left: reads are refused (closed at once, not held) rather than sent to
    // the primary.
    assert!(
        wait_until(Duration::from_secs(5), || refusal_time(r).is_ok()),
        "reads still served after the only replica was promoted"
    );
}

#[test]
fn haproxy_agent_check_routes_writes_to_primary_and_follows_promotion() {
    // agent_send_wait: the agent waits for HAProxy's agent-send line naming the role.
    let c = Cluster::start("inter: 300ms\ntimeout: 1s\nagent_send_wait: 500ms\n");
    let dir = tempfile::tempdir().unwrap();
    let (writes, reads) = (free_port(), free_port());
    let mut cfg = haproxy_head(&dir.path().join("stats.sock"), writes, reads);
    for (backend, send) in [("be_writes", "primary"), ("be_reads", "replica")] {
        cfg += &format!(
            "backend {backend}\n    default-server check inter 300ms agent-check agent-inter 300ms agent-send \"{send}\\n\" on-marked-down shutdown-sessions\n"
        );
        for (i, node) in c.nodes.iter().enumerate() {
            cfg += &format!(
                "    server {} {} agent-port {}\n",
                node.name(),
                node.addr(),
                c.agents[i].agent.port()
            );
        }
    }
    let (ok, out) = Haproxy::check(&cfg);
    assert!(ok, "haproxy -c: {out}\n{cfg}");
    routes_and_follows_promotion(c, &cfg, writes, reads);
}

#[test]
fn haproxy_patroni_template_routes_writes_to_primary_and_follows_promotion() {
    let c = Cluster::start("inter: 300ms\ntimeout: 1s\n");
    let dir = tempfile::tempdir().unwrap();
    let (writes, reads) = (free_port(), free_port());
    let mut cfg = haproxy_head(&dir.path().join("stats.sock"), writes, reads);
    for (backend, path) in [("be_writes", "/primary"), ("be_reads", "/replica")] {
        cfg += &format!(
            "backend {backend}\n    option httpchk OPTIONS {path}\n    http-check expect status 200\n    default-server inter 300ms fall 1 rise 1 on-marked-down shutdown-sessions\n"
        );
        for (i, node) in c.nodes.iter().enumerate() {
            cfg += &format!(
                "    server {} {} check port {}\n",
                node.name(),
                node.addr(),
                c.agents[i].http.port()
            );
        }
    }
    let (ok, out) = Haproxy::check(&cfg);
    assert!(ok, "haproxy -c: {out}\n{cfg}");
    routes_and_follows_promotion(c, &cfg, writes, reads);
}

#[test]
fn state_drain_drains_the_node_in_haproxy_and_survives_restart() {
    // Two agents on one primary: both nodes are up, role-neutral lines.
    let pg = Postgres::primary();
    let extra = "inter: 300ms\ntimeout: 1s\n";
    let a1 = Agent::start(&pg_database(pg.port(), "postgres"), extra);
    let mut a2 = Agent::start(&pg_database(pg.port(), "postgres"), extra);
    let n1 = NamedServer::start("node1");
    let n2 = NamedServer::start("node2");
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("stats.sock");
    let port = free_port();
    let cfg = format!(
        "global\n    stats socket {} level admin\n\
         defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 5s\n    timeout server 5s\n    timeout check 1s\n\
         listen any\n    bind 127.0.0.1:{port}\n    balance roundrobin\n\
         \x20   default-server check inter 300ms agent-check agent-inter 300ms\n\
         \x20   server node1 {} agent-port {}\n    server node2 {} agent-port {}\n",
        sock.display(),
        n1.addr(),
        a1.agent.port(),
        n2.addr(),
        a2.agent.port()
    );
    let _haproxy = Haproxy::start(&cfg);
    let status = |s: &str| haproxy_status(&sock, "any", s);
    // `want` is a prefix: HAProxy says e.g. "DRAIN (agent)" and "MAINT (via agent)".
    let wait_status = |s: &str, want: &str| {
        let start = Instant::now();
        let mut last = String::new();
        let ok = wait_until(Duration::from_secs(10), || {
            last = status(s);
            last.starts_with(want)
        });
        assert!(ok, "{s} never {want}; last {last:?}");
        start.elapsed()
    };
    a1.wait_line(Duration::from_secs(10), |l| l.starts_with("up ready"));
    a2.wait_line(Duration::from_secs(10), |l| l.starts_with("up ready"));
    wait_status("node1", "UP");
    wait_status("node2", "UP");
    let served = |times| {
        (0..times)
            .map(|_| who_answers(addr(port)).unwrap())
            .collect::<Vec<_>>()
    };
    assert!(served(6).contains(&"node2".to_string()));

    a2.set_state("drain");
    let took = wait_status("node2", "DRAIN");
    assert_eq!(status("node2"), "DRAIN (agent)");
    println!("drain reached HAProxy in {took:?} (agent inter and agent-inter are {INTER:?})");
    // Two polls (the agent's, then HAProxy's agent-check), with a margin for a loaded machine.
    assert!(
        took < INTER * 2 + Duration::from_secs(2),
        "drain took {took:?}"
    );
    assert!(served(10).iter().all(|n| n == "node1"));
    assert!(a2.line().starts_with("up drain 100%"));
    assert_eq!(a2.get("/read-only").0, 503);

    a2.set_state("ready");
    let took = wait_status("node2", "UP");
    println!("ready reached HAProxy in {took:?}");
    assert!(served(6).contains(&"node2".to_string()));

    // The admin state survives an agent restart.
    a2.set_state("maint");
    wait_status("node2", "MAINT");
    println!("after state maint HAProxy says {:?}", status("node2"));
    a2.restart();
    // The first answer after a restart already comes from a poll: never a spurious `down`.
    let line = a2.line();
    assert!(line.starts_with("up maint 100%"), "{line}");
    assert!(served(10).iter().all(|n| n == "node1"));
    a2.set_state("ready");
    wait_status("node2", "UP");
}
