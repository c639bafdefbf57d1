//! `option tcp-check` with `tcp-check connect|send|expect string|rstring` rules.
//!
//! The rules run in order against one connection. An implicit connect to the target comes
//! first unless the first rule is a `connect`. As in HAProxy 2.6: `send` discards what was
//! received so far, so an `expect` sees only the answer to the latest `send`; an `expect`
//! reads until its pattern is found, the server closes, the buffer is full or the check times
//! out; a negated `expect` passes only once the answer is complete (close or full buffer)
//! without the pattern. Steps in messages are numbered from 1 over the configured rules.
//! With no rules the check is a plain connect (`L4OK`); otherwise success is `L7OK`, code 0,
//! info `(tcp-check)`, as HAProxy logs it.

use std::net::SocketAddr;

use regex::bytes::Regex;
use tokio::time::Instant;

use super::conn::{self, Clock, MAX_RESPONSE, Read, WriteError, connect, connect_check, printable};
use super::tls::CheckStream;
use super::{CheckResult, Status, Target};
use crate::config::TcpCheckRule;

/// How much of a pattern is quoted in a message.
const QUOTE_MAX: usize = 64;

/// Runs the rules in order.
pub async fn check(target: &Target, rules: &[TcpCheckRule]) -> CheckResult {
    let clock = Clock::start(target);
    if rules.is_empty() {
        return super::tcp::check(target).await;
    }
    let mut run = Run {
        target,
        clock: &clock,
        stream: None,
        buf: Vec::new(),
        deadline: Instant::now(),
    };
    if !matches!(rules.first(), Some(TcpCheckRule::Connect { .. }))
        && let Err(result) = run.connect(target.addr, None).await
    {
        return result;
    }
    for (i, rule) in rules.iter().enumerate() {
        let step = i + 1;
        let outcome = match rule {
            TcpCheckRule::Connect { port } => {
                let mut addr = target.addr;
                if let Some(port) = port {
                    addr.set_port(*port);
                }
                run.connect(addr, Some((step, *port))).await
            }
            TcpCheckRule::Send(bytes) => run.send(step, bytes).await,
            TcpCheckRule::ExpectString { pattern, negate } => {
                let what = Pattern::Text(pattern);
                run.expect(step, &what, *negate).await
            }
            TcpCheckRule::ExpectRegex { pattern, negate } => match Regex::new(pattern) {
                Ok(re) => run.expect(step, &Pattern::Regex(&re), *negate).await,
                Err(e) => Err(clock.result(
                    Status::L7Rsp,
                    format!("invalid regex at step {step} of tcp-check: {e}"),
                )),
            },
        };
        if let Err(result) = outcome {
            return result;
        }
    }
    clock.result(Status::L7Ok, "(tcp-check)").with_code("0")
}

/// What an `expect` rule looks for.
enum Pattern<'a> {
    /// `expect string`: these bytes anywhere in the response.
    Text(&'a [u8]),
    /// `expect rstring`: a regex match anywhere in the response.
    Regex(&'a Regex),
}

impl Pattern<'_> {
    /// Whether the pattern occurs in `data`.
    fn found_in(&self, data: &[u8]) -> bool {
        match self {
            Pattern::Text(needle) => contains(data, needle),
            Pattern::Regex(re) => re.is_match(data),
        }
    }

    /// How HAProxy names the pattern in mismatch messages: `'TEXT'` or `(regex)`.
    fn quoted(&self) -> String {
        match self {
            Pattern::Text(needle) => format!("'{}'", printable(needle, QUOTE_MAX)),
            Pattern::Regex(_) => "(regex)".to_string(),
        }
    }

    /// How HAProxy names the rule in timeout messages.
    fn rule(&self) -> String {
        match self {
            Pattern::Text(needle) => format!("expect string '{}'", printable(needle, QUOTE_MAX)),
            Pattern::Regex(_) => "expect regex".to_string(),
        }
    }
}

/// The state of one tcp-check run.
struct Run<'a> {
    target: &'a Target,
    clock: &'a Clock,
    stream: Option<CheckStream>,
    /// What was received since the last `send` (or connect).
    buf: Vec<u8>,
    /// When the time after the last connect runs out.
    deadline: Instant,
}

