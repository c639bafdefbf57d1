//! The stats page's access control side by side with HAProxy 2.6: one configuration (stats
//! listeners with `stats auth`, `stats realm`, a `userlist` with SHA-512 and SHA-256 crypt
//! hashes made here with the `sha-crypt` crate and an insecure password, `acl AUTH
//! http_auth(L)` with `stats http-request auth unless AUTH`, `stats admin if` TRUE / LOCALHOST / a non-matching `src` /
//! a group, `stats hide-version`) run by both, the same requests sent to each, and the status
//! codes and the `WWW-Authenticate`, `Location` and `Cache-Control` headers compared exactly.
//! `/metrics` is the documented difference: HAProxy serves nothing there on a stats listener
//! (503: no backend), rolelb serves its metrics behind the same credentials as the page.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Haproxy, NamedServer, Rolelb, free_port, http_request, wait_port};
use sha_crypt::{PasswordHasher, ShaCrypt};

const TIMEOUT: Duration = Duration::from_secs(10);

/// Ports of one side's stats listeners.
#[derive(Clone, Copy)]
struct Ports {
    /// `stats auth` x2, `stats realm`, `stats admin if TRUE`, `stats hide-version`.
    accounts: u16,
    /// `userlist` users through a named ACL, admin for group `admin` only.
    users: u16,
    /// No credentials, `stats admin if LOCALHOST`, `stats show-node`, `stats show-legends`.
    local: u16,
    /// A `frontend`, no credentials, `stats admin if { src 10.0.0.0/8 }` (the tests come
    /// from 127.0.0.1).
    remote: u16,
    /// `stats http-request deny unless { src 10.0.0.0/8 }`: 403 for the tests.
    denied: u16,
    /// The TCP `listen db` whose servers the actions change.
    db: u16,
}

impl Ports {
    fn new() -> Ports {
        Ports {
            accounts: free_port(),
            users: free_port(),
            local: free_port(),
            remote: free_port(),
            denied: free_port(),
            db: free_port(),
        }
    }

    fn all(self) -> [u16; 5] {
        [
            self.accounts,
            self.users,
            self.local,
            self.remote,
            self.denied,
        ]
    }
}

fn config(p: Ports, a: u16, b: u16, sha512: &str, sha256: &str) -> String {
    format!(
        "global
    maxconn 100
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
userlist ops
    group admin users alice
    user alice password {sha512}
    user carol password {sha256}
    user bob insecure-password hello
listen accounts
    mode http
    bind 127.0.0.1:{}
    stats enable
    stats uri /stats
    stats realm Ops\\ Team
    stats auth admin:s3cret
    stats auth monitor:watch:it
    stats admin if TRUE
    stats hide-version
listen users
    mode http
    bind 127.0.0.1:{}
    stats enable
    stats uri /stats
    acl AUTH http_auth(ops)
    stats http-request auth unless AUTH
    stats admin if {{ http_auth_group(ops) admin }}
listen local
    mode http
    bind 127.0.0.1:{}
    stats enable
    stats uri /stats
    stats admin if LOCALHOST
    stats show-node edge-1
    stats show-legends
frontend remote
    mode http
    bind 127.0.0.1:{}
    stats enable
    stats uri /stats
    stats admin if {{ src 10.0.0.0/8 }}
listen denied
    mode http
    bind 127.0.0.1:{}
    stats enable
    stats uri /stats
    stats http-request deny unless {{ src 10.0.0.0/8 }}
    stats admin if TRUE
listen db
    bind 127.0.0.1:{}
    server a 127.0.0.1:{a}
    server b 127.0.0.1:{b}
",
        p.accounts, p.users, p.local, p.remote, p.denied, p.db
    )
}

