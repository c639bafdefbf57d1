//! `agent-check`: connect to the agent, optionally send `agent-send`, read one line and
//! apply HAProxy's words (`up`, `down`, `fail`, `stopped`, `ready`, `drain`, `maint`,
//! `N%`, `maxconn:N`). The text after `#` is kept for the role issue.
//!
//! As HAProxy 2.6 does: words are separated by spaces, tabs or commas and compared without
//! case; a later word of the same kind wins (`up down` is down); words it does not know
//! (`garbage`, `75` without `%`, `maxconn:x`, `-5%`) are ignored, not errors, and an empty
//! line changes nothing. The reply must be one line ended by `\n` within HAProxy's buffer
//! size ([`MAX_LINE`]): a close before the end of line, an over-long line or binary bytes
//! (NUL, control characters) are a failed agent check and nothing of the reply is applied.
//! The weight percentage is returned as sent; HAProxy caps the resulting weight at 256.

use super::conn::{self, Clock, Read, connect};
use super::{CheckResult, Status, Target};

/// The longest reply line accepted, as HAProxy's default buffer (`tune.bufsize`).
pub const MAX_LINE: usize = conn::MAX_RESPONSE;

/// Operating state words of an agent reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentHealth {
    /// `up`: the server may be UP again if its health checks agree.
    Up,
    /// `down`.
    Down,
    /// `fail`.
    Fail,
    /// `stopped`.
    Stopped,
}

/// Administrative state words of an agent reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentAdmin {
    /// `ready`: cancels a DRAIN or MAINT set by the agent.
    Ready,
    /// `drain`.
    Drain,
    /// `maint`.
    Maint,
}

/// A parsed agent reply; words the agent did not send are `None` (left unchanged).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentReply {
    /// `up` / `down` / `fail` / `stopped`.
    pub health: Option<AgentHealth>,
    /// `ready` / `drain` / `maint`.
    pub admin: Option<AgentAdmin>,
    /// `N%`: weight as a percentage of the configured weight.
    pub weight_pct: Option<u32>,
    /// `maxconn:N`.
    pub maxconn: Option<u32>,
    /// The text after `#`, trimmed (e.g. `role=primary lag=0`); `None` when absent or empty.
    pub description: Option<String>,
    /// Words HAProxy ignores (unknown words, malformed weights), kept for the log.
    pub ignored: Vec<String>,
}

impl AgentHealth {
    /// The word as HAProxy prints it in `via agent : WORD`.
    pub fn word(self) -> &'static str {
        match self {
            AgentHealth::Up => "up",
            AgentHealth::Down => "down",
            AgentHealth::Fail => "fail",
            AgentHealth::Stopped => "stopped",
        }
    }
}

