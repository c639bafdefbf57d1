//! Unit tests of the incoming PROXY header parser: what HAProxy 2.6 accepts, what it refuses
//! and why, including its lenient readings.

use super::*;
use crate::config::ProxyProtocol;
use crate::proxy::proxy_protocol;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ok(data: &[u8]) -> Header {
    parse(data).unwrap_or_else(|e| panic!("{:?} refused: {e:?}", String::from_utf8_lossy(data)))
}

fn refusal(data: &[u8]) -> Refusal {
    match parse(data) {
        Ok(h) => panic!("{:?} accepted: {h:?}", String::from_utf8_lossy(data)),
        Err(e) => e.reason,
    }
}

fn pair(src: &str, dst: &str) -> Option<(SocketAddr, SocketAddr)> {
    Some((addr(src), addr(dst)))
}

#[test]
fn v1_tcp4_tcp6_and_unknown_are_read_up_to_crlf() {
    let line = b"PROXY TCP4 192.0.2.10 198.51.100.1 51234 5432\r\nhello";
    assert_eq!(
        ok(line),
        Header {
            len: line.len() - 5,
            addresses: pair("192.0.2.10:51234", "198.51.100.1:5432"),
        }
    );
    let line = b"PROXY TCP6 2001:db8::10 ::ffff:1.2.3.4 1 65535\r\n";
    assert_eq!(
        ok(line),
        Header {
            len: line.len(),
            addresses: pair("[2001:db8::10]:1", "[::ffff:1.2.3.4]:65535"),
        }
    );
    assert_eq!(
        ok(b"PROXY UNKNOWN\r\nSELECT"),
        Header {
            len: 15,
            addresses: None,
        }
    );
}

#[test]
fn v1_headers_written_by_send_proxy_are_accepted() {
    for (src, dst) in [
        ("192.0.2.10:51234", "198.51.100.1:5432"),
        ("[2001:db8::10]:51234", "[2001:db8:1::1]:6432"),
    ] {
        for version in [ProxyProtocol::V1, ProxyProtocol::V2] {
            let bytes = proxy_protocol::header(version, addr(src), addr(dst));
            assert_eq!(
                ok(&bytes),
                Header {
                    len: bytes.len(),
                    addresses: pair(src, dst),
                }
            );
        }
    }
}

#[test]
fn v1_tcp4_is_read_as_leniently_as_haproxy_reads_it() {
    // Missing octets are 0; ports are taken modulo 65536; an empty port is 0.
    let h = ok(b"PROXY TCP4 10.1.2 10.0.0.1 70000 5\r\n");
    assert_eq!(h.addresses, pair("10.1.2.0:4464", "10.0.0.1:5"));
    // Only the last three digits of an octet count; 300 carries into the octet before; an
    // empty source port is 0.
    let h = ok(b"PROXY TCP4 1.2.1300.4 1.0.300.1  2\r\n");
    assert_eq!(h.addresses, Some((addr("1.3.44.4:0"), addr("1.1.44.1:2"))));
    // An empty destination port leaves a space where CR must be.
    assert_eq!(
        refusal(b"PROXY TCP4 1.2.3.4 1.2.3.5 1  \r\n"),
        Refusal::BadHeader
    );
}

#[test]
fn v1_tcp6_ignores_what_follows_the_fourth_field() {
    let h = ok(b"PROXY TCP6 ::1 ::2 1 2 trailing words\r\n");
    assert_eq!(h.addresses, pair("[::1]:1", "[::2]:2"));
}

#[test]
fn v1_malformed_lines_are_refused_as_haproxy_refuses_them() {
    let cases: &[(&[u8], Refusal)] = &[
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n\n", Refusal::BadHeader),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 x 2\r\n", Refusal::BadHeader),
        (b"PROXY TCP4 1.2.3.4,5.6.7.8 1 2\r\n", Refusal::BadHeader),
        (b"PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n", Refusal::BadHeader),
        (b"PROXY TCP6 ::1 ::2 1\r\n", Refusal::BadHeader),
        (b"PROXY TCP6 ::1 ::2 1 2x\r\n", Refusal::BadHeader),
        (b"PROXY TCP6 ::g ::2 1 2\r\n", Refusal::BadHeader),
        (b"PROXY TCP6 1.2.3.4 ::2 1 2\r\n", Refusal::BadHeader),
        (b"PROXY TCP6 ::1 ::2 1 2\rX", Refusal::BadHeader),
        (
            b"PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\n",
            Refusal::BadProtocol,
        ),
        (b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", Refusal::BadProtocol),
        (b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", Refusal::BadProtocol),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", Refusal::NotHeader),
        (b"SELECT 1; SELECT 2;", Refusal::NotHeader),
    ];
    for (data, want) in cases {
        assert_eq!(refusal(data), *want, "{:?}", String::from_utf8_lossy(data));
    }
}

#[test]
fn an_incomplete_first_read_is_truncated() {
    let full = b"PROXY TCP4 192.0.2.10 198.51.100.1 51234 5432\r\n";
    for cut in 1..full.len() {
        assert_eq!(refusal(&full[..cut]), Refusal::Truncated, "{cut} bytes");
    }
    let full = b"PROXY TCP6 ::1 ::2 1 2\r\n";
    for cut in 1..full.len() {
        assert_eq!(refusal(&full[..cut]), Refusal::Truncated, "{cut} bytes");
    }
    // Fewer than 16 bytes that are not `PROXY `: too short to tell from a v2 signature.
    assert_eq!(refusal(b"hello\n"), Refusal::Truncated);
    let v2 = proxy_protocol::header(ProxyProtocol::V2, addr("[::1]:1"), addr("[::2]:2"));
    for cut in 1..v2.len() {
        assert_eq!(refusal(&v2[..cut]), Refusal::Truncated, "{cut} bytes");
    }
}

