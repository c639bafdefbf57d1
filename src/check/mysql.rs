//! `option mysql-check [user U [post-41]]`: the MySQL handshake, as HAProxy does it.
//!
//! The server speaks first: its initial handshake packet (protocol 10, with the server
//! version HAProxy shows as the info of a passed check) or an error packet (e.g. "Host is
//! blocked", `L7STS` with the code). The check then sends the same two packets as HAProxy
//! 2.6 — a client authentication packet for the user with an empty password (4.1 format
//! with `post_41`, the old format otherwise) and a `COM_QUIT` — and reads one reply: an error
//! packet is `L7STS` with the error code and message (verbatim, as HAProxy prints it), any
//! other packet `L7OK`, code 0. HAProxy writes its packets before the greeting arrives;
//! rolelb waits for the greeting, so an error greeting followed by a close is read in full.
//! Without `user`, only the greeting is read ([`handshake_check`]). Every length read from
//! the wire is bounded (16 KiB, HAProxy's buffer size).

use super::conn::{self, Clock, MAX_RESPONSE, Read, connect_check, printable};
use super::{CheckResult, Status, Target};

/// The only handshake protocol version (MySQL 3.21+, MariaDB).
const PROTOCOL_10: u8 = 10;
/// First payload byte of an error packet.
const ERR_PACKET: u8 = 0xff;
/// `COM_QUIT`.
const COM_QUIT: u8 = 0x01;
/// `CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION`, the capabilities of HAProxy's 4.1 packet.
const CAPS_POST_41: u32 = 0x0000_8200;
/// The 16-bit capabilities of HAProxy's pre-4.1 packet (`CLIENT_SECURE_CONNECTION`).
const CAPS_PRE_41: u16 = 0x8000;
/// The max-packet-size field of HAProxy's 4.1 packet, bytes as it sends them.
const MAX_PACKET_POST_41: [u8; 4] = [0x00, 0x80, 0x00, 0x01];
/// The 3-byte max-packet-size field of HAProxy's pre-4.1 packet.
const MAX_PACKET_PRE_41: [u8; 3] = [0x00, 0x00, 0x01];
/// `utf8_general_ci`, the character set HAProxy announces.
const CHARSET_UTF8: u8 = 0x21;
/// How many characters of a server message are kept for the log.
const INFO_MAX: usize = 256;

/// Reads the server greeting, authenticates as `user` without a password, and quits.
pub async fn check(target: &Target, user: &str, post_41: bool) -> CheckResult {
    let clock = Clock::start(target);
    let mut stream = match connect_check(target).await {
        Ok(stream) => stream,
        Err(e) => return e.into_result(&clock),
    };
    let deadline = clock.deadline_from_now();
    let mut buf = Vec::new();

    let greeting =
        match conn::read_until(&mut stream, &mut buf, MAX_RESPONSE, deadline, split_packet).await {
            Ok(Ok((payload, _))) => payload,
            Ok(Err(too_long)) => return clock.result(Status::L7Rsp, too_long),
            Err(Read::Eof) if buf.is_empty() => {
                return clock.result(Status::L7Rsp, "empty response");
            }
            Err(read) => return conn::incomplete(&clock, read, "the server handshake"),
        };
    let version = match parse_greeting(&greeting) {
        Greeting::Handshake { version } => version,
        Greeting::Error(err) => return error_result(&clock, err),
        Greeting::Invalid(why) => return clock.result(Status::L7Rsp, why),
    };

    let Some(request) = auth_and_quit(user, post_41) else {
        return clock.result(Status::L7Rsp, "user name too long for a MySQL packet");
    };
    if let Err(e) = conn::write_all(&mut stream, &request, deadline).await {
        return conn::write_failed(&clock, e);
    }

    buf.clear();
    match conn::read_until(&mut stream, &mut buf, MAX_RESPONSE, deadline, split_packet).await {
        Ok(Ok((payload, _))) => match parse_reply(&payload) {
            Some(err) => error_result(&clock, err),
            None => clock.result(Status::L7Ok, version).with_code("0"),
        },
        Ok(Err(too_long)) => clock.result(Status::L7Rsp, too_long),
        Err(Read::Eof) if buf.is_empty() => clock.result(
            Status::L7Rsp,
            "connection closed before the authentication reply",
        ),
        Err(read) => conn::incomplete(&clock, read, "the authentication reply"),
    }
}

