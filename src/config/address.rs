//! Addresses as HAProxy writes them: `host:port`, `ipv4:port`, `[ipv6]:port`, `ipv6:port`
//! (the last colon separates the port), optional `ipv4@` / `ipv6@` family prefixes, and for
//! `bind` the wildcards `:PORT`, `*:PORT`, `:::PORT` and port ranges `A-B`. Host names are
//! resolved once, here, as HAProxy does at startup.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

use super::units::parse_port;

/// Address family forced by an `ipv4@` / `ipv6@` prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Any,
    V4,
    V6,
}

/// Strips a family prefix (`ipv4@`, `ipv6@`, `tcp@`, `tcp4@`, `tcp6@`); rejects the others.
fn strip_family(text: &str) -> Result<(Family, &str), String> {
    let Some((prefix, rest)) = text.split_once('@') else {
        return Ok((Family::Any, text));
    };
    match prefix {
        "ipv4" | "tcp4" => Ok((Family::V4, rest)),
        "ipv6" | "tcp6" => Ok((Family::V6, rest)),
        "tcp" => Ok((Family::Any, rest)),
        "unix" | "abns" | "fd" | "sockpair" | "udp" | "udp4" | "udp6" | "quic4" | "quic6" => Err(
            format!("address family '{prefix}@' is not supported: rolelb uses TCP over IPv4/IPv6"),
        ),
        _ => Err(format!(
            "unknown address prefix '{prefix}@' in '{text}' (use ipv4@ or ipv6@, or none)"
        )),
    }
}

/// Splits `host:port` at the last colon (or after `[...]`); `None` port when absent.
fn split_host_port(text: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(rest) = text.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err(format!("missing ']' in address '{text}'"));
        };
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err(format!(
                    "unexpected '{after}' after ']' in address '{text}'"
                )),
            },
        };
    }
    match text.rfind(':') {
        Some(i) => Ok((&text[..i], Some(&text[i + 1..]))),
        None => Ok((text, None)),
    }
}

/// Resolves a host (IP literal or name) to one address; IPv4 is preferred as HAProxy does.
pub fn resolve_host(host: &str) -> Result<IpAddr, String> {
    resolve_family(host, Family::Any)
}

/// Refuses a host that looks like an address but is not one (instead of asking DNS about
/// it), and characters no host name has.
fn check_name(host: &str) -> Result<(), String> {
    if host.contains(':') || host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(format!("invalid IP address '{host}'"));
    }
    let valid_name = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    if !valid_name {
        return Err(format!("invalid host name '{host}'"));
    }
    Ok(())
}

fn resolve_family(host: &str, family: Family) -> Result<IpAddr, String> {
    if host.is_empty() {
        return Err("empty host name".into());
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return match (family, ip) {
            (Family::V4, IpAddr::V6(_)) => Err(format!("'{host}' is not an IPv4 address")),
            (Family::V6, IpAddr::V4(_)) => Err(format!("'{host}' is not an IPv6 address")),
            _ => Ok(ip),
        };
    }
    check_name(host)?;
    let found: Vec<SocketAddr> = (host, 0)
        .to_socket_addrs()
        .map_err(|e| format!("could not resolve '{host}': {e}"))?
        .collect();
    let pick = |want_v4: bool| {
        found
            .iter()
            .find(|a| a.is_ipv4() == want_v4)
            .map(|a| a.ip())
    };
    let ip = match family {
        Family::V4 => pick(true),
        Family::V6 => pick(false),
        Family::Any => pick(true).or_else(|| pick(false)),
    };
    ip.ok_or_else(|| format!("could not resolve '{host}' to an address of the wanted family"))
}

/// Splits a server address `[FAMILY@]HOST:PORT` without resolving it; the port is required.
fn split_server_addr(text: &str) -> Result<(Family, &str, u16), String> {
    let (family, rest) = strip_family(text)?;
    if rest.starts_with('/') {
        return Err(format!(
            "unix socket '{text}' is not supported: rolelb forwards to TCP servers"
        ));
    }
    let (host, port) = split_host_port(rest)?;
    let port = match port {
        Some(p) if !p.is_empty() => p,
        _ => {
            return Err(format!(
                "missing port in server address '{text}' (write HOST:PORT; rolelb does not reuse the client's port)"
            ));
        }
    };
    if port.starts_with('+') || port.starts_with('-') {
        return Err(format!(
            "port offset '{port}' in server address '{text}' is not supported: give a fixed port"
        ));
    }
    if port.bytes().all(|b| b == b'0') {
        return Err(format!(
            "port 0 in server address '{text}' (HAProxy: the port the client connected to) is not supported: give a fixed port"
        ));
    }
    Ok((family, host, parse_port(port, "server port")?))
}

/// Parses and resolves a server address `HOST:PORT`; the port is required.
pub fn parse_server_addr(text: &str) -> Result<SocketAddr, String> {
    let (family, host, port) = split_server_addr(text)?;
    let ip = resolve_family(host, family)?;
    Ok(SocketAddr::new(ip, port))
}

/// The host name and port of a server address `NAME:PORT` whose host is a name (without a
/// family prefix): what DNS resolution at run time applies to. `None` for an IP address or
/// a prefixed one.
pub fn server_name_port(text: &str) -> Result<Option<(String, u16)>, String> {
    let (family, host, port) = split_server_addr(text)?;
    if family != Family::Any || host.parse::<IpAddr>().is_ok() {
        return Ok(None);
    }
    if host.is_empty() {
        return Err("empty host name".into());
    }
    check_name(host)?;
    Ok(Some((host.to_owned(), port)))
}

