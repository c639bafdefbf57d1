//! rolelb with `role-check agent` in front of a real PostgreSQL primary + replica, each node
//! with its own rolelb-agent: the `#role=` word routes writes to the primary and reads to the
//! replica, a promotion moves writes, and `rolelb-agent state drain` drains the node in rolelb
//! within one agent interval (`ready` undoes it) — the same scenarios `haproxy.rs` runs
//! against stock HAProxy.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{
    Cluster, Rolelb, addr, agent_bin, free_port, refusal_time, wait_routed, wait_until, who_answers,
};

/// This build's rolelb, next to the agent binary in the same target directory.
fn rolelb_bin() -> PathBuf {
    agent_bin().with_file_name("rolelb")
}

fn rolelb_config(c: &Cluster, writes: u16, reads: u16) -> String {
    let mut cfg = format!(
        "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 5s\n    timeout server 5s\n    \
         timeout check 1s\n\nlisten writes\n    bind 127.0.0.1:{writes}\n    role primary\n    role-check agent\n"
    );
    let servers = |cfg: &mut String| {
        for (i, node) in c.nodes.iter().enumerate() {
            cfg.push_str(&format!(
                "    server {} {} agent-check agent-port {} agent-inter 300ms fall 2 rise 1\n",
                node.name(),
                node.addr(),
                c.agents[i].agent.port()
            ));
        }
    };
    servers(&mut cfg);
    cfg.push_str(&format!(
        "\nlisten reads\n    bind 127.0.0.1:{reads}\n    role replica\n    role-check agent\n"
    ));
    servers(&mut cfg);
    cfg
}

#[test]
fn rolelb_role_check_agent_routes_by_role_and_follows_promotion() {
    let mut c = Cluster::start("inter: 300ms\ntimeout: 1s\n");
    let (writes, reads) = (free_port(), free_port());
    let lb = Rolelb::start_bin(&rolelb_bin(), &rolelb_config(&c, writes, reads));
    let (w, r) = (addr(writes), addr(reads));
    wait_routed(w, "node1", Duration::from_secs(10));
    wait_routed(r, "node2", Duration::from_secs(10));
    for _ in 0..20 {
        assert_eq!(who_answers(w).expect("write listener"), "node1");
        assert_eq!(who_answers(r).expect("read listener"), "node2");
    }
    let promoted = c.fail_over();
    let took = wait_routed(w, "node2", Duration::from_secs(10));
    println!("rolelb: writes moved to the promoted node {took:?} after pg_promote returned");
    assert!(
        promoted.elapsed() < Duration::from_secs(3),
        "writes moved after {:?}",
        promoted.elapsed()
    );
    // The old primary is gone and the replica promoted: no replica is left for reads.
    assert!(
        wait_until(Duration::from_secs(5), || refusal_time(r).is_ok()),
        "reads still served with no replica left"
    );
    assert!(
        lb.stderr_text()
            .contains("writes/node2 reports role primary"),
        "{}",
        lb.stderr_text()
    );
}

#[test]
fn rolelb_agent_state_drain_drains_the_node_in_rolelb_within_two_polls() {
    let c = Cluster::start("inter: 300ms\ntimeout: 1s\n");
    let (writes, reads) = (free_port(), free_port());
    let _lb = Rolelb::start_bin(&rolelb_bin(), &rolelb_config(&c, writes, reads));
    let w = addr(writes);
    wait_routed(w, "node1", Duration::from_secs(10));
    c.agents[0].set_state("drain");
    // One agent poll (300 ms) + one rolelb agent check (300 ms), with slack for a busy machine.
    let drained = std::time::Instant::now();
    assert!(
        wait_until(Duration::from_secs(3), || refusal_time(w).is_ok()),
        "drained primary still takes new writes"
    );
    println!("rolelb: drain took effect after {:?}", drained.elapsed());
    // Two polls of 300 ms each, with a margin for a loaded 2-core machine.
    assert!(
        drained.elapsed() < Duration::from_secs(3),
        "{:?}",
        drained.elapsed()
    );
    c.agents[0].set_state("ready");
    wait_routed(w, "node1", Duration::from_secs(3));
}
