//! Health checks over TLS (`check-ssl`, `verify`, `ca-file`, `check-sni`, `verifyhost`) run by
//! rolelb and by HAProxy 2.6 side by side against the same HTTPS server (HAProxy itself,
//! serving a Patroni-like `/primary` with a certificate from a CA the test makes), compared
//! through `show stat`: the server's status, `check_status` and the `last_chk` text (and a
//! client certificate, `crt`, for a server that requires one). Also `rolelb -c` against
//! `haproxy -c` on the configurations HAProxy refuses.

mod common;

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// The files a test's TLS needs: two CAs and a server certificate signed by the first.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A CA (`ca.pem`), an unrelated CA (`wrong-ca.pem`), the server's certificate for
    /// `db1.test` with its key (`server.pem`, as HAProxy's `crt` takes it), and a client
    /// certificate from the CA (`client.pem`, its key beside it in `client.pem.key`); and a
    /// server certificate named only by its Common Name `db*.test` (`cn-only.pem`).
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca_pem, issuer) = ca("rolelb test CA");
        let (wrong_pem, _) = ca("another CA");
        let key = KeyPair::generate().expect("server key");
        let mut params = CertificateParams::new(vec!["db1.test".to_string()]).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, "db1.test");
        let cert = params.signed_by(&key, &issuer).expect("server certificate");
        // An older kind of certificate: no subjectAltName, the name in the Common Name only.
        let cn_key = KeyPair::generate().expect("key");
        let mut cn_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        cn_params
            .distinguished_name
            .push(DnType::CommonName, "db*.test");
        let cn_only = cn_params.signed_by(&cn_key, &issuer).expect("certificate");
        let client_key = KeyPair::generate().expect("client key");
        let client = CertificateParams::new(vec!["checker.test".to_string()])
            .expect("params")
            .signed_by(&client_key, &issuer)
            .expect("client certificate");
        let write = |name: &str, text: String| fs::write(dir.path().join(name), text).expect(name);
        write("client.pem", client.pem());
        write(
            "cn-only.pem",
            format!("{}{}", cn_only.pem(), cn_key.serialize_pem()),
        );
        write("client.pem.key", client_key.serialize_pem());
        write("ca.pem", ca_pem);
        write("wrong-ca.pem", wrong_pem);
        write(
            "server.pem",
            format!("{}{}", cert.pem(), key.serialize_pem()),
        );
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A self-signed CA: its PEM and the issuer that signs with it.
fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).expect("CA certificate");
    (cert.pem(), Issuer::new(params, key))
}

/// The HTTPS API the checks ask (HAProxy in `mode http`): `/primary` answers 200, `/replica`
/// 503, `/sni` 200 only when the client sent the SNI `db1.test`; the same answers in plain
/// HTTP on `plain`, over TLS on `mutual` to clients with a certificate from the CA only, and
/// over TLS with the Common-Name-only certificate on `cn_only`.
struct Api {
    _haproxy: Haproxy,
    tls: SocketAddr,
    plain: SocketAddr,
    mutual: SocketAddr,
    cn_only: SocketAddr,
}

impl Api {
    fn start(pki: &Pki) -> Api {
        let (tls, plain, mutual, cn_only) = (free_port(), free_port(), free_port(), free_port());
        let crt = pki.path("server.pem");
        let cfg = format!(
            "defaults\n  mode http\n  timeout connect 2s\n  timeout client 5s\n  timeout server 5s\n\
             frontend api\n  bind 127.0.0.1:{tls} ssl crt {crt}\n  bind 127.0.0.1:{plain}\n\
               bind 127.0.0.1:{mutual} ssl crt {crt} verify required ca-file {}\n\
               bind 127.0.0.1:{cn_only} ssl crt {}\n\
               http-request return status 200 content-type text/plain string primary if {{ path /primary }}\n\
               http-request return status 200 content-type text/plain string named if {{ path /sni }} {{ ssl_fc_sni -m str db1.test }}\n\
               http-request return status 503 content-type text/plain string no\n",
            pki.path("ca.pem").display(),
            pki.path("cn-only.pem").display(),
            crt = crt.display(),
        );
        Api {
            _haproxy: Haproxy::start(&cfg),
            tls: SocketAddr::from(([127, 0, 0, 1], tls)),
            plain: SocketAddr::from(([127, 0, 0, 1], plain)),
            mutual: SocketAddr::from(([127, 0, 0, 1], mutual)),
            cn_only: SocketAddr::from(([127, 0, 0, 1], cn_only)),
        }
    }
}

