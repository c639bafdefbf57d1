//! Balancing algorithms against real TCP backends, each scenario run through rolelb and
//! through HAProxy 2.6 with the same config: the per-server counts over every full cycle must
//! agree, and for `static-rr`, `first` and backups, the exact sequence too; for `balance
//! source`, every client (IPv4, IPv6, IPv4-mapped) must reach the same server under both.

mod common;
mod lbcfg;

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use common::{Haproxy, NamedServer, Rolelb, free_port, open_named, who_answers};
use lbcfg::{Srv, listen, local};
use socket2::{Domain, Socket, Type};

/// Starts rolelb and HAProxy on the same config (different ports); returns both addresses.
struct Pair {
    _rolelb: Rolelb,
    _haproxy: Haproxy,
    rolelb_addr: SocketAddr,
    haproxy_addr: SocketAddr,
}

fn start_pair(balance: &str, servers: &[Srv<'_>]) -> Pair {
    let (rp, hp) = (free_port(), free_port());
    let rolelb = Rolelb::start(&listen(rp, balance, servers));
    let haproxy = Haproxy::start(&listen(hp, balance, servers));
    Pair {
        _rolelb: rolelb,
        _haproxy: haproxy,
        rolelb_addr: local(rp),
        haproxy_addr: local(hp),
    }
}

fn sequence(addr: SocketAddr, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| who_answers(addr).unwrap_or_else(|e| panic!("connection {i} via {addr}: {e}")))
        .collect()
}

fn counts(seq: &[String]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for s in seq {
        *m.entry(s.clone()).or_insert(0) += 1;
    }
    m
}

fn three_weighted() -> (NamedServer, NamedServer, NamedServer) {
    (
        NamedServer::start("a"),
        NamedServer::start("b"),
        NamedServer::start("c"),
    )
}

#[test]
fn roundrobin_follows_weights_exactly_in_every_cycle_like_haproxy() {
    let (a, b, c) = three_weighted();
    let servers = [
        Srv::of(&a, "weight 3"),
        Srv::of(&b, "weight 1"),
        Srv::of(&c, "weight 2"),
    ];
    let p = start_pair("balance roundrobin", &servers);
    let cycle = 6;
    let want: BTreeMap<String, usize> = [("a".into(), 3), ("b".into(), 1), ("c".into(), 2)]
        .into_iter()
        .collect();
    for (who, addr) in [("rolelb", p.rolelb_addr), ("haproxy", p.haproxy_addr)] {
        let seq = sequence(addr, cycle * 10);
        for (i, chunk) in seq.chunks(cycle).enumerate() {
            assert_eq!(counts(chunk), want, "{who}: cycle {i} of {seq:?}");
        }
    }
    // Smooth: the heavy server never takes a whole cycle's share in one run.
    let seq = sequence(p.rolelb_addr, cycle * 2);
    assert!(
        !seq.windows(3).any(|w| w.iter().all(|s| s == "a")),
        "roundrobin should interleave: {seq:?}"
    );
}

#[test]
fn static_rr_gives_the_same_sequence_as_haproxy() {
    let (a, b, c) = three_weighted();
    let servers = [
        Srv::of(&a, "weight 5"),
        Srv::of(&b, "weight 3"),
        Srv::of(&c, "weight 1"),
    ];
    let p = start_pair("balance static-rr", &servers);
    let ours = sequence(p.rolelb_addr, 27);
    let theirs = sequence(p.haproxy_addr, 27);
    assert_eq!(ours, theirs, "static-rr sequence differs from HAProxy's");
    assert_eq!(counts(&ours[..9]).get("a"), Some(&5));
}

