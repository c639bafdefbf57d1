//! Kernel splicing (`option splice-request`, `splice-response`, `splice-auto`, `maxpipes`,
//! `nosplice`, `tune.pipesize`) side by side with HAProxy 2.6: the same config carries a
//! multi-megabyte echo intact through both, `show stat` counts the same bytes in and out,
//! rolelb's `haproxy_process_spliced_bytes_out_total` shows the bytes went through pipes (none
//! with `nosplice`), and both size their pipes alike.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use common::{
    Haproxy, NamedServer, Proc, Rolelb, fds_of, free_port, http_request, open_named, stat_row,
    stats_cli, wait_until,
};
use nix::sys::signal::Signal;

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

/// The sizes of the pipes process `pid` holds, one per descriptor (both ends of a pipe report
/// its size), asked of the kernel with `F_GETPIPE_SZ`.
fn pipe_sizes(pid: u32) -> Vec<i32> {
    use std::os::fd::AsRawFd;
    fds_of(pid, |target| target.starts_with("pipe:"))
        .iter()
        .map(|fd| {
            // SAFETY: fcntl on a descriptor owned here.
            let size = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETPIPE_SZ) };
            assert!(
                size > 0,
                "F_GETPIPE_SZ: {}",
                std::io::Error::last_os_error()
            );
            size
        })
        .collect()
}

/// The config of the `tune.pipesize` tests: both directions spliced, `global_lines` added.
fn pipesize_config(global_lines: &str, port: u16, echo: SocketAddr) -> String {
    format!(
        "global\n    maxpipes 8\n{global_lines}\
         defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 30s\n    timeout server 30s\n\
         listen l\n    bind 127.0.0.1:{port}\n    option splice-request\n    option splice-response\n\
             server s {echo}\n"
    )
}

/// `tune.pipesize` sizes the pipes as HAProxy sizes them, rounded up by the kernel to a power
/// of two pages (100,000 → 131,072), and a reload that changes it makes new pipes of the new
/// size. Without it, the kernel's default (64 KiB).
#[test]
fn tune_pipesize_sizes_the_pipes_as_haproxy_does() {
    let echo = NamedServer::start("E");
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    let page = 4096;
    for (line, expected) in [
        ("", 65536),
        ("    tune.pipesize 262144\n", 262144),
        ("    tune.pipesize 100000\n", 131072),
    ] {
        for which in ["haproxy", "rolelb"] {
            let port = free_port();
            let cfg = pipesize_config(line, port, echo.addr());
            let (proxy, pid): (Box<dyn std::any::Any>, u32) = match which {
                "rolelb" => {
                    let r = Rolelb::start(&cfg);
                    let pid = r.pid();
                    (Box::new(r), pid)
                }
                _ => {
                    let h = Haproxy::start(&cfg);
                    let pid = h.pid();
                    (Box::new(h), pid)
                }
            };
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            assert!(
                wait_until(Duration::from_secs(10), || std::net::TcpStream::connect(
                    addr
                )
                .is_ok()),
                "{which} did not listen"
            );
            let back = echo_through(addr, &data);
            assert!(back == data, "{which} {line:?}: the echo came back altered");
            let sizes = pipe_sizes(pid);
            assert!(
                sizes.contains(&expected),
                "{which} {line:?}: no pipe of {expected} bytes among {sizes:?}"
            );
            assert!(
                sizes.iter().all(|&s| s == expected || s == 16 * page),
                "{which} {line:?}: pipes of other sizes: {sizes:?}"
            );
            drop(proxy);
        }
    }
    // A reload that takes tune.pipesize away: the next spliced session gets a pipe of the
    // kernel's default size, and the thread closes its pooled pipes of the old size (one
    // thread, so that the session runs where the old pipes were pooled).
    let port = free_port();
    let cfg = |line: &str| pipesize_config(&format!("    nbthread 1\n{line}"), port, echo.addr());
    let lb = Rolelb::start(&cfg("    tune.pipesize 262144\n"));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(echo_through(addr, &data) == data);
    assert!(pipe_sizes(lb.pid()).contains(&262144));
    lb.rewrite_config(&cfg(""));
    lb.reload();
    assert!(
        lb.wait_for_log("configuration reloaded", Duration::from_secs(5)),
        "{}",
        lb.stderr_text()
    );
    assert!(echo_through(addr, &data) == data);
    let sizes = pipe_sizes(lb.pid());
    assert!(
        sizes.contains(&(16 * page)) && !sizes.contains(&262144),
        "after the reload: {sizes:?}"
    );
}

/// Unprivileged, rolelb may not size a pipe above `/proc/sys/fs/pipe-max-size` (1 MiB by
/// default): it splices with the kernel's default size, every byte arrives, and the refusal
/// is logged once, not per pipe (HAProxy ignores it silently).
#[test]
fn a_pipe_size_the_kernel_refuses_is_logged_once_and_splicing_goes_on() {
    use std::os::unix::fs::PermissionsExt;
    let echo = NamedServer::start("E");
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod the temp dir");
    let (cfg, log) = (dir.path().join("lb.cfg"), dir.path().join("stderr.log"));
    let port = free_port();
    std::fs::write(
        &cfg,
        pipesize_config("    tune.pipesize 4194304\n", port, echo.addr()),
    )
    .expect("write the config");
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    // A copy nobody can reach: the build may sit under a directory only root may enter.
    let bin = dir.path().join("rolelb");
    std::fs::copy(common::rolelb_bin(), &bin).expect("copy the rolelb binary");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // setpriv runs rolelb in its place (no fork) as nobody, without root's capabilities.
    let mut setpriv = std::process::Command::new("setpriv");
    setpriv
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&bin)
        .arg("-f")
        .arg(&cfg);
    let _rolelb = Proc::spawn("rolelb as nobody", &mut setpriv, &log, Signal::SIGTERM);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(10), || text()
            .contains("rolelb started")),
        "rolelb did not start as nobody:\n{}",
        text()
    );
    for _ in 0..2 {
        assert!(
            echo_through(addr, &data) == data,
            "the echo came back altered"
        );
    }
    let refused = "tune.pipesize 4194304: the kernel refused this pipe size";
    assert!(
        wait_until(Duration::from_secs(5), || text().contains(refused)),
        "{}",
        text()
    );
    assert_eq!(text().matches(refused).count(), 1, "{}", text());
}