/// A v2 header with `ver_cmd`, `fam` and `body`.
fn v2(ver_cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.push(ver_cmd);
    h.push(fam);
    h.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
    h.extend_from_slice(body);
    h
}

const V4_BODY: [u8; 12] = [10, 0, 0, 1, 10, 0, 0, 2, 0x30, 0x39, 0x15, 0x38];

fn tlv(kind: u8, value: &[u8]) -> Vec<u8> {
    let mut t = vec![kind];
    t.extend_from_slice(&u16::try_from(value.len()).unwrap().to_be_bytes());
    t.extend_from_slice(value);
    t
}

#[test]
fn v2_local_keeps_the_connection_addresses_and_any_length() {
    for body in [&[][..], &V4_BODY[..], &[0u8; 300][..]] {
        let h = v2(0x20, 0x00, body);
        assert_eq!(
            ok(&h),
            Header {
                len: h.len(),
                addresses: None,
            }
        );
    }
    // LOCAL with an address family: still the connection's addresses.
    assert_eq!(ok(&v2(0x20, 0x11, &V4_BODY)).addresses, None);
}

#[test]
fn v2_tlvs_are_skipped_when_valid() {
    let mut body = V4_BODY.to_vec();
    body.extend(tlv(0x04, &[0; 10])); // NOOP
    body.extend(tlv(0x02, b"db.example")); // AUTHORITY
    body.extend(tlv(0x05, &[7; 128])); // UNIQUE_ID at its limit
    body.extend(tlv(0xe0, &[1, 2, 3])); // custom
    let mut h = v2(0x21, 0x11, &body);
    h.extend_from_slice(b"payload");
    assert_eq!(
        ok(&h),
        Header {
            len: h.len() - 7,
            addresses: pair("10.0.0.1:12345", "10.0.0.2:5432"),
        }
    );
}

#[test]
fn v2_crc32c_is_checked() {
    let mut body = V4_BODY.to_vec();
    body.extend(tlv(0x03, &[0; 4]));
    let mut h = v2(0x21, 0x11, &body);
    let crc = crc32c(&h);
    let at = h.len() - 4;
    h[at..].copy_from_slice(&crc.to_be_bytes());
    assert!(parse(&h).is_ok());
    h[at] ^= 1;
    assert_eq!(refusal(&h), Refusal::BadHeader);
    assert_eq!(crc32c(b"123456789"), 0xe306_9283);
}

#[test]
fn v2_malformed_headers_are_refused_as_haproxy_refuses_them() {
    let with_tlv = |t: Vec<u8>| {
        let mut body = V4_BODY.to_vec();
        body.extend(t);
        v2(0x21, 0x11, &body)
    };
    let cases: Vec<(Vec<u8>, Refusal)> = vec![
        (v2(0x11, 0x11, &V4_BODY), Refusal::NotHeader),
        (v2(0x22, 0x11, &V4_BODY), Refusal::BadHeader),
        (v2(0x21, 0x11, &V4_BODY[..11]), Refusal::BadHeader),
        (v2(0x21, 0x21, &[0; 35]), Refusal::BadHeader),
        (v2(0x21, 0x00, &[]), Refusal::BadHeader),
        (v2(0x21, 0x12, &V4_BODY), Refusal::BadHeader),
        (with_tlv(vec![0x04, 0x00]), Refusal::BadHeader),
        (with_tlv(vec![0x04, 0x00, 0x05, 1, 2]), Refusal::BadHeader),
        (with_tlv(tlv(0x03, &[0; 3])), Refusal::BadHeader),
        (with_tlv(tlv(0x02, &[b'a'; 256])), Refusal::BadHeader),
        (with_tlv(tlv(0x05, &[1; 129])), Refusal::BadHeader),
    ];
    for (data, want) in cases {
        assert_eq!(refusal(&data), want, "{data:02x?}");
    }
    let mut sig = v2(0x21, 0x11, &V4_BODY);
    sig[11] = b'X';
    assert_eq!(refusal(&sig), Refusal::NotHeader);
}

#[test]
fn a_bad_tlv_after_the_addresses_reports_the_headers_client() {
    let mut body = V4_BODY.to_vec();
    body.extend([0x04, 0x00, 0x09]);
    let e = parse(&v2(0x21, 0x11, &body)).unwrap_err();
    assert_eq!(e.reason, Refusal::BadHeader);
    assert_eq!(e.client, Some(addr("10.0.0.1:12345")));
    let e = parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 x\r\n").unwrap_err();
    assert_eq!(e.client, None);
}

#[test]
fn a_header_longer_than_haproxys_buffer_can_never_be_complete() {
    let h = v2(0x21, 0x11, &{
        let mut body = V4_BODY.to_vec();
        body.extend(tlv(0x04, &vec![0; PEEK_LIMIT]));
        body
    });
    assert_eq!(refusal(&h[..PEEK_LIMIT]), Refusal::Truncated);
}

#[test]
fn ppp_built_v2_headers_with_tlvs_are_accepted() {
    use ppp::v2::{Builder, Command, Protocol, Type, Version};
    let header = Builder::with_addresses(
        Version::Two | Command::Proxy,
        Protocol::Stream,
        (addr("[2001:db8::1]:4000"), addr("[2001:db8::2]:5432")),
    )
    .write_tlv(Type::NoOp, &[0u8; 5])
    .unwrap()
    .write_tlv(Type::Authority, b"example.org")
    .unwrap()
    .build()
    .unwrap();
    assert_eq!(
        ok(&header),
        Header {
            len: header.len(),
            addresses: pair("[2001:db8::1]:4000", "[2001:db8::2]:5432"),
        }
    );
}