#[test]
fn leastconn_sends_new_connections_to_the_least_loaded_server() {
    let (a, b, c) = three_weighted();
    let servers = [Srv::of(&a, ""), Srv::of(&b, ""), Srv::of(&c, "")];
    // Each proxy with its runtime socket, to wait until it has ended b's sessions itself.
    let dir = tempfile::tempdir().expect("temp dir");
    let (rsock, hsock) = (
        dir.path().join("rolelb.sock"),
        dir.path().join("haproxy.sock"),
    );
    let config = |port: u16, sock: &std::path::Path| {
        listen(port, "balance leastconn", &servers).replacen(
            "global\n",
            &format!("global\n    stats socket {} level admin\n", sock.display()),
            1,
        )
    };
    let (rp, hp) = (free_port(), free_port());
    let _rolelb = Rolelb::start(&config(rp, &rsock));
    let _haproxy = Haproxy::start(&config(hp, &hsock));
    for (who, addr, sock) in [
        ("rolelb", local(rp), &rsock),
        ("haproxy", local(hp), &hsock),
    ] {
        // Six held connections spread two per server.
        let mut held: Vec<(String, TcpStream)> =
            (0..6).map(|_| open_named(addr).expect("open")).collect();
        let spread = counts(&held.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>());
        assert_eq!(
            spread.values().copied().collect::<Vec<_>>(),
            vec![2, 2, 2],
            "{who}: {spread:?}"
        );
        // Close both of b's: the next two connections must go to b, once the proxy itself
        // has ended both sessions (its `scur`), not only b.
        held.retain(|(n, _)| n != "b");
        let b_current = || {
            common::stat_row(&common::stats_cli(sock, "show stat"), "lb", "b")
                .and_then(|row| row.get("scur").cloned())
        };
        assert!(
            common::wait_until(Duration::from_secs(5), || b.open() == 0
                && b_current().as_deref() == Some("0")),
            "{who}: b still holds {} sessions, the proxy counts {:?}",
            b.open(),
            b_current()
        );
        let next: Vec<(String, TcpStream)> =
            (0..2).map(|_| open_named(addr).expect("open")).collect();
        for (n, _) in &next {
            assert_eq!(n, "b", "{who}: least loaded server is b");
        }
    }
}

#[test]
fn first_fills_servers_in_order_up_to_maxconn_like_haproxy() {
    let (a, b, c) = three_weighted();
    let servers = [
        Srv::of(&a, "maxconn 2"),
        Srv::of(&b, "maxconn 3"),
        Srv::of(&c, "maxconn 10"),
    ];
    let p = start_pair("balance first", &servers);
    let mut results = Vec::new();
    for addr in [p.rolelb_addr, p.haproxy_addr] {
        let held: Vec<(String, TcpStream)> =
            (0..7).map(|_| open_named(addr).expect("open")).collect();
        results.push(held.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>());
    }
    assert_eq!(results[0], vec!["a", "a", "b", "b", "b", "c", "c"]);
    assert_eq!(results[0], results[1], "first: rolelb and HAProxy differ");
}

/// Connects from a chosen loopback source address (all of 127.0.0.0/8 is local on Linux).
fn who_answers_from(src: Ipv4Addr, addr: SocketAddr) -> String {
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    sock.bind(&SocketAddr::new(IpAddr::V4(src), 0).into())
        .expect("bind source");
    sock.connect_timeout(&addr.into(), Duration::from_secs(3))
        .expect("connect");
    let mut conn: TcpStream = sock.into();
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut name = Vec::new();
    let mut byte = [0u8; 1];
    while conn.read(&mut byte).expect("read name") == 1 && byte[0] != b'\n' {
        name.push(byte[0]);
    }
    let _ = conn.write_all(b"");
    String::from_utf8_lossy(&name).into_owned()
}

fn clients(n: u8) -> Vec<Ipv4Addr> {
    (1..=n).map(|i| Ipv4Addr::new(127, 0, 1, i)).collect()
}

#[test]
fn source_is_sticky_per_client_address() {
    let (a, b, c) = three_weighted();
    let servers = [Srv::of(&a, ""), Srv::of(&b, ""), Srv::of(&c, "")];
    for hash in ["map-based", "consistent"] {
        let port = free_port();
        let lb = Rolelb::start(&listen(
            port,
            &format!("balance source\nhash-type {hash}"),
            &servers,
        ));
        let first: Vec<String> = clients(60)
            .iter()
            .map(|&ip| who_answers_from(ip, local(port)))
            .collect();
        let again: Vec<String> = clients(60)
            .iter()
            .map(|&ip| who_answers_from(ip, local(port)))
            .collect();
        assert_eq!(first, again, "{hash}: a client moved between servers");
        let used: HashSet<&String> = first.iter().collect();
        assert_eq!(
            used.len(),
            3,
            "{hash}: 60 clients should reach all 3 servers: {first:?}"
        );
        drop(lb);
    }
}

