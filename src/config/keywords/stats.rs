//! `stats ...` inside a proxy: `enable`, `uri`, `refresh`, `realm`, `auth`, `admin if|unless`,
//! `http-request allow|deny|auth`, `hide-version`, `show-legends`, `show-node`; and the
//! conditions those take (parsed by [`super::acl`]: `TRUE`, `FALSE`, `LOCALHOST`,
//! `{ src ... }`, `{ http_auth(L) }`, `{ http_auth_group(L) G ... }`, the listener's own
//! `acl NAME ...` lines, `!`, `||`). Anything else is refused with the reason.

use super::Ctx;
use super::acl::{parse_cond, words};
use crate::config::draft::{ProxyDraft, ProxyKind};
use crate::config::stats_access::{Action, Rule};
use crate::config::units::{TimeUnit, parse_duration};

/// `stats enable|uri|refresh|realm|auth|admin|http-request|hide-version|show-legends|show-node`.
pub fn stats(p: &mut ProxyDraft, ctx: &mut Ctx) -> Result<(), String> {
    let sub = ctx.arg(0, "a stats keyword such as 'enable', 'uri' or 'auth'")?;
    let sub = sub.to_string();
    let defaults = p.kind == ProxyKind::Defaults;
    match sub.as_str() {
        "enable" => {
            ctx.at_most(1)?;
            p.stats.enable = Some(ctx.loc.clone());
        }
        "uri" => {
            ctx.at_most(2)?;
            let uri = ctx.arg(1, "a path after 'stats uri'")?;
            if !uri.starts_with('/') {
                return Err(format!("'stats uri {uri}': the path must start with '/'"));
            }
            p.stats.uri = Some(uri.to_string());
        }
        "refresh" => {
            ctx.at_most(2)?;
            let d = parse_duration(
                ctx.arg(1, "a duration after 'stats refresh'")?,
                TimeUnit::Seconds,
            )?;
            // As HAProxy: 0 means the page does not refresh itself.
            p.stats.refresh = (!d.is_zero()).then_some(d);
        }
        "realm" => {
            ctx.at_most(2)?;
            p.stats.realm = Some(ctx.arg(1, "a realm name after 'stats realm'")?.to_string());
        }
        "auth" => {
            ctx.at_most(2)?;
            let account = ctx.arg(1, "a user:password account after 'stats auth'")?;
            let Some((user, pass)) = account.split_once(':') else {
                return Err(format!(
                    "'stats auth {account}': write the account as USER:PASSWORD"
                ));
            };
            p.stats
                .auth
                .push((user.to_string(), pass.to_string(), ctx.loc.clone()));
        }
        "admin" => {
            if defaults {
                return Err("'stats admin' is not allowed in a 'defaults' section".into());
            }
            let args = ctx.args;
            let cond = parse_cond(&words(args, 1), p, ctx)?.ok_or_else(|| {
                "'stats admin' expects 'if' or 'unless' followed by a condition (e.g. 'stats admin if LOCALHOST')".to_string()
            })?;
            p.stats.admin.push(cond);
        }
        "http-request" => {
            if defaults {
                return Err("'stats http-request' is not allowed in a 'defaults' section".into());
            }
            let args = ctx.args;
            let rule = parse_rule(&words(args, 1), p, ctx)?;
            if p.stats
                .http_request
                .last()
                .is_some_and(|r| r.cond.is_none())
            {
                ctx.warn("previous 'stats http-request' rule has no condition attached, further rules are never used");
            }
            p.stats
                .http_request_loc
                .get_or_insert_with(|| ctx.loc.clone());
            p.stats.http_request.push(rule);
        }
        "hide-version" => {
            ctx.at_most(1)?;
            p.stats.hide_version = true;
        }
        "show-legends" => {
            ctx.at_most(1)?;
            p.stats.show_legends = true;
        }
        "show-node" => {
            ctx.at_most(2)?;
            let name = ctx.args.get(1).map(|w| w.as_str()).unwrap_or_default();
            if !name.is_empty()
                && !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
            {
                return Err(format!(
                    "'stats show-node {name}': a node name has only letters, digits, '-', '_' and '.'"
                ));
            }
            p.stats.show_node = Some(name.to_string());
        }
        "show-desc" | "show-modules" => {
            ctx.warn(format!(
                "'stats {sub}' is accepted for compatibility and ignored by rolelb"
            ));
        }
        "scope" => {
            return Err(
                "'stats scope' is not supported: the stats page always lists every backend".into(),
            );
        }
        "socket" | "timeout" | "maxconn" | "bind-process" => {
            return Err(format!("'stats {sub}' belongs in the 'global' section"));
        }
        other => {
            return Err(format!(
                "unknown 'stats {other}' (rolelb knows stats enable, uri, refresh, realm, auth, admin, http-request, hide-version, show-legends, show-node)"
            ));
        }
    }
    Ok(())
}

