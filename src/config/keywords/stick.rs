//! `stick-table type ip|ipv6|integer|string [len N] size N [expire T] [nopurge]` and
//! `stick on|match|store-request src|dst [table NAME]` in a backend or listen section. The
//! rules act in `table::pick` (match) and after the connection to the server is made (store),
//! on the entries of `live::stick`.

use super::Ctx;
use crate::config::draft::ProxyDraft;
use crate::config::stick::{KeyType, StickAction, StickFetch, StickRule, StickTable};
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
            "peers" | "store" | "srvkey" => {
                return Err(format!(
                    "'{word}' is not supported: rolelb's stick tables are local and store only the server"
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
    if ctx.args.get(i).is_some_and(|w| w.as_str() == "table") {
        let name = ctx.arg(i + 1, "a table name after 'table'")?;
        if name != p.name {
            return Err(format!(
                "'table {name}' is not supported: rolelb's stick rules use their own backend's table ('{}')",
                p.name
            ));
        }
        i += 2;
    }
    if let Some(word) = ctx.args.get(i) {
        return Err(match word.as_str() {
            "if" | "unless" => "conditions on 'stick' rules are not supported by rolelb".into(),
            other => format!("'stick': unexpected argument '{other}'"),
        });
    }
    p.stick_rules.push(StickRule {
        action,
        fetch,
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
            "stick-table type ip size 1 expire 30s\nstick on dst\nstick match src table l\nstick store-request src",
        ))
        .expect("valid");
        let stick = c.backends[0].stick.as_ref().expect("a stick table");
        assert_eq!(stick.table.key, KeyType::Ip);
        assert_eq!(stick.table.size, 1);
        assert_eq!(stick.table.expire, Some(Duration::from_secs(30)));
        let rules: Vec<_> = stick.rules.iter().map(|r| (r.action, r.fetch)).collect();
        assert_eq!(
            rules,
            [
                (StickAction::On, StickFetch::Dst),
                (StickAction::Match, StickFetch::Src),
                (StickAction::StoreRequest, StickFetch::Src),
            ]
        );
        let c = parse(&be("stick-table type string len 8 size 1k nopurge")).expect("valid");
        let table = &c.backends[0].stick.as_ref().expect("table").table;
        assert_eq!(
            (table.key, table.size, table.nopurge),
            (KeyType::String(8), 1024, true)
        );
    }

    #[test]
    fn bad_lines_are_refused_with_their_place() {
        for (lines, want) in [
            ("stick on src", "unable to find stick-table"),
            ("stick-table type ip", "missing size"),
            ("stick-table size 10", "missing type"),
            (
                "stick-table type ip size 10 peers p",
                "'peers' is not supported",
            ),
            (
                "stick-table type ip size 1\nstick on src if TRUE",
                "conditions",
            ),
            (
                "stick-table type ip size 1\nstick on req.len",
                "sticks on 'src' or 'dst'",
            ),
            (
                "stick-table type ip size 1\nstick on src table other",
                "own backend's table",
            ),
            (
                "stick-table type ip size 1\nstick-table type ip size 1",
                "only one",
            ),
        ] {
            let errs = errors(&be(lines)).join("\n");
            assert!(errs.contains(want), "{lines}: {errs}");
            assert!(errs.contains("t.cfg:"), "{lines}: no place in {errs}");
        }
        let errs = errors("defaults\nstick-table type ip size 1\n").join("\n");
        assert!(errs.contains("stick-table"), "{errs}");
    }
}
