//! `agent-check`: connect to the agent, optionally send `agent-send`, read one line and
//! apply HAProxy's words (`up`, `down`, `fail`, `stopped`, `ready`, `drain`, `maint`,
//! `N%`, `maxconn:N`). The text after a word starting with `#` is the description (kept for
//! the role too).
//!
//! As HAProxy 2.6 does (`tcpcheck_agent_expect_reply`): the line ends at the first CR or LF;
//! words are separated by spaces, tabs or commas and compared without case; a later word of
//! the same kind wins (`up down` is down); words it does not know are ignored and the first is
//! reported (`agent reports an error : WORD`), and a weight or `maxconn:` it cannot apply is
//! reported in its words (`agent warns : ...`); an empty line changes nothing. The reply must
//! be one line within HAProxy's buffer size ([`MAX_LINE`]): an empty answer is `L7RSP`, a line
//! the agent did not end `L7TOUT` (as HAProxy reports them), and an over-long line or binary
//! bytes (NUL, control characters) a failed agent check; nothing of such a reply is applied.
//! The weight percentage is returned as sent (capped at 25600, as HAProxy caps it); HAProxy
//! caps the resulting weight at 256.

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
    /// The text after a word that starts with `#`, trimmed (e.g. `role=primary lag=0`);
    /// `None` when absent or empty.
    pub description: Option<String>,
    /// The first word HAProxy does not know (it is ignored and reported: `agent reports an
    /// error : WORD`).
    pub error: Option<String>,
    /// What HAProxy says about a weight or `maxconn:` it could not apply (`agent warns :
    /// MESSAGE`), in its words.
    pub warning: Option<String>,
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
    // As HAProxy: the line ends at the first CR or LF.
    let line = match line.iter().position(|&b| b == b'\n' || b == b'\r') {
        Some(end) => &line[..end],
        None => line,
    };
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
    let mut reply = AgentReply::default();
    // The last weight and `maxconn:` words win, as in HAProxy, which applies them only then.
    let (mut weight, mut maxconn): (Option<&str>, Option<&str>) = (None, None);
    let mut rest = text.as_ref();
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            break;
        }
        // A word that starts with `#` starts the description: the rest of the line.
        if let Some(description) = rest.strip_prefix('#') {
            let description = description.trim();
            reply.description = (!description.is_empty()).then(|| description.to_string());
            break;
        }
        let end = rest.find([' ', '\t', ',']).unwrap_or(rest.len());
        let (word, after) = rest.split_at(end);
        rest = after;
        match word.to_ascii_lowercase().as_str() {
            "up" => reply.health = Some(AgentHealth::Up),
            "down" => reply.health = Some(AgentHealth::Down),
            "fail" => reply.health = Some(AgentHealth::Fail),
            "stopped" => reply.health = Some(AgentHealth::Stopped),
            "ready" => reply.admin = Some(AgentAdmin::Ready),
            "drain" => reply.admin = Some(AgentAdmin::Drain),
            "maint" => reply.admin = Some(AgentAdmin::Maint),
            lower => {
                if word.starts_with(|c: char| c.is_ascii_digit()) && word.contains('%') {
                    weight = Some(word);
                } else if lower.starts_with("maxconn:") {
                    maxconn = Some(&word["maxconn:".len()..]);
                } else if reply.error.is_none() {
                    reply.error = Some(word.to_string());
                }
            }
        }
    }
    if let Some(word) = weight {
        match relative_weight(word) {
            Ok(pct) => reply.weight_pct = Some(pct),
            Err(why) => reply.warning = Some(why.to_string()),
        }
    }
    if let Some(value) = maxconn {
        match maxconn_value(value) {
            Ok(n) => reply.maxconn = n,
            Err(why) => {
                reply.warning.get_or_insert_with(|| why.to_string());
            }
        }
    }
    Ok(reply)
}

