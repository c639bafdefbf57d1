//! DNS resolution at run time (HAProxy 2.6 configuration manual section 5.3): the
//! `resolvers NAME` section's keyword table (`nameserver`, `parse-resolv-conf`,
//! `resolve_retries`, `timeout resolve|retry`, `hold STATUS`, `accepted_payload_size`), the
//! server options `resolvers`, `resolve-prefer`, `init-addr`, `resolve-opts`, the
//! `server-template` line, and a server's address at start as `init-addr` gives it.
//! Whether a server's `resolvers` names a section is judged once every file is read
//! ([`check_references`]): sections may come in any order.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::{Ctx, did_you_mean};
use crate::config::address::{parse_server_addr, resolve_host_prefer, server_name_port};
use crate::config::draft::{Diags, ProxyDraft, ServerDraft};
use crate::config::lexer::Word;
use crate::config::model::{Config, Loc};
use crate::config::model_dns::{AddrFamily, DEFAULT_INIT_ADDR, Hold, InitAddr, Resolve, Resolvers};
use crate::config::units::{MAX_COUNT, TimeUnit, parse_duration, parse_int};

/// What a `server` or `default-server` line says about DNS, as it is read.
#[derive(Debug, Clone, Default)]
pub struct ResolveDraft {
    /// `resolvers NAME` and where it was written.
    pub resolvers: Option<(String, Loc)>,
    /// `resolve-prefer`.
    pub prefer: Option<AddrFamily>,
    /// `init-addr` (default `last,libc`).
    pub init_addr: Option<Vec<InitAddr>>,
    /// `resolve-opts ignore-weight`.
    pub ignore_weight: bool,
    /// The host name of the server's address, when it is one (set by the `server` line).
    pub fqdn: Option<String>,
    /// `init-addr` left the server without an address: it starts in MAINT (resolution).
    pub no_addr: bool,
    /// Why `init-addr none` was reached after `libc` failed (HAProxy warns about it).
    pub warning: Option<String>,
}

impl ResolveDraft {
    /// The run-time resolution this server asks for: a host name and a `resolvers` section.
    pub fn model(&self) -> Option<Resolve> {
        let ((resolvers, _), fqdn) = (self.resolvers.as_ref()?, self.fqdn.as_ref()?);
        Some(Resolve {
            resolvers: resolvers.clone(),
            fqdn: fqdn.clone(),
            prefer: self.prefer.unwrap_or_default(),
            ignore_weight: self.ignore_weight,
        })
    }
}

/// A new `resolvers NAME` section with HAProxy's defaults.
pub fn section(name: String, loc: Loc) -> Resolvers {
    Resolvers {
        name,
        loc,
        nameservers: Vec::new(),
        resolve_retries: 3,
        timeout_resolve: Duration::from_secs(1),
        timeout_retry: Duration::from_secs(1),
        hold: Hold::default(),
        accepted_payload_size: 512,
    }
}

/// Parser of one `resolvers` section keyword.
pub type ResolversParser = fn(&mut Resolvers, &mut Ctx) -> Result<(), String>;

/// The `resolvers` section keywords.
pub const RESOLVERS_KEYWORDS: &[(&str, ResolversParser)] = &[
    ("nameserver", nameserver),
    ("parse-resolv-conf", parse_resolv_conf),
    ("resolve_retries", resolve_retries),
    ("timeout", timeout),
    ("hold", hold),
    ("accepted_payload_size", accepted_payload_size),
];

