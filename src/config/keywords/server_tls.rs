//! The server options of health checks over TLS, read as HAProxy 2.6 reads them:
//! `check-ssl`/`no-check-ssl`, `verify none|required`, `ca-file FILE`, `check-sni NAME`,
//! `verifyhost NAME`/`no-verifyhost`, `crt FILE`. They fill the server's [`TlsDraft`]; the CA files are
//! loaded when the configuration is built (`build_tls.rs`).
//!
//! TLS on the traffic itself (`ssl`, `sni`, `alpn`...) is refused with what to write
//! instead: rolelb forwards the bytes of a session as they come and does not encrypt them.

use rustls::pki_types::ServerName;

use super::Ctx;
use super::server::{ServerKeyword, flag, with_arg};
use crate::config::draft::ServerDraft;
use crate::config::model::Verify;

/// The TLS options of health checks.
pub const TLS_KEYWORDS: &[ServerKeyword] = &[
    flag("check-ssl", |s, _| {
        s.tls.check_ssl = true;
        Ok(())
    }),
    flag("no-check-ssl", |s, _| {
        s.tls.check_ssl = false;
        Ok(())
    }),
    with_arg("verify", verify),
    with_arg("ca-file", |s, c| {
        s.tls.ca_file = Some(non_empty(c, "missing CAfile path")?);
        Ok(())
    }),
    with_arg("check-sni", |s, c| {
        let name = non_empty(c, "missing SNI")?;
        if name.parse::<std::net::IpAddr>().is_ok() {
            return Err(format!(
                "'check-sni' : '{name}' is an IP address, which TLS does not send as SNI: give a host name, or leave 'check-sni' out and name the certificate with 'verifyhost'"
            ));
        }
        s.tls.check_sni = Some(host_name(c, name)?);
        Ok(())
    }),
    // Any text, as in HAProxy: it is compared with the certificate's names.
    with_arg("verifyhost", |s, c| {
        s.tls.verifyhost = Some(non_empty(c, "missing hostname to verify against")?);
        Ok(())
    }),
    with_arg("crt", |s, c| {
        s.tls.crt = Some(non_empty(c, "missing certificate file path")?);
        Ok(())
    }),
    flag("no-verifyhost", |s, _| {
        s.tls.verifyhost = None;
        Ok(())
    }),
    // `ssl` is refused, so there is never one to undo: accepted for templates that write it.
    flag("no-ssl", |_, _| Ok(())),
];

/// `verify none|required`, with HAProxy's message for anything else.
fn verify(s: &mut ServerDraft, ctx: &mut Ctx) -> Result<(), String> {
    s.tls.verify = Some(match non_empty(ctx, "missing verify method")?.as_str() {
        "none" => Verify::None,
        "required" => Verify::Required,
        other => {
            return Err(format!(
                "'verify' : unknown verify method '{other}', only 'none' and 'required' are supported"
            ));
        }
    });
    Ok(())
}

/// The option's argument; HAProxy's `'KEYWORD' : MISSING` when it is empty.
fn non_empty(ctx: &Ctx, missing: &str) -> Result<String, String> {
    match ctx.args.first().map(|w| w.as_str()) {
        Some(text) if !text.is_empty() => Ok(text.to_string()),
        _ => Err(format!("'{}' : {missing}", ctx.keyword)),
    }
}

/// `name` if TLS can carry it as SNI (a DNS name).
fn host_name(ctx: &Ctx, name: String) -> Result<String, String> {
    match ServerName::try_from(name.as_str()) {
        Ok(_) => Ok(name),
        Err(_) => Err(format!(
            "'{}' : '{name}' is not a valid host name",
            ctx.keyword
        )),
    }
}

/// HAProxy's TLS options that rolelb refuses, with their arity, so that the options after
/// them on the line are still read (and their own mistakes reported).
pub const TLS_REFUSED: &[ServerKeyword] = &[
    flag("ssl", refuse),
    with_arg("sni", refuse),
    with_arg("alpn", refuse),
    with_arg("npn", refuse),
    with_arg("check-alpn", refuse),
    with_arg("check-proto", refuse),
    with_arg("crl-file", refuse),
    with_arg("ciphers", refuse),
    with_arg("ciphersuites", refuse),
    with_arg("ssl-min-ver", refuse),
    with_arg("ssl-max-ver", refuse),
    flag("force-sslv3", refuse),
    flag("force-tlsv10", refuse),
    flag("force-tlsv11", refuse),
    flag("force-tlsv12", refuse),
    flag("force-tlsv13", refuse),
    flag("no-sslv3", refuse),
    flag("no-tlsv10", refuse),
    flag("no-tlsv11", refuse),
    flag("no-tlsv12", refuse),
    flag("no-tlsv13", refuse),
    flag("no-tls-tickets", refuse),
    flag("tls-tickets", refuse),
    flag("ssl-reuse", refuse),
    flag("no-ssl-reuse", refuse),
    flag("allow-0rtt", refuse),
    flag("send-proxy-v2-ssl", refuse),
    flag("send-proxy-v2-ssl-cn", refuse),
    flag("no-send-proxy-v2-ssl", refuse),
    flag("no-send-proxy-v2-ssl-cn", refuse),
];