/// Parses one reply line; an error says what was wrong (for the log).
///
/// `line` may still carry its `\n` (and a `\r` before it); anything after the first `\n`
/// is not part of the reply.
pub fn parse_reply(line: &[u8]) -> Result<AgentReply, String> {
    let line = match line.iter().position(|&b| b == b'\n') {
        Some(nl) => &line[..nl],
        None => line,
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > MAX_LINE {
        return Err(format!(
            "invalid response: reply longer than {MAX_LINE} bytes"
        ));
    }
    if let Some(bad) = line
        .iter()
        .find(|&&b| b != b'\t' && (b < 0x20 || b == 0x7f))
    {
        return Err(format!(
            "invalid response: binary byte 0x{bad:02x} in the reply"
        ));
    }
    let text = String::from_utf8_lossy(line);
    let (words, description) = match text.split_once('#') {
        Some((words, description)) => (words, Some(description.trim())),
        None => (text.as_ref(), None),
    };
    let mut reply = AgentReply {
        description: description.filter(|d| !d.is_empty()).map(str::to_string),
        ..AgentReply::default()
    };
    for word in words.split([' ', '\t', ',']).filter(|w| !w.is_empty()) {
        let lower = word.to_ascii_lowercase();
        match lower.as_str() {
            "up" => reply.health = Some(AgentHealth::Up),
            "down" => reply.health = Some(AgentHealth::Down),
            "fail" => reply.health = Some(AgentHealth::Fail),
            "stopped" => reply.health = Some(AgentHealth::Stopped),
            "ready" => reply.admin = Some(AgentAdmin::Ready),
            "drain" => reply.admin = Some(AgentAdmin::Drain),
            "maint" => reply.admin = Some(AgentAdmin::Maint),
            _ => {
                if let Some(pct) = lower.strip_suffix('%').and_then(number) {
                    reply.weight_pct = Some(pct);
                } else if let Some(n) = lower.strip_prefix("maxconn:").and_then(number) {
                    reply.maxconn = Some(n);
                } else {
                    reply.ignored.push(word.to_string());
                }
            }
        }
    }
    Ok(reply)
}

/// A decimal number of plain digits that fits a `u32`.
fn number(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Queries the agent at `target`, sending `send` first when set. A failure (cannot connect,
/// timeout, empty, garbled or oversized reply) comes back as the `CheckResult` to log.
///
/// A reply that parses is `Ok` even when it says `down`/`fail`/`stopped`: its result is then
/// `L7STS`, code 0, `via agent : down`, as HAProxy logs it; `up` is `L7OK`; a reply without
/// a health word is `L7OK` with HAProxy's "No status change".
pub async fn query(
    target: &Target,
    send: Option<&[u8]>,
) -> Result<(AgentReply, CheckResult), CheckResult> {
    let clock = Clock::start(target);
    let mut stream = match connect(target.addr, target.connect_timeout).await {
        Ok(stream) => stream,
        Err(e) => return Err(e.into_result(&clock)),
    };
    let deadline = clock.deadline_from_now();
    if let Some(bytes) = send.filter(|b| !b.is_empty())
        && let Err(e) = conn::write_all(&mut stream, bytes, deadline).await
    {
        return Err(conn::write_failed(&clock, e));
    }
    let mut buf = Vec::new();
    // One byte more than the longest line, so a full line's `\n` still fits.
    let cap = MAX_LINE + 1;
    let line_end = |b: &[u8]| b.iter().position(|&c| c == b'\n');
    let line = match conn::read_until(&mut stream, &mut buf, cap, deadline, line_end).await {
        Ok(nl) => &buf[..nl],
        Err(Read::Eof) if buf.is_empty() => {
            return Err(clock.result(Status::L7Rsp, "empty response"));
        }
        Err(Read::Eof) => {
            return Err(clock.result(
                Status::L7Rsp,
                "invalid response: the agent closed the connection before the end of line",
            ));
        }
        Err(Read::Full) => {
            return Err(clock.result(
                Status::L7Rsp,
                format!("invalid response: no end of line in the first {MAX_LINE} bytes"),
            ));
        }
        Err(read) => return Err(conn::incomplete(&clock, read, "the end of line")),
    };
    let reply = parse_reply(line).map_err(|why| clock.result(Status::L7Rsp, why))?;
    let result = describe(&clock, &reply);
    Ok((reply, result))
}

/// The result HAProxy logs for a parsed reply: `via agent : WORD (detail)`.
fn describe(clock: &Clock, reply: &AgentReply) -> CheckResult {
    let Some(health) = reply.health else {
        return clock.result(Status::L7Ok, "No status change");
    };
    let detail = match (&reply.description, reply.ignored.is_empty()) {
        (Some(d), _) => format!(" ({d})"),
        (None, false) => format!(" ({})", reply.ignored.join(" ")),
        (None, true) => String::new(),
    };
    let status = match health {
        AgentHealth::Up => Status::L7Ok,
        AgentHealth::Down | AgentHealth::Fail | AgentHealth::Stopped => Status::L7Sts,
    };
    clock
        .result(status, format!("via agent : {}{detail}", health.word()))
        .with_code("0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(line: &str) -> AgentReply {
        parse_reply(line.as_bytes()).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    #[test]
    fn every_health_word() {
        assert_eq!(parse("up\n").health, Some(AgentHealth::Up));
        assert_eq!(parse("down\n").health, Some(AgentHealth::Down));
        assert_eq!(parse("fail\n").health, Some(AgentHealth::Fail));
        assert_eq!(parse("stopped\n").health, Some(AgentHealth::Stopped));
    }

    #[test]
    fn every_admin_word() {
        assert_eq!(parse("ready").admin, Some(AgentAdmin::Ready));
        assert_eq!(parse("drain").admin, Some(AgentAdmin::Drain));
        assert_eq!(parse("maint").admin, Some(AgentAdmin::Maint));
    }

    #[test]
    fn weights_and_maxconn() {
        assert_eq!(parse("75%").weight_pct, Some(75));
        assert_eq!(parse("0%").weight_pct, Some(0));
        // Returned as sent: HAProxy caps the resulting weight (256), not the percentage.
        assert_eq!(parse("300%").weight_pct, Some(300));
        assert_eq!(parse("maxconn:10").maxconn, Some(10));
        assert_eq!(parse("MAXCONN:0").maxconn, Some(0));
    }

    #[test]
    fn case_separators_and_order_do_not_matter() {
        let r = parse("UP,75%\tmaxconn:5 Drain\r\n");
        assert_eq!(r.health, Some(AgentHealth::Up));
        assert_eq!(r.admin, Some(AgentAdmin::Drain));
        assert_eq!(r.weight_pct, Some(75));
        assert_eq!(r.maxconn, Some(5));
        assert!(r.ignored.is_empty());
        assert_eq!(parse("drain 75% up"), parse("up drain 75%"));
    }

    #[test]
    fn later_words_win() {
        assert_eq!(parse("up down").health, Some(AgentHealth::Down));
        assert_eq!(parse("100% 200%").weight_pct, Some(200));
        assert_eq!(parse("maint ready").admin, Some(AgentAdmin::Ready));
    }

    #[test]
    fn description_after_hash() {
        let r = parse("up ready 100% #role=primary lag=0\n");
        assert_eq!(r.description.as_deref(), Some("role=primary lag=0"));
        assert_eq!(r.health, Some(AgentHealth::Up));
        let r = parse("maint #  role=replica lag=12 # more  ");
        assert_eq!(r.description.as_deref(), Some("role=replica lag=12 # more"));
        assert_eq!(r.admin, Some(AgentAdmin::Maint));
        assert_eq!(parse("#").description, None);
        // Words after `#` are text, not commands.
        assert_eq!(parse("#down").health, None);
    }

    #[test]
    fn unknown_words_are_ignored_as_haproxy_does() {
        let r = parse("garbage\n");
        assert_eq!(r.health, None);
        assert_eq!(r.ignored, vec!["garbage"]);
        for word in [
            "75",
            "-5%",
            "x%",
            "%",
            "50.5%",
            "maxconn:x",
            "maxconn:",
            "99999999999%",
        ] {
            let r = parse(word);
            assert_eq!(r.weight_pct, None, "{word}");
            assert_eq!(r.maxconn, None, "{word}");
            assert_eq!(r.ignored, vec![word.to_string()], "{word}");
        }
        let r = parse("up 50% Garbage");
        assert_eq!((r.health, r.weight_pct), (Some(AgentHealth::Up), Some(50)));
        assert_eq!(r.ignored, vec!["Garbage"]);
    }

    #[test]
    fn empty_lines_change_nothing() {
        assert_eq!(parse(""), AgentReply::default());
        assert_eq!(parse("\n"), AgentReply::default());
        assert_eq!(parse("  ,\t \r\n"), AgentReply::default());
    }

    #[test]
    fn only_the_first_line_counts() {
        let r = parse("up\ndown\n");
        assert_eq!(r.health, Some(AgentHealth::Up));
    }

    #[test]
    fn binary_and_oversized_replies_are_errors() {
        let e = parse_reply(b"up\x00 junk\n").unwrap_err();
        assert!(e.starts_with("invalid response"), "{e}");
        assert!(parse_reply(b"up \x1b[31m").is_err());
        assert!(parse_reply(b"\x7f").is_err());
        let huge = vec![b'x'; MAX_LINE + 1];
        let e = parse_reply(&huge).unwrap_err();
        assert!(e.contains("longer than"), "{e}");
        let mut long_ok = vec![b' '; MAX_LINE - 3];
        long_ok.extend_from_slice(b"up\n");
        assert_eq!(parse_reply(&long_ok).unwrap().health, Some(AgentHealth::Up));
    }

    #[test]
    fn non_utf8_is_an_ignored_word() {
        let r = parse_reply(b"up \xff\xfe 10%").unwrap();
        assert_eq!((r.health, r.weight_pct), (Some(AgentHealth::Up), Some(10)));
        assert_eq!(r.ignored.len(), 1);
    }

    #[test]
    fn results_use_haproxys_words() {
        let clock = Clock::start(&Target {
            addr: "127.0.0.1:1".parse().unwrap(),
            connect_timeout: std::time::Duration::from_secs(1),
            read_timeout: std::time::Duration::from_secs(1),
            tls: None,
            proxy_header: None,
        });
        let r = describe(&clock, &parse("up 75%"));
        assert_eq!(
            (r.status, r.info.as_str()),
            (Status::L7Ok, "via agent : up")
        );
        assert_eq!(r.code.as_deref(), Some("0"));
        let r = describe(&clock, &parse("fail #oops"));
        assert_eq!(
            (r.status, r.info.as_str()),
            (Status::L7Sts, "via agent : fail (oops)")
        );
        let r = describe(&clock, &parse("up 50% garbage"));
        assert_eq!(r.info, "via agent : up (garbage)");
        let r = describe(&clock, &parse("drain"));
        assert_eq!(
            (r.status, r.info.as_str()),
            (Status::L7Ok, "No status change")
        );
    }

    proptest! {
        #[test]
        fn any_bytes_parse_or_fail_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse_reply(&bytes);
        }

        #[test]
        fn known_words_in_any_order_and_case(
            words in proptest::sample::subsequence(
                vec!["up", "DRAIN", "42%", "maxconn:7"], 0..=4),
            sep in prop::sample::select(vec![" ", ",", "\t", " , "]),
        ) {
            let line = words.join(sep);
            let r = parse_reply(line.as_bytes()).unwrap();
            prop_assert!(r.ignored.is_empty());
            prop_assert_eq!(r.health.is_some(), words.contains(&"up"));
            prop_assert_eq!(r.admin.is_some(), words.contains(&"DRAIN"));
            prop_assert_eq!(r.weight_pct, words.contains(&"42%").then_some(42));
            prop_assert_eq!(r.maxconn, words.contains(&"maxconn:7").then_some(7));
        }

        #[test]
        fn weights_round_trip(n in 0u32..=100_000) {
            prop_assert_eq!(parse_reply(format!("{n}%").as_bytes()).unwrap().weight_pct, Some(n));
        }
    }
}