/// Parses one line of a `resolvers` section.
pub fn resolvers_line(r: &mut Resolvers, ctx: &mut Ctx) -> Result<(), String> {
    let keyword = ctx.keyword;
    match RESOLVERS_KEYWORDS.iter().find(|(k, _)| *k == keyword) {
        Some((_, parse)) => parse(r, ctx),
        None => Err(format!(
            "unknown keyword '{keyword}' in 'resolvers' section{} (known: {})",
            did_you_mean(keyword, RESOLVERS_KEYWORDS.iter().map(|(k, _)| *k)),
            RESOLVERS_KEYWORDS
                .iter()
                .map(|(k, _)| *k)
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// `nameserver NAME ADDR[:PORT]`: a UDP name server (port 53 by default).
fn nameserver(r: &mut Resolvers, ctx: &mut Ctx) -> Result<(), String> {
    ctx.arg(
        1,
        "a name and an address, e.g. 'nameserver dns1 10.0.0.1:53'",
    )?;
    ctx.at_most(2)?;
    let text = ctx.args[1].address_checked()?;
    let rest = match text.split_once('@') {
        Some(("udp" | "udp4" | "udp6" | "ipv4" | "ipv6", rest)) => rest,
        Some((prefix @ ("tcp" | "tcp4" | "tcp6"), _)) => {
            return Err(format!(
                "nameserver '{text}': '{prefix}@' (DNS over TCP) is not supported: rolelb queries name servers over UDP"
            ));
        }
        Some((prefix, _)) => {
            return Err(format!(
                "nameserver '{text}': address prefix '{prefix}@' is not supported (use an IP address, optionally with udp@)"
            ));
        }
        None => text,
    };
    let addr = nameserver_addr(rest)
        .ok_or_else(|| format!("nameserver '{text}': expects IP[:PORT], e.g. 10.0.0.1:53"))?;
    r.nameservers.push(addr);
    Ok(())
}

/// `IP`, `IP:PORT`, `[IPv6]:PORT`, `IPv6`: port 53 when none is given.
fn nameserver_addr(text: &str) -> Option<SocketAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, 53));
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return (addr.port() != 0).then_some(addr);
    }
    // HAProxy's `IPv6:PORT`: the last colon separates the port.
    let (ip, port) = text.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    Some(SocketAddr::new(ip.parse().ok()?, port))
}

/// `parse-resolv-conf`: every `nameserver` of `/etc/resolv.conf`, in its order, here.
fn parse_resolv_conf(r: &mut Resolvers, ctx: &mut Ctx) -> Result<(), String> {
    ctx.at_most(0)?;
    let text = std::fs::read_to_string("/etc/resolv.conf")
        .map_err(|e| format!("'parse-resolv-conf': cannot read /etc/resolv.conf: {e}"))?;
    let found = resolv_conf_nameservers(&text);
    if found.is_empty() {
        ctx.warn("'parse-resolv-conf': /etc/resolv.conf names no usable nameserver");
    }
    r.nameservers.extend(found);
    Ok(())
}

/// The `nameserver IP` lines of a resolv.conf text (port 53; scoped IPv6 addresses skipped).
pub fn resolv_conf_nameservers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then_some(())?;
            let ip: IpAddr = words.next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

fn resolve_retries(r: &mut Resolvers, ctx: &mut Ctx) -> Result<(), String> {
    ctx.at_most(1)?;
    let n = parse_int(ctx.arg(0, "a number")?, "'resolve_retries'", 1, MAX_COUNT)?;
    r.resolve_retries = u32::try_from(n).map_err(|_| "'resolve_retries' is too large")?;
    Ok(())
}

/// `timeout resolve|retry TIME`; zero would query without pause, so it is refused.
fn timeout(r: &mut Resolvers, ctx: &mut Ctx) -> Result<(), String> {
    let which = ctx.arg(0, "'retry' or 'resolve' and a time")?;
    let slot = match which {
        "resolve" => &mut r.timeout_resolve,
        "retry" => &mut r.timeout_retry,
        other => {
            return Err(format!(
                "'timeout' expects 'retry' or 'resolve' and a time, got '{other}'"
            ));
        }
    };
    ctx.at_most(2)?;
    let text = ctx.arg(1, "a time")?;
    let d =
        parse_duration(text, TimeUnit::Millis).map_err(|e| format!("'timeout {which}': {e}"))?;
    if d.is_zero() {
        return Err(format!("'timeout {which}' must be more than zero"));
    }
    *slot = d;
    Ok(())
}

fn hold(r: &mut Resolvers, ctx: &mut Ctx) -> Result<(), String> {
    let status = ctx.arg(
        0,
        "a status (nx, other, refused, timeout, valid, obsolete) and a period",
    )?;
    ctx.at_most(2)?;
    let d = parse_duration(ctx.arg(1, "a period")?, TimeUnit::Millis)
        .map_err(|e| format!("'hold {status}': {e}"))?;
    let h = &mut r.hold;
    *match status {
        "nx" => &mut h.nx,
        "other" => &mut h.other,
        "refused" => &mut h.refused,
        "timeout" => &mut h.timeout,
        "valid" => &mut h.valid,
        "obsolete" => &mut h.obsolete,
        other => {
            return Err(format!(
                "'hold': unknown status '{other}', expects one of nx, other, refused, timeout, valid, obsolete"
            ));
        }
    } = d;
    Ok(())
}