#[test]
fn consistent_hashing_moves_about_one_in_n_clients_when_a_server_is_added() {
    let servers: Vec<NamedServer> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|n| NamedServer::start(n))
        .collect();
    let srv = |i: usize| Srv {
        name: servers[i].name(),
        addr: servers[i].addr(),
        opts: "",
    };
    let port = free_port();
    let four: Vec<Srv<'_>> = (0..4).map(srv).collect();
    let five: Vec<Srv<'_>> = (0..5).map(srv).collect();
    let balance = "balance source\nhash-type consistent";
    let lb = Rolelb::start(&listen(port, balance, &four));
    let ips = clients(200);
    let before: Vec<String> = ips
        .iter()
        .map(|&ip| who_answers_from(ip, local(port)))
        .collect();
    lb.rewrite_config(&listen(port, balance, &five));
    lb.reload();
    assert!(
        lb.wait_for_log("configuration reloaded", Duration::from_secs(5)),
        "{}",
        lb.stderr_text()
    );
    let after: Vec<String> = ips
        .iter()
        .map(|&ip| who_answers_from(ip, local(port)))
        .collect();
    let moved: Vec<usize> = (0..ips.len()).filter(|&i| before[i] != after[i]).collect();
    for &i in &moved {
        assert_eq!(after[i], "e", "client {} moved between old servers", ips[i]);
    }
    let share = moved.len() as f64 / ips.len() as f64;
    assert!(
        (0.08..=0.35).contains(&share),
        "moved share {share} (expected about 1/5)"
    );
}

#[test]
fn backup_servers_serve_only_when_no_active_server_is_available_like_haproxy() {
    let names = ["a", "b", "c", "d"];
    let s: Vec<NamedServer> = names.iter().map(|n| NamedServer::start(n)).collect();
    // Actives disabled (maintenance): only backups can serve; the first backup alone unless
    // `option allbackups`.
    let servers = |active_opts: &'static str| -> Vec<Srv<'_>> {
        vec![
            Srv {
                name: "a",
                addr: s[0].addr(),
                opts: active_opts,
            },
            Srv {
                name: "b",
                addr: s[1].addr(),
                opts: active_opts,
            },
            Srv {
                name: "c",
                addr: s[2].addr(),
                opts: "backup",
            },
            Srv {
                name: "d",
                addr: s[3].addr(),
                opts: "backup",
            },
        ]
    };
    let p = start_pair("balance roundrobin", &servers("disabled"));
    let ours = sequence(p.rolelb_addr, 6);
    assert_eq!(ours, sequence(p.haproxy_addr, 6));
    assert_eq!(ours, vec!["c"; 6]);
    drop(p);

    let p = start_pair(
        "balance roundrobin\noption allbackups",
        &servers("disabled"),
    );
    let ours = sequence(p.rolelb_addr, 6);
    assert_eq!(counts(&ours), counts(&sequence(p.haproxy_addr, 6)));
    assert_eq!(
        counts(&ours).len(),
        2,
        "allbackups uses every backup: {ours:?}"
    );
    drop(p);

    // With actives up, backups get nothing; re-enabling by reload moves traffic back.
    let port = free_port();
    let lb = Rolelb::start(&listen(port, "balance roundrobin", &servers("disabled")));
    assert_eq!(who_answers(local(port)).expect("conn"), "c");
    lb.rewrite_config(&listen(port, "balance roundrobin", &servers("")));
    lb.reload();
    assert!(lb.wait_for_log("configuration reloaded", Duration::from_secs(5)));
    let seq = sequence(local(port), 10);
    assert!(seq.iter().all(|n| n == "a" || n == "b"), "{seq:?}");
}

