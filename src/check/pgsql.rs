//! `option pgsql-check user U`: a PostgreSQL startup message, as HAProxy sends it.
//!
//! HAProxy 2.6 sends a protocol 3.0 StartupMessage carrying only `user` (the server then
//! takes the database name from the user name) and judges the first byte of the answer:
//! `R` (any authentication request, including AuthenticationOk) is `L7OK` "PostgreSQL server
//! is ok"; `E` (ErrorResponse) is `L7RSP` (HAProxy quotes the severity; rolelb quotes the
//! severity and message, with the SQLSTATE as the code); anything else is `L7STS`
//! "PostgreSQL unknown error". The connection is closed without authenticating, which works
//! the same against PostgreSQL and PgBouncer.

use super::conn::{self, Clock, MAX_RESPONSE, Read, connect_check, printable};
use super::{CheckResult, Status, Target};

/// Protocol version 3.0, as sent in a StartupMessage.
const PROTOCOL_3_0: u32 = 3 << 16;

/// How many characters of a server message are kept for the log.
const INFO_MAX: usize = 256;

/// Sends a startup message for `user` and accepts an authentication request as HAProxy does.
pub async fn check(target: &Target, user: &str) -> CheckResult {
    let clock = Clock::start(target);
    let mut stream = match connect_check(target).await {
        Ok(stream) => stream,
        Err(e) => return e.into_result(&clock),
    };
    let deadline = clock.deadline_from_now();
    if let Err(e) = conn::write_all(&mut stream, &startup_message(user), deadline).await {
        return conn::write_failed(&clock, e);
    }
    let mut buf = Vec::new();
    match conn::read_until(&mut stream, &mut buf, MAX_RESPONSE, deadline, first_message).await {
        Ok(answer) => judge(&clock, answer),
        Err(Read::Eof) if buf.is_empty() => clock.result(Status::L7Rsp, "empty response"),
        Err(read) => conn::incomplete(&clock, read, "a complete message"),
    }
}

/// The StartupMessage HAProxy sends: length, protocol 3.0, `user\0U\0`, terminating `\0`.
pub fn startup_message(user: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(user.len() + 16);
    body.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
    body.extend_from_slice(b"user\0");
    body.extend_from_slice(user.as_bytes());
    body.push(0);
    body.push(0);
    let len = u32::try_from(body.len() + 4).unwrap_or(u32::MAX);
    let mut msg = len.to_be_bytes().to_vec();
    msg.extend_from_slice(&body);
    msg
}

/// The first backend message, as far as the check cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `R`: an authentication request (its kind does not matter).
    Authentication,
    /// `E`: an ErrorResponse with its fields.
    Error(ErrorFields),
    /// Any other first byte.
    Other(u8),
}

/// The fields of an ErrorResponse that the log shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorFields {
    /// `S`/`V`: severity (`FATAL`).
    pub severity: Option<String>,
    /// `C`: SQLSTATE (`28000`).
    pub code: Option<String>,
    /// `M`: the message.
    pub message: Option<String>,
}

/// Decides on `buf` once enough has arrived: `R` or another type from the first byte, an
/// ErrorResponse once its declared length is in (or the buffer is at its cap).
pub fn first_message(buf: &[u8]) -> Option<Answer> {
    match *buf.first()? {
        b'R' => Some(Answer::Authentication),
        b'E' => {
            let len = buf.get(1..5)?;
            let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
            let end = 1usize.saturating_add(len);
            // A length beyond what we will ever read: judge what is there at the cap.
            if buf.len() >= end || buf.len() >= MAX_RESPONSE {
                let body = buf.get(5..end.min(buf.len())).unwrap_or(&[]);
                Some(Answer::Error(error_fields(body)))
            } else {
                None
            }
        }
        other => Some(Answer::Other(other)),
    }
}

/// Parses the fields of an ErrorResponse body (`type byte, text\0` repeated, then `\0`);
/// stops at the first malformed field.
pub fn error_fields(body: &[u8]) -> ErrorFields {
    let mut fields = ErrorFields::default();
    let mut rest = body;
    while let Some((&kind, tail)) = rest.split_first() {
        if kind == 0 {
            break;
        }
        let Some(nul) = tail.iter().position(|&b| b == 0) else {
            // Unterminated last field: keep what is there.
            store(&mut fields, kind, tail);
            break;
        };
        store(&mut fields, kind, &tail[..nul]);
        rest = &tail[nul + 1..];
    }
    fields
}

/// Stores one ErrorResponse field if the log uses it.
fn store(fields: &mut ErrorFields, kind: u8, value: &[u8]) {
    let text = printable(value, INFO_MAX);
    match kind {
        // `V` is the untranslated severity (9.6+); prefer it over the localised `S`.
        b'V' => fields.severity = Some(text),
        b'S' if fields.severity.is_none() => fields.severity = Some(text),
        b'C' => fields.code = Some(text),
        b'M' => fields.message = Some(text),
        _ => {}
    }
}