/// `allow|deny|auth [realm R] [if|unless COND]`.
fn parse_rule(words: &[&str], p: &ProxyDraft, ctx: &mut Ctx) -> Result<Rule, String> {
    let (action, rest) = match words {
        ["allow", rest @ ..] => (Action::Allow, rest),
        ["deny", rest @ ..] => (Action::Deny, rest),
        ["auth", "realm", realm, rest @ ..] => (
            Action::Auth {
                realm: (*realm).to_string(),
            },
            rest,
        ),
        ["auth", rest @ ..] => (
            Action::Auth {
                realm: crate::config::stats_access::DEFAULT_REALM.to_string(),
            },
            rest,
        ),
        [other, ..] => {
            return Err(format!(
                "'stats http-request {other}' is not supported: rolelb knows allow, deny and auth [realm R]"
            ));
        }
        [] => return Err("'stats http-request' expects allow, deny or auth".into()),
    };
    let cond = parse_cond(rest, p, ctx)?;
    Ok(Rule { action, cond })
}

#[cfg(test)]
mod tests {
    use crate::config::stats_access::{Action, Test};
    use crate::config::testing::{errors, parse};

    #[test]
    fn admin_conditions_parse_and_others_are_refused() {
        let c = parse(
            "listen st\nmode http\nbind :1\nstats enable\nstats admin if LOCALHOST || { src 10.0.0.0/8 } !FALSE\n",
        )
        .expect("valid");
        let admin = &c.stats[0].admin;
        assert_eq!(admin.len(), 1);
        assert_eq!(admin[0].any_of.len(), 2);
        assert!(admin[0].any_of[1][1].negate);
        let e = errors("listen st\nmode http\nbind :1\nstats enable\nstats admin if METH_GET\n")
            .join("\n");
        assert!(
            e.contains(":5:") && e.contains("no such ACL 'METH_GET'"),
            "{e}"
        );
        let e = errors("listen st\nmode http\nbind :1\nstats enable\nstats admin\n").join("\n");
        assert!(e.contains(":5:") && e.contains("'if' or 'unless'"), "{e}");
        let e =
            errors("listen st\nmode http\nbind :1\nstats enable\nstats admin if { hdr(x) y }\n")
                .join("\n");
        assert!(e.contains("'hdr(x)' is not supported"), "{e}");
    }

    #[test]
    fn named_acls_join_their_lines() {
        let c = parse(
            "userlist L\nuser a insecure-password b\nlisten st\nmode http\nbind :1\nstats enable\n\
             acl NET src 10.0.0.0/8\nacl NET src 192.0.2.1\nacl AUTH http_auth(L)\n\
             stats http-request auth unless AUTH\nstats admin if NET\n",
        )
        .expect("valid");
        let s = &c.stats[0];
        assert!(
            matches!(&s.admin[0].any_of[0][0].test, Test::Acl { tests, .. } if tests.len() == 2)
        );
        assert_eq!(s.userlists[0].name, "L");
        let e = errors("listen st\nmode http\nbind :1\nstats enable\nstats admin if NET\nacl NET src 10.0.0.0/8\n")
            .join("\n");
        assert!(e.contains(":5:") && e.contains("no such ACL 'NET'"), "{e}");
        let e =
            errors("listen st\nmode http\nbind :1\nstats enable\nacl H hdr(host) x\n").join("\n");
        assert!(
            e.contains(":5:") && e.contains("'hdr(host)' is not supported"),
            "{e}"
        );
    }

    #[test]
    fn stats_auth_becomes_a_rule_with_the_realm() {
        let c = parse(
            "listen st\nmode http\nbind :1\nstats enable\nstats realm Ops\nstats auth a:b\nstats auth c:d:e\n",
        )
        .expect("valid");
        let s = &c.stats[0];
        assert_eq!(s.rules.len(), 1);
        assert_eq!(
            s.rules[0].action,
            Action::Auth {
                realm: "Ops".into()
            }
        );
        let list = &s.userlists[0];
        assert_eq!(list.users.len(), 2);
        assert_eq!(list.users[1].name, "c");
        let e =
            errors("listen st\nmode http\nbind :1\nstats enable\nstats auth nocolon\n").join("\n");
        assert!(e.contains(":5:") && e.contains("USER:PASSWORD"), "{e}");
    }

    #[test]
    fn http_request_rules_need_known_userlists_and_exclude_stats_auth() {
        let c = parse(
            "userlist L\nuser u insecure-password p\nlisten st\nmode http\nbind :1\nstats enable\nstats http-request auth realm R unless { http_auth(L) }\n",
        )
        .expect("valid");
        let rule = &c.stats[0].rules[0];
        assert!(matches!(
            &rule.cond.as_ref().expect("cond").any_of[0][0].test,
            Test::HttpAuth { list, .. } if list == "L"
        ));
        let e = errors(
            "listen st\nmode http\nbind :1\nstats enable\nstats http-request auth unless { http_auth(M) }\n",
        ).join("\n");
        assert!(e.contains(":5:") && e.contains("no userlist 'M'"), "{e}");
        let e = errors(
            "userlist L\nlisten st\nmode http\nbind :1\nstats enable\nstats auth a:b\nstats http-request deny\n",
        ).join("\n");
        assert!(e.contains("can't be used at the same time"), "{e}");
    }
}
