//! The `log` line, shared by `global` and proxies:
//! `log TARGET [len N] [format F] [sample R:S] FACILITY [LEVEL [MINLEVEL]]`, where TARGET is
//! `stderr`, `stdout`, a unix socket path such as `/dev/log`, or `ADDR[:PORT]` (UDP syslog);
//! and the proxy keyword `log-format` (its string is parsed by `config::log_format` when the
//! proxy is built).

use std::net::SocketAddr;
use std::path::PathBuf;

use super::Ctx;
use crate::config::address::resolve_host;
use crate::config::draft::ProxyDraft;
use crate::config::model::{LogDest, LogTarget, SyslogFormat};
use crate::config::units::{parse_int, parse_port};

/// Syslog facility names in number order (`kern` = 0 ... `local7` = 23).
pub const FACILITIES: [&str; 24] = [
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "auth2",
    "ftp", "ntp", "audit", "alert", "cron2", "local0", "local1", "local2", "local3", "local4",
    "local5", "local6", "local7",
];

/// Syslog severities in number order (`emerg` = 0 ... `debug` = 7).
pub const LEVELS: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

/// The log formats HAProxy accepts after `format`.
const FORMATS: [(&str, SyslogFormat); 6] = [
    ("raw", SyslogFormat::Raw),
    ("rfc3164", SyslogFormat::Rfc3164),
    ("rfc5424", SyslogFormat::Rfc5424),
    ("short", SyslogFormat::Short),
    ("timed", SyslogFormat::Timed),
    ("iso", SyslogFormat::Iso),
];

/// HAProxy's default `len` (its `max-syslog-len`).
const DEFAULT_LEN: usize = 1024;

/// `log-format STRING` in a proxy: one argument (quote it, or escape its spaces).
pub fn log_format(p: &mut ProxyDraft, ctx: &mut Ctx) -> Result<(), String> {
    let format = ctx.arg(0, "a log format string")?.to_string();
    if ctx.args.len() > 1 {
        return Err(
            "'log-format' expects only one argument, don't forget to escape spaces!".into(),
        );
    }
    if !p.kind.has_frontend() && p.kind != crate::config::draft::ProxyKind::Defaults {
        ctx.warn(format!(
            "backend '{}' : 'log-format' directive is ignored in backends.",
            p.name
        ));
    }
    p.log_format = Some((format, ctx.loc.clone()));
    Ok(())
}

/// Parses the arguments of a `log` line (not `log global`) into a target.
pub fn parse_log_target(ctx: &mut Ctx) -> Result<LogTarget, String> {
    ctx.arg(
        0,
        "a target (stderr, stdout, /dev/log or ADDR[:PORT]) and a facility",
    )?;
    // Like every HAProxy address, `$VAR` expands here whatever the quoting.
    let target = ctx.args[0].address_checked()?;
    let dest = parse_dest(target)?;
    let mut i = 1;
    let mut format = SyslogFormat::Legacy;
    let mut max_len = DEFAULT_LEN;
    loop {
        match ctx.args.get(i).map(|w| w.as_str()) {
            Some("len") => {
                let n = ctx.arg(i + 1, "a length after 'len'")?;
                max_len = usize::try_from(parse_int(n, "log 'len'", 80, 65535)?)
                    .map_err(|_| "log 'len' out of range".to_string())?;
                i += 2;
            }
            Some("format") => {
                let f = ctx.arg(i + 1, "a format after 'format'")?;
                format = FORMATS
                    .iter()
                    .find(|(name, _)| *name == f)
                    .map(|(_, v)| *v)
                    .ok_or_else(|| {
                        let known: Vec<&str> = FORMATS.iter().map(|(n, _)| *n).collect();
                        format!("unknown log format '{f}' (known: {})", known.join(", "))
                    })?;
                i += 2;
            }
            Some("sample") => {
                return Err(
                    "log 'sample' is not supported: rolelb sends every line to each target".into(),
                );
            }
            _ => break,
        }
    }
    let facility = ctx.arg(i, "a syslog facility such as 'local0'")?;
    let facility = FACILITIES
        .iter()
        .position(|f| *f == facility)
        .ok_or_else(|| {
            format!(
                "unknown log facility '{facility}' (known: {})",
                FACILITIES.join(", ")
            )
        })?;
    let mut max_level = None;
    let mut min_level = None;
    if let Some(level) = ctx.args.get(i + 1) {
        max_level = Some(parse_level(level.as_str())?);
        if let Some(min) = ctx.args.get(i + 2) {
            min_level = Some(parse_level(min.as_str())?);
        }
        ctx.at_most(i + 3)?;
    }
    Ok(LogTarget {
        dest,
        facility: u8::try_from(facility).map_err(|_| "facility out of range".to_string())?,
        max_level,
        min_level,
        format,
        max_len,
    })
}

