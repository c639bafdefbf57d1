//! `stats ...` inside a proxy: `enable`, `uri`, `refresh`, `realm`, `auth`, `admin if|unless`,
//! `http-request allow|deny|auth`, `hide-version`, `show-legends`, `show-node`; and the
//! conditions those take (`TRUE`, `FALSE`, `LOCALHOST`, `{ src ... }`, `{ http_auth(L) }`,
//! `{ http_auth_group(L) G ... }`, the stats listener's own `acl NAME ...` lines, `!`, `||`).
//! Anything else is refused with the reason.

use std::net::IpAddr;

use super::Ctx;
use crate::config::draft::{ProxyDraft, ProxyKind};
use crate::config::model::Mode;
use crate::config::stats_access::{Action, Cond, Net, Rule, Term, Test};
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
            let cond = parse_cond(&words(ctx, 1), &p.stats.acls, ctx)?.ok_or_else(|| {
                "'stats admin' expects 'if' or 'unless' followed by a condition (e.g. 'stats admin if LOCALHOST')".to_string()
            })?;
            p.stats.admin.push(cond);
        }
        "http-request" => {
            if defaults {
                return Err("'stats http-request' is not allowed in a 'defaults' section".into());
            }
            let rule = parse_rule(&words(ctx, 1), &p.stats.acls, ctx)?;
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

fn words<'a>(ctx: &'a Ctx, from: usize) -> Vec<&'a str> {
    ctx.args.iter().skip(from).map(|w| w.as_str()).collect()
}

/// `allow|deny|auth [realm R] [if|unless COND]`.
fn parse_rule(words: &[&str], acls: &[(String, Test)], ctx: &Ctx) -> Result<Rule, String> {
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
    let cond = parse_cond(rest, acls, ctx)?;
    Ok(Rule { action, cond })
}

/// `acl NAME FETCH [VALUES]` in a stats listener (`mode http`), for its `stats admin` and
/// `stats http-request` conditions: the fetches of an inline `{ ... }` test. Elsewhere ACLs
/// are refused, as everything that routes by condition.
pub fn acl(p: &mut ProxyDraft, ctx: &mut Ctx) -> Result<(), String> {
    if p.mode != Mode::Http {
        return Err(format!("'acl' {}", super::unsupported::TCP_ONLY));
    }
    let name = ctx.arg(0, "an ACL name")?.to_string();
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.:".contains(*c)))
    {
        return Err(format!(
            "character '{c}' is not permitted in ACL name '{name}'"
        ));
    }
    if ctx.args.len() < 2 {
        return Err(format!(
            "'acl {name}' expects a test (e.g. 'acl {name} src 10.0.0.0/8')"
        ));
    }
    let test = anonymous_acl(&words(ctx, 1), ctx)?;
    p.stats.acls.push((name, test));
    Ok(())
}

/// `if|unless TERMS`, or nothing at all (`None`); `acls` are the proxy's named ACLs so far.
pub fn parse_cond(
    words: &[&str],
    acls: &[(String, Test)],
    ctx: &Ctx,
) -> Result<Option<Cond>, String> {
    let (unless, mut rest) = match words {
        [] => return Ok(None),
        ["if", rest @ ..] => (false, rest),
        ["unless", rest @ ..] => (true, rest),
        [other, ..] => {
            return Err(format!("unexpected '{other}': expected 'if' or 'unless'"));
        }
    };
    if rest.is_empty() {
        return Err(format!(
            "'{}' needs a condition",
            if unless { "unless" } else { "if" }
        ));
    }
    let mut any_of = vec![Vec::new()];
    while let Some((&word, tail)) = rest.split_first() {
        rest = tail;
        if word == "||" || word == "or" {
            any_of.push(Vec::new());
            continue;
        }
        let (negate, word) = match word.strip_prefix('!') {
            Some("") => {
                let (&next, tail) = rest.split_first().ok_or("'!' must be followed by a test")?;
                rest = tail;
                (true, next)
            }
            Some(w) => (true, w),
            None => (false, word),
        };
        let test = if word == "{" {
            let end = rest
                .iter()
                .position(|w| *w == "}")
                .ok_or("missing '}' closing the anonymous ACL")?;
            let test = anonymous_acl(&rest[..end], ctx)?;
            rest = &rest[end + 1..];
            test
        } else {
            named_acl(word, acls)?
        };
        if let Some(group) = any_of.last_mut() {
            group.push(Term { negate, test });
        }
    }
    if any_of.iter().any(Vec::is_empty) {
        return Err("a condition has an empty side of '||'".into());
    }
    Ok(Some(Cond { unless, any_of }))
}

/// An ACL declared above in the proxy (all its lines), or a predefined one rolelb evaluates
/// on a stats request; a proxy's own ACL hides a predefined one of the same name.
fn named_acl(name: &str, acls: &[(String, Test)]) -> Result<Test, String> {
    let tests: Vec<Test> = acls
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, t)| t.clone())
        .collect();
    if !tests.is_empty() {
        return Ok(Test::Acl {
            name: name.to_string(),
            tests,
        });
    }
    match name {
        "TRUE" => Ok(Test::True),
        "FALSE" => Ok(Test::False),
        "LOCALHOST" => Ok(Test::Src(localhost())),
        other => Err(format!(
            "no such ACL '{other}': declare it above with 'acl {other} ...' (rolelb's predefined ACLs are TRUE, FALSE and LOCALHOST)"
        )),
    }
}