impl Run<'_> {
    /// Opens a (new) connection to `addr`; `rule` is `(step, port)` for an explicit
    /// `tcp-check connect`, `None` for the implicit first one.
    async fn connect(
        &mut self,
        addr: SocketAddr,
        rule: Option<(usize, Option<u16>)>,
    ) -> Result<(), CheckResult> {
        self.stream = None;
        self.buf.clear();
        // As HAProxy: only the implicit first connect uses the check's transport
        // (`check-ssl`); an explicit `tcp-check connect` without `ssl` is plain TCP.
        let connected = match rule {
            None => connect_check(self.target).await,
            Some(_) => connect(
                addr,
                self.target.connect_timeout,
                self.target.source.as_ref(),
            )
            .await
            .map(CheckStream::Plain),
        };
        match connected {
            Ok(stream) => {
                self.stream = Some(stream);
                self.deadline = self.clock.deadline_from_now();
                Ok(())
            }
            Err(e) => {
                let place = match rule {
                    None => "at initial connection step of tcp-check".to_string(),
                    Some((step, Some(port))) => {
                        format!("at step {step} of tcp-check (connect port {port})")
                    }
                    Some((step, None)) => format!("at step {step} of tcp-check (connect)"),
                };
                Err(self.clock.result(e.status(), join(&e.info(), &place)))
            }
        }
    }

    /// `tcp-check send`: drops what was received so far, then writes `bytes`.
    async fn send(&mut self, step: usize, bytes: &[u8]) -> Result<(), CheckResult> {
        self.buf.clear();
        let Some(stream) = self.stream.as_mut() else {
            return Err(self.no_connection(step));
        };
        match conn::write_all(stream, bytes, self.deadline).await {
            Ok(()) => Ok(()),
            Err(WriteError::Timeout) => Err(self.clock.result(
                Status::L7Tout,
                format!("at step {step} of tcp-check (send)"),
            )),
            Err(WriteError::Io(e)) => {
                let (status, info) = conn::io_failure(&e);
                Err(self.clock.result(
                    status,
                    join(&info, &format!("at step {step} of tcp-check (send)")),
                ))
            }
        }
    }

    /// `tcp-check expect [!] string|rstring`.
    async fn expect(
        &mut self,
        step: usize,
        pattern: &Pattern<'_>,
        negate: bool,
    ) -> Result<(), CheckResult> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(self.no_connection(step));
        };
        loop {
            if pattern.found_in(&self.buf) {
                if negate {
                    return Err(self.clock.result(
                        Status::L7Rsp,
                        format!(
                            "TCPCHK matched unwanted content {} at step {step}",
                            pattern.quoted()
                        ),
                    ));
                }
                return Ok(());
            }
            match conn::read_more(stream, &mut self.buf, MAX_RESPONSE, self.deadline).await {
                Read::Data => continue,
                Read::Eof if self.buf.is_empty() => {
                    return Err(self.clock.result(
                        Status::L7Rsp,
                        format!("TCPCHK got an empty response at step {step}"),
                    ));
                }
                Read::Eof | Read::Full => {
                    if negate {
                        return Ok(());
                    }
                    return Err(self.clock.result(
                        Status::L7Rsp,
                        format!(
                            "TCPCHK did not match content {} at step {step}",
                            pattern.quoted()
                        ),
                    ));
                }
                Read::Timeout => {
                    return Err(self.clock.result(
                        Status::L7Tout,
                        format!("at step {step} of tcp-check ({})", pattern.rule()),
                    ));
                }
                Read::Error(e) => {
                    let (status, info) = conn::io_failure(&e);
                    return Err(self.clock.result(
                        status,
                        join(
                            &info,
                            &format!("at step {step} of tcp-check ({})", pattern.rule()),
                        ),
                    ));
                }
            }
        }
    }

    /// A rule that needs a connection found none (cannot happen: the implicit connect runs
    /// first; kept so a logic slip is a failed check, not a panic).
    fn no_connection(&self, step: usize) -> CheckResult {
        self.clock.result(
            Status::L7Rsp,
            format!("no connection at step {step} of tcp-check"),
        )
    }
}

/// `a b`, or just `b` when `a` is empty.
fn join(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_string()
    } else {
        format!("{a} {b}")
    }
}

/// Whether `needle` occurs in `haystack` (an empty needle always does).
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contains_finds_bytes_anywhere() {
        assert!(contains(b"+PONG\r\n", b"PONG"));
        assert!(contains(b"abc", b""));
        assert!(!contains(b"ab", b"abc"));
        assert!(!contains(b"", b"a"));
        assert!(contains(b"\x00\xff\x00", b"\xff"));
    }

    #[test]
    fn patterns_are_named_as_haproxy_names_them() {
        let text = Pattern::Text(b"+PONG");
        assert_eq!(text.quoted(), "'+PONG'");
        assert_eq!(text.rule(), "expect string '+PONG'");
        let re = Regex::new("^\\+PO.G").unwrap();
        let regex = Pattern::Regex(&re);
        assert_eq!(regex.quoted(), "(regex)");
        assert_eq!(regex.rule(), "expect regex");
        assert!(regex.found_in(b"+PONG"));
        assert!(!regex.found_in(b"-ERR"));
    }

    #[test]
    fn join_skips_an_empty_head() {
        assert_eq!(join("", "at step 1"), "at step 1");
        assert_eq!(
            join("Connection refused", "at step 1"),
            "Connection refused at step 1"
        );
    }
}
