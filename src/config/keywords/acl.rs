//! `acl NAME FETCH [FLAGS] [VALUES]` lines and the conditions every rule takes
//! (`if|unless`, named ACLs, anonymous `{ FETCH ... }` ACLs, `!`, `||`), for TCP proxies
//! (`tcp-request`, `use_backend`) and stats listeners (`stats admin`, `stats http-request`).
//!
//! The fetches of a TCP proxy are those of layer 4 and of the backends: `src`, `dst`,
//! `src_port`, `dst_port`, `nbsrv(B)`, `srv_is_up(B/S)`, `always_true`, `always_false`; a
//! stats listener takes `src`, `http_auth(L)`, `http_auth_group(L)` and `always_*`. Flags:
//! `-m ip|int|str|bool`, `-i`, `-n`, `-f FILE`, `--`. HTTP fetches are refused, naming what
//! they read.

use std::net::IpAddr;

use super::Ctx;
use crate::config::acl::{Cond, Fetch, IntRange, Net, Patterns, Term, Test};
use crate::config::draft::ProxyDraft;
use crate::config::lexer::Word;
use crate::config::model::Mode;

/// The words of a line from `from` on.
pub fn words(args: &[Word], from: usize) -> Vec<&str> {
    args.iter().skip(from).map(|w| w.as_str()).collect()
}

/// `acl NAME FETCH [FLAGS] [VALUES]`: several lines of one name make one ACL that matches
/// when any of them does.
pub fn acl(p: &mut ProxyDraft, ctx: &mut Ctx) -> Result<(), String> {
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
    let args = ctx.args;
    let test = anonymous_acl(&words(args, 1), p, ctx)?;
    p.acls.push((name, test));
    Ok(())
}

/// `if|unless TERMS`, or nothing at all (`None`); `p`'s named ACLs so far may be used.
pub fn parse_cond(words: &[&str], p: &ProxyDraft, ctx: &mut Ctx) -> Result<Option<Cond>, String> {
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
            let test = anonymous_acl(&rest[..end], p, ctx)?;
            rest = &rest[end + 1..];
            test
        } else {
            named_acl(word, &p.acls)?
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

/// An ACL declared above in the proxy (all its lines), or a predefined one; a proxy's own
/// ACL hides a predefined one of the same name.
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
        "LOCALHOST" => Ok(Test::Match {
            fetch: Fetch::Src,
            patterns: Patterns::Ip(localhost()),
        }),
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

/// What a fetch produces, which decides its implicit matcher.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Addr,
    Int,
    Bool,
}

/// Prefixes of HAProxy's HTTP fetches, with the part of HTTP each reads.
const HTTP_FETCHES: &[(&str, &str)] = &[
    ("http_auth", "HTTP authentication"),
    ("http_", "the HTTP request"),
    ("hdr", "HTTP request headers"),
    ("req.hdr", "HTTP request headers"),
    ("req.fhdr", "HTTP request headers"),
    ("req.cook", "HTTP request cookies"),
    ("cook", "HTTP request cookies"),
    ("req.body", "the HTTP request body"),
    ("req.ver", "the HTTP request line"),
    ("req_ver", "the HTTP request line"),
    ("method", "the HTTP request line"),
    ("path", "the HTTP request URI"),
    ("url", "the HTTP request URI"),
    ("query", "the HTTP request URI"),
    ("base", "the HTTP request URI"),
    ("capture.", "HTTP captures"),
    ("res.", "the HTTP response"),
    ("shdr", "HTTP response headers"),
    ("scook", "HTTP response cookies"),
    ("status", "the HTTP response"),
    ("txn.", "the HTTP transaction"),
    ("unique-id", "the HTTP transaction"),
];

