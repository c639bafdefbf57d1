//! The PROXY protocol header a server line's `send-proxy` (v1) or `send-proxy-v2` (v2) puts
//! in front of the client's bytes, so the server learns the client's address.
//!
//! The session calls [`header`] once per server connection, with the client's address as
//! `src` and the address the client connected to as `dst`, and writes the bytes before
//! anything else. Only what HAProxy sends for a proxied TCP connection is produced: v1
//! `TCP4`/`TCP6` lines and v2 `PROXY` commands over TCP, without TLVs. When the two addresses
//! are of different families the IPv4 one is written as its IPv4-mapped IPv6 address, as
//! HAProxy does.
//!
//! Hand-written rather than taken from a crate: `ppp` (used by the tests to parse what this
//! writes) encodes v2 through a fallible builder and turns mixed families into `UNKNOWN`,
//! while this is a few infallible lines.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::config::ProxyProtocol;

/// The 12 bytes that open every v2 header.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Version 2, command `PROXY`.
const V2_VERSION_PROXY: u8 = 0x21;
/// Version 2, command `LOCAL`.
const V2_VERSION_LOCAL: u8 = 0x20;
/// Address family and transport unspecified.
const V2_UNSPEC: u8 = 0x00;
/// Address family `AF_INET`, transport `STREAM`.
const V2_TCP4: u8 = 0x11;
/// Address family `AF_INET6`, transport `STREAM`.
const V2_TCP6: u8 = 0x21;

/// The header announcing a TCP connection from `src` to `dst` in the given `version`.
pub fn header(version: ProxyProtocol, src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let connection = Connection::of(src, dst);
    match version {
        ProxyProtocol::V1 => v1(&connection),
        ProxyProtocol::V2 => v2(&connection),
    }
}

/// The header a health check sends first when its server has `send-proxy[-v2]` (or
/// `check-send-proxy`), as HAProxy 2.6 sends it: v1 announces the check connection itself
/// (`local`, the check's own address, to `peer`, the server); v2 is a `LOCAL` command with no
/// addresses (the connection was not proxied).
pub fn check_header(version: ProxyProtocol, local: SocketAddr, peer: SocketAddr) -> Vec<u8> {
    match version {
        ProxyProtocol::V1 => header(version, local, peer),
        ProxyProtocol::V2 => {
            let mut bytes = V2_SIGNATURE.to_vec();
            bytes.extend_from_slice(&[V2_VERSION_LOCAL, V2_UNSPEC, 0, 0]);
            bytes
        }
    }
}

/// Both ends, already brought to one family.
enum Addresses {
    V4(Ipv4Addr, Ipv4Addr),
    V6(Ipv6Addr, Ipv6Addr),
}

/// Both ends and their ports.
struct Connection {
    addresses: Addresses,
    ports: (u16, u16),
}

impl Connection {
    fn of(src: SocketAddr, dst: SocketAddr) -> Self {
        let addresses = match (src.ip(), dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => Addresses::V4(s, d),
            (s, d) => Addresses::V6(as_v6(s), as_v6(d)),
        };
        Connection {
            addresses,
            ports: (src.port(), dst.port()),
        }
    }
}

fn as_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// `PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n`.
fn v1(connection: &Connection) -> Vec<u8> {
    let (sport, dport) = connection.ports;
    let line = match connection.addresses {
        Addresses::V4(src, dst) => format!("PROXY TCP4 {src} {dst} {sport} {dport}\r\n"),
        Addresses::V6(src, dst) => format!("PROXY TCP6 {src} {dst} {sport} {dport}\r\n"),
    };
    line.into_bytes()
}

/// Signature, version/command, family/transport, big-endian length, addresses, ports.
fn v2(connection: &Connection) -> Vec<u8> {
    // The longest header: fixed part, two IPv6 addresses, two ports.
    let mut bytes = Vec::with_capacity(V2_SIGNATURE.len() + 4 + 36);
    bytes.extend_from_slice(&V2_SIGNATURE);
    bytes.push(V2_VERSION_PROXY);
    match connection.addresses {
        Addresses::V4(src, dst) => {
            bytes.push(V2_TCP4);
            bytes.extend_from_slice(&12u16.to_be_bytes());
            bytes.extend_from_slice(&src.octets());
            bytes.extend_from_slice(&dst.octets());
        }
        Addresses::V6(src, dst) => {
            bytes.push(V2_TCP6);
            bytes.extend_from_slice(&36u16.to_be_bytes());
            bytes.extend_from_slice(&src.octets());
            bytes.extend_from_slice(&dst.octets());
        }
    }
    bytes.extend_from_slice(&connection.ports.0.to_be_bytes());
    bytes.extend_from_slice(&connection.ports.1.to_be_bytes());
    bytes
}

#[cfg(test)]
mod tests {
    use ppp::{v1 as ppp_v1, v2 as ppp_v2};

    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn check_headers_are_haproxys() {
        let (local, peer) = (addr("127.0.0.1:39212"), addr("127.0.0.1:43933"));
        assert_eq!(
            check_header(ProxyProtocol::V1, local, peer),
            b"PROXY TCP4 127.0.0.1 127.0.0.1 39212 43933\r\n"
        );
        assert_eq!(
            check_header(ProxyProtocol::V2, local, peer),
            b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00"
        );
    }

    #[test]
    fn v1_ipv4() {
        let bytes = header(
            ProxyProtocol::V1,
            addr("192.0.2.10:51234"),
            addr("198.51.100.1:5432"),
        );
        assert_eq!(bytes, b"PROXY TCP4 192.0.2.10 198.51.100.1 51234 5432\r\n");
    }