#[test]
fn uneven_backups_share_haproxys_map_under_static_rr_and_map_based_source() {
    let (a, b, c) = three_weighted();
    // Without `option allbackups` HAProxy's map-based algorithms fill their map over every
    // usable backup with the first one's weight as its size; the others use the first alone.
    for (wb, wc) in [(2, 5), (3, 5), (2, 2), (1, 3)] {
        let (ob, oc) = (format!("backup weight {wb}"), format!("backup weight {wc}"));
        let servers = [Srv::of(&a, "disabled"), Srv::of(&b, &ob), Srv::of(&c, &oc)];
        for balance in ["balance static-rr", "balance roundrobin", "balance first"] {
            let p = start_pair(balance, &servers);
            let ours = sequence(p.rolelb_addr, 12);
            assert_eq!(
                ours,
                sequence(p.haproxy_addr, 12),
                "{balance}, backups weights {wb} and {wc}"
            );
            if balance == "balance static-rr" && (wb, wc) == (2, 5) {
                assert_eq!(ours, vec!["c"; 12], "the heavier later backup takes it all");
            }
        }
        if wb > 1 {
            let pair = start_source_pair("map-based", &servers);
            assert_same_assignment(&pair, &format!("map-based, backups {wb} and {wc}"));
            // The backend's weight is the first backup's alone in both; `bck` counts both.
            let row = |side: &SourceSide| {
                let csv = common::stats_cli(&side.socket, "show stat");
                let row = common::stat_row(&csv, "lb", "BACKEND").expect("backend row");
                (row.get("weight").cloned(), row.get("bck").cloned())
            };
            let ours = row(&pair.sides[0]);
            assert_eq!(
                ours,
                row(&pair.sides[1]),
                "backend weight, backups {wb} {wc}"
            );
            assert_eq!(ours, (Some(wb.to_string()), Some("2".into())));
        }
    }
    let servers = [
        Srv::of(&a, "disabled"),
        Srv::of(&b, "backup weight 2"),
        Srv::of(&c, "backup weight 5"),
    ];
    let pair = start_source_pair("consistent", &servers);
    let all = assert_same_assignment(&pair, "consistent, backups 2 and 5");
    assert!(
        all.iter().all(|(_, s)| s == "b"),
        "consistent: the first backup"
    );
}

/// rolelb and HAProxy on one `balance source` config, each with a direct bind on 127.0.0.1,
/// one on `::1`, one on `::ffff:127.0.0.1` (IPv4 clients seen as IPv4-mapped IPv6 addresses)
/// and an `accept-proxy` bind (the PROXY header sets the client address, so clients can come
/// from anywhere in IPv4 and IPv6), and an admin `stats socket`.
struct SourceSide {
    name: &'static str,
    direct: u16,
    v6: u16,
    mapped: u16,
    proxied: u16,
    socket: std::path::PathBuf,
}

struct SourcePair {
    sides: [SourceSide; 2],
    _rolelb: Rolelb,
    _haproxy: Haproxy,
    _dir: tempfile::TempDir,
}

fn source_config(side: &SourceSide, hash_type: &str, servers: &[Srv<'_>]) -> String {
    let mut cfg = format!(
        "global\n    maxconn 4096\n    stats socket {} level admin\n\n\
         defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 30s\n    \
         timeout server 30s\n\n\
         listen lb\n    bind 127.0.0.1:{}\n    bind ::1:{}\n    bind ::ffff:127.0.0.1:{}\n    \
         bind 127.0.0.1:{} accept-proxy\n    balance source\n    hash-type {hash_type}\n",
        side.socket.display(),
        side.direct,
        side.v6,
        side.mapped,
        side.proxied,
    );
    for s in servers {
        cfg.push_str(&format!("    server {} {} {}\n", s.name, s.addr, s.opts));
    }
    cfg
}

fn start_source_pair(hash_type: &str, servers: &[Srv<'_>]) -> SourcePair {
    let dir = tempfile::tempdir().expect("temp dir");
    let side = |name: &'static str| SourceSide {
        name,
        direct: free_port(),
        v6: free_port(),
        mapped: free_port(),
        proxied: free_port(),
        socket: dir.path().join(format!("{name}.sock")),
    };
    let sides = [side("rolelb"), side("haproxy")];
    let rolelb = Rolelb::start(&source_config(&sides[0], hash_type, servers));
    let haproxy = Haproxy::start(&source_config(&sides[1], hash_type, servers));
    SourcePair {
        sides,
        _rolelb: rolelb,
        _haproxy: haproxy,
        _dir: dir,
    }
}

/// Reads the name line the server sends on connect.
fn read_name(conn: &mut TcpStream) -> String {
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut name = Vec::new();
    let mut byte = [0u8; 1];
    while conn.read(&mut byte).expect("read name") == 1 && byte[0] != b'\n' {
        name.push(byte[0]);
    }
    String::from_utf8_lossy(&name).into_owned()
}

/// Connects to the `accept-proxy` bind as client `src` (a PROXY v1 header) and returns the
/// name of the server that answers.
fn who_answers_as(src: IpAddr, port: u16) -> String {
    let mut conn = TcpStream::connect(local(port)).expect("connect");
    let header = match src {
        IpAddr::V4(_) => format!("PROXY TCP4 {src} 127.0.0.1 40000 {port}\r\n"),
        IpAddr::V6(_) => format!("PROXY TCP6 {src} ::1 40000 {port}\r\n"),
    };
    conn.write_all(header.as_bytes()).expect("PROXY header");
    read_name(&mut conn)
}

/// Connects from `::1` to `[::1]:port`.
fn who_answers_v6(port: u16) -> String {
    let mut conn = TcpStream::connect_timeout(
        &SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
        Duration::from_secs(3),
    )
    .expect("connect to ::1");
    read_name(&mut conn)
}

/// Client addresses spread over the whole IPv4 and IPv6 spaces (a fixed sequence).
fn spread_clients() -> Vec<IpAddr> {
    let mut out = Vec::new();
    for k in 0..200u32 {
        let x = k.wrapping_mul(2_654_435_761).wrapping_add(0x9e37_79b9);
        out.push(IpAddr::V4(Ipv4Addr::from(x)));
        let y = x.rotate_left(13) ^ 0x5bd1_e995;
        out.push(IpAddr::V6(std::net::Ipv6Addr::new(
            0x2001,
            0xdb8,
            (x >> 16) as u16,
            x as u16,
            (y >> 16) as u16,
            y as u16,
            k as u16,
            0x42,
        )));
    }
    out
}

/// The server every client reaches through `side`: 127.0.0.1..=254 directly and as mapped
/// IPv6 addresses, the spread clients through PROXY headers, then `::1`.
fn source_assignment(side: &SourceSide) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = (1..=254u8)
        .map(|x| {
            let ip = Ipv4Addr::new(127, 0, 0, x);
            (ip.to_string(), who_answers_from(ip, local(side.direct)))
        })
        .collect();
    for x in 1..=60u8 {
        let ip = Ipv4Addr::new(127, 0, 0, x);
        out.push((
            format!("mapped {ip}"),
            who_answers_from(ip, local(side.mapped)),
        ));
    }
    for ip in spread_clients() {
        out.push((format!("proxy {ip}"), who_answers_as(ip, side.proxied)));
    }
    out.push(("::1".into(), who_answers_v6(side.v6)));
    out
}