/// Standard base64, for `Authorization: Basic`.
fn base64(data: &[u8]) -> String {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ABC[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// What is compared of an answer: the status and the access-control headers.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    status: u16,
    www_authenticate: Option<String>,
    location: Option<String>,
    cache_control: Option<String>,
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

/// One request; `user` is `USER:PASSWORD` for Basic credentials.
fn ask(port: u16, method: &str, path: &str, user: Option<&str>, body: &str) -> (Seen, String) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let auth = user.map(|u| format!("Basic {}", base64(u.as_bytes())));
    let mut headers = vec![("Content-Type", "application/x-www-form-urlencoded")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    let (status, head, body) = http_request(addr, method, path, &headers, body, TIMEOUT)
        .unwrap_or_else(|e| panic!("{method} {path} on port {port}: {e}"));
    let seen = Seen {
        status,
        www_authenticate: header(&head, "www-authenticate"),
        location: header(&head, "location"),
        cache_control: header(&head, "cache-control"),
    };
    (seen, body)
}

/// The same request to both; the answers must match. Returns HAProxy's status.
fn same(
    h: Ports,
    r: Ports,
    pick: fn(Ports) -> u16,
    method: &str,
    path: &str,
    user: Option<&str>,
    body: &str,
) -> u16 {
    let (theirs, _) = ask(pick(h), method, path, user, body);
    let (ours, _) = ask(pick(r), method, path, user, body);
    assert_eq!(
        ours, theirs,
        "{method} {path} as {user:?} with {body:?}: rolelb (left) differs from HAProxy (right)"
    );
    theirs.status
}

/// The `show stat` status column of `db/SERVER` in a CSV export.
fn csv_status(csv: &str, server: &str) -> String {
    let head: Vec<&str> = csv.lines().next().unwrap_or_default().split(',').collect();
    let col = head
        .iter()
        .position(|c| *c == "status")
        .expect("status column");
    csv.lines()
        .find(|l| l.starts_with(&format!("db,{server},")))
        .and_then(|l| l.split(',').nth(col))
        .unwrap_or_else(|| panic!("no db/{server} row in {csv}"))
        .to_owned()
}

#[test]
fn stats_access_answers_like_haproxy_with_and_without_credentials() {
    let sha512 = ShaCrypt::SHA512
        .hash_password_with_salt(b"wonderland", b"rolelb-test")
        .expect("hash")
        .to_string();
    let sha256 = ShaCrypt::SHA256
        .hash_password_with_salt(b"carol-pw", b"rolelb-test")
        .expect("hash")
        .to_string();
    assert!(sha512.starts_with("$6$") && sha256.starts_with("$5$"));
    let (a, b) = (NamedServer::start("a"), NamedServer::start("b"));
    let (hp, rp) = (Ports::new(), Ports::new());
    let haproxy = Haproxy::start(&config(hp, a.port(), b.port(), &sha512, &sha256));
    let rolelb = Rolelb::start(&config(rp, a.port(), b.port(), &sha512, &sha256));
    for port in hp.all().into_iter().chain(rp.all()) {
        assert!(wait_port(SocketAddr::from(([127, 0, 0, 1], port)), TIMEOUT));
    }
    let accounts: fn(Ports) -> u16 = |p| p.accounts;
    let users: fn(Ports) -> u16 = |p| p.users;
    let local: fn(Ports) -> u16 = |p| p.local;
    let remote: fn(Ports) -> u16 = |p| p.remote;

    // `stats auth`: no, wrong and right credentials, on the page and its CSV.
    for path in ["/stats", "/stats;csv", "/stats;norefresh"] {
        assert_eq!(same(hp, rp, accounts, "GET", path, None, ""), 401);
        for wrong in ["admin:wrong", "nobody:s3cret", "admin", "monitor:watch"] {
            assert_eq!(same(hp, rp, accounts, "GET", path, Some(wrong), ""), 401);
        }
        assert_eq!(
            same(hp, rp, accounts, "GET", path, Some("admin:s3cret"), ""),
            200
        );
        // The password is all after the first ':'.
        assert_eq!(
            same(hp, rp, accounts, "GET", path, Some("monitor:watch:it"), ""),
            200
        );
    }
    let (denied, _) = ask(rp.accounts, "GET", "/stats", None, "");
    assert_eq!(
        denied.www_authenticate.as_deref(),
        Some("Basic realm=\"Ops Team\""),
        "'stats realm' names the realm"
    );

    // A userlist: SHA-512 and SHA-256 crypt hashes and an insecure password; default realm.
    assert_eq!(same(hp, rp, users, "GET", "/stats", None, ""), 401);
    let (denied, _) = ask(rp.users, "GET", "/stats", None, "");
    assert_eq!(
        denied.www_authenticate.as_deref(),
        Some("Basic realm=\"HAProxy Statistics\"")
    );
    for wrong in ["alice:Wonderland", "carol:wonderland", "bob:", "eve:hello"] {
        assert_eq!(same(hp, rp, users, "GET", "/stats", Some(wrong), ""), 401);
    }
    for right in ["alice:wonderland", "carol:carol-pw", "bob:hello"] {
        assert_eq!(same(hp, rp, users, "GET", "/stats", Some(right), ""), 200);
        assert_eq!(
            same(hp, rp, users, "GET", "/stats;csv", Some(right), ""),
            200
        );
    }

    // `stats http-request deny`: 403 for the page, its CSV and an action alike.
    let denied: fn(Ports) -> u16 = |p| p.denied;
    assert_eq!(same(hp, rp, denied, "GET", "/stats", None, ""), 403);
    assert_eq!(
        same(hp, rp, denied, "GET", "/stats;csv", Some("a:b"), ""),
        403
    );
    assert_eq!(
        same(
            hp,
            rp,
            denied,
            "POST",
            "/stats",
            None,
            "s=a&action=maint&b=db"
        ),
        403
    );

    // `stats hide-version`: neither shows its version on that page; both do without it.
    let version = |port, user| ask(port, "GET", "/stats", user, "").1;
    let hv = env!("CARGO_PKG_VERSION");
    assert!(!version(rp.accounts, Some("admin:s3cret")).contains(hv));
    assert!(version(rp.local, None).contains(hv));
    let (haproxy_version, _) = std::process::Command::new("haproxy")
        .arg("-v")
        .output()
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            let v = text
                .split_whitespace()
                .nth(2)
                .unwrap_or_default()
                .split('-')
                .next()
                .unwrap_or_default()
                .to_owned();
            (v, text)
        })
        .expect("haproxy -v");
    assert!(!haproxy_version.is_empty());
    assert!(!version(hp.accounts, Some("admin:s3cret")).contains(&haproxy_version));
    assert!(version(hp.local, None).contains(&haproxy_version));

    // `stats show-node NAME` names the node; `stats show-legends` shows the servers'
    // addresses, which pages without it do not.
    let a_addr = format!("127.0.0.1:{}", a.port());
    for (plain, legends) in [(hp.remote, hp.local), (rp.remote, rp.local)] {
        let (page, bare) = (version(legends, None), version(plain, None));
        assert!(
            page.contains("edge-1") && !bare.contains("edge-1"),
            "{page}"
        );
        assert!(page.contains(&a_addr) && !bare.contains(&a_addr), "{page}");
    }

    // Server actions: a 303 back to the page with the outcome, where `stats admin` allows it.
    let drain = "s=a&action=drain&b=db";
    // Credentials come first: no POST gets past a 401.
    assert_eq!(same(hp, rp, accounts, "POST", "/stats", None, drain), 401);
    // Not admin: the source is not in 10.0.0.0/8; bob is not in group admin.
    assert_eq!(same(hp, rp, remote, "POST", "/stats", None, drain), 303);
    assert_eq!(
        same(hp, rp, users, "POST", "/stats", Some("bob:hello"), drain),
        303
    );
    let (seen, _) = ask(rp.remote, "POST", "/stats", None, drain);
    assert_eq!(seen.location.as_deref(), Some("/stats;st=DENY"));
    for (port, user) in [(hp.local, None), (rp.local, None)] {
        let (_, csv) = ask(port, "GET", "/stats;csv", user, "");
        assert_ne!(
            csv_status(&csv, "a"),
            "DRAIN",
            "a refused action changed nothing"
        );
    }
    // Admin: LOCALHOST, TRUE with credentials, alice of group admin.
    assert_eq!(same(hp, rp, local, "POST", "/stats", None, drain), 303);
    let (seen, _) = ask(rp.local, "POST", "/stats", None, drain);
    assert_eq!(seen.location.as_deref(), Some("/stats;st=DONE"));
    for port in [hp.local, rp.local] {
        let (_, csv) = ask(port, "GET", "/stats;csv", None, "");
        assert_eq!(csv_status(&csv, "a"), "DRAIN", "port {port}");
    }
    let ready = "s=a&s=b&action=ready&b=db";
    assert_eq!(
        same(
            hp,
            rp,
            accounts,
            "POST",
            "/stats",
            Some("admin:s3cret"),
            ready
        ),
        303
    );
    assert_eq!(
        same(
            hp,
            rp,
            users,
            "POST",
            "/stats",
            Some("alice:wonderland"),
            "s=b&action=maint&b=db"
        ),
        303
    );
    for port in [hp.local, rp.local] {
        let (_, csv) = ask(port, "GET", "/stats;csv", None, "");
        assert_ne!(csv_status(&csv, "a"), "DRAIN", "port {port}");
        assert_eq!(csv_status(&csv, "b"), "MAINT", "port {port}");
    }
    // The outcomes: unknown backend, unknown action, a missing server, nothing to do.
    for body in [
        "s=a&action=ready&b=nosuch",
        "s=a&action=explode&b=db",
        "s=a&s=zz&action=ready&b=db",
        "s=zz&action=ready&b=db",
        "action=ready&b=db",
        "",
    ] {
        assert_eq!(
            same(hp, rp, local, "POST", "/stats", None, body),
            303,
            "{body}"
        );
    }

    // `/metrics`: HAProxy has nothing there on a stats listener (no backend: 503); rolelb
    // serves its metrics behind the page's credentials.
    let (theirs, _) = ask(hp.accounts, "GET", "/metrics", Some("admin:s3cret"), "");
    assert_eq!(theirs.status, 503);
    assert_eq!(ask(rp.accounts, "GET", "/metrics", None, "").0.status, 401);
    assert_eq!(
        ask(rp.accounts, "GET", "/metrics", Some("admin:wrong"), "")
            .0
            .status,
        401
    );
    let (ours, metrics) = ask(rp.accounts, "GET", "/metrics", Some("admin:s3cret"), "");
    assert_eq!(ours.status, 200);
    assert!(metrics.contains("haproxy_server_"), "{metrics}");
    assert_eq!(
        ask(rp.users, "GET", "/metrics", Some("bob:hello"), "")
            .0
            .status,
        200
    );
    drop((haproxy, rolelb));
}