/// `option mysql-check` without `user`: reads the server's first packet only, as HAProxy 2.6
/// does. An error packet is `L7STS` with its code and message; any other complete packet is
/// `L7OK` with the text after its first byte (the server version of a handshake) as info.
/// Unlike the check with a user, the protocol version is not looked at.
pub async fn handshake_check(target: &Target) -> CheckResult {
    let clock = Clock::start(target);
    let mut stream = match connect_check(target).await {
        Ok(stream) => stream,
        Err(e) => return e.into_result(&clock),
    };
    let deadline = clock.deadline_from_now();
    let mut buf = Vec::new();
    match conn::read_until(&mut stream, &mut buf, MAX_RESPONSE, deadline, split_packet).await {
        Ok(Ok((payload, _))) => judge_first_packet(&clock, &payload),
        Ok(Err(too_long)) => clock.result(Status::L7Rsp, too_long),
        Err(Read::Eof) if buf.is_empty() => clock.result(Status::L7Rsp, "empty response"),
        Err(read) => conn::incomplete(&clock, read, "the server handshake"),
    }
}

/// The verdict on the server's first packet when no user is configured.
fn judge_first_packet(clock: &Clock, payload: &[u8]) -> CheckResult {
    match payload.first() {
        None => clock.result(Status::L7Rsp, "empty handshake packet"),
        Some(&ERR_PACKET) => match parse_err(payload) {
            Some(err) => error_result(clock, err),
            None => clock.result(Status::L7Rsp, "truncated error packet"),
        },
        Some(_) => {
            let rest = &payload[1..];
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            clock
                .result(Status::L7Ok, printable(&rest[..end], INFO_MAX))
                .with_code("0")
        }
    }
}

/// An error packet: code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrPacket {
    /// The error number (e.g. 1045).
    pub code: u16,
    /// The message as sent (a 4.1 server prefixes `#` and the SQLSTATE, which HAProxy
    /// prints as is).
    pub message: String,
}

/// What the server's first packet said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Greeting {
    /// A protocol 10 handshake from the given server version.
    Handshake {
        /// The server version string (`5.5.5-10.11.6-MariaDB`).
        version: String,
    },
    /// An error packet instead of a handshake.
    Error(ErrPacket),
    /// Neither: the reason for the log.
    Invalid(String),
}

/// Splits the first packet off `buf` once it is complete: `Ok((payload, sequence id))`,
/// `Err` with the reason when its declared length exceeds 16 KiB; `None` while
/// incomplete.
pub fn split_packet(buf: &[u8]) -> Option<Result<(Vec<u8>, u8), String>> {
    let header = buf.get(..4)?;
    let len = usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
    if len + 4 > MAX_RESPONSE {
        return Some(Err(format!(
            "packet of {len} bytes is longer than the {MAX_RESPONSE}-byte limit"
        )));
    }
    let payload = buf.get(4..4 + len)?;
    Some(Ok((payload.to_vec(), header[3])))
}

/// Reads the server's first payload.
pub fn parse_greeting(payload: &[u8]) -> Greeting {
    match payload.first() {
        None => Greeting::Invalid("empty handshake packet".to_string()),
        Some(&ERR_PACKET) => match parse_err(payload) {
            Some(err) => Greeting::Error(err),
            None => Greeting::Invalid("truncated error packet".to_string()),
        },
        Some(&PROTOCOL_10) => {
            let rest = &payload[1..];
            match rest.iter().position(|&b| b == 0) {
                Some(nul) => Greeting::Handshake {
                    version: printable(&rest[..nul], INFO_MAX),
                },
                None => Greeting::Invalid("handshake without a server version".to_string()),
            }
        }
        Some(&other) => Greeting::Invalid(format!("unsupported protocol version {other}")),
    }
}

/// Reads the reply to the authentication packet: `Some` error, `None` for anything else
/// (OK, or an authentication switch HAProxy also takes as success).
pub fn parse_reply(payload: &[u8]) -> Option<ErrPacket> {
    if payload.first() == Some(&ERR_PACKET) {
        Some(parse_err(payload).unwrap_or(ErrPacket {
            code: 0,
            message: "truncated error packet".to_string(),
        }))
    } else {
        None
    }
}

/// Parses an error packet payload (`0xff`, code as u16 LE, message).
fn parse_err(payload: &[u8]) -> Option<ErrPacket> {
    let code = payload.get(1..3)?;
    Some(ErrPacket {
        code: u16::from_le_bytes([code[0], code[1]]),
        message: printable(&payload[3..], INFO_MAX),
    })
}