/// A weight word (it starts with a digit and holds a `%`): the percentage, or HAProxy's
/// message (`server_parse_weight_change_request`, for a word of that shape).
fn relative_weight(word: &str) -> Result<u32, &'static str> {
    let digits = word.bytes().take_while(u8::is_ascii_digit).count();
    let (number, end) = word.split_at(digits);
    // As `strtol`, a number too large for a `long` is read as its largest value.
    let value: u64 = number.parse().unwrap_or(u64::MAX);
    if end == "%" {
        // HAProxy caps the percentage at 25600 before scaling, the weight at 256 after.
        return Ok(u32::try_from(value.min(25_600)).unwrap_or(25_600));
    }
    if value > 256 {
        return Err("Absolute weight can only be between 0 and 256 inclusive.\n");
    }
    Err("Trailing garbage in weight string")
}

/// The value after `maxconn:`: `Some(n)`, `None` for a value rolelb does not apply (a
/// negative or oversized one, which HAProxy takes without a word), or HAProxy's message.
fn maxconn_value(value: &str) -> Result<Option<u32>, &'static str> {
    if value.is_empty() {
        return Err("Require <maxconn>.\n");
    }
    let unsigned = value.strip_prefix(['-', '+']).unwrap_or(value);
    let digits = unsigned.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err("maxconn string empty or preceded by garbage");
    }
    if digits < unsigned.len() {
        return Err("Trailing garbage in maxconn string");
    }
    Ok(value.parse().ok())
}