/// A tcp-check asking the API for `/primary` on the check's connection (TLS with `check-ssl`).
const TCP_CHECK: &str = "  option tcp-check\n  tcp-check send \"GET /primary HTTP/1.0\\r\\n\\r\\n\"\n  tcp-check expect string primary\n";

/// The same through an explicit `tcp-check connect`, which HAProxy opens in plain TCP.
const EXPLICIT_CONNECT: &str = "  option tcp-check\n  tcp-check connect\n  tcp-check send \"GET /primary HTTP/1.0\\r\\n\\r\\n\"\n  tcp-check expect string primary\n";

/// One backend of the compared configuration: its check lines, its server line options, and
/// the `show stat` status and `check_status` both must reach.
struct Case {
    name: &'static str,
    check: &'static str,
    server: String,
    status: &'static str,
    check_status: &'static str,
}

/// The configuration both run: one backend per case (a frontend in front of the first, as
/// HAProxy wants a listener), a stats socket at `sock`.
fn config(sock: &Path, cases: &[Case]) -> String {
    let mut cfg = format!(
        "global\n  stats socket {} level admin\n\
         defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 5s\n  timeout server 5s\n  timeout check 2s\n\
         frontend fe\n  bind 127.0.0.1:{}\n  default_backend {}\n",
        sock.display(),
        free_port(),
        cases.first().map_or("none", |c| c.name),
    );
    for c in cases {
        cfg.push_str(&format!(
            "backend {}\n{}  server s1 {} check inter 1s fall 1 rise 1\n",
            c.name, c.check, c.server
        ));
    }
    cfg
}

/// `status`, `check_status` and `last_chk` of `be/s1` in `show stat` at `sock`.
fn row(sock: &Path, be: &str) -> Option<(String, String, String)> {
    let r = stat_row(&stats_cli(sock, "show stat"), be, "s1")?;
    let get = |k: &str| r.get(k).cloned().unwrap_or_default();
    Some((get("status"), get("check_status"), get("last_chk")))
}