/// `src 127.0.0.1/8 ::1`, HAProxy's `LOCALHOST`.
fn localhost() -> Vec<Net> {
    vec![
        Net {
            addr: IpAddr::from([127, 0, 0, 1]),
            prefix: 8,
        },
        Net {
            addr: IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
            prefix: 128,
        },
    ]
}

/// The words between `{` and `}`: a fetch and its values.
fn anonymous_acl(words: &[&str], ctx: &Ctx) -> Result<Test, String> {
    let Some((&fetch, values)) = words.split_first() else {
        return Err("an empty '{ }' anonymous ACL".into());
    };
    if let Some(flag) = values.iter().find(|v| v.starts_with('-')) {
        return Err(format!(
            "ACL flag '{flag}' is not supported in a stats condition"
        ));
    }
    let list_of = |name: &str| {
        fetch
            .strip_prefix(name)
            .and_then(|r| r.strip_prefix('('))
            .and_then(|r| r.strip_suffix(')'))
            .filter(|l| !l.is_empty() && !l.contains(','))
            .map(str::to_string)
    };
    match fetch {
        "always_true" if values.is_empty() => Ok(Test::True),
        "always_false" if values.is_empty() => Ok(Test::False),
        "src" if values.is_empty() => Err("'src' needs at least one address or network".into()),
        "src" => values
            .iter()
            .map(|v| parse_net(v))
            .collect::<Result<Vec<_>, _>>()
            .map(Test::Src),
        _ => {
            if let Some(list) = list_of("http_auth_group") {
                if values.is_empty() {
                    return Err(format!("'{fetch}' needs at least one group name"));
                }
                return Ok(Test::HttpAuth {
                    list,
                    groups: Some(values.iter().map(|v| (*v).to_string()).collect()),
                    loc: ctx.loc.clone(),
                });
            }
            if let Some(list) = list_of("http_auth") {
                if let Some(v) = values.first() {
                    return Err(format!("'{fetch}' takes no value, got '{v}'"));
                }
                return Ok(Test::HttpAuth {
                    list,
                    groups: None,
                    loc: ctx.loc.clone(),
                });
            }
            Err(format!(
                "'{fetch}' is not supported in a stats condition: rolelb knows src, http_auth(LIST), http_auth_group(LIST), always_true, always_false"
            ))
        }
    }
}

/// `ADDR`, `ADDR/BITS` or (IPv4) `ADDR/MASK`, as HAProxy's `src` patterns.
pub fn parse_net(text: &str) -> Result<Net, String> {
    let bad = || format!("'{text}' is not an IP address or network (ADDR, ADDR/BITS)");
    let (addr, mask) = match text.split_once('/') {
        Some((a, m)) => (a, Some(m)),
        None => (text, None),
    };
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let full = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match mask {
        None => full,
        Some(m) => match (m.parse::<u8>(), addr, m.parse::<std::net::Ipv4Addr>()) {
            (Ok(bits), _, _) if bits <= full => bits,
            (_, IpAddr::V4(_), Ok(dotted)) => {
                let bits = u32::from(dotted);
                if bits.leading_ones() + bits.trailing_zeros() != 32 {
                    return Err(format!("'{text}': the mask is not contiguous"));
                }
                // At most 32, so it fits.
                u8::try_from(bits.leading_ones()).map_err(|_| bad())?
            }
            _ => return Err(bad()),
        },
    };
    Ok(Net { addr, prefix })
}

#[cfg(test)]
mod tests {
    use crate::config::stats_access::{Action, Test};
    use crate::config::testing::{errors, parse};

    use super::parse_net;

    #[test]
    fn nets_parse_bits_and_dotted_masks() {
        let n = parse_net("10.0.0.0/255.0.0.0").expect("valid");
        assert_eq!(n.prefix, 8);
        assert!(n.contains("10.9.8.7".parse().expect("ip")));
        assert!(!n.contains("11.0.0.1".parse().expect("ip")));
        assert!(parse_net("10.0.0.0/255.0.255.0").is_err());
        assert!(parse_net("::1/129").is_err());
        assert!(parse_net("example").is_err());
        let v6 = parse_net("fd00::/8").expect("valid");
        assert!(v6.contains("fd12::1".parse().expect("ip")));
        let host = parse_net("127.0.0.1").expect("valid");
        assert!(host.contains("::ffff:127.0.0.1".parse().expect("ip")));
    }

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
    fn named_acls_join_their_lines_and_stay_refused_in_tcp_proxies() {
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
        let e = errors("frontend f\nbind :1\nacl W dst_port 5001\ndefault_backend b\nbackend b\nserver s 127.0.0.1:2\n")
            .join("\n");
        assert!(
            e.contains(":3:") && e.contains("'acl' is not supported: rolelb is a TCP balancer"),
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
