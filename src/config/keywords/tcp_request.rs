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