/// Queries the agent at `target`, sending `send` first when set. A failure (cannot connect,
/// timeout, empty, garbled or oversized reply) comes back as the `CheckResult` to log.
///
/// A reply that parses is `Ok` even when it says `down`/`fail`/`stopped`: its result is then
/// `L7STS`, code 0, `via agent : down`, as HAProxy logs it; `up` is `L7OK`; a reply without
/// a health word is HAProxy's neutral `CHECKED` ("No status change").
pub async fn query(
    target: &Target,
    send: Option<&[u8]>,
) -> Result<(AgentReply, CheckResult), CheckResult> {
    let clock = Clock::start(target);
    let mut stream =
        match connect(target.addr, target.connect_timeout, target.source.as_ref()).await {
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
    // As HAProxy: the line ends at the first CR or LF.
    let line_end = |b: &[u8]| b.iter().position(|&c| c == b'\n' || c == b'\r');
    let line = match conn::read_until(&mut stream, &mut buf, cap, deadline, line_end).await {
        Ok(nl) => &buf[..nl],
        Err(Read::Eof) if buf.is_empty() => {
            return Err(clock.result(Status::L7Rsp, "TCPCHK got an empty response at step 2"));
        }
        // A line the agent did not end: HAProxy ignores it and reports a timeout.
        Err(Read::Eof) => return Err(clock.result(Status::L7Tout, "")),
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

/// The result HAProxy 2.6 records for a parsed reply (`tcpcheck_agent_expect_reply`): with a
/// health word, `L7OK` or `L7STS`, code 0, `via agent : WORD (MESSAGE)`, MESSAGE being the
/// description, or (when there is none, or the word is `up`) the first unknown word, else the
/// weight or maxconn warning; without one, `CHECKED` ("No status change"), reporting the
/// unknown word (`agent reports an error : WORD`) or else the warning (`agent warns : ...`).
fn describe(clock: &Clock, reply: &AgentReply) -> CheckResult {
    let odd = reply.error.as_deref().or(reply.warning.as_deref());
    let Some(health) = reply.health else {
        let info = match (&reply.error, &reply.warning) {
            (Some(word), _) => format!("agent reports an error : {word}"),
            (None, Some(why)) => format!("agent warns : {why}"),
            (None, None) => String::new(),
        };
        return clock.result(Status::Checked, info);
    };
    let message = match (reply.description.as_deref(), health) {
        (Some(d), AgentHealth::Up) => odd.unwrap_or(d),
        (Some(d), _) => d,
        (None, _) => odd.unwrap_or(""),
    };
    let detail = if message.is_empty() {
        String::new()
    } else {
        format!(" ({message})")
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
        assert_eq!((r.error, r.warning), (None, None));
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
        // A `#` inside a word does not start the description, as in HAProxy.
        let r = parse("up#x");
        assert_eq!((r.health, r.error.as_deref()), (None, Some("up#x")));
    }

    #[test]
    fn unknown_words_and_bad_values_are_reported_as_haproxy_does() {
        // The first unknown word is the error; it changes nothing.
        let r = parse("garbage other\n");
        assert_eq!(r.health, None);
        assert_eq!(r.error.as_deref(), Some("garbage"));
        for word in ["75", "-5%", "x%", "%", "maxconn"] {
            let r = parse(word);
            assert_eq!((r.weight_pct, r.maxconn), (None, None), "{word}");
            assert_eq!(r.error.as_deref(), Some(word), "{word}");
        }
        // A weight or maxconn HAProxy cannot apply is a warning, in its words.
        for (word, warning) in [
            ("50.5%", "Trailing garbage in weight string"),
            ("5x%", "Trailing garbage in weight string"),
            (
                "300x%",
                "Absolute weight can only be between 0 and 256 inclusive.\n",
            ),
            ("maxconn:x", "maxconn string empty or preceded by garbage"),
            ("maxconn:", "Require <maxconn>.\n"),
            ("maxconn:10x", "Trailing garbage in maxconn string"),
        ] {
            let r = parse(word);
            assert_eq!((r.weight_pct, r.maxconn), (None, None), "{word}");
            assert_eq!(r.warning.as_deref(), Some(warning), "{word}");
            assert_eq!(r.error, None, "{word}");
        }
        // HAProxy caps a percentage at 25600.
        assert_eq!(parse("99999999999%").weight_pct, Some(25_600));
        // The last weight word wins, even a bad one.
        let r = parse("50% 5x%");
        assert_eq!((r.weight_pct, r.warning.is_some()), (None, true));
        let r = parse("up 50% Garbage");
        assert_eq!((r.health, r.weight_pct), (Some(AgentHealth::Up), Some(50)));
        assert_eq!(r.error.as_deref(), Some("Garbage"));
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
    fn non_utf8_is_an_unknown_word() {
        let r = parse_reply(b"up \xff\xfe 10%").unwrap();
        assert_eq!((r.health, r.weight_pct), (Some(AgentHealth::Up), Some(10)));
        assert!(r.error.is_some());
    }

    #[test]
    fn results_use_haproxys_words() {
        let clock = Clock::start(&Target {
            addr: "127.0.0.1:1".parse().unwrap(),
            connect_timeout: std::time::Duration::from_secs(1),
            read_timeout: std::time::Duration::from_secs(1),
            tls: None,
            proxy_header: None,
            source: None,
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
        // For `up` the error or warning comes before the description; not for the others.
        let r = describe(&clock, &parse("up foo #desc"));
        assert_eq!(r.info, "via agent : up (foo)");
        let r = describe(&clock, &parse("down foo #desc"));
        assert_eq!(r.info, "via agent : down (desc)");
        let r = describe(&clock, &parse("up 5x%"));
        assert_eq!(r.info, "via agent : up (Trailing garbage in weight string)");
        // Without a health word: neutral, no code.
        let r = describe(&clock, &parse("drain 75%"));
        assert_eq!(
            (r.status, r.info.as_str(), r.code),
            (Status::Checked, "", None)
        );
        let r = describe(&clock, &parse("hello"));
        assert_eq!(r.info, "agent reports an error : hello");
        let r = describe(&clock, &parse("maxconn:abc"));
        assert_eq!(
            r.info,
            "agent warns : maxconn string empty or preceded by garbage"
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
            prop_assert_eq!((r.error, r.warning), (None, None));
            prop_assert_eq!(r.health.is_some(), words.contains(&"up"));
            prop_assert_eq!(r.admin.is_some(), words.contains(&"DRAIN"));
            prop_assert_eq!(r.weight_pct, words.contains(&"42%").then_some(42));
            prop_assert_eq!(r.maxconn, words.contains(&"maxconn:7").then_some(7));
        }

        #[test]
        fn weights_round_trip_up_to_haproxys_cap(n in 0u32..=100_000) {
            prop_assert_eq!(
                parse_reply(format!("{n}%").as_bytes()).unwrap().weight_pct,
                Some(n.min(25_600))
            );
        }
    }
}