fn assert_same_assignment(pair: &SourcePair, what: &str) -> Vec<(String, String)> {
    let ours = source_assignment(&pair.sides[0]);
    let theirs = source_assignment(&pair.sides[1]);
    let differ: Vec<String> = ours
        .iter()
        .zip(&theirs)
        .filter(|(o, t)| o.1 != t.1)
        .map(|(o, t)| format!("{}: rolelb {} haproxy {}", o.0, o.1, t.1))
        .collect();
    assert!(
        differ.is_empty(),
        "{what}: {} of {} clients differ, e.g. {:?}",
        differ.len(),
        ours.len(),
        &differ[..differ.len().min(10)]
    );
    ours
}

/// Sends `disable server lb/NAME` to both and waits until both report it in maintenance.
fn disable_in_both(pair: &SourcePair, server: &str) {
    for side in &pair.sides {
        let reply = common::stats_cli(&side.socket, &format!("disable server lb/{server}"));
        assert!(reply.trim().is_empty(), "{}: {reply}", side.name);
        assert!(
            common::wait_until(Duration::from_secs(5), || {
                let csv = common::stats_cli(&side.socket, "show stat");
                common::stat_row(&csv, "lb", server)
                    .is_some_and(|row| row.get("status").is_some_and(|s| s == "MAINT"))
            }),
            "{}: {server} not in maintenance",
            side.name
        );
    }
}

#[test]
fn source_sends_every_client_to_haproxys_server_map_based_and_consistent_ipv4_and_ipv6() {
    let (a, b, c) = three_weighted();
    // A hash function changes nothing for `source` in HAProxy; `avalanche` is what counts.
    let cases = [
        ("map-based", [1, 1, 1]),
        ("map-based", [1, 2, 3]),
        ("consistent", [1, 1, 1]),
        ("consistent", [1, 2, 3]),
        ("map-based crc32", [1, 2, 3]),
        ("consistent djb2 avalanche", [1, 2, 3]),
    ];
    for (hash_type, weights) in cases {
        {
            let opts: Vec<String> = weights.iter().map(|w| format!("weight {w}")).collect();
            let servers = [
                Srv::of(&a, &opts[0]),
                Srv::of(&b, &opts[1]),
                Srv::of(&c, &opts[2]),
            ];
            let pair = start_source_pair(hash_type, &servers);
            let what = format!("{hash_type} weights {weights:?}");
            let all_up = assert_same_assignment(&pair, &what);
            let used: HashSet<&str> = all_up.iter().map(|(_, s)| s.as_str()).collect();
            assert_eq!(used.len(), 3, "{what}: every server gets clients");
            disable_in_both(&pair, "b");
            let b_down = assert_same_assignment(&pair, &format!("{what}, b disabled"));
            assert!(b_down.iter().all(|(_, s)| s != "b"), "{what}: b is down");
            let moved = all_up
                .iter()
                .zip(&b_down)
                .filter(|(x, y)| x.1 != y.1)
                .count();
            assert!(moved > 0, "{what}: b's clients moved");
        }
    }
}