fn accepted_payload_size(r: &mut Resolvers, ctx: &mut Ctx) -> Result<(), String> {
    ctx.at_most(1)?;
    // HAProxy's bounds: a DNS header (12 bytes) up to the largest DNS message.
    let n = parse_int(
        ctx.arg(0, "a size in bytes")?,
        "'accepted_payload_size'",
        12,
        65535,
    )?;
    if n != 512 && n < 1232 {
        return Err(format!(
            "'accepted_payload_size {n}' is not supported: rolelb announces 512 bytes (plain DNS), or for 1232 and above 1232 bytes with EDNS and reads larger answers over TCP; use 512 or at least 1232"
        ));
    }
    r.accepted_payload_size =
        u16::try_from(n).map_err(|_| "'accepted_payload_size' is too large")?;
    Ok(())
}

/// Server option `resolvers NAME`.
pub fn server_resolvers(s: &mut ServerDraft, ctx: &mut Ctx) -> Result<(), String> {
    let name = ctx.arg(0, "the name of a 'resolvers' section")?;
    s.resolve.resolvers = Some((name.to_owned(), ctx.loc.clone()));
    Ok(())
}

/// Server option `resolve-prefer ipv4|ipv6`.
pub fn resolve_prefer(s: &mut ServerDraft, ctx: &mut Ctx) -> Result<(), String> {
    s.resolve.prefer = Some(match ctx.arg(0, "'ipv4' or 'ipv6'")? {
        "ipv4" => AddrFamily::Ipv4,
        "ipv6" => AddrFamily::Ipv6,
        other => {
            return Err(format!(
                "'resolve-prefer' expects 'ipv4' or 'ipv6', got '{other}'"
            ));
        }
    });
    Ok(())
}

/// Server option `init-addr METHOD[,METHOD...]`: `last`, `libc`, `none` or an IP address,
/// tried in order at start.
pub fn init_addr(s: &mut ServerDraft, ctx: &mut Ctx) -> Result<(), String> {
    let text = ctx.arg(0, "methods such as 'last,libc,none'")?;
    let mut methods = Vec::new();
    for m in text.split(',') {
        methods.push(match m {
            "last" => InitAddr::Last,
            "libc" => InitAddr::Libc,
            "none" => InitAddr::None,
            _ => InitAddr::Ip(m.parse().map_err(|_| {
                format!(
                    "'init-addr': unknown method '{m}', supported methods are 'libc', 'last', 'none' and an IP address"
                )
            })?),
        });
    }
    s.resolve.init_addr = Some(methods);
    Ok(())
}

/// Server option `resolve-opts OPT[,OPT...]`.
pub fn resolve_opts(s: &mut ServerDraft, ctx: &mut Ctx) -> Result<(), String> {
    let text = ctx.arg(0, "options such as 'prevent-dup-ip'")?;
    for opt in text.split(',') {
        match opt {
            "ignore-weight" => s.resolve.ignore_weight = true,
            // What rolelb always does, as HAProxy by default.
            "prevent-dup-ip" => {}
            "allow-dup-ip" => {
                return Err("'resolve-opts allow-dup-ip' is not supported: rolelb gives each server of a backend its own address, as HAProxy does by default".into());
            }
            other => {
                return Err(format!(
                    "'resolve-opts': unknown option '{other}', supported are 'allow-dup-ip', 'ignore-weight' and 'prevent-dup-ip'"
                ));
            }
        }
    }
    Ok(())
}