fn parse_level(text: &str) -> Result<u8, String> {
    LEVELS
        .iter()
        .position(|l| *l == text)
        .and_then(|p| u8::try_from(p).ok())
        .ok_or_else(|| format!("unknown log level '{text}' (known: {})", LEVELS.join(", ")))
}

fn parse_dest(target: &str) -> Result<LogDest, String> {
    match target {
        "stderr" | "fd@2" => return Ok(LogDest::Stderr),
        "stdout" | "fd@1" => return Ok(LogDest::Stdout),
        _ => {}
    }
    if target.starts_with('/') {
        return Ok(LogDest::Unix(PathBuf::from(target)));
    }
    if let Some(path) = target.strip_prefix("unix@") {
        return Ok(LogDest::Unix(PathBuf::from(path)));
    }
    if target.starts_with("ring@") || target.starts_with("tcp@") {
        return Err(format!(
            "log target '{target}' is not supported: use stderr, stdout, a unix socket path or UDP ADDR[:PORT]"
        ));
    }
    let rest = ["udp@", "ipv4@", "ipv6@", "udp4@", "udp6@"]
        .iter()
        .find_map(|p| target.strip_prefix(p))
        .unwrap_or(target);
    // `[v6]:port`, `v4:port`, `v4`, `host` — a bare IPv6 address has no port.
    let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
        let (h, after) = inner
            .split_once(']')
            .ok_or_else(|| format!("missing ']' in log target '{target}'"))?;
        (h, after.strip_prefix(':'))
    } else if rest.matches(':').count() == 1 {
        let (h, p) = rest.split_once(':').unwrap_or((rest, ""));
        (h, Some(p))
    } else {
        (rest, None)
    };
    let port = match port {
        Some(p) => parse_port(p, "log port")?,
        None => 514,
    };
    let ip = resolve_host(host).map_err(|e| format!("log target '{target}': {e}"))?;
    Ok(LogDest::Udp(SocketAddr::new(ip, port)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::draft::Diags;

    fn parse(line: &str) -> Result<LogTarget, String> {
        let args = crate::config::testing::words(line);
        let loc = crate::config::testing::loc();
        let mut diags = Diags::default();
        let mut ctx = Ctx {
            keyword: "log",
            args: &args,
            loc: &loc,
            diags: &mut diags,
        };
        parse_log_target(&mut ctx)
    }

    #[test]
    fn log_targets() {
        let t = parse("stdout format raw local0 info").unwrap();
        assert_eq!(
            (t.dest, t.facility, t.max_level, t.format),
            (LogDest::Stdout, 16, Some(6), SyslogFormat::Raw)
        );
        let t = parse("stderr len 200 format rfc5424 local1 info notice").unwrap();
        assert_eq!(
            (t.format, t.max_len, t.min_level),
            (SyslogFormat::Rfc5424, 200, Some(5))
        );
        assert_eq!(parse("stderr local0").unwrap().format, SyslogFormat::Legacy);
        let t = parse("/dev/log local1 notice").unwrap();
        assert_eq!(t.dest, LogDest::Unix("/dev/log".into()));
        let t = parse("127.0.0.1:1514 len 1024 daemon").unwrap();
        assert_eq!(t.dest, LogDest::Udp("127.0.0.1:1514".parse().unwrap()));
        assert_eq!(t.max_level, None);
        let t = parse("127.0.0.1 local2 err debug").unwrap();
        assert_eq!(t.dest, LogDest::Udp("127.0.0.1:514".parse().unwrap()));
    }

    #[test]
    fn log_errors() {
        assert!(parse("stderr").unwrap_err().contains("facility"));
        assert!(
            parse("stderr local9")
                .unwrap_err()
                .contains("unknown log facility")
        );
        assert!(
            parse("stderr local0 loud")
                .unwrap_err()
                .contains("unknown log level")
        );
        assert!(parse("stderr format json local0").is_err());
        assert!(parse("ring@buf local0").is_err());
        assert!(parse("stderr local0 info info extra").is_err());
    }
}