    #[test]
    fn v1_ipv6() {
        let bytes = header(
            ProxyProtocol::V1,
            addr("[2001:db8::10]:51234"),
            addr("[2001:db8:1::1]:6432"),
        );
        assert_eq!(
            bytes,
            b"PROXY TCP6 2001:db8::10 2001:db8:1::1 51234 6432\r\n"
        );
    }

    #[test]
    fn v1_mixed_families_map_ipv4_into_ipv6() {
        let bytes = header(
            ProxyProtocol::V1,
            addr("192.0.2.10:51234"),
            addr("[2001:db8:1::1]:6432"),
        );
        assert_eq!(
            bytes,
            b"PROXY TCP6 ::ffff:192.0.2.10 2001:db8:1::1 51234 6432\r\n"
        );
    }

    #[test]
    fn v2_ipv4() {
        let bytes = header(
            ProxyProtocol::V2,
            addr("192.0.2.10:51234"),
            addr("198.51.100.1:5432"),
        );
        #[rustfmt::skip]
        let want: &[u8] = &[
            0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
            0x21, 0x11, 0x00, 0x0c,
            192, 0, 2, 10,
            198, 51, 100, 1,
            0xc8, 0x22, // 51234
            0x15, 0x38, // 5432
        ];
        assert_eq!(bytes, want);
    }

    #[test]
    fn v2_ipv6() {
        let bytes = header(
            ProxyProtocol::V2,
            addr("[2001:db8::10]:51234"),
            addr("[2001:db8:1::1]:6432"),
        );
        #[rustfmt::skip]
        let want: &[u8] = &[
            0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
            0x21, 0x21, 0x00, 0x24,
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x10,
            0x20, 0x01, 0x0d, 0xb8, 0, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x01,
            0xc8, 0x22, // 51234
            0x19, 0x20, // 6432
        ];
        assert_eq!(bytes, want);
    }

    /// Bytes captured from HAProxy 2.6.12 (`server ... send-proxy` / `send-proxy-v2`, a
    /// client on the loopback) must come out identical.
    #[test]
    fn matches_haproxy_2_6() {
        let v1 = header(
            ProxyProtocol::V1,
            addr("127.0.0.1:33035"),
            addr("127.0.0.1:23511"),
        );
        assert_eq!(v1, b"PROXY TCP4 127.0.0.1 127.0.0.1 33035 23511\r\n");
        let v2 = header(ProxyProtocol::V2, addr("[::1]:50127"), addr("[::1]:23512"));
        let captured = "0d0a0d0a000d0a515549540a21210024\
                        00000000000000000000000000000001\
                        00000000000000000000000000000001\
                        c3cf5bd8";
        let hex: String = v2.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, captured);
    }

    const CASES: [(&str, &str); 3] = [
        ("192.0.2.10:51234", "198.51.100.1:5432"),
        ("[2001:db8::10]:51234", "[2001:db8:1::1]:6432"),
        ("192.0.2.10:1", "[::1]:65535"),
    ];

    /// The addresses as a parser must see them: mixed families come back as IPv6.
    fn expected(src: SocketAddr, dst: SocketAddr) -> (SocketAddr, SocketAddr) {
        if src.is_ipv4() == dst.is_ipv4() {
            return (src, dst);
        }
        let v6 = |a: SocketAddr| SocketAddr::new(IpAddr::V6(as_v6(a.ip())), a.port());
        (v6(src), v6(dst))
    }

    #[test]
    fn v1_round_trips_through_ppp() {
        for (src, dst) in CASES {
            let (src, dst) = (addr(src), addr(dst));
            let bytes = header(ProxyProtocol::V1, src, dst);
            let parsed = ppp_v1::Header::try_from(bytes.as_slice()).unwrap();
            let (want_src, want_dst) = expected(src, dst);
            let got = match parsed.addresses {
                ppp_v1::Addresses::Tcp4(a) => (
                    SocketAddr::new(a.source_address.into(), a.source_port),
                    SocketAddr::new(a.destination_address.into(), a.destination_port),
                ),
                ppp_v1::Addresses::Tcp6(a) => (
                    SocketAddr::new(a.source_address.into(), a.source_port),
                    SocketAddr::new(a.destination_address.into(), a.destination_port),
                ),
                other => panic!("unexpected {other:?}"),
            };
            assert_eq!(got, (want_src, want_dst));
        }
    }

    #[test]
    fn v2_round_trips_through_ppp() {
        for (src, dst) in CASES {
            let (src, dst) = (addr(src), addr(dst));
            let bytes = header(ProxyProtocol::V2, src, dst);
            let parsed = ppp_v2::Header::try_from(bytes.as_slice()).unwrap();
            assert_eq!(parsed.command, ppp_v2::Command::Proxy);
            assert_eq!(parsed.protocol, ppp_v2::Protocol::Stream);
            assert_eq!(parsed.len(), bytes.len());
            let (want_src, want_dst) = expected(src, dst);
            let got = match parsed.addresses {
                ppp_v2::Addresses::IPv4(a) => (
                    SocketAddr::new(a.source_address.into(), a.source_port),
                    SocketAddr::new(a.destination_address.into(), a.destination_port),
                ),
                ppp_v2::Addresses::IPv6(a) => (
                    SocketAddr::new(a.source_address.into(), a.source_port),
                    SocketAddr::new(a.destination_address.into(), a.destination_port),
                ),
                other => panic!("unexpected {other:?}"),
            };
            assert_eq!(got, (want_src, want_dst));
        }
    }
}
