//! The PROXY protocol header a `bind ... accept-proxy` listener reads from each client before
//! anything else: v1 (`PROXY TCP4|TCP6|UNKNOWN ...\r\n`) and v2 (binary, `PROXY` and `LOCAL`
//! commands, TLVs checked and skipped). The session calls [`receive`] first thing; on success
//! the addresses the header carries replace the connection's for everything after it (the log
//! line's `%ci:%cp`/`%fi:%fp`, `balance source`, the `send-proxy` header to the server); on
//! failure the connection is closed with the [`Refusal`]'s message.
//!
//! Accepts and refuses exactly what HAProxy 2.6's `conn_recv_proxy` does, quirks included:
//! - The header is looked at once, as soon as the first bytes arrive (a peek of up to
//!   16384 bytes, HAProxy's buffer): a header not complete in that first read is refused as
//!   truncated, not waited for (HAProxy cannot poll again once data is pending). A client that
//!   sends nothing is bounded by `timeout client`, which the caller applies.
//! - v1 `TCP4` addresses are read as HAProxy's lenient dotted-quad reader does (missing
//!   octets are 0, only the last three digits of an octet count, an octet over 255 carries
//!   into the next); ports are not range-checked (taken modulo 65536); `TCP6` fields end at
//!   the first spaces and anything after the fourth field is ignored; `UNKNOWN` must be
//!   followed by CRLF at once. There is no 107-byte limit.
//! - v2 `PROXY` over `TCP4`/`TCP6` takes the addresses, then walks the TLVs: a TLV that runs
//!   past the header, a CRC32C that does not match, an authority over 255 bytes or a unique
//!   id over 128 bytes is an invalid header. Other families keep the connection's addresses
//!   (and have their TLV walk start at the header's first byte, as HAProxy's does, which
//!   refuses them in practice). `LOCAL` keeps the connection's addresses, any length.
//!
//! Bytes that follow the header stay in the socket for the session to forward.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// How many bytes HAProxy looks at for the header (its default `tune.bufsize`).
pub const PEEK_LIMIT: usize = 16384;
/// The 12 bytes that open every v2 header.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Signature, version/command, family, length.
const V2_FIXED: usize = 16;
/// Type and two length bytes.
const TLV_HEADER: usize = 3;
/// `PP2_TYPE_AUTHORITY`, at most [`AUTHORITY_MAX`] bytes.
const TLV_AUTHORITY: u8 = 0x02;
/// `PP2_TYPE_CRC32C`, exactly 4 bytes.
const TLV_CRC32C: u8 = 0x03;
/// `PP2_TYPE_UNIQUE_ID`, at most [`UNIQUE_ID_MAX`] bytes.
const TLV_UNIQUE_ID: u8 = 0x05;
const AUTHORITY_MAX: usize = 255;
const UNIQUE_ID_MAX: usize = 128;

/// A header that was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Its length in bytes (consumed from the connection).
    pub len: usize,
    /// The client's and the destination's addresses it carries; `None` for v1 `UNKNOWN`,
    /// v2 `LOCAL` and v2 families other than TCP over IPv4/IPv6: the connection's own
    /// addresses stay.
    pub addresses: Option<(SocketAddr, SocketAddr)>,
}

/// Why a header was refused; the messages are HAProxy's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The client closed before sending anything.
    Empty,
    /// A socket error while reading.
    Abort,
    /// Nothing came before `timeout client`.
    Timeout,
    /// The first bytes were only the start of a header.
    Truncated,
    /// Neither `PROXY ` nor the v2 signature.
    NotHeader,
    /// A header that breaks the format.
    BadHeader,
    /// A v1 protocol other than `TCP4`, `TCP6` and `UNKNOWN`.
    BadProtocol,
}

