//! The etcd extensions (SPEC sections 3 and 6): the `etcd NAME` section's keyword table
//! (`endpoints`, `user`, `password`, `dial-timeout`, `prefix`) and the `discover` line of
//! backends. Whether a `discover` names an existing `etcd` section, and whether a section is
//! complete, is judged in `build`: sections may come in any order and in several files.
//!
//! `password` lines carry a secret: no error here echoes the value of one.

use super::{Ctx, did_you_mean};
use crate::config::draft::{DiscoverDraft, EtcdDraft, ProxyDraft};
use crate::config::model::Schema;
use crate::config::units::{TimeUnit, parse_duration, parse_int};

/// Parser of one `etcd` section keyword.
pub type EtcdParser = fn(&mut EtcdDraft, &mut Ctx) -> Result<(), String>;

/// One entry of the `etcd` section table.
pub struct EtcdKeyword {
    /// The keyword.
    pub name: &'static str,
    /// Its parser.
    pub parse: EtcdParser,
}

const fn kw(name: &'static str, parse: EtcdParser) -> EtcdKeyword {
    EtcdKeyword { name, parse }
}

/// The `etcd` section keywords.
pub const ETCD_KEYWORDS: &[EtcdKeyword] = &[
    kw("endpoints", endpoints),
    kw("user", user),
    kw("password", password),
    kw("dial-timeout", dial_timeout),
    kw("prefix", prefix),
];

