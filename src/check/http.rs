//! `option httpchk` with `http-check send` and `http-check expect` (how Patroni setups check
//! `/primary`).
//!
//! The request is the bytes HAProxy 2.6 sends: `METHOD URI VERSION\r\n`, then the configured
//! headers (names lowercased), `content-length` for a body, `connection: close` for HTTP/1.1,
//! `\r\n` and the body. No `Host` header is added.
//!
//! The answer is judged as HAProxy judges it: a status line that is not `HTTP/x.y NNN
//! [reason]` or headers that do not end is `L7RSP`; a status `expect` (default: 2xx or 3xx)
//! is decided on the headers alone, a miss is `L7STS` with the status as code and the reason
//! phrase as info (`rstatus` matches a regex against the three digits); a `string` or
//! `rstring` expect reads the body (Content-Length, chunked or until close,
//! at most 16 KiB in all) and looks only at it, whatever the status.

use super::conn::{self, Clock, MAX_RESPONSE, Read, printable};
use super::{CheckResult, Status, Target};
use crate::config::{HttpCheck, HttpExpect};

/// Methods sent without `content-length: 0` when there is no body (exact names, as HAProxy
/// knows them; `get` or `TRACE` get the header).
const BODILESS_METHODS: [&str; 4] = ["GET", "HEAD", "OPTIONS", "DELETE"];

/// How many characters of a reason phrase are kept for the log.
const INFO_MAX: usize = 128;

/// Sends the request and judges the answer by `http-check expect`, for a running server.
pub async fn check(target: &Target, spec: &HttpCheck) -> CheckResult {
    check_server(target, spec, true).await
}

/// Like [`check`]; `running` says whether the server is not DOWN: only then does
/// `http-check disable-on-404` turn a 404 into `L7OKC` (conditionally passed), before any
/// `expect` rule, as HAProxy does.
pub async fn check_server(target: &Target, spec: &HttpCheck, running: bool) -> CheckResult {
    let clock = Clock::start(target);
    let mut stream = match conn::connect_check(target).await {
        Ok(stream) => stream,
        Err(e) => return e.into_result(&clock),
    };
    let deadline = clock.deadline_from_now();
    if let Err(e) = conn::write_all(&mut stream, &request(spec), deadline).await {
        return conn::write_failed(&clock, e);
    }
    let mut buf = Vec::new();
    let head = match conn::read_until(&mut stream, &mut buf, MAX_RESPONSE, deadline, parse_head)
        .await
    {
        Ok(Ok(head)) => head,
        Ok(Err(why)) => return clock.result(Status::L7Rsp, why),
        Err(Read::Eof) if buf.is_empty() => return clock.result(Status::L7Rsp, "empty response"),
        Err(Read::Eof) if parse_head(&buf).is_none() => {
            return clock.result(
                Status::L7Rsp,
                "connection closed inside the response headers",
            );
        }
        Err(read) => return conn::incomplete(&clock, read, "the end of the response headers"),
    };
    if spec.disable_on_404 && running && head.status == 404 {
        return clock.result(Status::L7Okc, "").with_code("404");
    }
    let body = match &spec.expect {
        expect if expect.needs_body() => {
            let complete = |b: &[u8]| body_if_complete(&head, b);
            match conn::read_until(&mut stream, &mut buf, MAX_RESPONSE, deadline, complete).await {
                Ok(body) => body,
                // The server closed or the cap was reached: judge what arrived.
                Err(Read::Eof | Read::Full) => body_so_far(&head, &buf),
                Err(read) => return conn::incomplete(&clock, read, "the end of the body"),
            }
        }
        _ => Vec::new(),
    };
    judge(&clock, &spec.expect, &head, &body)
}

/// The request bytes for `spec`, as HAProxy 2.6 writes them: header names lowercased and in
/// order; `connection`, `content-length` and `transfer-encoding` from the configuration
/// dropped; `content-length` when there is a body or the method may carry one (`POST`, `get`);
/// `connection: close` for HTTP/1.1 unless a
/// `connection` header asked for keep-alive.
pub fn request(spec: &HttpCheck) -> Vec<u8> {
    let mut out = format!("{} {} {}\r\n", spec.method, spec.uri, spec.version);
    let mut keep_alive = false;
    for (name, value) in &spec.headers {
        let name = name.to_ascii_lowercase();
        match name.as_str() {
            "connection" => keep_alive |= value.to_ascii_lowercase().contains("keep-alive"),
            "content-length" | "transfer-encoding" => {}
            _ => out.push_str(&format!("{name}: {value}\r\n")),
        }
    }
    // HAProxy's HTTP/1 writer announces an empty body for a method that may carry one.
    if !spec.body.is_empty() || !BODILESS_METHODS.contains(&spec.method.as_str()) {
        out.push_str(&format!("content-length: {}\r\n", spec.body.len()));
    }
    if spec.version.eq_ignore_ascii_case("HTTP/1.1") && !keep_alive {
        out.push_str("connection: close\r\n");
    }
    out.push_str("\r\n");
    out.push_str(&spec.body);
    out.into_bytes()
}

