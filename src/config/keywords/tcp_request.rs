//! `tcp-request connection accept|reject [if|unless COND]`,
//! `tcp-request content accept|reject [if|unless COND]` and `tcp-request inspect-delay T`.
//! Connection rules run on accept, before an `accept-proxy` header is read; content rules
//! after it (so `src` is the header's). Other actions (`track-sc0`, `expect-proxy`,
//! `set-var`, ...) and `tcp-request session` are refused.

use super::Ctx;
use super::acl::{parse_cond, words};
use crate::config::acl::{TcpAction, TcpRule};
use crate::config::draft::{ProxyDraft, ProxyKind};
use crate::config::units::{TimeUnit, parse_duration};

/// `tcp-request connection|content|inspect-delay ...`.
pub fn tcp_request(p: &mut ProxyDraft, ctx: &mut Ctx) -> Result<(), String> {
    let what = ctx
        .arg(0, "'inspect-delay', 'connection' or 'content'")?
        .to_string();
    match what.as_str() {
        "inspect-delay" => {
            ctx.at_most(2)?;
            if !p.kind.has_frontend() {
                return Err(
                    "'tcp-request inspect-delay' in a backend is not supported by rolelb: set it in the frontend".into(),
                );
            }
            let delay = parse_duration(
                ctx.arg(1, "a delay after 'tcp-request inspect-delay'")?,
                TimeUnit::Millis,
            )?;
            p.inspect_delay = Some(delay);
        }
        "connection" | "content" => {
            if what == "connection" && !p.kind.has_frontend() {
                return Err(format!(
                    "'tcp-request connection' is not allowed because {} '{}' is not a frontend",
                    p.kind.keyword(),
                    p.name
                ));
            }
            if what == "content" && p.kind == ProxyKind::Backend {
                return Err(
                    "'tcp-request content' in a backend is not supported by rolelb: put the rule in the frontend".into(),
                );
            }
            let action = match ctx.arg(1, "an action ('accept' or 'reject')")? {
                "accept" => TcpAction::Accept,
                "reject" => TcpAction::Reject,
                "expect-proxy" => {
                    return Err(format!(
                        "'tcp-request {what} expect-proxy' is not supported: use 'accept-proxy' on the 'bind' line"
                    ));
                }
                other => {
                    return Err(format!(
                        "'tcp-request {what} {other}' is not supported: rolelb knows the actions accept and reject"
                    ));
                }
            };
            // As HAProxy: connection rules run before content rules, both before use_backend.
            let after = if what == "connection" && !p.tcp_request_content.is_empty() {
                Some("a 'tcp-request content'")
            } else if p.use_backend.is_some() || !p.use_backend_rules.is_empty() {
                Some("a 'use_backend'")
            } else {
                None
            };
            if let Some(after) = after {
                ctx.warn(format!(
                    "a 'tcp-request' rule placed after {after} rule will still be processed before."
                ));
            }
            let args = ctx.args;
            let cond = parse_cond(&words(args, 2), p, ctx)?;
            let rule = TcpRule {
                action,
                cond,
                loc: ctx.loc.clone(),
            };
            if what == "connection" {
                p.tcp_request_connection.push(rule);
            } else {
                p.tcp_request_content.push(rule);
            }
        }
        "session" => {
            return Err(
                "'tcp-request session' is not supported: use 'tcp-request content', which also runs after the PROXY header".into(),
            );
        }
        other => {
            return Err(format!(
                "'tcp-request {other}': expected 'inspect-delay', 'connection' or 'content'"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::acl::{Fetch, Patterns, TcpAction, Test};
    use crate::config::testing::{errors, parse};

    const TAIL: &str = "default_backend b\nbackend b\nserver s 127.0.0.1:2\nserver t 127.0.0.1:3\n";

    fn fe(rules: &str) -> String {
        format!("frontend f\nbind :1\n{rules}\n{TAIL}")
    }

    #[test]
    fn rules_keep_their_order_conditions_and_fetches() {
        let c = parse(&fe(
            "acl NET src 10.0.0.0/8\nacl NET src -m str 192.0.2.1\n\
             tcp-request connection reject if NET !{ dst_port 5000:5010 } || { nbsrv(b) lt 1 }\n\
             tcp-request content accept unless { srv_is_up(b/t) }\n\
             use_backend b if { src_port ge 1024 } { always_true }",
        ))
        .expect("valid");
        let f = &c.frontends[0];
        let rule = &f.tcp_request_connection[0];
        assert_eq!(rule.action, TcpAction::Reject);
        let cond = rule.cond.as_ref().expect("cond");
        assert_eq!(cond.any_of.len(), 2);
        assert!(matches!(&cond.any_of[0][0].test, Test::Acl { tests, .. } if tests.len() == 2));
        assert!(cond.any_of[0][1].negate);
        assert!(matches!(
            &cond.any_of[1][0].test,
            Test::Match { fetch: Fetch::Nbsrv(b), patterns: Patterns::Int(r) } if b == "b" && r[0].max == 0
        ));
        assert!(
            f.tcp_request_content[0]
                .cond
                .as_ref()
                .is_some_and(|c| c.unless)
        );
        assert_eq!(f.use_backend_rules.len(), 1);
        assert_eq!(f.backend, "b");
    }

    #[test]
    fn misuse_is_refused_with_the_line() {
        let cases = [
            (
                "tcp-request connection track-sc0 src",
                "knows the actions accept and reject",
            ),
            (
                "tcp-request session accept",
                "'tcp-request session' is not supported",
            ),
            (
                "tcp-request connection reject if { srv_is_up(b) }",
                "srv_is_up(BACKEND/SERVER)",
            ),
            (
                "tcp-request connection reject if { src -m int 1 }",
                "'-m int' cannot match 'src'",
            ),
            (
                "tcp-request connection reject if { dst_port -m beg 1 }",
                "'-m beg' is not supported",
            ),
            (
                "tcp-request connection reject if { src 10.0.0.0/33 }",
                "not an IP address",
            ),
            (
                "tcp-request connection reject if { dst_port lt }",
                "'lt' expects a value",
            ),
            (
                "tcp-request connection reject if { srv_is_up(b/s) 1 }",
                "takes no pattern",
            ),
            (
                "tcp-request connection reject if { nbsrv }",
                "needs a backend name in a frontend",
            ),
            (
                "tcp-request connection reject if { src 10.0.0.1",
                "missing '}'",
            ),
            (
                "tcp-request connection reject if NOPE",
                "no such ACL 'NOPE'",
            ),
            (
                "acl X src -f /nonexistent/list",
                "failed to open pattern file",
            ),
            (
                "acl X req.ssl_sni example.com",
                "'req.ssl_sni' is not supported",
            ),
            (
                "acl X method GET",
                "is an HTTP fetch (it reads the HTTP request line)",
            ),
        ];
        for (rule, expected) in cases {
            let e = errors(&fe(rule)).join("\n");
            assert!(
                e.contains("t.cfg:3:") && e.contains(expected),
                "{rule}: {e}"
            );
        }
        let e = errors(&format!(
            "frontend f\nbind :1\n{TAIL}tcp-request connection accept\n"
        ))
        .join("\n");
        assert!(
            e.contains("t.cfg:7:") && e.contains("is not a frontend"),
            "{e}"
        );
        let e = errors(&fe("use_backend nope if TRUE")).join("\n");
        assert!(
            e.contains("t.cfg:3:") && e.contains("backend 'nope', which does not exist"),
            "{e}"
        );
    }

    #[test]
    fn late_rules_and_empty_tests_warn() {
        let c = parse(&fe(
            "use_backend b if TRUE\ntcp-request content accept\ntcp-request connection reject if { dst_port }",
        ))
        .expect("valid");
        let w: Vec<String> = c.warnings.iter().map(ToString::to_string).collect();
        let w = w.join("\n");
        assert!(
            w.contains("t.cfg:4: a 'tcp-request' rule placed after a 'use_backend'"),
            "{w}"
        );
        assert!(
            w.contains("t.cfg:5: a 'tcp-request' rule placed after a 'tcp-request content'"),
            "{w}"
        );
        assert!(w.contains("t.cfg:5: 'dst_port' has no pattern"), "{w}");
    }
}