impl Refusal {
    /// The text HAProxy logs for it.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Empty => "Connection closed while waiting for PROXY protocol header",
            Refusal::Abort => "Connection error while waiting for PROXY protocol header",
            Refusal::Timeout => "Timeout while waiting for PROXY protocol header",
            Refusal::Truncated => "Truncated PROXY protocol header received",
            Refusal::NotHeader => {
                "Received something which does not look like a PROXY protocol header"
            }
            Refusal::BadHeader => "Received an invalid PROXY protocol header",
            Refusal::BadProtocol => "Received an unhandled protocol in the PROXY protocol header",
        }
    }

    /// Whether `option dontlognull` keeps it out of the log, as HAProxy does for a client
    /// that sent nothing (closed, reset, or silent until the timeout).
    pub fn is_null(self) -> bool {
        matches!(self, Refusal::Empty | Refusal::Abort | Refusal::Timeout)
    }
}

/// A refused header, with the client address HAProxy already took from it when it failed
/// late (a v2 header whose addresses were read before a bad TLV): the log line shows that one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// Why.
    pub reason: Refusal,
    /// The header's client address, when it had been taken.
    pub client: Option<SocketAddr>,
}

impl From<Refusal> for Refused {
    fn from(reason: Refusal) -> Self {
        Refused {
            reason,
            client: None,
        }
    }
}

/// Reads the header at the start of `stream`: waits for the first bytes, judges them, and
/// consumes exactly the header. The caller bounds the wait (`timeout client`).
pub async fn receive(stream: &mut TcpStream) -> Result<Header, Refused> {
    let mut buf = vec![0u8; PEEK_LIMIT];
    let n = stream
        .peek(&mut buf)
        .await
        .map_err(|_| Refused::from(Refusal::Abort))?;
    if n == 0 {
        return Err(Refusal::Empty.into());
    }
    let header = parse(&buf[..n])?;
    stream
        .read_exact(&mut buf[..header.len])
        .await
        .map_err(|_| Refused::from(Refusal::Abort))?;
    Ok(header)
}

/// Judges the first bytes a client sent (`data` is everything available at that moment).
pub fn parse(data: &[u8]) -> Result<Header, Refused> {
    if data.len() < 6 {
        return Err(Refusal::Truncated.into());
    }
    if data.starts_with(b"PROXY ") {
        return v1(data).map_err(Refused::from);
    }
    v2(data)
}

/// A v1 line; `data` starts with `PROXY `.
fn v1(data: &[u8]) -> Result<Header, Refusal> {
    // `PROXY ` and the shortest protocol word HAProxy waits for.
    if data.len() < 9 {
        return Err(Refusal::Truncated);
    }
    let rest = &data[6..];
    let known: [&[u8]; 3] = [b"TCP4 ", b"TCP6 ", b"UNKNOWN\r\n"];
    if rest.starts_with(known[0]) {
        tcp4(data, 11)
    } else if rest.starts_with(known[1]) {
        tcp6(data, 11)
    } else if rest.starts_with(known[2]) {
        Ok(Header {
            len: 15,
            addresses: None,
        })
    } else if known.iter().any(|k| k.starts_with(rest)) {
        // HAProxy compares past the bytes it has; what it finds there is whatever its
        // buffer held before. Only the start of a known word: call it truncated.
        Err(Refusal::Truncated)
    } else {
        Err(Refusal::BadProtocol)
    }
}

/// `PROXY TCP4 SRC DST SPORT DPORT\r\n`, from `pos` (after `TCP4 `).
fn tcp4(data: &[u8], pos: usize) -> Result<Header, Refusal> {
    let end = data.len();
    let (src, pos) = dotted_quad(data, pos);
    let pos = space_after(data, pos)?;
    let (dst, pos) = dotted_quad(data, pos);
    let pos = space_after(data, pos)?;
    let (sport, pos) = read_uint(data, pos, end);
    let pos = space_after(data, pos)?;
    let (dport, pos) = read_uint(data, pos, end);
    if pos + 2 > end {
        return Err(Refusal::Truncated);
    }
    if &data[pos..pos + 2] != b"\r\n" {
        return Err(Refusal::BadHeader);
    }
    let addr = |ip: u32, port: u32| SocketAddr::new(Ipv4Addr::from(ip).into(), port16(port));
    Ok(Header {
        len: pos + 2,
        addresses: Some((addr(src, sport), addr(dst, dport))),
    })
}