/// The address a server starts with: an IP address as written, or for a host name the first
/// `init-addr` method that gives one (`last` never does: rolelb keeps no state file;
/// `none` leaves the server without address, in MAINT until DNS gives one). Records the
/// host name for run-time resolution.
pub fn server_address(s: &mut ServerDraft, text: &str) -> Result<SocketAddr, String> {
    if text.starts_with('_') {
        return srv_address(s, text);
    }
    let Some((host, port)) = server_name_port(text)? else {
        return parse_server_addr(text);
    };
    s.resolve.fqdn = Some(host.clone());
    let methods = s
        .resolve
        .init_addr
        .clone()
        .unwrap_or_else(|| DEFAULT_INIT_ADDR.to_vec());
    let ipv6_first = s.resolve.prefer.unwrap_or_default() == AddrFamily::Ipv6;
    let mut why = None;
    for method in methods {
        match method {
            InitAddr::Last => {}
            InitAddr::Libc => match resolve_host_prefer(&host, ipv6_first) {
                Ok(ip) => return Ok(SocketAddr::new(ip, port)),
                Err(e) => why = Some(e),
            },
            InitAddr::None => {
                s.resolve.no_addr = true;
                s.resolve.warning = why.map(|e| {
                    format!("{e}; the server starts without an address, in MAINT (resolution)")
                });
                return Ok(SocketAddr::new(IpAddr::from([0, 0, 0, 0]), port));
            }
            InitAddr::Ip(ip) => return Ok(SocketAddr::new(ip, port)),
        }
    }
    Err(match why {
        Some(e) => format!("{e} (add 'init-addr last,libc,none' to start without an address)"),
        None => format!("no 'init-addr' method gives '{host}' an address (add 'libc' or 'none')"),
    })
}

/// An SRV name (`_service._proto.name`, a port after it is ignored as the records give
/// it): the server starts without an address, in MAINT (resolution), until a record is
/// given to it; `init-addr` does not apply.
fn srv_address(s: &mut ServerDraft, text: &str) -> Result<SocketAddr, String> {
    let name = text.split_once(':').map_or(text, |(name, _)| name);
    let valid = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    if !valid || !name.contains('.') {
        return Err(format!(
            "invalid SRV name '{name}' (write _service._proto.name)"
        ));
    }
    if s.resolve.resolvers.is_none() {
        return Err(format!(
            "SRV name '{name}' needs 'resolvers NAME': only DNS at run time gives its servers"
        ));
    }
    s.resolve.fqdn = Some(name.to_owned());
    s.resolve.no_addr = true;
    Ok(SocketAddr::new(IpAddr::from([0, 0, 0, 0]), 0))
}

/// `server-template PREFIX NUM|LOW-HIGH ADDR [options]`: servers PREFIXLOW..PREFIXHIGH with
/// the same address and options, each read as a `server` line.
pub fn server_template(
    p: &mut ProxyDraft,
    ctx: &mut Ctx,
    server_line: fn(&mut ProxyDraft, &mut Ctx) -> Result<(), String>,
) -> Result<(), String> {
    const USAGE: &str =
        "server-template PREFIX NUM|LOW-HIGH FQDN:PORT|_service._proto.name [options]";
    let prefix = ctx.arg(0, &format!("a prefix, a number and an address ({USAGE})"))?;
    let range = ctx.arg(1, &format!("a number or a range LOW-HIGH ({USAGE})"))?;
    ctx.arg(2, &format!("an address FQDN:PORT ({USAGE})"))?;
    let (low, high) = match range.split_once('-') {
        Some((a, b)) => (
            parse_int(a, "server-template range", 1, MAX_COUNT)?,
            parse_int(b, "server-template range", 1, MAX_COUNT)?,
        ),
        None => (1, parse_int(range, "server-template number", 1, MAX_COUNT)?),
    };
    if low > high {
        return Err(format!("server-template range '{range}' is reversed"));
    }
    if high - low >= 10_000 {
        return Err(format!(
            "server-template '{range}': at most 10000 servers per template"
        ));
    }
    let prefix = prefix.to_owned();
    for i in low..=high {
        let mut args = vec![Word::new(format!("{prefix}{i}").into_bytes())];
        args.extend_from_slice(&ctx.args[2..]);
        let mut line = Ctx {
            keyword: "server-template",
            args: &args,
            loc: ctx.loc,
            diags: &mut *ctx.diags,
        };
        // The first slot's errors are every slot's: report them once.
        server_line(p, &mut line)?;
    }
    Ok(())
}

