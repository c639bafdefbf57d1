//! `balance leastconn` with unequal weights, held sessions, sessions ended in a chosen order,
//! a `weight 0` server and a runtime `set weight`: rolelb and HAProxy 2.6 run the same config
//! and the same script of opens and closes, and every new connection must reach the same
//! server under both (HAProxy orders servers by a truncated `(sessions + 1) * 4096 / eweight`
//! key, equal keys in the order they were last moved).

mod common;
mod lbcfg;

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use common::{
    Haproxy, NamedServer, Rolelb, free_port, open_named, stat_row, stats_cli, wait_until,
};
use lbcfg::{Srv, listen, local};

/// One step of the script.
enum Step {
    /// Open this many connections and keep them.
    Open(usize),
    /// Close the held connection opened at this position (0-based, over the whole run).
    Close(usize),
    /// A runtime command on the stats socket.
    Cli(&'static str),
}

/// Runs `steps` against the balancer at `addr`; returns where each opened connection went,
/// with the commands' answers.
fn transcript(who: &str, addr: SocketAddr, sock: &Path, steps: &[Step]) -> Vec<String> {
    let mut held: Vec<Option<(String, TcpStream)>> = Vec::new();
    let mut out = Vec::new();
    for step in steps {
        match step {
            Step::Open(n) => {
                for _ in 0..*n {
                    let (name, conn) =
                        open_named(addr).unwrap_or_else(|e| panic!("{who}: open: {e}"));
                    out.push(name.clone());
                    held.push(Some((name, conn)));
                }
            }
            Step::Close(i) => {
                let (name, conn) = held[*i]
                    .take()
                    .unwrap_or_else(|| panic!("{who}: connection {i} closed twice"));
                let left = held.iter().flatten().filter(|(n, _)| *n == name).count();
                drop(conn);
                // The order sessions end in is the order the balancer moves servers in: wait
                // until the balancer itself has ended this one.
                let scur = || {
                    stat_row(&stats_cli(sock, "show stat"), "lb", &name)
                        .and_then(|r| r.get("scur").cloned())
                };
                assert!(
                    wait_until(Duration::from_secs(5), || scur() == Some(left.to_string())),
                    "{who}: {name} still counts {:?} sessions, want {left}",
                    scur()
                );
                out.push(format!("closed {i} on {name}"));
            }
            Step::Cli(cmd) => {
                let answer = stats_cli(sock, cmd);
                out.push(format!("{cmd} -> {}", answer.trim()));
            }
        }
    }
    out
}

#[test]
fn weighted_leastconn_picks_in_haproxys_order() {
    let servers: Vec<NamedServer> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|n| NamedServer::start(n))
        .collect();
    let srv = [
        Srv::of(&servers[0], "weight 200"),
        Srv::of(&servers[1], "weight 100"),
        Srv::of(&servers[2], "weight 100"),
        Srv::of(&servers[3], "weight 0"),
        Srv::of(&servers[4], "weight 7"),
    ];
    let dir = tempfile::tempdir().expect("temp dir");
    let config = |port: u16, sock: &Path| {
        listen(port, "balance leastconn", &srv).replacen(
            "global\n",
            &format!("global\n    stats socket {} level admin\n", sock.display()),
            1,
        )
    };
    let steps = [
        Step::Open(12),
        // End sessions on servers of equal keys in an order that is not declaration order.
        Step::Close(2),
        Step::Close(0),
        Step::Close(1),
        Step::Open(5),
        Step::Cli("set weight lb/c 50"),
        Step::Open(4),
        Step::Close(3),
        Step::Close(5),
        Step::Close(4),
        Step::Cli("set weight lb/e 100"),
        Step::Open(6),
        Step::Cli("set weight lb/c 50"),
        Step::Open(3),
    ];
    let mut runs = Vec::new();
    for who in ["rolelb", "haproxy"] {
        let sock = dir.path().join(format!("{who}.sock"));
        let port = free_port();
        let cfg = config(port, &sock);
        let (_rolelb, _haproxy) = if who == "rolelb" {
            (Some(Rolelb::start(&cfg)), None)
        } else {
            (None, Some(Haproxy::start(&cfg)))
        };
        assert!(
            wait_until(Duration::from_secs(5), || sock.exists()),
            "{who}: no stats socket"
        );
        runs.push(transcript(who, local(port), &sock, &steps));
    }
    assert_eq!(
        runs[0], runs[1],
        "leastconn: rolelb (left) and HAProxy 2.6 (right) sent connections to different servers"
    );
    assert!(
        !runs[0].iter().any(|s| s == "d"),
        "the weight 0 server took a connection: {:?}",
        runs[0]
    );
}
