//! Kernel splicing (`option splice-request`, `splice-response`, `splice-auto`, `maxpipes`,
//! `nosplice`) side by side with HAProxy 2.6: the same config carries a multi-megabyte echo
//! intact through both, `show stat` counts the same bytes in and out, and rolelb's
//! `haproxy_process_spliced_bytes_out_total` shows the bytes went through pipes (none with
//! `nosplice`).

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use common::{
    Haproxy, NamedServer, Rolelb, free_port, http_request, open_named, stat_row, stats_cli,
    wait_until,
};

/// Sends `data` through the proxy at `addr` to the echo server and reads it back.
fn echo_through(addr: SocketAddr, data: &[u8]) -> Vec<u8> {
    let (name, conn) = open_named(addr).expect("connect through the proxy");
    assert_eq!(name, "E");
    let mut writer = conn.try_clone().expect("clone");
    let sent = data.to_vec();
    let send = std::thread::spawn(move || writer.write_all(&sent).expect("send"));
    let mut back = vec![0u8; data.len()];
    let mut reader = conn;
    reader.read_exact(&mut back).expect("echo");
    send.join().expect("sender");
    back
}

/// What one proxy showed for one echo: `bin`/`bout` of the server row, and (rolelb) the
/// bytes it spliced.
#[derive(Debug, PartialEq)]
struct Seen {
    bin: u64,
    bout: u64,
    spliced: Option<u64>,
}

fn run(which: &str, global: &str, options: &str, data: &[u8], echo: SocketAddr) -> Seen {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("stats.sock");
    let (port, admin) = (free_port(), free_port());
    let admin_bind = match which {
        "rolelb" => format!("    admin bind 127.0.0.1:{admin}\n"),
        _ => String::new(),
    };
    let cfg = format!(
        "global\n    stats socket {} level admin\n{admin_bind}{global}\
         defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 30s\n    timeout server 30s\n\
         listen l\n    bind 127.0.0.1:{port}\n{options}    server s {echo}\n",
        sock.display()
    );
    let _proxy: Box<dyn std::any::Any> = match which {
        "rolelb" => Box::new(Rolelb::start(&cfg)),
        _ => Box::new(Haproxy::start(&cfg)),
    };
    assert!(
        wait_until(Duration::from_secs(10), || sock.exists()
            && stats_cli(&sock, "show stat").contains("l,s")),
        "{which} did not start"
    );
    let back = echo_through(SocketAddr::from(([127, 0, 0, 1], port)), data);
    assert!(back == data, "{which}: the echo came back altered");
    let row = || stat_row(&stats_cli(&sock, "show stat"), "l", "s").expect("server row");
    let num = |r: &std::collections::HashMap<String, String>, k: &str| -> u64 {
        r.get(k).and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    // The session ends once the client's socket is dropped; counters are read after.
    assert!(
        wait_until(Duration::from_secs(10), || num(&row(), "scur") == 0),
        "{which}: the session did not end"
    );
    let r = row();
    let spliced = (which == "rolelb").then(|| {
        let (_, _, text) = http_request(
            SocketAddr::from(([127, 0, 0, 1], admin)),
            "GET",
            "/metrics",
            &[],
            "",
            Duration::from_secs(10),
        )
        .expect("metrics");
        text.lines()
            .find_map(|l| l.strip_prefix("haproxy_process_spliced_bytes_out_total "))
            .and_then(|v| v.trim().parse().ok())
            .expect("spliced_bytes_out_total in /metrics")
    });
    Seen {
        bin: num(&r, "bin"),
        bout: num(&r, "bout"),
        spliced,
    }
}

#[test]
fn splice_options_carry_bytes_intact_and_counted_as_in_haproxy() {
    let echo = NamedServer::start("E");
    let data: Vec<u8> = (0..4_000_000u32).map(|i| (i % 251) as u8).collect();
    let both = "    option splice-request\n    option splice-response\n";
    let auto = "    option splice-auto\n";
    for (global, options, spliced) in [
        ("    maxpipes 8\n", both, true),
        ("    maxpipes 8\n", auto, true),
        ("    nosplice\n", both, false),
    ] {
        let haproxy = run("haproxy", global, options, &data, echo.addr());
        let rolelb = run("rolelb", global, options, &data, echo.addr());
        let what = format!("{global}{options}");
        assert_eq!(
            (rolelb.bin, rolelb.bout),
            (haproxy.bin, haproxy.bout),
            "{what}"
        );
        assert_eq!(rolelb.bin, data.len() as u64, "{what}");
        let through_pipes = rolelb.spliced.expect("rolelb's metric");
        if spliced {
            // The forced options splice every byte of both directions (8 MB); splice-auto
            // at least the bulk of the upload once it streams fast.
            assert!(
                through_pipes >= data.len() as u64 / 2,
                "{what}: {through_pipes}"
            );
        } else {
            assert_eq!(through_pipes, 0, "{what}");
        }
    }
}