/// Checks that a space follows a field ending at `pos`; returns the position after it.
fn space_after(data: &[u8], pos: usize) -> Result<usize, Refusal> {
    match data.get(pos) {
        None => Err(Refusal::Truncated),
        Some(b' ') => Ok(pos + 1),
        Some(_) => Err(Refusal::BadHeader),
    }
}

/// `PROXY TCP6 SRC DST SPORT DPORT\r\n`, from `pos` (after `TCP6 `): the line runs to the
/// first CR; its first three spaces split the four fields.
fn tcp6(data: &[u8], mut pos: usize) -> Result<Header, Refusal> {
    let start = pos;
    let mut spaces = Vec::with_capacity(4);
    let cr = loop {
        if pos + 2 > data.len() {
            return Err(Refusal::Truncated);
        }
        if data[pos] == b'\r' {
            if data[pos + 1] != b'\n' {
                return Err(Refusal::BadHeader);
            }
            break pos;
        }
        if data[pos] == b' ' {
            spaces.push(pos);
        }
        pos += 1;
    };
    let &[s1, s2, s3, ..] = spaces.as_slice() else {
        return Err(Refusal::BadHeader);
    };
    // The last field ends at a fourth space, if any; fields are C strings (a NUL ends them).
    let s4 = spaces.get(3).copied().unwrap_or(cr);
    let field = |from: usize, to: usize| {
        let f = &data[from..to];
        f.iter().position(|&b| b == 0).map_or(f, |nul| &f[..nul])
    };
    let port = |f: &[u8]| {
        f.iter()
            .all(u8::is_ascii_digit)
            .then(|| port16(read_uint(f, 0, f.len()).0))
            .ok_or(Refusal::BadHeader)
    };
    let sport = port(field(s2 + 1, s3))?;
    let dport = port(field(s3 + 1, s4))?;
    let ip = |f: &[u8]| {
        std::str::from_utf8(f)
            .ok()
            .and_then(|s| s.parse::<Ipv6Addr>().ok())
            .ok_or(Refusal::BadHeader)
    };
    let src = ip(field(start, s1))?;
    let dst = ip(field(s1 + 1, s2))?;
    Ok(Header {
        len: cr + 2,
        addresses: Some((
            SocketAddr::new(src.into(), sport),
            SocketAddr::new(dst.into(), dport),
        )),
    })
}

/// HAProxy's lenient IPv4 reader: up to four dot-separated runs of digits, each worth its
/// last three digits, added at its octet's place (so 300 carries into the octet before);
/// an empty or missing octet is 0. Returns the address and where reading stopped.
fn dotted_quad(data: &[u8], mut pos: usize) -> (u32, usize) {
    let mut value = 0u32;
    for shift in [24u32, 16, 8, 0] {
        let start = pos;
        while data.get(pos).is_some_and(u8::is_ascii_digit) {
            pos += 1;
        }
        let octet = data[start.max(pos.saturating_sub(3))..pos]
            .iter()
            .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'));
        value = value.wrapping_add(octet.wrapping_mul(1 << shift));
        if shift == 0 || data.get(pos) != Some(&b'.') {
            break;
        }
        pos += 1;
    }
    (value, pos)
}

/// Decimal digits from `pos` up to `end`, in wrapping 32-bit arithmetic as HAProxy reads
/// them (no digit: 0). Returns the value and where reading stopped.
fn read_uint(data: &[u8], mut pos: usize, end: usize) -> (u32, usize) {
    let mut value = 0u32;
    while pos < end && data[pos].is_ascii_digit() {
        value = value
            .wrapping_mul(10)
            .wrapping_add(u32::from(data[pos] - b'0'));
        pos += 1;
    }
    (value, pos)
}

/// A port as HAProxy stores a parsed number in a 16-bit field: modulo 65536.
fn port16(value: u32) -> u16 {
    (value & 0xffff) as u16
}

