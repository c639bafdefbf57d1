//! `stick-table type ip|ipv6|integer|string [len N] size N [expire T] [nopurge]` and
//! `stick on|match|store-request src|dst [table NAME] [if|unless COND]` in a backend or listen
//! section. The rules act in `table::stick` when the server is picked (match) and once the
//! connection to it is made (store), on the entries of `live::stick`.

use super::Ctx;
use super::acl::{parse_cond, words};
use crate::config::draft::ProxyDraft;
use crate::config::stick::{
    KeyType, MAX_STICK_RULES, StickAction, StickFetch, StickRule, StickTable,
};
use crate::config::units::{MAX_COUNT, TimeUnit, parse_duration, parse_size};

/// HAProxy's default `len` of a `string` key.
const STRING_LEN: usize = 32;

/// The longest `expire` HAProxy takes (its timers count milliseconds in an `int`).
const MAX_EXPIRE_MS: u128 = i32::MAX as u128;

/// `stick-table ...`.
pub fn stick_table(p: &mut ProxyDraft, ctx: &mut Ctx) -> Result<(), String> {
    if let Some(prev) = &p.stick_table {
        return Err(format!(
            "only one 'stick-table' per proxy; the first one is at {}",
            prev.loc
        ));
    }
    let mut key = None;
    let mut size = None;
    let mut expire = None;
    let mut nopurge = false;
    let mut i = 0;
    while i < ctx.args.len() {
        let word = ctx.arg(i, "an option")?.to_string();
        let value = |i: usize| ctx.arg(i + 1, &format!("a value after '{word}'"));
        match word.as_str() {
            "type" => {
                key = Some(match value(i)? {
                    "ip" => KeyType::Ip,
                    "ipv6" => KeyType::Ipv6,
                    "integer" => KeyType::Integer,
                    "string" => {
                        if ctx.args.get(i + 2).is_some_and(|w| w.as_str() == "len") {
                            let len = ctx.arg(i + 3, "a length after 'len'")?;
                            i += 2;
                            let len = crate::config::units::parse_int(len, "'len'", 1, 65_535)?;
                            KeyType::String(usize::try_from(len).unwrap_or(STRING_LEN))
                        } else {
                            KeyType::String(STRING_LEN)
                        }
                    }
                    "binary" => {
                        return Err(
                            "'type binary' is not supported: rolelb's stick rules read 'src' or 'dst', use 'ip', 'ipv6', 'integer' or 'string'".into(),
                        );
                    }
                    other => return Err(format!("unknown type '{other}'")),
                });
            }
            "size" => {
                let n = parse_size(value(i)?)?;
                if n == 0 || n > MAX_COUNT {
                    return Err(format!("'size' must be between 1 and {MAX_COUNT}"));
                }
                size = u32::try_from(n).ok();
            }
            "expire" => {
                let d = parse_duration(value(i)?, TimeUnit::Millis)?;
                if d.as_millis() > MAX_EXPIRE_MS {
                    return Err(
                        "'expire' is too large, maximum value is 2147483647 ms (~24.8 days)".into(),
                    );
                }
                // As HAProxy: 0 means no expiry.
                expire = (!d.is_zero()).then_some(d);
            }
            "nopurge" => {
                nopurge = true;
                i += 1;
                continue;
            }
            "peers" => {
                return Err(
                    "'peers' is not supported: rolelb has no peers protocol, its stick tables are local to each process".into(),
                );
            }
            "store" | "srvkey" => {
                return Err(format!(
                    "'{word}' is not supported: rolelb's stick tables store only the server, by name"
                ));
            }
            other => return Err(format!("unknown argument '{other}'")),
        }
        i += 2;
    }
    let size = size.ok_or("missing size")?;
    let key = key.ok_or("missing type")?;
    p.stick_table = Some(StickTable {
        key,
        size,
        expire,
        nopurge,
        loc: ctx.loc.clone(),
    });
    Ok(())
}

