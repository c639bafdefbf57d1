//! `tcp-check` and `http-check` rules: the steps of `option tcp-check`
//! (`connect [port N]`, `send`, `send-binary`, `expect [!] string|rstring|binary`) and, for
//! `option httpchk`, `http-check send`, `http-check expect [!]
//! status|rstatus|string|rstring` and `http-check disable-on-404`; `external-check command|path`
//! for `option external-check`. Regexes are validated here.

use super::Ctx;
use crate::config::draft::{HttpSend, ProxyDraft};
use crate::config::model::{HttpExpect, TcpCheckRule};
use crate::config::units::parse_port;

/// Decodes HAProxy's hex strings (`send-binary`, `expect binary`).
fn decode_hex(text: &str) -> Result<Vec<u8>, String> {
    if text.is_empty() || !text.len().is_multiple_of(2) {
        return Err(format!("'{text}' is not an even number of hex digits"));
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("'{text}' is not a hex string"))
        })
        .collect()
}

/// Skips a trailing `comment TEXT` (HAProxy labels rules with it); errors on anything else.
fn rest_is_comment(ctx: &Ctx, from: usize) -> Result<(), String> {
    match ctx.args.get(from).map(|w| w.as_str()) {
        None => Ok(()),
        Some("comment") => {
            ctx.arg(from + 1, "a text after 'comment'")?;
            ctx.at_most(from + 2)
        }
        Some(other) => Err(format!(
            "'{} {}': unsupported argument '{other}'",
            ctx.keyword,
            ctx.args.first().map(|w| w.as_str()).unwrap_or_default()
        )),
    }
}

/// `tcp-check connect|send|send-binary|expect|comment ...`.
pub fn tcp_check(p: &mut ProxyDraft, ctx: &mut Ctx) -> Result<(), String> {
    let action = ctx.arg(
        0,
        "an action: connect, send, send-binary, expect or comment",
    )?;
    let rule = match action {
        "comment" => return Ok(()),
        "connect" => {
            let mut port = None;
            let mut i = 1;
            while let Some(opt) = ctx.args.get(i).map(|w| w.as_str()) {
                match opt {
                    "port" => {
                        port = Some(parse_port(
                            ctx.arg(i + 1, "a port after 'port'")?,
                            "tcp-check connect port",
                        )?)
                    }
                    "comment" => {}
                    other => {
                        return Err(format!(
                            "'tcp-check connect': option '{other}' is not supported (rolelb knows 'port N')"
                        ));
                    }
                }
                i += 2;
            }
            if i > ctx.args.len() {
                return Err("'tcp-check connect': an option is missing its value".into());
            }
            TcpCheckRule::Connect { port }
        }
        "send" => {
            let data = ctx.args.get(1).ok_or("'tcp-check send' expects a string")?;
            let data = data.bytes.clone();
            rest_is_comment(ctx, 2)?;
            TcpCheckRule::Send(data)
        }
        "send-binary" => {
            let data = decode_hex(ctx.arg(1, "a hex string")?)
                .map_err(|e| format!("'tcp-check send-binary': {e}"))?;
            rest_is_comment(ctx, 2)?;
            TcpCheckRule::Send(data)
        }
        "expect" => tcp_expect(ctx)?,
        "send-lf" | "send-binary-lf" | "set-var" | "unset-var" => {
            return Err(format!(
                "'tcp-check {action}' is not supported by rolelb (use send, send-binary, expect string|rstring|binary)"
            ));
        }
        other => {
            return Err(format!(
                "unknown 'tcp-check {other}' (known: connect, send, send-binary, expect, comment)"
            ));
        }
    };
    if !p.tcp_check_own {
        // Rules of a proxy replace those inherited from defaults, as in HAProxy.
        p.tcp_check_rules.clear();
        p.tcp_check_own = true;
        p.tcp_check_loc = Some(ctx.loc.clone());
    }
    p.tcp_check_rules.push(rule);
    Ok(())
}