/// The words between `{` and `}`, or after `acl NAME`: a fetch, flags and patterns.
fn anonymous_acl(words: &[&str], p: &ProxyDraft, ctx: &mut Ctx) -> Result<Test, String> {
    let Some((&fetch_word, rest)) = words.split_first() else {
        return Err("an empty '{ }' anonymous ACL".into());
    };
    let (name, arg) = match fetch_word.split_once('(') {
        Some((n, a)) => {
            let a = a
                .strip_suffix(')')
                .ok_or_else(|| format!("'{fetch_word}': missing ')' after the argument"))?;
            (n, Some(a))
        }
        None => (fetch_word, None),
    };
    if p.mode == Mode::Http {
        return stats_acl(fetch_word, name, arg, rest, ctx);
    }
    let no_arg = |fetch: Fetch| match arg {
        Some(a) => Err(format!("'{name}' takes no argument, got '{a}'")),
        None => Ok(fetch),
    };
    let (fetch, kind) = match name {
        "src" => (no_arg(Fetch::Src)?, Kind::Addr),
        "dst" => (no_arg(Fetch::Dst)?, Kind::Addr),
        "src_port" => (no_arg(Fetch::SrcPort)?, Kind::Int),
        "dst_port" => (no_arg(Fetch::DstPort)?, Kind::Int),
        "always_true" => (no_arg(Fetch::AlwaysTrue)?, Kind::Bool),
        "always_false" => (no_arg(Fetch::AlwaysFalse)?, Kind::Bool),
        "nbsrv" => {
            let backend = match arg.filter(|a| !a.is_empty()) {
                Some(b) => b.to_string(),
                // As HAProxy: without an argument, the proxy's own backend.
                None if p.kind.has_backend() => p.name.clone(),
                None => {
                    return Err(
                        "'nbsrv' needs a backend name in a frontend (e.g. 'nbsrv(app)')".into(),
                    );
                }
            };
            (Fetch::Nbsrv(backend), Kind::Int)
        }
        "srv_is_up" => {
            let Some((b, s)) = arg.and_then(|a| a.split_once('/')) else {
                return Err(format!(
                    "'{fetch_word}': write the server as 'srv_is_up(BACKEND/SERVER)'"
                ));
            };
            (Fetch::SrvIsUp(b.to_string(), s.to_string()), Kind::Bool)
        }
        _ => return Err(unknown_fetch(fetch_word, name)),
    };
    let patterns = patterns(&fetch, kind, rest, ctx)?;
    Ok(Test::Match { fetch, patterns })
}

fn unknown_fetch(fetch_word: &str, name: &str) -> String {
    const KNOWN: &str = "rolelb's TCP fetches are src, dst, src_port, dst_port, nbsrv(BACKEND), srv_is_up(BACKEND/SERVER), always_true, always_false";
    if let Some((_, what)) = HTTP_FETCHES.iter().find(|(p, _)| name.starts_with(p)) {
        return format!(
            "'{fetch_word}' is an HTTP fetch (it reads {what}): rolelb is a TCP balancer and has no HTTP request to read; {KNOWN}"
        );
    }
    format!("'{fetch_word}' is not supported: {KNOWN}")
}

/// The fetches of a stats listener's conditions.
fn stats_acl(
    fetch_word: &str,
    name: &str,
    arg: Option<&str>,
    values: &[&str],
    ctx: &mut Ctx,
) -> Result<Test, String> {
    let refuse = || {
        format!(
            "'{fetch_word}' is not supported in a stats condition: rolelb knows src, http_auth(LIST), http_auth_group(LIST), always_true, always_false"
        )
    };
    let list = || {
        arg.filter(|l| !l.is_empty() && !l.contains(','))
            .map(str::to_string)
            .ok_or_else(refuse)
    };
    match (name, arg) {
        ("always_true", None) if values.is_empty() => Ok(Test::True),
        ("always_false", None) if values.is_empty() => Ok(Test::False),
        ("src", None) => {
            let patterns = patterns(&Fetch::Src, Kind::Addr, values, ctx)?;
            Ok(Test::Match {
                fetch: Fetch::Src,
                patterns,
            })
        }
        ("http_auth_group", Some(_)) => {
            let list = list()?;
            if values.is_empty() {
                return Err(format!("'{fetch_word}' needs at least one group name"));
            }
            Ok(Test::HttpAuth {
                list,
                groups: Some(values.iter().map(|v| (*v).to_string()).collect()),
                loc: ctx.loc.clone(),
            })
        }
        ("http_auth", Some(_)) => {
            let list = list()?;
            if let Some(v) = values.first() {
                return Err(format!("'{fetch_word}' takes no value, got '{v}'"));
            }
            Ok(Test::HttpAuth {
                list,
                groups: None,
                loc: ctx.loc.clone(),
            })
        }
        _ => Err(refuse()),
    }
}

/// A pattern and, when it comes from `-f FILE`, the file and line it is on.
type Pattern = (String, Option<(String, usize)>);

