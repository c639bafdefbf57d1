//! The admin API and runtime socket under hostile or careless clients, against a real rolelb:
//! hundreds of idle connections never starve `/healthz`, an idle connection is closed within
//! the header timeout, `/healthz` turns 503 the moment a soft stop begins while sessions still
//! run, the `Bearer` scheme is case-insensitive, `rolelb -c` checks the token file at its line,
//! unknown paths are 404 (known ones with the wrong method 405 with `Allow`), and `help` on a
//! socket below `level admin` lists no admin command.

mod common;

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    NamedServer, Rolelb, free_port, http_request as request, open_named, stats_cli, wait_port,
    wait_until,
};
use nix::sys::signal::Signal;
use tempfile::TempDir;

const TOKEN: &str = "s3cr3t-token";

/// rolelb with an admin API (token file), three stats sockets and one frontend → server `s`.
struct Lab {
    dir: TempDir,
    lb: Rolelb,
    admin: SocketAddr,
    front: SocketAddr,
    _server: NamedServer,
}

impl Lab {
    fn start() -> Lab {
        let server = NamedServer::start("s");
        let dir = tempfile::tempdir().expect("temporary directory");
        let token = dir.path().join("token");
        fs::write(&token, format!("{TOKEN}\n")).expect("writing the token");
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let front = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let d = dir.path().display();
        let cfg = format!(
            "global\n    admin bind {admin} token-file {}\n\
             \x20   stats socket {d}/admin.sock level admin\n\
             \x20   stats socket {d}/operator.sock level operator\n\
             \x20   stats socket {d}/user.sock level user\n\
             defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 30s\n    timeout server 30s\n\
             frontend fe\n    bind {front}\n    default_backend be\n\
             backend be\n    server s {}\n",
            token.display(),
            server.addr()
        );
        let lb = Rolelb::start(&cfg);
        assert!(
            wait_port(admin, Duration::from_secs(10)),
            "admin API listens"
        );
        Lab {
            dir,
            lb,
            admin,
            front,
            _server: server,
        }
    }

    fn socket(&self, level: &str) -> PathBuf {
        self.dir.path().join(format!("{level}.sock"))
    }
}

fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    request(addr, "GET", path, &[], "", Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// Keeps `n` idle connections (that never send a byte) open to `addr`, reopening those the
/// server closes, until `stop`; `open` tracks how many are open.
fn hold_idle(
    addr: SocketAddr,
    n: usize,
    stop: Arc<AtomicBool>,
    open: Arc<AtomicUsize>,
) -> thread::JoinHandle<usize> {
    thread::spawn(move || {
        let mut conns: Vec<Option<TcpStream>> = (0..n).map(|_| None).collect();
        let mut reopened = 0;
        while !stop.load(Ordering::Relaxed) {
            for slot in conns.iter_mut() {
                let closed = slot.as_ref().is_some_and(|c| {
                    let mut b = [0u8; 1];
                    c.set_nonblocking(true).is_ok()
                        && match c.peek(&mut b) {
                            Ok(_) => true,
                            Err(e) => e.kind() != ErrorKind::WouldBlock,
                        }
                });
                if closed || slot.is_none() {
                    if slot.is_some() {
                        reopened += 1;
                    }
                    *slot = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok();
                }
            }
            open.store(conns.iter().flatten().count(), Ordering::Relaxed);
            thread::sleep(Duration::from_millis(20));
        }
        reopened
    })
}

#[test]
fn healthz_answers_every_probe_while_300_idle_connections_are_held_open() {
    let lab = Lab::start();
    let stop = Arc::new(AtomicBool::new(false));
    let open = Arc::new(AtomicUsize::new(0));
    let holder = hold_idle(lab.admin, 300, stop.clone(), open.clone());
    assert!(
        wait_until(Duration::from_secs(10), || open.load(Ordering::Relaxed)
            == 300),
        "300 idle connections opened ({})",
        open.load(Ordering::Relaxed)
    );
    thread::sleep(Duration::from_millis(500));

    // keepalived's vrrp_script: one probe at a time, each given a second.
    let mut answered = 0;
    let mut slowest = Duration::ZERO;
    let mut failures = Vec::new();
    for _ in 0..16 {
        let started = Instant::now();
        match request(
            lab.admin,
            "GET",
            "/healthz",
            &[],
            "",
            Duration::from_secs(1),
        ) {
            Ok((200, _, body)) if body == "ok\n" => answered += 1,
            Ok((status, _, body)) => failures.push(format!("{status} {body}")),
            Err(e) => failures.push(e.to_string()),
        }
        slowest = slowest.max(started.elapsed());
        thread::sleep(Duration::from_millis(250));
    }
    stop.store(true, Ordering::Relaxed);
    let reopened = holder.join().expect("idle holder");
    println!(
        "/healthz answered {answered}/16 with 300 idle connections held (slowest {slowest:?}; \
         the server closed {reopened} idle connections meanwhile); failures: {failures:?}"
    );
    assert_eq!(answered, 16, "{failures:?}");
    assert!(reopened > 0, "idle connections are closed by the server");
    assert!(lab.lb.stderr_text().contains("admin API listening"));
}

#[test]
fn an_idle_connection_is_closed_within_the_two_second_header_timeout() {
    let lab = Lab::start();
    for partial in ["", "GET /healthz HTTP/1.1\r\nHost: x\r\n"] {
        let mut conn = TcpStream::connect(lab.admin).expect("connect");
        conn.write_all(partial.as_bytes()).expect("write");
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let started = Instant::now();
        let mut buf = Vec::new();
        let _ = conn.read_to_end(&mut buf);
        let closed_after = started.elapsed();
        println!("idle connection ({partial:?} sent) closed after {closed_after:?}");
        assert!(
            closed_after <= Duration::from_millis(2500),
            "{partial:?}: {closed_after:?}"
        );
    }
}

#[test]
fn healthz_is_503_from_the_start_of_a_soft_stop_while_sessions_still_run() {
    let mut lab = Lab::start();
    let (name, mut session) = open_named(lab.front).expect("a session through rolelb");
    assert_eq!(name, "s");
    assert_eq!(get(lab.admin, "/healthz").0, 200);

    lab.lb.signal(Signal::SIGUSR1);
    let started = Instant::now();
    assert!(
        wait_until(Duration::from_secs(2), || get(lab.admin, "/healthz").0
            == 503),
        "/healthz still {} after SIGUSR1",
        get(lab.admin, "/healthz").0
    );
    println!("/healthz 503 {:?} after SIGUSR1", started.elapsed());
    // The session keeps running meanwhile.
    session.write_all(b"still here").expect("write");
    let mut echo = [0u8; 10];
    session.read_exact(&mut echo).expect("echo");
    assert_eq!(&echo, b"still here");
    assert!(lab.lb.exited().is_none(), "rolelb waits for its session");
    assert_eq!(
        get(lab.admin, "/healthz").0,
        503,
        "still 503 while the session runs"
    );

    drop(session);
    assert!(
        wait_until(Duration::from_secs(10), || lab.lb.exited().is_some()),
        "rolelb exits once its last session ends"
    );
}

#[test]
fn the_bearer_scheme_is_accepted_in_any_case() {
    let lab = Lab::start();
    let put = |auth: Option<String>, weight: u32| {
        let mut headers = vec![("Content-Type", "application/json".to_owned())];
        if let Some(a) = auth {
            headers.push(("Authorization", a));
        }
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        request(
            lab.admin,
            "PUT",
            "/api/v1/backends/be/servers/s/weight",
            &headers,
            &format!("{{\"weight\":{weight}}}"),
            Duration::from_secs(5),
        )
        .expect("PUT weight")
    };
    for (scheme, weight) in [("Bearer", 5), ("bearer", 6), ("BEARER", 7), ("bEaReR", 8)] {
        let (status, _, body) = put(Some(format!("{scheme} {TOKEN}")), weight);
        assert_eq!(status, 200, "{scheme}: {body}");
        assert!(body.contains(&format!("\"weight\":{weight}")), "{body}");
    }
    assert_eq!(put(Some("bearer wrong".into()), 9).0, 401);
    assert_eq!(put(Some(format!("Basic {TOKEN}")), 9).0, 401);
    assert_eq!(put(None, 9).0, 401);
}

/// A config whose line 2 is `admin bind ... token-file PATH`.
fn token_config(path: &Path) -> String {
    format!(
        "global\n    admin bind 127.0.0.1:{} token-file {}\n\
         defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 1s\n    timeout server 1s\n\
         listen x\n    bind 127.0.0.1:{}\n    server a 127.0.0.1:1\n",
        free_port(),
        path.display(),
        free_port()
    )
}

#[test]
fn check_fails_on_a_missing_unreadable_or_empty_token_file_at_its_line() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let good = dir.path().join("token");
    fs::write(&good, "abc\n").expect("token");
    let (ok, out) = Rolelb::check(&token_config(&good));
    assert!(ok, "{out}");

    let empty = dir.path().join("empty");
    fs::write(&empty, "\n").expect("empty token");
    for (path, why) in [
        (dir.path().join("missing"), "No such file"),
        (dir.path().to_path_buf(), "directory"),
        (empty, "empty"),
    ] {
        let (ok, out) = Rolelb::check(&token_config(&path));
        println!("{out}");
        assert!(!ok, "{}: {out}", path.display());
        assert!(out.contains("check.cfg:2: "), "{out}");
        assert!(out.contains("token-file"), "{out}");
        assert!(out.contains(why), "{out}");
    }
}