#[test]
fn source_consistent_places_servers_by_their_id_like_haproxy() {
    let (a, b, c) = three_weighted();
    // Ids out of declaration order: a 3, b takes the first free id (2), c 1. The points of a
    // server sit where its id puts them, so the positions alone would send clients elsewhere.
    let servers = [
        Srv::of(&a, "id 3"),
        Srv::of(&b, "weight 2"),
        Srv::of(&c, "id 1"),
    ];
    let pair = start_source_pair("consistent", &servers);
    let all_up = assert_same_assignment(&pair, "ids 3, auto, 1");
    let used: HashSet<&str> = all_up.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(used.len(), 3, "every server gets clients");
    disable_in_both(&pair, "a");
    assert_same_assignment(&pair, "ids 3, auto, 1; a disabled");
    for side in &pair.sides {
        let csv = common::stats_cli(&side.socket, "show stat");
        let sids: Vec<String> = ["a", "b", "c"]
            .iter()
            .map(|n| {
                let row = common::stat_row(&csv, "lb", n).expect("server row");
                row.get("sid").cloned().unwrap_or_default()
            })
            .collect();
        assert_eq!(sids, ["3", "2", "1"], "{}: sid", side.name);
    }
}

#[test]
fn source_consistent_follows_haproxy_while_slowstart_ramps_a_server() {
    let (a, b, c) = three_weighted();
    let servers = [
        Srv::of(&a, "weight 2"),
        Srv::of(&b, "weight 2 slowstart 300s"),
        Srv::of(&c, "weight 2"),
    ];
    let pair = start_source_pair("consistent", &servers);
    let full = assert_same_assignment(&pair, "all up");
    disable_in_both(&pair, "b");
    for side in &pair.sides {
        let reply = common::stats_cli(&side.socket, "enable server lb/b");
        assert!(reply.trim().is_empty(), "{}: {reply}", side.name);
    }
    // For the first 18 s of its 300 s ramp b has 2 of its 32 points in both.
    let ramped = assert_same_assignment(&pair, "b ramping");
    let b_full = full.iter().filter(|(_, s)| s == "b").count();
    let b_ramped = ramped.iter().filter(|(_, s)| s == "b").count();
    assert!(
        b_ramped < b_full,
        "a ramping server has fewer points: {b_ramped} vs {b_full} clients"
    );
}

#[test]
fn hash_type_forms_that_would_hash_differently_are_refused_with_their_line() {
    let cfg = |hash_type: &str| {
        format!(
            "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 1s\n    \
             timeout server 1s\n\nlisten lb\n    bind 127.0.0.1:{}\n    balance source\n    \
             hash-type {hash_type}\n    server a 127.0.0.1:1\n",
            free_port()
        )
    };
    // HAProxy takes all of these; rolelb runs the ones it hashes the same way.
    for accepted in [
        "map-based",
        "map-based sdbm",
        "map-based wt6",
        "consistent",
        "consistent crc32 avalanche",
    ] {
        let (ok, text) = Rolelb::check(&cfg(accepted));
        assert!(ok && !text.contains("WARNING"), "{accepted}: {text}");
        assert!(
            Haproxy::check(&cfg(accepted)).0,
            "HAProxy refuses {accepted}"
        );
    }
    for refused in [
        "consistent sdbm",
        "consistent djb2",
        "map-based crc32 avalanche",
    ] {
        assert!(Haproxy::check(&cfg(refused)).0, "HAProxy refuses {refused}");
        let (ok, text) = Rolelb::check(&cfg(refused));
        assert!(!ok, "{refused}: {text}");
        assert!(
            text.contains(".cfg:10: ") && text.contains("avalanche"),
            "{refused}: {text}"
        );
    }
}