/// Checks that every server's `resolvers` names a section with name servers.
pub fn check_references(config: &Config, sections: &[Resolvers], diags: &mut Diags) {
    let mut seen = std::collections::HashSet::new();
    for b in &config.backends {
        for s in &b.servers {
            let Some(r) = &s.resolve else { continue };
            if !seen.insert((s.loc.clone(), r.resolvers.clone())) {
                continue;
            }
            match sections.iter().find(|x| x.name == r.resolvers) {
                None => diags.error(
                    &s.loc,
                    format!(
                        "server '{}/{}' uses resolvers '{}', which is not declared{}",
                        b.name,
                        s.name,
                        r.resolvers,
                        did_you_mean(&r.resolvers, sections.iter().map(|x| x.name.as_str()))
                    ),
                ),
                Some(x) if x.nameservers.is_empty() => diags.error(
                    &s.loc,
                    format!(
                        "server '{}/{}' uses resolvers '{}', which has no nameserver (declared at {})",
                        b.name, s.name, r.resolvers, x.loc
                    ),
                ),
                Some(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{AddrFamily, Config, parse_sources};
    use std::time::Duration;

    fn parse(text: &str) -> Result<Config, String> {
        parse_sources(&[("t.cfg", text)]).map_err(|e| e.to_string())
    }

    const SECTION: &str = "resolvers dns\n    nameserver a 127.0.0.1:5353\n    nameserver b udp@10.0.0.1\n    resolve_retries 5\n    timeout resolve 2s\n    timeout retry 300\n    hold valid 3s\n    hold obsolete 30s\n    hold nx 1m\n    accepted_payload_size 4096\n";

    #[test]
    fn a_resolvers_section_with_every_keyword() {
        let c = parse(SECTION).unwrap();
        let r = &c.resolvers[0];
        assert_eq!(r.name, "dns");
        assert_eq!(
            r.nameservers,
            [
                "127.0.0.1:5353".parse().unwrap(),
                "10.0.0.1:53".parse().unwrap()
            ]
        );
        assert_eq!(r.resolve_retries, 5);
        assert_eq!(r.timeout_resolve, Duration::from_secs(2));
        assert_eq!(r.timeout_retry, Duration::from_millis(300));
        assert_eq!(r.hold.valid, Duration::from_secs(3));
        assert_eq!(r.hold.obsolete, Duration::from_secs(30));
        assert_eq!(r.hold.nx, Duration::from_secs(60));
        assert_eq!(r.hold.other, Duration::from_secs(30), "HAProxy's default");
        assert_eq!(r.accepted_payload_size, 4096);
    }

    #[test]
    fn section_errors_name_the_line() {
        let bad = [
            ("nameserver a tcp@127.0.0.1:53", "over UDP"),
            ("nameserver a dns.example:53", "expects IP[:PORT]"),
            ("hold later 1s", "unknown status 'later'"),
            ("timeout resolve 0", "more than zero"),
            ("timeout query 1s", "'retry' or 'resolve'"),
            ("accepted_payload_size 70000", "between 12 and 65535"),
            ("accepted_payload_size 1024", "use 512 or at least 1232"),
            ("resolve_retries 0", "between 1 and"),
            ("search example.com", "unknown keyword 'search'"),
        ];
        for (line, want) in bad {
            let e = parse(&format!("resolvers dns\n    {line}\n")).unwrap_err();
            assert!(
                e.starts_with("t.cfg:2: ") && e.contains(want),
                "{line}: {e}"
            );
        }
        let e = parse("resolvers dns\nresolvers dns\n").unwrap_err();
        assert!(
            e.contains("t.cfg:2: resolvers section 'dns' is declared twice"),
            "{e}"
        );
    }

    #[test]
    fn resolv_conf_nameservers_in_order() {
        let text =
            "# comment\nsearch x\nnameserver 10.0.0.2\nnameserver ::1\nnameserver fe80::1%eth0\n";
        assert_eq!(
            super::resolv_conf_nameservers(text),
            ["10.0.0.2:53".parse().unwrap(), "[::1]:53".parse().unwrap()]
        );
    }

    #[test]
    fn servers_resolve_names_with_their_options() {
        let c = parse(&format!(
            "{SECTION}backend b\n    default-server resolvers dns init-addr none\n    server s1 db.invalid:5432 resolve-prefer ipv4 resolve-opts prevent-dup-ip,ignore-weight\n    server s2 127.0.0.1:5432\n    server s3 db.invalid:5432 init-addr 10.0.0.9\n"
        ))
        .unwrap();
        let s = &c.backends[0].servers;
        let r = s[0].resolve.as_ref().unwrap();
        assert_eq!(
            (r.resolvers.as_str(), r.fqdn.as_str()),
            ("dns", "db.invalid")
        );
        assert_eq!(r.prefer, AddrFamily::Ipv4);
        assert!(r.ignore_weight);
        assert!(
            s[0].dns_maint,
            "init-addr none starts in MAINT (resolution)"
        );
        assert_eq!(s[0].addr.port(), 5432);
        assert!(
            s[1].resolve.is_none() && !s[1].dns_maint,
            "an IP is not resolved"
        );
        assert_eq!(s[2].addr, "10.0.0.9:5432".parse().unwrap());
        assert!(!s[2].dns_maint);
        assert_eq!(s[2].resolve.as_ref().unwrap().prefer, AddrFamily::Ipv6);
        let dns_warnings = |c: &Config| {
            c.warnings
                .iter()
                .map(|w| w.to_string())
                .filter(|w| w.contains("resolve"))
                .collect::<Vec<_>>()
        };
        assert!(dns_warnings(&c).is_empty(), "{:?}", c.warnings);
        // As HAProxy: a name libc cannot resolve before `none` is worth a warning.
        let c = parse(&format!(
            "{SECTION}backend b\n    server s1 db.invalid:5432 resolvers dns init-addr libc,none\n"
        ))
        .unwrap();
        let w = dns_warnings(&c);
        assert!(
            w[0].starts_with("t.cfg:12: server 'b/s1': could not resolve 'db.invalid'"),
            "{w:?}"
        );
    }

    #[test]
    fn server_errors_name_the_line() {
        let bad = [
            (
                "server s db.invalid:1 resolvers nope init-addr none",
                "which is not declared",
            ),
            ("server s db.invalid:1 init-addr libc", "could not resolve"),
            (
                "server s db.invalid:1 init-addr last",
                "no 'init-addr' method",
            ),
            (
                "server s db.invalid:1 init-addr sometimes",
                "unknown method 'sometimes'",
            ),
            (
                "server s 10.0.0.1:1 resolve-prefer ipv5",
                "'ipv4' or 'ipv6'",
            ),
            (
                "server s 10.0.0.1:1 resolve-opts allow-dup-ip",
                "not supported",
            ),
            (
                "server s 10.0.0.1:1 resolve-net 10.0.0.0/8",
                "not supported",
            ),
            (
                "server-template s 3 _db._tcp.example",
                "needs 'resolvers NAME'",
            ),
            (
                "server-template s 3-1 db.invalid:1 init-addr none",
                "reversed",
            ),
            (
                "server-template s 0 db.invalid:1 init-addr none",
                "between 1 and",
            ),
        ];
        for (line, want) in bad {
            let e = parse(&format!("{SECTION}backend b\n    {line}\n")).unwrap_err();
            assert!(
                e.starts_with("t.cfg:12: ") && e.contains(want),
                "{line}: {e}"
            );
        }
    }

    #[test]
    fn server_template_makes_numbered_servers() {
        let c = parse(&format!(
            "{SECTION}backend b\n    server-template db 2-4 db.invalid:6432 resolvers dns init-addr none check\n    server db9 10.0.0.1:1\n"
        ))
        .unwrap();
        let names: Vec<&str> = c.backends[0].servers.iter().map(|s| &*s.name).collect();
        assert_eq!(names, ["db2", "db3", "db4", "db9"]);
        assert!(
            c.backends[0].servers[..3]
                .iter()
                .all(|s| s.check && s.dns_maint)
        );
        let e = parse(&format!(
            "{SECTION}backend b\n    server db2 10.0.0.1:1\n    server-template db 2 db.invalid:1 init-addr none\n"
        ))
        .unwrap_err();
        assert!(e.contains("t.cfg:13: server 'b/db2' already exists"), "{e}");
    }
}