fn tcp_expect(ctx: &Ctx) -> Result<TcpCheckRule, String> {
    let mut i = 1;
    let negate = ctx.args.get(1).is_some_and(|w| w.as_str() == "!");
    if negate {
        i += 1;
    }
    let kind = ctx.arg(i, "a match type (string, rstring or binary) and a pattern")?;
    let pattern = ctx
        .args
        .get(i + 1)
        .ok_or_else(|| format!("'tcp-check expect {kind}' expects a pattern"))?;
    let rule = match kind {
        "string" => TcpCheckRule::ExpectString {
            pattern: pattern.bytes.clone(),
            negate,
        },
        "binary" => TcpCheckRule::ExpectString {
            pattern: decode_hex(pattern.as_str())
                .map_err(|e| format!("'tcp-check expect binary': {e}"))?,
            negate,
        },
        "rstring" => {
            validate_regex(pattern.as_str())?;
            TcpCheckRule::ExpectRegex {
                pattern: pattern.text.clone(),
                negate,
            }
        }
        "min-recv" | "error-status" | "tout-status" | "ok-status" | "on-success" | "on-error"
        | "status-code" => {
            return Err(format!(
                "'tcp-check expect {kind}' is not supported by rolelb (use 'tcp-check expect [!] string|rstring|binary PATTERN')"
            ));
        }
        other => {
            return Err(format!(
                "unknown 'tcp-check expect {other}' (rolelb knows string, rstring, binary)"
            ));
        }
    };
    rest_is_comment(ctx, i + 2)?;
    Ok(rule)
}

fn validate_regex(pattern: &str) -> Result<(), String> {
    regex::bytes::Regex::new(pattern)
        .map(|_| ())
        .map_err(|e| format!("invalid regex '{pattern}': {}", first_line(&e.to_string())))
}

fn first_line(text: &str) -> String {
    // The regex crate's errors span several lines with a caret diagram; keep the summary.
    text.lines()
        .rfind(|l| l.starts_with("error:"))
        .unwrap_or_else(|| text.lines().next().unwrap_or_default())
        .to_string()
}

/// `external-check command <command>` / `external-check path <path>` (for `option
/// external-check`; checked against it when the proxy is built).
pub fn external_check(p: &mut ProxyDraft, ctx: &mut Ctx) -> Result<(), String> {
    let what = ctx.arg(0, "'command' or 'path'")?;
    let slot = match what {
        "command" => &mut p.external_check_command,
        "path" => &mut p.external_check_path,
        other => {
            return Err(format!(
                "'external-check' only supports 'command' and 'path', got '{other}'"
            ));
        }
    };
    let value = ctx.arg(1, &format!("a value after '{what}'"))?;
    if value.is_empty() {
        return Err(format!("'external-check {what}' needs a non-empty value"));
    }
    ctx.at_most(2)?;
    *slot = Some((value.to_string(), ctx.loc.clone()));
    Ok(())
}

/// `http-check expect|send|disable-on-404|comment`, plus accepted no-op variants.
pub fn http_check(p: &mut ProxyDraft, ctx: &mut Ctx) -> Result<(), String> {
    let action = ctx.arg(0, "'expect', 'send' or 'disable-on-404'")?;
    match action {
        "expect" => http_expect(p, ctx),
        "send" => http_send(p, ctx),
        "disable-on-404" => {
            ctx.at_most(1)?;
            p.disable_on_404 = true;
            Ok(())
        }
        "comment" => Ok(()),
        "send-state" => {
            ctx.warn(
                "'http-check send-state' is ignored by rolelb (no X-Haproxy-Server-State header)",
            );
            Ok(())
        }
        "connect" | "set-var" | "unset-var" => Err(format!(
            "'http-check {action}' is not supported by rolelb: write the request with 'option httpchk' / 'http-check send' and check it with 'http-check expect'"
        )),
        other => Err(format!(
            "unknown 'http-check {other}' (rolelb knows expect, send, disable-on-404, send-state, comment)"
        )),
    }
}

/// `http-check send [meth M] [uri U] [ver V] [hdr NAME VALUE]* [body TEXT] [comment TEXT]`.
fn http_send(p: &mut ProxyDraft, ctx: &mut Ctx) -> Result<(), String> {
    if p.http_send_own {
        return Err(
            "only one 'http-check send' per proxy is supported by rolelb (one request per check)"
                .into(),
        );
    }
    let mut send = HttpSend::default();
    let mut i = 1;
    while let Some(word) = ctx.args.get(i).map(|w| w.as_str()) {
        let value = |n: usize, what: &str| -> Result<String, String> {
            ctx.args
                .get(i + n)
                .map(|w| w.text.clone())
                .ok_or_else(|| format!("'http-check send {word}' expects {what}"))
        };
        match word {
            "meth" => send.method = Some(value(1, "a method")?),
            "uri" => send.uri = Some(value(1, "a URI")?),
            "ver" => send.version = Some(value(1, "a version such as HTTP/1.1")?),
            "body" => send.body = Some(value(1, "a text")?),
            "comment" => {}
            "hdr" => {
                let name = value(1, "a header name and a value")?;
                let val = value(2, "a header name and a value")?;
                if name.is_empty() || name.bytes().any(|b| !b.is_ascii_graphic() || b == b':') {
                    return Err(format!(
                        "'http-check send hdr': invalid header name '{name}'"
                    ));
                }
                send.headers.push((name, val));
                i += 3;
                continue;
            }
            "uri-lf" | "body-lf" => {
                return Err(format!(
                    "'http-check send {word}' is not supported by rolelb (log-format strings): use 'uri'/'body' with a plain text"
                ));
            }
            other => {
                return Err(format!(
                    "'http-check send': unexpected '{other}' (expects meth, uri, ver, hdr, body or comment)"
                ));
            }
        }
        i += 2;
    }
    p.http_send = Some(send);
    p.http_send_own = true;
    Ok(())
}