/// Parses one line of an `etcd` section.
pub fn etcd_line(e: &mut EtcdDraft, ctx: &mut Ctx) -> Result<(), String> {
    let keyword = ctx.keyword;
    match ETCD_KEYWORDS.iter().find(|k| k.name == keyword) {
        Some(k) => (k.parse)(e, ctx),
        None => Err(format!(
            "unknown keyword '{keyword}' in 'etcd' section{} (known: {})",
            did_you_mean(keyword, ETCD_KEYWORDS.iter().map(|k| k.name)),
            ETCD_KEYWORDS
                .iter()
                .map(|k| k.name)
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// `endpoints URL...`: each `http://HOST:PORT` or `HOST:PORT`, several per line or
/// comma-separated as etcdctl takes them; repeated lines add up.
fn endpoints(e: &mut EtcdDraft, ctx: &mut Ctx) -> Result<(), String> {
    ctx.arg(0, "one or more client URLs such as 'http://10.0.0.1:2379'")?;
    for word in ctx.args {
        for url in word.as_str().split(',').filter(|u| !u.is_empty()) {
            let url = parse_endpoint(url)?;
            if !e.endpoints.contains(&url) {
                e.endpoints.push(url);
            }
        }
    }
    Ok(())
}

/// Normalises one endpoint to `http://HOST:PORT`.
pub fn parse_endpoint(text: &str) -> Result<String, String> {
    if text.starts_with("https://") || text.starts_with("unixs://") {
        return Err(format!(
            "etcd endpoint '{text}': TLS to etcd is not supported in this version; use an http:// endpoint on a trusted network"
        ));
    }
    let rest = text.strip_prefix("http://").unwrap_or(text);
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains("://") || rest.contains('/') {
        return Err(format!(
            "invalid etcd endpoint '{text}': write http://HOST:PORT"
        ));
    }
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("etcd endpoint '{text}' has no port (write http://HOST:2379)"))?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.is_empty() || bare.contains(|c: char| c.is_whitespace()) {
        return Err(format!("etcd endpoint '{text}' has no host"));
    }
    parse_int(port, "etcd endpoint port", 1, 65535)?;
    Ok(format!("http://{host}:{port}"))
}

fn user(e: &mut EtcdDraft, ctx: &mut Ctx) -> Result<(), String> {
    ctx.at_most(1)?;
    let name = ctx.arg(0, "a user name")?;
    if name.is_empty() {
        return Err("'user': the user name is empty".into());
    }
    e.user = Some((name.to_string(), ctx.loc.clone()));
    Ok(())
}

fn password(e: &mut EtcdDraft, ctx: &mut Ctx) -> Result<(), String> {
    if ctx.args.len() > 1 {
        return Err("'password' takes one value (quote it if it has spaces)".into());
    }
    let word = ctx.args.first().ok_or("'password' expects a value")?;
    // `\xHH` escapes may make bytes that are not text; never guess at a credential.
    let text = String::from_utf8(word.bytes.clone())
        .map_err(|_| "the etcd password is not valid UTF-8".to_string())?;
    e.password = Some((text, ctx.loc.clone()));
    Ok(())
}

fn dial_timeout(e: &mut EtcdDraft, ctx: &mut Ctx) -> Result<(), String> {
    ctx.at_most(1)?;
    let d = parse_duration(ctx.arg(0, "a duration such as '2s'")?, TimeUnit::Millis)?;
    if d.is_zero() {
        return Err("'dial-timeout' must be more than zero".into());
    }
    e.dial_timeout = Some(d);
    Ok(())
}

fn prefix(e: &mut EtcdDraft, ctx: &mut Ctx) -> Result<(), String> {
    ctx.at_most(1)?;
    let p = ctx.arg(0, "a key prefix such as '/rolelb'")?;
    e.prefix = Some(p.trim_end_matches('/').to_string());
    Ok(())
}

/// `discover etcd NAME path PREFIX [schema native|patroni] [port N]`.
pub fn discover(p: &mut ProxyDraft, ctx: &mut Ctx) -> Result<(), String> {
    const USAGE: &str = "discover etcd NAME path PREFIX [schema native|patroni] [port N]";
    match ctx.arg(0, &format!("'etcd NAME path PREFIX' ({USAGE})"))? {
        "etcd" => {}
        other => {
            return Err(format!(
                "unknown discovery source '{other}': rolelb discovers servers from etcd ({USAGE})"
            ));
        }
    }
    let etcd = ctx.arg(1, &format!("the name of an 'etcd' section ({USAGE})"))?;
    let mut draft = DiscoverDraft {
        etcd: etcd.to_string(),
        path: String::new(),
        schema: Schema::Native,
        port: None,
    };
    let mut path = None;
    let rest = ctx.args.get(2..).unwrap_or_default();
    for pair in rest.chunks(2) {
        let keyword = pair[0].as_str();
        let Some(value) = pair.get(1).map(|w| w.as_str()) else {
            return Err(format!("'discover': '{keyword}' expects a value ({USAGE})"));
        };
        match keyword {
            "path" => path = Some(value),
            "schema" => {
                draft.schema = match value {
                    "native" => Schema::Native,
                    "patroni" => Schema::Patroni,
                    other => {
                        return Err(format!(
                            "unknown discover schema '{other}' (use native or patroni)"
                        ));
                    }
                }
            }
            "port" => {
                let n = parse_int(value, "discover port", 1, 65535)?;
                draft.port = u16::try_from(n).ok();
            }
            other => {
                let hint = did_you_mean(other, ["path", "schema", "port"].into_iter());
                return Err(format!(
                    "'discover': unknown word '{other}'{hint} ({USAGE})"
                ));
            }
        }
    }
    let path = path.ok_or_else(|| format!("'discover' needs 'path PREFIX' ({USAGE})"))?;
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return Err(format!(
            "'discover': path '{path}' is empty: name the key prefix, e.g. /service/pg"
        ));
    }
    draft.path = trimmed.to_string();
    p.discover = Some((draft, ctx.loc.clone()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RoleSource;
    use crate::config::testing::{errors, parse};
    use std::time::Duration;

    const ETCD: &str = "etcd main\nendpoints http://127.0.0.1:2379\n";

    #[test]
    fn etcd_section_and_discover_line() {
        let c = parse(
            "backend pg\ndefault-server inter 1s check port 5432\n\
             discover etcd main path /service/pg/ schema patroni port 6432\n\
             server static 127.0.0.1:1\n\
             etcd main\nendpoints http://10.0.0.1:2379 10.0.0.2:2379,10.0.0.3:2379\n\
             endpoints http://10.0.0.1:2379\nuser rolelb\npassword s3cret\n\
             dial-timeout 500\nprefix /dc1/\n",
        )
        .unwrap();
        let e = &c.etcd[0];
        assert_eq!(e.name, "main");
        assert_eq!(
            e.endpoints,
            [
                "http://10.0.0.1:2379",
                "http://10.0.0.2:2379",
                "http://10.0.0.3:2379"
            ]
        );
        let auth = e.auth.as_ref().unwrap();
        assert_eq!(
            (auth.user.as_str(), auth.password.as_str()),
            ("rolelb", "s3cret")
        );
        assert!(
            !format!("{e:?}").contains("s3cret"),
            "Debug shows the password"
        );
        assert_eq!(e.dial_timeout, Duration::from_millis(500));
        let b = &c.backends[0];
        let d = b.discover.as_ref().unwrap();
        assert_eq!(
            (d.etcd.as_str(), d.path.as_str(), d.schema, d.port),
            ("main", "/dc1/service/pg", Schema::Patroni, Some(6432))
        );
        assert_eq!(d.loc.line, 3);
        assert_eq!(b.role_source, RoleSource::Both);
        let t = &b.default_server;
        assert_eq!(
            (t.check, t.inter, t.check_port, t.etcd),
            (true, Duration::from_secs(1), Some(5432), None)
        );
        assert_eq!(b.servers.len(), 1);
    }

    #[test]
    fn discover_defaults() {
        let c = parse(&format!(
            "listen pg\nbind :1\ndiscover etcd main path /db\n{ETCD}"
        ))
        .unwrap();
        let d = c.backends[0].discover.as_ref().unwrap();
        assert_eq!((d.schema, d.port), (Schema::Native, None));
        assert_eq!(c.etcd[0].dial_timeout, Duration::from_secs(2));
        assert_eq!(c.etcd[0].prefix, "");
        assert!(parse("backend b\n").unwrap().backends[0].discover.is_none());
        assert!(parse("backend b\n").unwrap().etcd.is_empty());
    }

    #[test]
    fn discover_names_an_unknown_etcd_at_its_line() {
        let e = errors(&format!("backend b\ndiscover etcd mian path /db\n{ETCD}"));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("t.cfg:2: backend 'b' discovers from etcd 'mian', which is not declared (did you mean 'main'?)"),
            "{e:?}"
        );
        let e = errors("backend b\ndiscover etcd main path /db\n");
        assert!(e[0].contains("add an 'etcd main' section"), "{e:?}");
    }

    #[test]
    fn discover_bad_words() {
        for (line, want) in [
            ("discover etcd main", "needs 'path PREFIX'"),
            ("discover etcd main path", "'path' expects a value"),
            ("discover etcd main path /", "is empty"),
            (
                "discover etcd main path /a schema consul",
                "unknown discover schema 'consul'",
            ),
            ("discover etcd main path /a port 0", "discover port"),
            ("discover etcd main path /a port 70000", "discover port"),
            (
                "discover etcd main path /a prot 5432",
                "did you mean 'port'?",
            ),
            (
                "discover consul main path /a",
                "unknown discovery source 'consul'",
            ),
            ("discover", "'discover' expects"),
            ("discover etcd", "the name of an 'etcd' section"),
        ] {
            let e = errors(&format!("backend b\n{line}\n{ETCD}"));
            assert!(
                e[0].starts_with("t.cfg:2: ") && e[0].contains(want),
                "{line}: {e:?}"
            );
        }
        for section in ["defaults", "frontend f\nbind :1\ndefault_backend b"] {
            let e = errors(&format!(
                "{section}\ndiscover etcd main path /a\nbackend b\n{ETCD}"
            ));
            assert!(
                e.iter().any(|e| e.contains("'discover' is not allowed")),
                "{e:?}"
            );
        }
    }

    #[test]
    fn etcd_section_errors() {
        let e = errors("etcd main\nuser u\n");
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].starts_with("t.cfg:1: etcd section 'main' has no 'endpoints'"),
            "{e:?}"
        );
        assert!(
            e[1].starts_with("t.cfg:2: etcd section 'main' has a 'user' but no 'password'"),
            "{e:?}"
        );
        let e = errors(&format!("{ETCD}password s3cret\n"));
        assert!(e[0].contains("'password' but no 'user'"), "{e:?}");
        let e = errors(&format!("{ETCD}password s3cret extra\n"));
        assert!(e[0].contains("'password' takes one value"), "{e:?}");
        let e = errors(&format!("{ETCD}endpoint http://h:1\n"));
        assert!(
            e[0].contains(
                "unknown keyword 'endpoint' in 'etcd' section (did you mean 'endpoints'?)"
            ),
            "{e:?}"
        );
        let e = errors(&format!("{ETCD}{ETCD}"));
        assert!(
            e[0].starts_with("t.cfg:3: etcd section 'main' is declared twice (first at t.cfg:1)"),
            "{e:?}"
        );
        let e = errors("etcd\nendpoints h:1\n");
        assert!(e[0].contains("missing name for 'etcd' section"), "{e:?}");
        let e = errors(&format!("{ETCD}dial-timeout 0\n"));
        assert!(e[0].contains("more than zero"), "{e:?}");
        let e = errors("etcd main\nendpoints https://h:2379\n");
        assert!(
            e.iter()
                .any(|e| e.starts_with("t.cfg:2: ") && e.contains("TLS to etcd is not supported")),
            "{e:?}"
        );
        // An incomplete section is reported once, not again at each discover line.
        let e = errors("backend b\ndiscover etcd main path /a\netcd main\n");
        assert_eq!(e.len(), 1, "{e:?}");
    }

    #[test]
    fn role_source_defaults_and_rules_with_discover() {
        let pg = "role-check pgsql user monitor\n";
        // `role-source etcd` needs no role check.
        let c = parse(&format!(
            "backend w\nrole primary\nrole-source etcd\ndiscover etcd main path /db\n{ETCD}"
        ))
        .unwrap();
        assert_eq!(c.backends[0].role_source, RoleSource::Etcd);
        // The default with discover is `both`, which needs one.
        let e = errors(&format!(
            "backend w\nrole primary\ndiscover etcd main path /db\n{ETCD}"
        ));
        assert!(
            e[0].starts_with("t.cfg:2: backend 'w' has 'role primary' but no 'role-check'"),
            "{e:?}"
        );
        assert!(e[0].contains("'role-source etcd'"), "{e:?}");
        let c = parse(&format!(
            "backend w\nrole primary\n{pg}discover etcd main path /db\n{ETCD}"
        ))
        .unwrap();
        assert_eq!(c.backends[0].role_source, RoleSource::Both);
        let c = parse(&format!(
            "backend w\nrole-source check\ndiscover etcd main path /db\n{ETCD}"
        ))
        .unwrap();
        assert_eq!(c.backends[0].role_source, RoleSource::Check);
        // max-lag is measured by a role check only.
        let e = errors(&format!(
            "backend r\nrole replica\nrole-source etcd\nmax-lag 1m\ndiscover etcd main path /db\n{ETCD}"
        ));
        assert!(
            e[0].starts_with("t.cfg:4: backend 'r': 'max-lag' needs a 'role-check'"),
            "{e:?}"
        );
        // Discovered servers need the agent-check the role comes from.
        let e = errors(&format!(
            "backend a\nrole-check agent\ndiscover etcd main path /db\n{ETCD}"
        ));
        assert!(
            e[0].starts_with("t.cfg:3: backend 'a' takes roles from the agent"),
            "{e:?}"
        );
    }

    #[test]
    fn endpoints_are_normalised() {
        assert_eq!(
            parse_endpoint("http://127.0.0.1:2379").as_deref(),
            Ok("http://127.0.0.1:2379")
        );
        assert_eq!(
            parse_endpoint("etcd1:2379/").as_deref(),
            Ok("http://etcd1:2379")
        );
        assert_eq!(
            parse_endpoint("http://[::1]:2379").as_deref(),
            Ok("http://[::1]:2379")
        );
        for bad in [
            "etcd1",
            "http://etcd1",
            ":2379",
            "http://h:0",
            "http://h:99999",
            "http://h:2379/v3",
            "ftp://h:1",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
        assert!(
            parse_endpoint("https://h:2379")
                .unwrap_err()
                .contains("TLS")
        );
    }
}