/// The check result for the first message.
fn judge(clock: &Clock, answer: Answer) -> CheckResult {
    match answer {
        Answer::Authentication => clock
            .result(Status::L7Ok, "PostgreSQL server is ok")
            .with_code("0"),
        Answer::Error(fields) => {
            let info = match (&fields.severity, &fields.message) {
                (Some(s), Some(m)) => format!("{s}: {m}"),
                (None, Some(m)) => m.clone(),
                (Some(s), None) => s.clone(),
                (None, None) => "PostgreSQL error".to_string(),
            };
            let result = clock.result(Status::L7Rsp, info);
            match fields.code {
                Some(code) => result.with_code(code),
                None => result,
            }
        }
        Answer::Other(_) => clock
            .result(Status::L7Sts, "PostgreSQL unknown error")
            .with_code("0"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ErrorResponse as PostgreSQL 15 sends it for an unknown role.
    fn error_response(fields: &[(u8, &str)]) -> Vec<u8> {
        let mut body = Vec::new();
        for (kind, text) in fields {
            body.push(*kind);
            body.extend_from_slice(text.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut msg = vec![b'E'];
        msg.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        msg.extend_from_slice(&body);
        msg
    }

    #[test]
    fn startup_message_matches_haproxys_bytes() {
        // Captured from HAProxy 2.6 with `option pgsql-check user haproxy_check`.
        assert_eq!(
            startup_message("haproxy_check"),
            b"\x00\x00\x00\x1c\x00\x03\x00\x00user\x00haproxy_check\x00\x00"
        );
        assert_eq!(startup_message("").len(), 15);
    }

    #[test]
    fn any_authentication_request_is_ok_even_truncated() {
        assert_eq!(
            first_message(b"R\0\0\0\x08\0\0\0\0"),
            Some(Answer::Authentication)
        );
        assert_eq!(
            first_message(b"R\0\0\0\x08\0\0\0\x03"),
            Some(Answer::Authentication)
        );
        assert_eq!(first_message(b"R"), Some(Answer::Authentication));
    }

    #[test]
    fn other_types_are_unknown_and_empty_waits() {
        assert_eq!(first_message(b"Z\0\0\0\x05I"), Some(Answer::Other(b'Z')));
        assert_eq!(first_message(b"HTTP/1.1 400"), Some(Answer::Other(b'H')));
        assert_eq!(first_message(b""), None);
    }

    #[test]
    fn error_response_waits_for_its_length_then_parses_fields() {
        let msg = error_response(&[
            (b'S', "FATAL"),
            (b'V', "FATAL"),
            (b'C', "28000"),
            (b'M', "role \"x\" does not exist"),
        ]);
        assert_eq!(first_message(&msg[..3]), None);
        assert_eq!(first_message(&msg[..msg.len() - 1]), None);
        let Some(Answer::Error(fields)) = first_message(&msg) else {
            panic!("not an error")
        };
        assert_eq!(fields.severity.as_deref(), Some("FATAL"));
        assert_eq!(fields.code.as_deref(), Some("28000"));
        assert_eq!(fields.message.as_deref(), Some("role \"x\" does not exist"));
    }

    #[test]
    fn error_fields_survive_garbage() {
        assert_eq!(error_fields(b""), ErrorFields::default());
        assert_eq!(error_fields(b"\0Mignored\0"), ErrorFields::default());
        let f = error_fields(b"Mhalf a messa");
        assert_eq!(f.message.as_deref(), Some("half a messa"));
        let f = error_fields(b"M\x01\xff\0");
        assert_eq!(f.message.as_deref(), Some("\\u{1}\u{fffd}"));
    }

    #[test]
    fn absurd_error_length_is_judged_at_the_cap() {
        let mut msg = b"E\xff\xff\xff\xffSFATAL\0".to_vec();
        assert!(first_message(&msg).is_none());
        msg.resize(MAX_RESPONSE, b'x');
        assert!(matches!(first_message(&msg), Some(Answer::Error(_))));
        // A length below 4 is nonsense too, and must not underflow.
        assert!(matches!(
            first_message(b"E\0\0\0\0"),
            Some(Answer::Error(_))
        ));
    }

    #[test]
    fn judged_results_use_haproxys_wording() {
        let clock = Clock::start(&Target {
            addr: "127.0.0.1:1".parse().unwrap(),
            connect_timeout: std::time::Duration::from_secs(1),
            read_timeout: std::time::Duration::from_secs(1),
            tls: None,
            proxy_header: None,
            source: None,
        });
        let ok = judge(&clock, Answer::Authentication);
        assert_eq!(
            (ok.status, ok.info.as_str()),
            (Status::L7Ok, "PostgreSQL server is ok")
        );
        let other = judge(&clock, Answer::Other(b'Z'));
        assert_eq!(other.status, Status::L7Sts);
        assert_eq!(other.info, "PostgreSQL unknown error");
        let err = judge(
            &clock,
            Answer::Error(ErrorFields {
                severity: Some("FATAL".into()),
                code: Some("57P03".into()),
                message: Some("the database system is starting up".into()),
            }),
        );
        assert_eq!(err.status, Status::L7Rsp);
        assert_eq!(err.code.as_deref(), Some("57P03"));
        assert_eq!(err.info, "FATAL: the database system is starting up");
    }
}
