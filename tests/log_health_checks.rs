//! `option log-health-checks` side by side with HAProxy 2.6: the same config, the same server
//! going away and coming back, and the same lines logged — every health check result that
//! changes the check's status or moves the health counter (`Health check for server l/s1
//! failed, reason: ..., status: 2/3 UP.`), `backup` servers named so, a server of weight 0
//! shown `DRAIN`, and the UP/DOWN lines without the reason the check line already gave.
//! Without the option, only UP/DOWN is logged, with its reason.

mod common;

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use common::{Haproxy, Rolelb, free_port, wait_until};

/// A server that accepts and closes connections until dropped (its port then refuses).
struct Accepting {
    stop: Arc<AtomicBool>,
    join: Option<thread::JoinHandle<()>>,
}

impl Accepting {
    fn on(port: u16) -> Accepting {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the server's port");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let join = thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => drop(conn),
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Accepting {
            stop,
            join: Some(join),
        }
    }
}

impl Drop for Accepting {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

/// The config: `s1` comes and goes, `s2` is a backup on a port nobody listens on, `s3` has
/// weight 0.
fn config(port: u16, s1: u16, s2: u16, s3: u16, option: bool) -> String {
    format!(
        "global\n    log stderr format raw local0\n\
         defaults\n    mode tcp\n    log global\n    timeout connect 1s\n    timeout client 10s\n    timeout server 10s\n\
         listen l\n    bind 127.0.0.1:{port}\n{}\
         \x20   server s1 127.0.0.1:{s1} check inter 150 rise 2 fall 3\n\
         \x20   server s2 127.0.0.1:{s2} check inter 150 rise 2 fall 3 backup\n\
         \x20   server s3 127.0.0.1:{s3} check inter 150 rise 2 fall 3 weight 0\n",
        if option {
            "    option log-health-checks\n"
        } else {
            ""
        }
    )
}

/// The check and state lines of one server in a proxy's stderr, in order, with check
/// durations (which differ by a millisecond between two runs) written `Nms`.
fn lines_of(stderr: &str, server: &str) -> Vec<String> {
    let starts = [
        format!("Health check for server l/{server} "),
        format!("Health check for backup server l/{server} "),
        format!("Server l/{server} is "),
        format!("Backup Server l/{server} is "),
    ];
    stderr
        .lines()
        .filter(|l| !l.starts_with('['))
        .filter_map(|l| {
            let at = starts.iter().filter_map(|s| l.find(s.as_str())).min()?;
            Some(l[at..].to_string())
        })
        .map(|l| {
            let mut out = String::new();
            let mut rest = l.as_str();
            while let Some(i) = rest.find("check duration: ") {
                let (head, tail) = rest.split_at(i + "check duration: ".len());
                out.push_str(head);
                let digits = tail.find(|c: char| !c.is_ascii_digit()).unwrap_or(0);
                out.push('N');
                rest = &tail[digits..];
            }
            out.push_str(rest);
            out
        })
        .collect()
}

/// Runs one proxy's log through s1 up, s1 gone (DOWN), s1 back (UP).
fn scenario(option: bool) -> (String, String) {
    let (s1, s2, s3) = (free_port(), free_port(), free_port());
    let (hport, rport) = (free_port(), free_port());
    let server1 = Accepting::on(s1);
    let _server3 = Accepting::on(s3);
    let haproxy = Haproxy::start(&config(hport, s1, s2, s3, option));
    let rolelb = Rolelb::start(&config(rport, s1, s2, s3, option));
    let both_log = |what: &str| {
        let seen = wait_until(Duration::from_secs(10), || {
            haproxy.stderr_text().contains(what) && rolelb.stderr_text().contains(what)
        });
        assert!(
            seen,
            "not both logged {what:?}\nHAProxy:\n{}\nrolelb:\n{}",
            haproxy.stderr_text(),
            rolelb.stderr_text()
        );
    };
    both_log("Server l/s2 is DOWN");
    thread::sleep(Duration::from_millis(600));
    drop(server1);
    both_log("Server l/s1 is DOWN");
    thread::sleep(Duration::from_millis(400));
    let _server1 = Accepting::on(s1);
    both_log("Server l/s1 is UP");
    // Long enough for further checks: nothing more may be logged for a steady server.
    thread::sleep(Duration::from_millis(800));
    (haproxy.stderr_text(), rolelb.stderr_text())
}

/// Each server's lines are the same in both logs (and HAProxy logged something for `s1` and
/// `s2`, which both go DOWN; `s3` stays UP, silent without the option).
fn same_lines(haproxy: &str, rolelb: &str) {
    for server in ["s1", "s2", "s3"] {
        let (h, r) = (lines_of(haproxy, server), lines_of(rolelb, server));
        assert!(
            server == "s3" || !h.is_empty(),
            "HAProxy logged nothing for {server}:\n{haproxy}"
        );
        assert_eq!(
            r, h,
            "{server}: rolelb's lines (left) differ from HAProxy's\nrolelb:\n{rolelb}"
        );
    }
}

/// Some line of `server`'s in `log` is as `want` says.
fn assert_logged(log: &str, server: &str, want: impl Fn(&str) -> bool) {
    assert!(lines_of(log, server).iter().any(|l| want(l)), "{log}");
}

#[test]
fn every_check_result_that_changes_something_is_logged_as_haproxy_logs_it() {
    let (haproxy, rolelb) = scenario(true);
    same_lines(&haproxy, &rolelb);
    // The lines the comparison rests on, spelled out.
    let s1 = lines_of(&rolelb, "s1").join("\n");
    for want in [
        "Health check for server l/s1 failed, reason: Layer4 connection problem, info: \"Connection refused\", check duration: Nms, status: 2/3 UP.",
        "Health check for server l/s1 failed, reason: Layer4 connection problem, info: \"Connection refused\", check duration: Nms, status: 0/2 DOWN.",
        "Server l/s1 is DOWN. 0 active and 0 backup servers left.",
        "Health check for server l/s1 succeeded, reason: Layer4 check passed, check duration: Nms, status: 1/2 DOWN.",
        "Server l/s1 is UP. 1 active and 0 backup servers online. 0 sessions requeued, 0 total in queue.",
    ] {
        assert!(s1.contains(want), "no {want:?} in\n{s1}");
    }
    assert_logged(&rolelb, "s2", |l| {
        l.starts_with("Health check for backup server l/s2 failed")
    });
    assert_logged(&rolelb, "s3", |l| l.ends_with("status: 3/3 DRAIN."));
}

#[test]
fn without_the_option_only_up_and_down_are_logged_with_their_reason() {
    let (haproxy, rolelb) = scenario(false);
    same_lines(&haproxy, &rolelb);
    let s1 = lines_of(&rolelb, "s1");
    assert!(s1.iter().all(|l| !l.starts_with("Health check")), "{s1:?}");
    assert!(
        s1.iter().any(|l| l.starts_with(
            "Server l/s1 is DOWN, reason: Layer4 connection problem, info: \"Connection refused\", check duration: Nms. 0 active and 0 backup servers left."
        )),
        "{s1:?}"
    );
    assert_logged(&rolelb, "s2", |l| {
        l.starts_with("Backup Server l/s2 is DOWN, reason: Layer4 connection problem")
    });
}