/// The client authentication packet (sequence 1) and the `COM_QUIT` packet (sequence 0),
/// byte for byte as HAProxy 2.6 sends them; `None` if the user name cannot fit a packet.
pub fn auth_and_quit(user: &str, post_41: bool) -> Option<Vec<u8>> {
    let mut auth = Vec::with_capacity(user.len() + 40);
    if post_41 {
        auth.extend_from_slice(&CAPS_POST_41.to_le_bytes());
        auth.extend_from_slice(&MAX_PACKET_POST_41);
        auth.push(CHARSET_UTF8);
        auth.extend_from_slice(&[0u8; 23]);
    } else {
        auth.extend_from_slice(&CAPS_PRE_41.to_le_bytes());
        auth.extend_from_slice(&MAX_PACKET_PRE_41);
    }
    auth.extend_from_slice(user.as_bytes());
    auth.push(0);
    // Empty password: a zero-length scramble.
    auth.push(0);
    let mut out = packet(1, &auth)?;
    out.extend(packet(0, &[COM_QUIT])?);
    Some(out)
}

/// Frames `payload` as one packet with sequence id `seq`.
fn packet(seq: u8, payload: &[u8]) -> Option<Vec<u8>> {
    let len = u32::try_from(payload.len()).ok().filter(|&l| l < 1 << 24)?;
    let mut out = len.to_le_bytes()[..3].to_vec();
    out.push(seq);
    out.extend_from_slice(payload);
    Some(out)
}

/// `L7STS` with the error code and message, as HAProxy logs a MySQL error.
fn error_result(clock: &Clock, err: ErrPacket) -> CheckResult {
    clock
        .result(Status::L7Sts, err.message)
        .with_code(err.code.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_packets_match_haproxys_bytes() {
        // Both captured from HAProxy 2.6 talking to MariaDB 10.11.
        assert_eq!(
            auth_and_quit("haproxy_check", true).unwrap(),
            b"/\x00\x00\x01\x00\x82\x00\x00\x00\x80\x00\x01!\x00\x00\x00\x00\x00\x00\x00\x00\x00\
              \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00haproxy_check\x00\x00\
              \x01\x00\x00\x00\x01"
        );
        assert_eq!(
            auth_and_quit("haproxy_check", false).unwrap(),
            b"\x14\x00\x00\x01\x00\x80\x00\x00\x01haproxy_check\x00\x00\x01\x00\x00\x00\x01"
        );
    }

    #[test]
    fn packets_split_only_when_complete() {
        assert_eq!(split_packet(b""), None);
        assert_eq!(split_packet(b"\x03\x00\x00"), None);
        assert_eq!(split_packet(b"\x03\x00\x00\x02\x00\x00"), None);
        assert_eq!(
            split_packet(b"\x03\x00\x00\x02\x00\x00\x00extra"),
            Some(Ok((vec![0, 0, 0], 2)))
        );
        assert_eq!(split_packet(b"\x00\x00\x00\x05"), Some(Ok((vec![], 5))));
    }

    #[test]
    fn oversized_packet_length_is_refused_before_reading_it() {
        assert!(matches!(
            split_packet(b"\xff\xff\xff\x00"),
            Some(Err(ref why)) if why.contains("16777215 bytes")
        ));
    }

    #[test]
    fn greeting_from_mariadb_gives_its_version() {
        let payload = b"\n5.5.5-10.11.19-MariaDB-0+deb12u1\x00\x04\x00\x00\x005i0S2<yl\x00\xfe\xf7";
        assert_eq!(
            parse_greeting(payload),
            Greeting::Handshake {
                version: "5.5.5-10.11.19-MariaDB-0+deb12u1".to_string()
            }
        );
    }

    #[test]
    fn greeting_error_packet_is_an_error() {
        let payload = b"\xff\x69\x04Host '127.0.0.1' is blocked because of many connection errors";
        let Greeting::Error(err) = parse_greeting(payload) else {
            panic!("not an error")
        };
        assert_eq!(err.code, 1129);
        assert!(err.message.starts_with("Host '127.0.0.1' is blocked"));
    }

    #[test]
    fn bad_greetings_are_invalid_not_panics() {
        for payload in [
            &b""[..],
            b"\x09old",
            b"\n",
            b"\nno nul",
            b"\xff",
            b"\xff\x01",
        ] {
            assert!(
                matches!(parse_greeting(payload), Greeting::Invalid(_)),
                "{payload:?}"
            );
        }
    }

    #[test]
    fn replies_ok_error_and_truncated_error() {
        assert_eq!(parse_reply(b"\x00\x00\x00\x02\x00\x00\x00"), None);
        assert_eq!(parse_reply(b"\xfemysql_native_password\x00"), None);
        let err = parse_reply(
            b"\xff\x15\x04#28000Access denied for user 'nobody'@'127.0.0.1' (using password: NO)",
        )
        .unwrap();
        assert_eq!(err.code, 1045);
        assert_eq!(
            err.message,
            "#28000Access denied for user 'nobody'@'127.0.0.1' (using password: NO)"
        );
        assert_eq!(parse_reply(b"\xff").unwrap().code, 0);
    }
}