/// A parsed status line and the headers the check needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The status code (three digits, so 0..=999).
    pub status: u16,
    /// The reason phrase (may be empty).
    pub reason: String,
    /// Where the body starts in the buffer.
    pub body_start: usize,
    /// `Content-Length`, if sent and valid.
    pub content_length: Option<usize>,
    /// `Transfer-Encoding: chunked`.
    pub chunked: bool,
}

/// Parses the status line and headers once they are complete (`None` until the empty line
/// arrives); `Err` with the reason when the status line is not HTTP.
pub fn parse_head(buf: &[u8]) -> Option<Result<Head, String>> {
    // Judge the status line as soon as it is there, so garbage fails without waiting.
    let line_end = buf.iter().position(|&b| b == b'\n');
    let first = &buf[..line_end.unwrap_or(buf.len())];
    if !is_prefix_of_http(first) {
        return Some(Err(format!(
            "invalid HTTP status line '{}'",
            printable(first, INFO_MAX)
        )));
    }
    let line_end = line_end?;
    let (end, body_start) = find_head_end(buf)?;
    let status_line = trim_cr(&buf[..line_end]);
    let (status, reason) = match parse_status_line(status_line) {
        Some(parsed) => parsed,
        None => {
            return Some(Err(format!(
                "invalid HTTP status line '{}'",
                printable(status_line, INFO_MAX)
            )));
        }
    };
    let mut head = Head {
        status,
        reason,
        body_start,
        content_length: None,
        chunked: false,
    };
    for line in buf
        .get(line_end + 1..end)
        .unwrap_or(&[])
        .split(|&b| b == b'\n')
    {
        let line = trim_cr(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = &line[..colon];
        let value = String::from_utf8_lossy(&line[colon + 1..]);
        let value = value.trim();
        if name.eq_ignore_ascii_case(b"content-length") {
            head.content_length = value.parse().ok();
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            head.chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    Some(Ok(head))
}

/// Whether `line` (possibly still incomplete) can be the start of `HTTP/`.
fn is_prefix_of_http(line: &[u8]) -> bool {
    let n = line.len().min(5);
    line[..n] == b"HTTP/"[..n]
}

/// Where the headers end: (end of the last header line, start of the body). Accepts bare
/// `\n` line ends as HAProxy does.
fn find_head_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while let Some(nl) = buf[i..].iter().position(|&b| b == b'\n') {
        let at = i + nl;
        let next = at + 1;
        match buf.get(next..) {
            Some([b'\n', ..]) => return Some((at, next + 1)),
            Some([b'\r', b'\n', ..]) => return Some((at, next + 2)),
            _ => i = next,
        }
    }
    None
}

/// `HTTP/x.y NNN [reason]` → (NNN, reason).
fn parse_status_line(line: &[u8]) -> Option<(u16, String)> {
    let rest = line.strip_prefix(b"HTTP/")?;
    let sp = rest.iter().position(|&b| b == b' ')?;
    let version = &rest[..sp];
    if version.is_empty() || !version.iter().all(|b| b.is_ascii_digit() || *b == b'.') {
        return None;
    }
    let rest = &rest[sp + 1..];
    let code = rest.get(..3)?;
    if !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let status = code.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    let reason = match rest.get(3..) {
        None | Some([]) => String::new(),
        Some([b' ', reason @ ..]) => printable(reason, INFO_MAX).trim().to_string(),
        Some(_) => return None,
    };
    Some((status, reason))
}

/// `line` without a trailing `\r`.
fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The body once it is complete by its framing; `None` while more is expected (a body
/// without a length ends when the server closes).
pub fn body_if_complete(head: &Head, buf: &[u8]) -> Option<Vec<u8>> {
    let raw = buf.get(head.body_start..).unwrap_or(&[]);
    if head.chunked {
        match dechunk(raw) {
            Chunked::Complete(body) => Some(body),
            Chunked::Partial(_) => None,
        }
    } else {
        let len = head.content_length?;
        raw.get(..len).map(<[u8]>::to_vec)
    }
}

/// The body received so far, for a server that closed or a full buffer.
fn body_so_far(head: &Head, buf: &[u8]) -> Vec<u8> {
    let raw = buf.get(head.body_start..).unwrap_or(&[]);
    if head.chunked {
        match dechunk(raw) {
            Chunked::Complete(body) | Chunked::Partial(body) => body,
        }
    } else {
        let len = head.content_length.unwrap_or(raw.len()).min(raw.len());
        raw[..len].to_vec()
    }
}

/// A chunked body decoded as far as it goes.
enum Chunked {
    /// The last (zero-size) chunk was seen.
    Complete(Vec<u8>),
    /// The data so far; more (or garbage) follows.
    Partial(Vec<u8>),
}

/// Decodes `raw` as chunked transfer coding, stopping at the first incomplete or invalid
/// chunk.
fn dechunk(mut raw: &[u8]) -> Chunked {
    let mut body = Vec::new();
    loop {
        let Some(nl) = raw.iter().position(|&b| b == b'\n') else {
            return Chunked::Partial(body);
        };
        let size_line = String::from_utf8_lossy(trim_cr(&raw[..nl]));
        let size_text = size_line.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            return Chunked::Partial(body);
        };
        raw = &raw[nl + 1..];
        if size == 0 {
            return Chunked::Complete(body);
        }
        let Some(data) = raw.get(..size) else {
            body.extend_from_slice(raw);
            return Chunked::Partial(body);
        };
        body.extend_from_slice(data);
        raw = &raw[size..];
        raw = raw.strip_prefix(b"\r").unwrap_or(raw);
        raw = raw.strip_prefix(b"\n").unwrap_or(raw);
    }
}

/// Judges the response by the `expect` rule.
fn judge(clock: &Clock, expect: &HttpExpect, head: &Head, body: &[u8]) -> CheckResult {
    let code = head.status.to_string();
    let status_ok = match expect {
        HttpExpect::Status2xx3xx => Some((200..400).contains(&head.status)),
        HttpExpect::Status { codes, negate } => {
            let listed = codes
                .iter()
                .any(|&(lo, hi)| (lo..=hi).contains(&head.status));
            Some(listed != *negate)
        }
        HttpExpect::StatusRegex { pattern, negate } => match regex(pattern) {
            Ok(re) => Some(re.is_match(code.as_bytes()) != *negate),
            Err(why) => return clock.result(Status::L7Rsp, why),
        },
        HttpExpect::String { .. } | HttpExpect::StringRegex { .. } => None,
    };
    if let Some(ok) = status_ok {
        return if ok {
            clock.result(Status::L7Ok, "").with_code(code)
        } else {
            clock
                .result(Status::L7Sts, head.reason.clone())
                .with_code(code)
        };
    }
    // HAProxy fails a body rule on an empty body, even a negated one.
    if body.is_empty() {
        return clock.result(
            Status::L7Rsp,
            "HTTP content check could not find a response body",
        );
    }
    let (found, negate) = match expect {
        HttpExpect::String { text, negate } => (contains(body, text.as_bytes()), *negate),
        HttpExpect::StringRegex { pattern, negate } => match regex(pattern) {
            Ok(re) => (re.is_match(body), *negate),
            Err(why) => return clock.result(Status::L7Rsp, why),
        },
        _ => return clock.result(Status::L7Rsp, "no expect rule"),
    };
    match (found, negate) {
        (true, false) | (false, true) => clock.result(Status::L7Ok, "").with_code(code),
        (false, false) => clock.result(Status::L7Rsp, "HTTP content check did not match"),
        (true, true) => clock.result(Status::L7Rsp, "HTTP check matched unwanted content"),
    }
}

/// Compiles an `rstatus`/`rstring` pattern (validated when the configuration was read).
fn regex(pattern: &str) -> Result<regex::bytes::Regex, String> {
    regex::bytes::Regex::new(pattern).map_err(|e| format!("invalid regex '{pattern}': {e}"))
}

/// Whether `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(method: &str, uri: &str, version: &str) -> HttpCheck {
        HttpCheck {
            method: method.into(),
            uri: uri.into(),
            version: version.into(),
            headers: Vec::new(),
            body: String::new(),
            expect: HttpExpect::default(),
            disable_on_404: false,
        }
    }

    fn with(mut spec: HttpCheck, headers: &[(&str, &str)], body: &str) -> HttpCheck {
        spec.headers = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        spec.body = body.into();
        spec
    }

    fn head(buf: &[u8]) -> Head {
        match parse_head(buf) {
            Some(Ok(head)) => head,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    fn clock() -> Clock {
        Clock::start(&Target {
            addr: "127.0.0.1:1".parse().unwrap(),
            connect_timeout: std::time::Duration::from_secs(1),
            read_timeout: std::time::Duration::from_secs(1),
            tls: None,
            proxy_header: None,
            source: None,
        })
    }

    #[test]
    fn requests_match_haproxys_bytes() {
        // Captured from HAProxy 2.6.
        assert_eq!(
            request(&spec("OPTIONS", "/primary", "HTTP/1.0")),
            b"OPTIONS /primary HTTP/1.0\r\n\r\n"
        );
        assert_eq!(
            request(&spec("OPTIONS", "/primary", "HTTP/1.1")),
            b"OPTIONS /primary HTTP/1.1\r\nconnection: close\r\n\r\n"
        );
        assert_eq!(
            request(&with(spec("GET", "/x", "HTTP/1.1"), &[("Host", "foo")], "")),
            b"GET /x HTTP/1.1\r\nhost: foo\r\nconnection: close\r\n\r\n"
        );
        assert_eq!(
            request(&with(
                spec("OPTIONS", "/", "HTTP/1.0"),
                &[("X-Foo", "bar")],
                "hello"
            )),
            b"OPTIONS / HTTP/1.0\r\nx-foo: bar\r\ncontent-length: 5\r\n\r\nhello"
        );
        assert_eq!(
            request(&with(
                spec("OPTIONS", "/", "HTTP/1.1"),
                &[("content-length", "3"), ("X-A", "b")],
                "hello"
            )),
            b"OPTIONS / HTTP/1.1\r\nx-a: b\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello"
        );
        assert_eq!(
            request(&with(
                spec("OPTIONS", "/", "HTTP/1.1"),
                &[("Connection", "keep-alive")],
                ""
            )),
            b"OPTIONS / HTTP/1.1\r\n\r\n"
        );
        assert_eq!(
            request(&with(
                spec("OPTIONS", "/", "HTTP/1.0"),
                &[("Connection", "close")],
                ""
            )),
            b"OPTIONS / HTTP/1.0\r\n\r\n"
        );
    }

    #[test]
    fn status_line_and_headers() {
        let h = head(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 12\r\n\r\nbody");
        assert_eq!(h.status, 503);
        assert_eq!(h.reason, "Service Unavailable");
        assert_eq!(h.content_length, Some(12));
        assert!(!h.chunked);
        assert_eq!(h.body_start, 56);
        let h = head(b"HTTP/1.1 200\r\n\r\n");
        assert_eq!((h.status, h.reason.as_str()), (200, ""));
        let h = head(b"HTTP/1.0 200 OK\n\nbody");
        assert_eq!((h.status, h.body_start), (200, 17));
        let h = head(b"HTTP/2.0 099 OK\r\ntransfer-encoding: gzip, Chunked\r\n\r\n");
        assert_eq!(h.status, 99);
        assert!(h.chunked);
    }

    #[test]
    fn incomplete_heads_wait_and_garbage_fails_at_once() {
        assert_eq!(parse_head(b""), None);
        assert_eq!(parse_head(b"HTT"), None);
        assert_eq!(parse_head(b"HTTP/1.0 200 OK\r\n"), None);
        for garbage in [
            &b"garbage\r\n\r\n"[..],
            b"http/1.0 200 OK\r\n\r\n",
            b"HTTP/1.0 20\r\n\r\n",
            b"HTTP/1.0 2000 OK\r\n\r\n",
            b"HTTP/x 200 OK\r\n\r\n",
            b"\x00\xff",
        ] {
            assert!(
                matches!(parse_head(garbage), Some(Err(_))),
                "{garbage:?} should be invalid"
            );
        }
    }

    #[test]
    fn bodies_by_length_chunks_or_close() {
        let buf = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel";
        let h = head(buf);
        assert_eq!(body_if_complete(&h, buf), None);
        assert_eq!(body_so_far(&h, buf), b"hel");
        let buf = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello world";
        assert_eq!(body_if_complete(&head(buf), buf), Some(b"hello".to_vec()));
        let buf = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n";
        assert_eq!(
            body_if_complete(&head(buf), buf),
            Some(b"hello world".to_vec())
        );
        let buf = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel";
        assert_eq!(body_if_complete(&head(buf), buf), None);
        assert_eq!(body_so_far(&head(buf), buf), b"hel");
        let buf = b"HTTP/1.0 200 OK\r\n\r\nuntil close";
        assert_eq!(body_if_complete(&head(buf), buf), None);
        assert_eq!(body_so_far(&head(buf), buf), b"until close");
        let buf = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert_eq!(body_so_far(&head(buf), buf), b"");
    }

    #[test]
    fn expectations_as_haproxy_judges_them() {
        let c = clock();
        let ok = head(b"HTTP/1.1 200 OK\r\n\r\n");
        let found = head(b"HTTP/1.1 302 Found\r\n\r\n");
        let down = head(b"HTTP/1.1 503 Service Unavailable\r\n\r\n");
        let r = judge(&c, &HttpExpect::Status2xx3xx, &ok, b"");
        assert_eq!(
            (r.status, r.code.as_deref(), r.info.as_str()),
            (Status::L7Ok, Some("200"), "")
        );
        assert_eq!(
            judge(&c, &HttpExpect::Status2xx3xx, &found, b"").status,
            Status::L7Ok
        );
        let r = judge(&c, &HttpExpect::Status2xx3xx, &down, b"");
        assert_eq!(r.status, Status::L7Sts);
        assert_eq!(r.code.as_deref(), Some("503"));
        assert_eq!(r.info, "Service Unavailable");

        let only_200 = HttpExpect::Status {
            codes: vec![(200, 200)],
            negate: false,
        };
        assert_eq!(judge(&c, &only_200, &ok, b"").status, Status::L7Ok);
        assert_eq!(judge(&c, &only_200, &found, b"").status, Status::L7Sts);
        let not_503 = HttpExpect::Status {
            codes: vec![(503, 503)],
            negate: true,
        };
        assert_eq!(judge(&c, &not_503, &found, b"").status, Status::L7Ok);
        assert_eq!(judge(&c, &not_503, &down, b"").status, Status::L7Sts);
        let ranges = HttpExpect::Status {
            codes: vec![(200, 204), (300, 399)],
            negate: false,
        };
        assert_eq!(judge(&c, &ranges, &found, b"").status, Status::L7Ok);
        assert_eq!(judge(&c, &ranges, &down, b"").status, Status::L7Sts);

        let hello = HttpExpect::String {
            text: "hello".into(),
            negate: false,
        };
        // A string expect looks at the body only, whatever the status.
        let r = judge(&c, &hello, &down, b"say hello");
        assert_eq!((r.status, r.code.as_deref()), (Status::L7Ok, Some("503")));
        let r = judge(&c, &hello, &ok, b"say bye");
        assert_eq!(
            (r.status, r.info.as_str()),
            (Status::L7Rsp, "HTTP content check did not match")
        );
        let no_hello = HttpExpect::String {
            text: "hello".into(),
            negate: true,
        };
        let r = judge(&c, &no_hello, &ok, b"say hello");
        assert_eq!(
            (r.status, r.info.as_str()),
            (Status::L7Rsp, "HTTP check matched unwanted content")
        );
        assert_eq!(judge(&c, &no_hello, &ok, b"bye").status, Status::L7Ok);
        let r = judge(&c, &no_hello, &ok, b"");
        assert_eq!(
            (r.status, r.info.as_str()),
            (
                Status::L7Rsp,
                "HTTP content check could not find a response body"
            )
        );

        let r2xx = HttpExpect::StatusRegex {
            pattern: "^2".into(),
            negate: false,
        };
        assert_eq!(judge(&c, &r2xx, &ok, b"").status, Status::L7Ok);
        let r = judge(&c, &r2xx, &down, b"");
        assert_eq!(
            (r.status, r.info.as_str()),
            (Status::L7Sts, "Service Unavailable")
        );
        let not_r5xx = HttpExpect::StatusRegex {
            pattern: "^5".into(),
            negate: true,
        };
        assert_eq!(judge(&c, &not_r5xx, &found, b"").status, Status::L7Ok);
        assert_eq!(judge(&c, &not_r5xx, &down, b"").status, Status::L7Sts);
        let running = HttpExpect::StringRegex {
            pattern: "\"state\": *\"running\"".into(),
            negate: false,
        };
        assert_eq!(
            judge(&c, &running, &down, b"{\"state\": \"running\"}").status,
            Status::L7Ok
        );
        let r = judge(&c, &running, &ok, b"{\"state\": \"stopped\"}");
        assert_eq!(
            (r.status, r.info.as_str()),
            (Status::L7Rsp, "HTTP content check did not match")
        );
    }

    proptest::proptest! {
        #[test]
        fn parsing_any_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            if let Some(Ok(h)) = parse_head(&bytes) {
                let _ = body_if_complete(&h, &bytes);
                let _ = body_so_far(&h, &bytes);
            }
            let _ = dechunk(&bytes);
        }
    }
}