/// Why a TLS option of [`TLS_REFUSED`] is refused, and what to write instead.
fn refuse(_: &mut ServerDraft, ctx: &mut Ctx) -> Result<(), String> {
    let why = match ctx.keyword {
        "ssl" => {
            "rolelb does not encrypt the traffic to a server (it forwards a session's bytes as they come; the database can do TLS end to end); for health checks over TLS write 'check-ssl'"
        }
        "sni" => {
            "it names the server for TLS on the traffic, which rolelb does not encrypt; for health checks over TLS write 'check-sni NAME'"
        }
        "alpn" | "npn" | "check-alpn" | "check-proto" => {
            "health checks over TLS speak the check's own protocol without ALPN"
        }
        _ => {
            "health checks over TLS use TLS 1.2 or 1.3 with rustls' default ciphers; rolelb knows 'check-ssl', 'verify', 'ca-file', 'check-sni', 'verifyhost' and 'crt'"
        }
    };
    Err(format!(
        "server option '{}' is not supported: {why}",
        ctx.keyword
    ))
}

#[cfg(test)]
mod tests {
    use crate::config::draft::TlsDraft;
    use crate::config::model::Verify;

    fn parse(line: &str) -> (TlsDraft, Result<(), String>) {
        let (srv, r, _) = crate::config::testing::server_options(line);
        (srv.tls, r)
    }

    #[test]
    fn check_tls_options_are_read() {
        let (tls, r) = parse(
            "check check-ssl verify required ca-file /etc/ca.pem check-sni db1.example.com verifyhost db1 crt c.pem",
        );
        r.expect("valid");
        assert_eq!(
            tls,
            TlsDraft {
                check_ssl: true,
                verify: Some(Verify::Required),
                ca_file: Some("/etc/ca.pem".into()),
                check_sni: Some("db1.example.com".into()),
                verifyhost: Some("db1".into()),
                crt: Some("c.pem".into()),
            }
        );
        let (tls, r) =
            parse("check-ssl verify none verifyhost h no-check-ssl no-verifyhost no-ssl");
        r.expect("valid");
        assert!(!tls.check_ssl && tls.verifyhost.is_none());
        assert_eq!(tls.verify, Some(Verify::None));
    }

    #[test]
    fn bad_values_are_refused_with_haproxys_words() {
        let (_, r) = parse("verify optional");
        assert_eq!(
            r.unwrap_err(),
            "'verify' : unknown verify method 'optional', only 'none' and 'required' are supported"
        );
        assert!(
            parse("check-sni 10.0.0.1")
                .1
                .unwrap_err()
                .contains("IP address")
        );
        assert!(
            parse("check-sni bad..name")
                .1
                .unwrap_err()
                .contains("not a valid host name")
        );
        assert!(
            parse("ca-file")
                .1
                .unwrap_err()
                .contains("expects an argument")
        );
    }

    #[test]
    fn a_refused_option_does_not_stop_the_reading_of_the_line() {
        let (tls, r) = parse("ssl sni str(db1) check-ssl verify none alpn h2 check-sni db1");
        assert!(r.unwrap_err().contains("'ssl'"));
        assert!(tls.check_ssl);
        assert_eq!(tls.verify, Some(Verify::None));
        assert_eq!(tls.check_sni.as_deref(), Some("db1"));
    }

    #[test]
    fn tls_on_the_traffic_is_refused_with_what_to_write_instead() {
        let why = parse("ssl").1.unwrap_err();
        assert!(why.contains("'ssl'") && why.contains("check-ssl"), "{why}");
        let why = parse("sni str(db1)").1.unwrap_err();
        assert!(why.contains("check-sni"), "{why}");
        for opt in [
            "crl-file /c.pem",
            "alpn h2",
            "check-alpn h2",
            "ciphers X",
            "ssl-min-ver TLSv1.2",
        ] {
            assert!(parse(opt).1.unwrap_err().contains("not supported"), "{opt}");
        }
    }
}