/// `stick on|match|store-request src|dst [table NAME]`.
pub fn stick(p: &mut ProxyDraft, ctx: &mut Ctx) -> Result<(), String> {
    let action = match ctx.arg(0, "'on', 'match' or 'store-request'")? {
        "on" => StickAction::On,
        "match" => StickAction::Match,
        "store-request" => StickAction::StoreRequest,
        "store-response" => {
            return Err(
                "'stick store-response' is not supported: rolelb reads no response contents".into(),
            );
        }
        other => {
            return Err(format!(
                "unknown 'stick' action '{other}': expected 'on', 'match' or 'store-request'"
            ));
        }
    };
    let fetch = match ctx.arg(1, "a sample ('src' or 'dst')")? {
        "src" => StickFetch::Src,
        "dst" => StickFetch::Dst,
        other => {
            return Err(format!(
                "'stick {}' on '{other}' is not supported: rolelb sticks on 'src' or 'dst'",
                ctx.arg(0, "")?
            ));
        }
    };
    let mut i = 2;
    let mut table = None;
    if ctx.args.get(i).is_some_and(|w| w.as_str() == "table") {
        table = Some(ctx.arg(i + 1, "a table name after 'table'")?.to_string());
        i += 2;
    }
    let args = ctx.args;
    let cond = match args.get(i).map(|w| w.as_str()) {
        None | Some("if" | "unless") => parse_cond(&words(args, i), p, ctx)?,
        Some(other) => return Err(format!("'stick': unexpected argument '{other}'")),
    };
    if p.stick_rules.len() >= MAX_STICK_RULES {
        return Err(format!(
            "too many 'stick' rules: rolelb takes at most {MAX_STICK_RULES} per backend"
        ));
    }
    p.stick_rules.push(StickRule {
        action,
        fetch,
        table,
        cond,
        loc: ctx.loc.clone(),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::stick::{KeyType, StickAction, StickFetch};
    use crate::config::testing::{errors, parse};

    fn be(lines: &str) -> String {
        format!("listen l\nbind :1\n{lines}\nserver s 127.0.0.1:2\nserver t 127.0.0.1:3\n")
    }

    #[test]
    fn table_and_rules_are_read() {
        let c = parse(&be(
            "stick-table type ip size 1 expire 30s\nstick on dst\nstick match src table l if { src 127.0.0.2 }\nstick store-request src unless { dst_port 80 }",
        ))
        .expect("valid");
        let stick = c.backends[0].stick.as_ref().expect("a stick table");
        let table = stick.table.as_ref().expect("own table");
        assert_eq!(table.key, KeyType::Ip);
        assert_eq!(table.size, 1);
        assert_eq!(table.expire, Some(Duration::from_secs(30)));
        let rules: Vec<_> = stick
            .rules
            .iter()
            .map(|r| (r.action, r.fetch, r.table.as_deref(), r.cond.is_some()))
            .collect();
        assert_eq!(
            rules,
            [
                (StickAction::On, StickFetch::Dst, None, false),
                (StickAction::Match, StickFetch::Src, Some("l"), true),
                (StickAction::StoreRequest, StickFetch::Src, None, true),
            ]
        );
        let c = parse(&be("stick-table type string len 8 size 1k nopurge")).expect("valid");
        let stick = c.backends[0].stick.as_ref().expect("stick");
        let table = stick.table.as_ref().expect("table");
        assert_eq!(
            (table.key, table.size, table.nopurge),
            (KeyType::String(8), 1024, true)
        );
    }

    #[test]
    fn a_rule_may_use_another_backends_table() {
        let text = "backend t\nstick-table type integer size 4\n\
                    listen l\nbind :1\nstick on src table t\nserver s 127.0.0.1:2 non-stick\n";
        let c = parse(text).expect("valid");
        let l = c.backends.iter().find(|b| b.name == "l").expect("l");
        let stick = l.stick.as_ref().expect("rules");
        assert!(stick.table.is_none());
        assert_eq!(stick.rules[0].table_name("l"), "t");
        assert!(l.servers[0].non_stick);
    }

    #[test]
    fn bad_lines_are_refused_with_their_place() {
        for (lines, want) in [
            ("stick on src", "unable to find stick-table 'l'"),
            ("stick-table type ip", "missing size"),
            ("stick-table size 10", "missing type"),
            (
                "stick-table type ip size 10 peers p",
                "'peers' is not supported: rolelb has no peers protocol",
            ),
            (
                "stick-table type ip size 1\nstick on src if",
                "'if' needs a condition",
            ),
            (
                "stick-table type ip size 1\nstick on src when { src 1.2.3.4 }",
                "unexpected argument 'when'",
            ),
            (
                "stick-table type ip size 1\nstick on src if { nbsrv(nosuch) gt 0 }",
                "names backend 'nosuch', which does not exist",
            ),
            (
                "stick-table type ip size 1\nstick on req.len",
                "sticks on 'src' or 'dst'",
            ),
            (
                "stick-table type ip size 1\nstick on src table other",
                "unable to find stick-table 'other'",
            ),
            (
                "stick-table type ip size 1\nstick store-response src",
                "'stick store-response' is not supported",
            ),
            (
                "stick-table type ip size 1\nstick-table type ip size 1",
                "only one",
            ),
            (
                &format!(
                    "stick-table type ip size 1\n{}",
                    "stick on src\n".repeat(65)
                ),
                "too many 'stick' rules",
            ),
        ] {
            let errs = errors(&be(lines)).join("\n");
            assert!(errs.contains(want), "{lines}: {errs}");
            assert!(errs.contains("t.cfg:"), "{lines}: no place in {errs}");
        }
        let errs = errors("defaults\nstick-table type ip size 1\n").join("\n");
        assert!(errs.contains("stick-table"), "{errs}");
        // A `table` must name a backend with a stick table, not merely a backend.
        let errs = errors(
            "backend t\nserver s 127.0.0.1:2\nlisten l\nbind :1\nstick on src table t\nserver s 127.0.0.1:2\n",
        )
        .join("\n");
        assert!(
            errs.contains("t.cfg:5: backend 'l': unable to find stick-table 't'"),
            "{errs}"
        );
    }
}