/// The flags and patterns after a fetch.
fn patterns(fetch: &Fetch, kind: Kind, words: &[&str], ctx: &mut Ctx) -> Result<Patterns, String> {
    let mut matcher = None;
    let mut ignore_case = false;
    let mut values: Vec<Pattern> = Vec::new();
    let mut rest = words;
    while let Some((&flag, tail)) = rest.split_first() {
        if !flag.starts_with('-') || flag.len() < 2 || flag.parse::<i64>().is_ok() {
            break;
        }
        rest = tail;
        match flag {
            "--" => break,
            "-i" => ignore_case = true,
            // rolelb never resolves names in patterns: `-n` changes nothing.
            "-n" => {}
            "-m" => {
                let (&m, tail) = rest.split_first().ok_or("'-m' expects a match method")?;
                rest = tail;
                matcher = Some(m);
            }
            "-f" => {
                let (&file, tail) = rest
                    .split_first()
                    .ok_or("'-f' expects a file of patterns")?;
                rest = tail;
                values.extend(read_patterns(file)?);
            }
            "-u" | "-M" => {
                return Err(format!("ACL flag '{flag}' is not supported by rolelb"));
            }
            other => return Err(format!("unknown ACL flag '{other}'")),
        }
    }
    values.extend(rest.iter().map(|v| ((*v).to_string(), None)));
    let kind = match matcher {
        None => kind,
        Some("ip") if kind == Kind::Addr => Kind::Addr,
        Some("int") if kind != Kind::Addr => Kind::Int,
        Some("bool") if kind != Kind::Addr => Kind::Bool,
        Some("str") => {
            return Ok(Patterns::Str {
                values: values.into_iter().map(|(v, _)| v).collect(),
                ignore_case,
            });
        }
        Some(m @ ("ip" | "int" | "bool")) => {
            return Err(format!(
                "'-m {m}' cannot match '{}' (rolelb matches it with {})",
                fetch.name(),
                match kind {
                    Kind::Addr => "-m ip or -m str",
                    _ => "-m int, -m bool or -m str",
                }
            ));
        }
        Some(m) => {
            return Err(format!(
                "match method '-m {m}' is not supported: rolelb knows -m ip, -m int, -m str and -m bool"
            ));
        }
    };
    if values.is_empty() && kind != Kind::Bool {
        ctx.warn(format!(
            "'{}' has no pattern to match against, so it never matches",
            fetch.name()
        ));
    }
    let located = |e: String, origin: &Option<(String, usize)>| match origin {
        Some((file, line)) => format!("{e} at line {line} of file '{file}'"),
        None => e,
    };
    match kind {
        Kind::Addr => values
            .iter()
            .map(|(v, origin)| parse_net(v).map_err(|e| located(e, origin)))
            .collect::<Result<Vec<_>, _>>()
            .map(Patterns::Ip),
        Kind::Int => parse_ints(&values).map(Patterns::Int),
        Kind::Bool => match values.first() {
            Some((v, _)) => Err(format!(
                "'{}' is a boolean test and takes no pattern, got '{v}'",
                fetch.name()
            )),
            None => Ok(Patterns::Bool),
        },
    }
}

/// The patterns of a `-f FILE`, as HAProxy reads them: one a line, which ends at the first
/// CR or LF; a line starting with `#` is a comment; leading spaces and tabs are dropped
/// (trailing ones are part of the pattern); empty lines are skipped.
fn read_patterns(file: &str) -> Result<Vec<Pattern>, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("failed to open pattern file '{file}': {e}"))?;
    Ok(text
        .split('\n')
        .zip(1..)
        .filter(|(l, _)| !l.starts_with('#'))
        .map(|(l, n)| {
            let l = l.trim_start_matches([' ', '\t']);
            let end = l.find('\r').unwrap_or(l.len());
            (l[..end].to_string(), n)
        })
        .filter(|(l, _)| !l.is_empty())
        .map(|(l, n)| (l, Some((file.to_string(), n))))
        .collect())
}

/// Integer patterns: `N`, `A:B`, `:B`, `A:`, and `eq|lt|le|gt|ge N` (the operator applies
/// to the value after it).
fn parse_ints(values: &[Pattern]) -> Result<Vec<IntRange>, String> {
    let int = |v: &str| {
        v.parse::<i64>()
            .map_err(|_| format!("'{v}' is not an integer"))
    };
    let mut out = Vec::new();
    let mut it = values.iter().map(|(v, _)| v);
    while let Some(v) = it.next() {
        let range = match v.as_str() {
            op @ ("eq" | "lt" | "le" | "gt" | "ge") => {
                let n = int(it.next().ok_or_else(|| format!("'{op}' expects a value"))?)?;
                let (min, max) = match op {
                    "eq" => (n, n),
                    "lt" => (i64::MIN, n.saturating_sub(1)),
                    "le" => (i64::MIN, n),
                    "gt" => (n.saturating_add(1), i64::MAX),
                    _ => (n, i64::MAX),
                };
                IntRange { min, max }
            }
            text => match text.split_once(':') {
                Some((a, b)) => IntRange {
                    min: if a.is_empty() { i64::MIN } else { int(a)? },
                    max: if b.is_empty() { i64::MAX } else { int(b)? },
                },
                None => {
                    let n = int(text)?;
                    IntRange { min: n, max: n }
                }
            },
        };
        out.push(range);
    }
    Ok(out)
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
}