/// A v2 header.
fn v2(data: &[u8]) -> Result<Header, Refused> {
    if data.len() < V2_FIXED {
        return Err(Refusal::Truncated.into());
    }
    if data[..12] != V2_SIGNATURE || data[12] & 0xf0 != 0x20 {
        return Err(Refusal::NotHeader.into());
    }
    let body = usize::from(u16::from_be_bytes([data[14], data[15]]));
    let total = V2_FIXED + body;
    if data.len() < total {
        return Err(Refusal::Truncated.into());
    }
    match data[12] & 0x0f {
        // LOCAL: the connection's own addresses, whatever follows.
        0x00 => Ok(Header {
            len: total,
            addresses: None,
        }),
        0x01 => {
            let (addresses, tlvs_at) = match data[13] {
                0x11 => {
                    if body < 12 {
                        return Err(Refusal::BadHeader.into());
                    }
                    let ip = |at: usize| {
                        Ipv4Addr::new(data[at], data[at + 1], data[at + 2], data[at + 3])
                    };
                    let port = |at: usize| u16::from_be_bytes([data[at], data[at + 1]]);
                    let src = SocketAddr::new(ip(16).into(), port(24));
                    let dst = SocketAddr::new(ip(20).into(), port(26));
                    (Some((src, dst)), V2_FIXED + 12)
                }
                0x21 => {
                    if body < 36 {
                        return Err(Refusal::BadHeader.into());
                    }
                    let ip = |at: usize| {
                        let mut octets = [0u8; 16];
                        octets.copy_from_slice(&data[at..at + 16]);
                        Ipv6Addr::from(octets)
                    };
                    let port = |at: usize| u16::from_be_bytes([data[at], data[at + 1]]);
                    let src = SocketAddr::new(ip(16).into(), port(48));
                    let dst = SocketAddr::new(ip(32).into(), port(50));
                    (Some((src, dst)), V2_FIXED + 36)
                }
                // HAProxy leaves its TLV offset at 0 for other families.
                _ => (None, 0),
            };
            check_tlvs(&data[..total], tlvs_at).map_err(|reason| Refused {
                reason,
                client: addresses.map(|(src, _)| src),
            })?;
            Ok(Header {
                len: total,
                addresses,
            })
        }
        _ => Err(Refusal::BadHeader.into()),
    }
}

/// Walks the TLVs of `header` from `at` to its end: each must fit, and the few HAProxy
/// looks into must be valid (the CRC32C is computed over the header with its own field
/// zeroed).
fn check_tlvs(header: &[u8], mut at: usize) -> Result<(), Refusal> {
    let mut bytes = header.to_vec();
    let total = bytes.len();
    while at < total {
        if at + TLV_HEADER > total {
            return Err(Refusal::BadHeader);
        }
        let kind = bytes[at];
        let len = usize::from(u16::from_be_bytes([bytes[at + 1], bytes[at + 2]]));
        let value = at + TLV_HEADER;
        at = value + len;
        if at > total {
            return Err(Refusal::BadHeader);
        }
        match kind {
            TLV_CRC32C => {
                if len != 4 {
                    return Err(Refusal::BadHeader);
                }
                let sent = u32::from_be_bytes([
                    bytes[value],
                    bytes[value + 1],
                    bytes[value + 2],
                    bytes[value + 3],
                ]);
                bytes[value..value + 4].fill(0);
                if crc32c(&bytes) != sent {
                    return Err(Refusal::BadHeader);
                }
            }
            TLV_AUTHORITY if len > AUTHORITY_MAX => return Err(Refusal::BadHeader),
            TLV_UNIQUE_ID if len > UNIQUE_ID_MAX => return Err(Refusal::BadHeader),
            _ => {}
        }
    }
    Ok(())
}

/// CRC-32C (Castagnoli), the checksum of the v2 `CRC32C` TLV.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
#[path = "proxy_header_in_tests.rs"]
mod tests;