/// Resolves a host name with the system's resolver, an address of the preferred family
/// first (`ipv6_first`), else one of the other.
pub fn resolve_host_prefer(host: &str, ipv6_first: bool) -> Result<IpAddr, String> {
    let (first, second) = if ipv6_first {
        (Family::V6, Family::V4)
    } else {
        (Family::V4, Family::V6)
    };
    resolve_family(host, first).or_else(|_| resolve_family(host, second))
}

/// Parses a `bind` address list `ADDR:PORT[,ADDR:PORT...]` into socket addresses.
/// The address of a `source` keyword: `IP`, `IP:PORT`, `[IPv6]:PORT` or `*` (any), port 0
/// when none is given (the kernel picks one). Port ranges and host names are refused.
pub fn parse_source_addr(text: &str) -> Result<SocketAddr, String> {
    let any = |port| SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, port));
    if text == "*" {
        return Ok(any(0));
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 0));
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Some(port) = text.strip_prefix("*:") {
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("invalid port in source address '{text}'"))?;
        return Ok(any(port));
    }
    if text.rsplit_once(':').is_some_and(|(_, p)| p.contains('-')) {
        return Err(format!(
            "source port range in '{text}' is not supported: give one address, with or without one port"
        ));
    }
    Err(format!(
        "invalid source address '{text}': expected IP, IP:PORT or [IPv6]:PORT"
    ))
}

pub fn parse_bind_addrs(text: &str) -> Result<Vec<SocketAddr>, String> {
    let mut out = Vec::new();
    for part in text.split(',') {
        if part.is_empty() {
            return Err(format!("empty address in bind list '{text}'"));
        }
        let (family, rest) = strip_family(part)?;
        if rest.starts_with('/') {
            return Err(format!(
                "unix socket '{part}' is not supported: rolelb listens on TCP only"
            ));
        }
        let (host, port) = split_host_port(rest)?;
        let Some(port) = port.filter(|p| !p.is_empty()) else {
            return Err(format!(
                "missing port in bind address '{part}' (write ADDR:PORT)"
            ));
        };
        let ip = match (host, family) {
            ("" | "*" | "0.0.0.0", Family::Any | Family::V4) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            ("" | "*" | "::", Family::V6) | ("::", Family::Any) => {
                IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            }
            _ => resolve_family(host, family)?,
        };
        let (first, last) = match port.split_once('-') {
            Some((a, b)) => (parse_port(a, "bind port")?, parse_port(b, "bind port")?),
            None => {
                let p = parse_port(port, "bind port")?;
                (p, p)
            }
        };
        if first > last {
            return Err(format!("bind port range '{port}' is reversed"));
        }
        out.extend((first..=last).map(|p| SocketAddr::new(ip, p)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses() {
        assert_eq!(
            parse_server_addr("127.0.0.1:5432").unwrap(),
            "127.0.0.1:5432".parse().unwrap()
        );
        assert_eq!(
            parse_server_addr("[::1]:6432").unwrap(),
            "[::1]:6432".parse().unwrap()
        );
        assert_eq!(
            parse_server_addr("ipv6@::1:6432").unwrap(),
            "[::1]:6432".parse().unwrap()
        );
        assert_eq!(
            parse_server_addr("ipv4@127.0.0.1:1").unwrap(),
            "127.0.0.1:1".parse().unwrap()
        );
        assert!(
            parse_server_addr("localhost:5432")
                .unwrap()
                .ip()
                .is_loopback()
        );
    }

    #[test]
    fn server_address_errors() {
        // HAProxy's port 0 (the client's destination port) cannot be honoured: say so.
        let e = parse_server_addr("127.0.0.1:0").unwrap_err();
        assert!(e.contains("port 0") && e.contains("not supported"), "{e}");
        assert!(
            parse_server_addr("127.0.0.1")
                .unwrap_err()
                .contains("missing port")
        );
        assert!(
            parse_server_addr("127.0.0.1:")
                .unwrap_err()
                .contains("missing port")
        );
        assert!(parse_server_addr("127.0.0.1:99999").is_err());
        assert!(
            parse_server_addr("999.1.1.1:80")
                .unwrap_err()
                .contains("invalid IP")
        );
        assert!(parse_server_addr("unix@/tmp/x").is_err());
        assert!(parse_server_addr("/tmp/sock").is_err());
        assert!(parse_server_addr("ipv4@::1:80").is_err());
        assert!(parse_server_addr("[::1:80").is_err());
        assert!(
            parse_server_addr("10.0.0.1:+1")
                .unwrap_err()
                .contains("offset")
        );
        assert!(parse_server_addr("bad host!:80").is_err());
    }

    #[test]
    fn bind_addresses() {
        let any4 = |p| SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), p);
        assert_eq!(parse_bind_addrs(":5000").unwrap(), [any4(5000)]);
        assert_eq!(parse_bind_addrs("*:5001").unwrap(), [any4(5001)]);
        assert_eq!(
            parse_bind_addrs(":::5002").unwrap(),
            [SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 5002)]
        );
        assert_eq!(
            parse_bind_addrs("127.0.0.1:7000-7002,[::1]:8000").unwrap(),
            [
                "127.0.0.1:7000".parse().unwrap(),
                "127.0.0.1:7001".parse().unwrap(),
                "127.0.0.1:7002".parse().unwrap(),
                "[::1]:8000".parse().unwrap(),
            ]
        );
    }

    #[test]
    fn bind_address_errors() {
        assert!(
            parse_bind_addrs("127.0.0.1")
                .unwrap_err()
                .contains("missing port")
        );
        assert!(parse_bind_addrs(":5000,").is_err());
        assert!(
            parse_bind_addrs(":6000-5000")
                .unwrap_err()
                .contains("reversed")
        );
        assert!(parse_bind_addrs("/run/x.sock").is_err());
    }
}