/// `http-check expect [!] status|rstatus|string|rstring VALUE [comment TEXT]`.
fn http_expect(p: &mut ProxyDraft, ctx: &mut Ctx) -> Result<(), String> {
    let mut i = 1;
    let negate = ctx.args.get(1).is_some_and(|w| w.as_str() == "!");
    if negate {
        i += 1;
    }
    let kind = ctx.arg(i, "'status CODE' or 'string TEXT'")?;
    let value = ctx
        .args
        .get(i + 1)
        .ok_or_else(|| format!("'http-check expect {kind}' expects a value"))?
        .text
        .clone();
    let expect = match kind {
        "status" => HttpExpect::Status {
            codes: parse_status_codes(&value)?,
            negate,
        },
        "string" => HttpExpect::String {
            text: value,
            negate,
        },
        "rstatus" => {
            validate_regex(&value)?;
            HttpExpect::StatusRegex {
                pattern: value,
                negate,
            }
        }
        "rstring" => {
            validate_regex(&value)?;
            HttpExpect::StringRegex {
                pattern: value,
                negate,
            }
        }
        "hdr" | "fhdr" | "custom" | "string-lf" | "min-recv" | "error-status" | "tout-status"
        | "ok-status" | "on-success" | "on-error" | "status-code" => {
            return Err(format!(
                "'http-check expect {kind}' is not supported by rolelb (use status, rstatus, string or rstring)"
            ));
        }
        other => {
            return Err(format!(
                "unknown 'http-check expect {other}' (use status, rstatus, string or rstring)"
            ));
        }
    };
    rest_is_comment(ctx, i + 2)?;
    if p.http_expect_own {
        return Err("only one 'http-check expect' per proxy is supported by rolelb".into());
    }
    p.http_expect = Some(expect);
    p.http_expect_own = true;
    p.http_expect_loc = Some(ctx.loc.clone());
    Ok(())
}

/// A status line carries three digits: a code above 999 never matches, and is kept as this.
const NO_STATUS: u16 = 1000;

/// Parses `200`, `200-399`, `200,204,300-399` into inclusive ranges. As HAProxy, any number
/// is a code (it compares integers): one outside what a status line can carry never matches.
fn parse_status_codes(text: &str) -> Result<Vec<(u16, u16)>, String> {
    let code = |s: &str| -> Result<u16, String> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "invalid HTTP status '{s}' in '{text}' (a number such as 200)"
            ));
        }
        Ok(s.parse::<u16>().map_or(NO_STATUS, |c| c.min(NO_STATUS)))
    };
    text.split(',')
        .map(|part| match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (code(a)?, code(b)?);
                if a > b {
                    return Err(format!("status range '{part}' is reversed"));
                }
                Ok((a, b))
            }
            None => code(part).map(|c| (c, c)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes() {
        assert_eq!(parse_status_codes("200").unwrap(), [(200, 200)]);
        assert_eq!(
            parse_status_codes("200,300-399").unwrap(),
            [(200, 200), (300, 399)]
        );
        assert!(parse_status_codes("2xx").is_err());
        assert!(parse_status_codes("-1").is_err());
        assert!(parse_status_codes("399-300").is_err());
        // Codes no status line carries are kept, and never match.
        assert_eq!(parse_status_codes("0").unwrap(), [(0, 0)]);
        assert_eq!(parse_status_codes("700").unwrap(), [(700, 700)]);
        assert_eq!(
            parse_status_codes("65536,200-99999").unwrap(),
            [(1000, 1000), (200, 1000)]
        );
    }

    #[test]
    fn hex() {
        assert_eq!(decode_hex("0a0B").unwrap(), [10, 11]);
        assert!(decode_hex("abc").is_err());
        assert!(decode_hex("zz").is_err());
    }

    #[test]
    fn regex_errors_are_short() {
        let e = validate_regex("(unclosed").unwrap_err();
        assert!(e.starts_with("invalid regex '(unclosed'"), "{e}");
        assert!(!e.contains('\n'));
        validate_regex("^\\+PONG").unwrap();
    }
}