#[test]
fn unknown_paths_are_404_and_a_known_path_with_another_method_is_405_with_allow() {
    let lab = Lab::start();
    for path in [
        "/nothing",
        "/api/v1/backends/be/servers/s",
        "/api/v1/backends/be/servers",
        "/api/v1/backends/be/other",
        "/api/v1/reload/now",
        "/healthz/deep",
        "/api/v2/backends",
    ] {
        for method in ["GET", "PUT", "POST", "DELETE"] {
            let (status, _, body) =
                request(lab.admin, method, path, &[], "", Duration::from_secs(5)).expect(path);
            assert_eq!(status, 404, "{method} {path}: {body}");
        }
    }
    for (method, path, allow) in [
        ("DELETE", "/api/v1/reload", "POST"),
        ("GET", "/api/v1/reload", "POST"),
        ("GET", "/api/v1/backends/be/servers/s/state", "PUT"),
        ("POST", "/healthz", "GET, HEAD"),
        ("DELETE", "/api/v1/backends/be", "GET, HEAD"),
    ] {
        let (status, head, body) =
            request(lab.admin, method, path, &[], "", Duration::from_secs(5)).expect(path);
        assert_eq!(status, 405, "{method} {path}: {body}");
        assert!(
            head.to_ascii_lowercase()
                .contains(&format!("allow: {}", allow.to_ascii_lowercase())),
            "{method} {path}: {head}"
        );
    }
}

#[test]
fn help_on_a_socket_below_level_admin_lists_no_admin_command() {
    let lab = Lab::start();
    let admin_only = [
        "disable server",
        "enable server",
        "set server",
        "set weight",
    ];
    let admin_help = stats_cli(&lab.socket("admin"), "help");
    for cmd in admin_only {
        assert!(admin_help.contains(cmd), "admin: {cmd}\n{admin_help}");
    }
    for level in ["operator", "user"] {
        for line in ["help", "nonsense"] {
            let help = stats_cli(&lab.socket(level), line);
            assert!(help.contains("show stat"), "{level} {line}: {help}");
            for cmd in admin_only {
                assert!(!help.contains(cmd), "{level} {line}: lists '{cmd}'\n{help}");
            }
        }
    }
}

/// An error quoting a request's path segment keeps the answer short: a 5000-character backend
/// name comes back shortened with its length, not echoed whole.
#[test]
fn an_overlong_name_in_a_request_is_quoted_shortened_with_its_length() {
    let lab = Lab::start();
    let long = "b".repeat(5000);
    let path = format!("/api/v1/backends/{long}");
    let (status, _, body) =
        request(lab.admin, "GET", &path, &[], "", Duration::from_secs(5)).expect("long path");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("…(5000 chars)"), "{body}");
    assert!(
        body.len() < 400,
        "the answer echoes the name whole: {} bytes",
        body.len()
    );
}