#[test]
fn tls_checks_reach_the_states_haproxy_reaches() {
    let pki = Pki::new();
    let api = Api::start(&pki);
    let ca = pki.path("ca.pem");
    let wrong = pki.path("wrong-ca.pem");
    let (ca, wrong) = (ca.display(), wrong.display());
    let (tls, plain, mutual, cn_only) = (api.tls, api.plain, api.mutual, api.cn_only);
    let client = pki.path("client.pem");
    let client = client.display();
    let dead = SocketAddr::from(([127, 0, 0, 1], free_port()));
    // Accepts TCP connections (the kernel does) and never answers the ClientHello.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent = listener.local_addr().expect("address");
    let patroni = "  option httpchk OPTIONS /primary\n";
    let cases = [
        Case {
            name: "good_ca",
            check: patroni,
            server: format!("{tls} check-ssl verify required ca-file {ca} verifyhost db1.test"),
            status: "UP",
            check_status: "L7OK",
        },
        Case {
            name: "wrong_ca",
            check: patroni,
            server: format!("{tls} check-ssl verify required ca-file {wrong}"),
            status: "DOWN",
            check_status: "L6RSP",
        },
        Case {
            name: "verify_none",
            check: patroni,
            server: format!("{tls} check-ssl verify none ca-file {wrong}"),
            status: "UP",
            check_status: "L7OK",
        },
        Case {
            name: "wrong_name",
            check: patroni,
            server: format!("{tls} check-ssl ca-file {ca} verifyhost other.test"),
            status: "DOWN",
            check_status: "L6RSP",
        },
        Case {
            name: "sni_sent",
            check: "  option httpchk GET /sni\n",
            server: format!("{tls} check-ssl ca-file {ca} check-sni db1.test"),
            status: "UP",
            check_status: "L7OK",
        },
        Case {
            name: "no_sni",
            check: "  option httpchk GET /sni\n",
            server: format!("{tls} check-ssl ca-file {ca}"),
            status: "DOWN",
            check_status: "L7STS",
        },
        Case {
            name: "plain_server",
            check: patroni,
            server: format!("{plain} check-ssl verify none"),
            status: "DOWN",
            check_status: "L6RSP",
        },
        Case {
            name: "replica_over_tls",
            check: "  option httpchk OPTIONS /replica\n",
            server: format!("{tls} check-ssl ca-file {ca}"),
            status: "DOWN",
            check_status: "L7STS",
        },
        Case {
            name: "connect_only",
            check: "",
            server: format!("{tls} check-ssl ca-file {ca}"),
            status: "UP",
            check_status: "L6OK",
        },
        Case {
            name: "check_port",
            check: patroni,
            server: format!("{dead} port {} check-ssl ca-file {ca}", tls.port()),
            status: "UP",
            check_status: "L7OK",
        },
        Case {
            name: "handshake_timeout",
            check: patroni,
            server: format!("{silent} check-ssl verify none"),
            status: "DOWN",
            check_status: "L6TOUT",
        },
        Case {
            name: "client_cert",
            check: patroni,
            server: format!("{mutual} check-ssl ca-file {ca} crt {client}"),
            status: "UP",
            check_status: "L7OK",
        },
        Case {
            name: "no_client_cert",
            check: patroni,
            server: format!("{mutual} check-ssl ca-file {ca}"),
            status: "DOWN",
            check_status: "SOCKERR",
        },
        Case {
            name: "tcp_check_over_tls",
            check: TCP_CHECK,
            server: format!("{tls} check-ssl ca-file {ca}"),
            status: "UP",
            check_status: "L7OK",
        },
        Case {
            name: "explicit_connect_is_plain",
            check: EXPLICIT_CONNECT,
            server: format!("{tls} check-ssl ca-file {ca}"),
            status: "DOWN",
            check_status: "L7RSP",
        },
        Case {
            name: "common_name_only",
            check: patroni,
            server: format!("{cn_only} check-ssl ca-file {ca} verifyhost db2.test"),
            status: "UP",
            check_status: "L7OK",
        },
        Case {
            name: "common_name_mismatch",
            check: patroni,
            server: format!("{cn_only} check-ssl ca-file {ca} verifyhost web.test"),
            status: "DOWN",
            check_status: "L6RSP",
        },
        Case {
            name: "without_check_ssl",
            check: patroni,
            server: format!("{tls} ca-file {ca}"),
            status: "DOWN",
            check_status: "L7RSP",
        },
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let (hsock, rsock) = (
        dir.path().join("haproxy.sock"),
        dir.path().join("rolelb.sock"),
    );
    let haproxy = Haproxy::start(&config(&hsock, &cases));
    let rolelb = Rolelb::start(&config(&rsock, &cases));
    for c in &cases {
        let want = (c.status, c.check_status);
        let mut texts = Vec::new();
        for (who, sock) in [("HAProxy", &hsock), ("rolelb", &rsock)] {
            let mut seen = None;
            let reached = wait_until(Duration::from_secs(15), || {
                seen = row(sock, c.name);
                seen.as_ref()
                    .is_some_and(|(s, cs, _)| (s.as_str(), cs.as_str()) == want)
            });
            assert!(
                reached,
                "{}: {who} shows {seen:?}, want {want:?}\nrolelb: {}\nHAProxy: {}",
                c.name,
                rolelb.stderr_text(),
                haproxy.stderr_text()
            );
            // HAProxy empties `last_chk` while a check runs (every second here): take the
            // text of a row between two checks, with the wanted status, looking for longer
            // than one `inter`; it stays empty only when the result has none.
            let mut text = seen.map(|(_, _, text)| text).unwrap_or_default();
            let look = if who == "HAProxy" { 1500 } else { 0 };
            wait_until(Duration::from_millis(look), || {
                if let Some((s, cs, t)) = row(sock, c.name)
                    && (s.as_str(), cs.as_str()) == want
                    && !t.is_empty()
                {
                    text = t;
                }
                !text.is_empty()
            });
            texts.push(text);
        }
        // rolelb words an empty HTTP answer ("empty response") where HAProxy leaves the info
        // empty; every TLS outcome is worded as HAProxy words it.
        if c.check_status != "L7RSP" {
            assert_eq!(
                texts[1], texts[0],
                "{}: last_chk of rolelb (left) and HAProxy (right) differ",
                c.name
            );
        }
    }
}

/// `rolelb -c` and `haproxy -c` agree on `cfg`'s validity; rolelb's message contains `want`.
fn both_judge(cfg: &str, valid: bool, want: &str) {
    let (ours, out) = Rolelb::check(cfg);
    let (theirs, hout) = Haproxy::check(cfg);
    assert_eq!(theirs, valid, "HAProxy on:\n{cfg}\n{hout}");
    assert_eq!(ours, valid, "rolelb on:\n{cfg}\n{out}");
    assert!(out.contains(want), "rolelb said:\n{out}\nwant {want:?}");
}

#[test]
fn verify_required_without_ca_file_is_refused_as_haproxy_refuses_it() {
    let pki = Pki::new();
    let ca = pki.path("ca.pem");
    let cfg = |global: &str, server: &str| {
        format!(
            "global\n{global}defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 1s\n  timeout server 1s\n\
             listen b\n  bind 127.0.0.1:{}\n  server s1 127.0.0.1:8008 check {server}\n",
            free_port()
        )
    };
    both_judge(
        &cfg("", "check-ssl"),
        false,
        ":9: server 's1': verify is enabled by default but no CA file specified",
    );
    both_judge(
        &cfg("", "check-ssl verify required"),
        false,
        "verify is enabled but no CA file specified",
    );
    both_judge(
        &cfg("  ssl-server-verify none\n", "check-ssl"),
        true,
        "valid",
    );
    both_judge(&cfg("", "check-ssl verify none"), true, "valid");
    both_judge(
        &cfg("", &format!("check-ssl ca-file {}", ca.display())),
        true,
        "valid",
    );
    both_judge(
        &cfg(
            &format!("  ca-base {}\n", pki.dir.path().display()),
            "check-ssl ca-file ca.pem",
        ),
        true,
        "valid",
    );
    both_judge(
        &cfg("", "check-ssl ca-file /nonexistent/ca.pem"),
        false,
        "'ca-file' : unable to load /nonexistent/ca.pem",
    );
    both_judge(
        &cfg(
            &format!("  crt-base {}\n", pki.dir.path().display()),
            "check-ssl verify none crt client.pem",
        ),
        true,
        "valid",
    );
    both_judge(
        &cfg("", "check-ssl verify none crt /nonexistent/client.pem"),
        false,
        "'crt' : unable to load /nonexistent/client.pem",
    );
    both_judge(
        &cfg("", "verify none crt /nonexistent/client.pem"),
        true,
        "valid",
    );
    both_judge(
        &cfg("", "check-ssl verify sometimes"),
        false,
        "unknown verify method 'sometimes'",
    );
    both_judge(
        &cfg("  ssl-server-verify maybe\n", ""),
        false,
        "'ssl-server-verify' expects 'none' or 'required'",
    );
}
