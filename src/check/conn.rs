//! What every check type shares: connecting with `connect_timeout` (mapped to `L4TOUT` /
//! `L4CON` as HAProxy reports them, and with `check-ssl` the TLS handshake within the same
//! limit, `L6TOUT` / `L6RSP`), reading into a capped buffer against one deadline, and
//! the OS error text HAProxy prints (`Connection refused`, without Rust's `(os error 111)`).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use super::tls::{CheckStream, HandshakeError};
use super::{CheckResult, Status, Target};

/// The most a check reads from a server: HAProxy's default buffer size (`tune.bufsize`).
pub(super) const MAX_RESPONSE: usize = 16 * 1024;

/// One check in progress: when it started (for `duration`) and when its time after the
/// connect runs out.
pub(super) struct Clock {
    started: Instant,
    read_timeout: Duration,
}

impl Clock {
    /// Starts the clock for a check against `target`.
    pub(super) fn start(target: &Target) -> Clock {
        Clock {
            started: Instant::now(),
            read_timeout: target.read_timeout,
        }
    }

    /// Time since the check started.
    pub(super) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// A result stamped with the elapsed time.
    pub(super) fn result(&self, status: Status, info: impl Into<String>) -> CheckResult {
        CheckResult::new(status, info, self.elapsed())
    }

    /// The deadline for everything after a connect that completes now.
    pub(super) fn deadline_from_now(&self) -> Instant {
        Instant::now() + self.read_timeout
    }
}

/// Why a connect failed: `L4TOUT` (no answer within `connect_timeout`) or `L4CON` (refused,
/// unreachable, reset) with the OS error text; with `check-ssl`, `L6TOUT` or `L6RSP` for the
/// TLS handshake.
#[derive(Debug)]
pub(super) enum ConnectError {
    /// `connect_timeout` passed.
    Timeout,
    /// The OS reported an error.
    Io(io::Error),
    /// The TLS handshake did not complete.
    Handshake(HandshakeError),
}

impl ConnectError {
    /// The status HAProxy reports for this failure.
    pub(super) fn status(&self) -> Status {
        match self {
            ConnectError::Timeout => Status::L4Tout,
            ConnectError::Io(_) => Status::L4Con,
            ConnectError::Handshake(HandshakeError::Timeout) => Status::L6Tout,
            ConnectError::Handshake(HandshakeError::Failed { .. }) => Status::L6Rsp,
        }
    }

    /// HAProxy's info text: empty for a timeout, the OS error text otherwise.
    pub(super) fn info(&self) -> String {
        match self {
            ConnectError::Timeout => String::new(),
            ConnectError::Io(e) => os_error_text(e),
            ConnectError::Handshake(e) => e.info(),
        }
    }

    /// The check result for this failure, as a plain connect reports it.
    pub(super) fn into_result(self, clock: &Clock) -> CheckResult {
        clock.result(self.status(), self.info())
    }
}

/// Connects to `addr` within `connect_timeout` in delayed-ACK mode (`TCP_QUICKACK` 0), as
/// HAProxy 2.6 opens a check connection whose next step is not to read (its
/// `CONNECT_DELACK_ALWAYS`): the handshake's last ACK leaves with the first bytes sent, or
/// never when the connection is reset first ([`reset`]), so the server's application does not
/// even accept a connection that only proves the port is open.
pub(super) async fn connect_delayed_ack(
    addr: SocketAddr,
    connect_timeout: Duration,
    source: Option<&crate::config::model::Source>,
) -> Result<TcpStream, ConnectError> {
    let connecting = crate::proxy::connect::connect_nonblocking(addr, true, source);
    match tokio::time::timeout(connect_timeout, connecting).await {
        Err(_) => Err(ConnectError::Timeout),
        Ok(Err(e)) => Err(ConnectError::Io(e)),
        Ok(Ok(stream)) => Ok(stream),
    }
}

/// Makes dropping `stream` reset the connection (`SO_LINGER` 0), as HAProxy closes a check
/// connection: no TIME_WAIT left behind.
pub(super) fn reset(stream: &TcpStream) {
    if let Err(e) = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO)) {
        tracing::debug!("cannot set SO_LINGER on a check connection: {e}");
    }
}

/// Connects to `addr` within `connect_timeout` (from `source` when set), without Nagle's
/// delay: checks send a few small messages and wait for answers.
pub(super) async fn connect(
    addr: SocketAddr,
    connect_timeout: Duration,
    source: Option<&crate::config::model::Source>,
) -> Result<TcpStream, ConnectError> {
    let connecting = crate::proxy::connect::connect_nonblocking(addr, false, source);
    match tokio::time::timeout(connect_timeout, connecting).await {
        Err(_) => Err(ConnectError::Timeout),
        Ok(Err(e)) => Err(ConnectError::Io(e)),
        Ok(Ok(stream)) => Ok(stream),
    }
}

/// Connects to the check's target (`target.addr`), sends the PROXY header the target asks
/// for and, with `check-ssl`, runs the TLS handshake (after the header, as for traffic); all
/// within `connect_timeout`, as HAProxy's `timeout connect` covers them.
pub(super) async fn connect_check(target: &Target) -> Result<CheckStream, ConnectError> {
    let started = Instant::now();
    let mut tcp = connect(target.addr, target.connect_timeout, target.source.as_ref()).await?;
    if let Some(version) = target.proxy_header {
        let local = tcp.local_addr().map_err(ConnectError::Io)?;
        let header = crate::proxy::proxy_protocol::check_header(version, local, target.addr);
        let left = target.connect_timeout.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, tcp.write_all(&header)).await {
            Err(_) => return Err(ConnectError::Timeout),
            Ok(Err(e)) => return Err(ConnectError::Io(e)),
            Ok(Ok(())) => {}
        }
    }
    let Some(tls) = &target.tls else {
        return Ok(CheckStream::Plain(tcp));
    };
    let left = target.connect_timeout.saturating_sub(started.elapsed());
    tls.handshake(tcp, target.addr.ip(), left)
        .await
        .map_err(|e| {
            tracing::debug!("TLS handshake with {} failed: {}", target.addr, e.detail());
            ConnectError::Handshake(e)
        })
}

/// The OS error text as HAProxy prints it (`Connection refused`).
pub(super) use crate::text::os_error as os_error_text;

/// What one attempt to read more of a response gave.
#[derive(Debug)]
pub(super) enum Read {
    /// New bytes were appended to the buffer.
    Data,
    /// The server closed its side; nothing more will come.
    Eof,
    /// The buffer reached its cap; nothing more will be read.
    Full,
    /// The deadline passed.
    Timeout,
    /// The OS reported an error (typically a reset).
    Error(io::Error),
}

/// Reads more bytes into `buf` (never beyond `cap` bytes in total) until `deadline`.
pub(super) async fn read_more<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    cap: usize,
    deadline: Instant,
) -> Read {
    if buf.len() >= cap {
        return Read::Full;
    }
    let mut chunk = [0u8; 4096];
    let want = chunk.len().min(cap - buf.len());
    match timeout_at(deadline, stream.read(&mut chunk[..want])).await {
        Err(_) => Read::Timeout,
        // A TLS server that closes without `close_notify` has still closed: HAProxy (OpenSSL)
        // reads that as the end of the response too.
        Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Read::Eof,
        Ok(Err(e)) => Read::Error(e),
        Ok(Ok(0)) => Read::Eof,
        Ok(Ok(n)) => {
            buf.extend_from_slice(&chunk[..n]);
            Read::Data
        }
    }
}

/// Writes all of `bytes` before `deadline`; `Err` carries the info text for the result.
pub(super) async fn write_all<S: AsyncWrite + Unpin>(
    stream: &mut S,
    bytes: &[u8],
    deadline: Instant,
) -> Result<(), WriteError> {
    match timeout_at(deadline, stream.write_all(bytes)).await {
        Err(_) => Err(WriteError::Timeout),
        Ok(Err(e)) => Err(WriteError::Io(e)),
        Ok(Ok(())) => Ok(()),
    }
}

/// Why a write failed.
#[derive(Debug)]
pub(super) enum WriteError {
    /// The deadline passed with the server not reading.
    Timeout,
    /// The OS reported an error (reset, broken pipe).
    Io(io::Error),
}

/// Reads until `done(buf)` says the response is complete (`Some`), the server closes, the
/// buffer is full, or the deadline passes. Shared by the check types whose answer is one
/// message of known shape (pgsql, mysql, http).
pub(super) async fn read_until<T, S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    cap: usize,
    deadline: Instant,
    mut done: impl FnMut(&[u8]) -> Option<T>,
) -> Result<T, Read> {
    loop {
        if let Some(value) = done(buf) {
            return Ok(value);
        }
        match read_more(stream, buf, cap, deadline).await {
            Read::Data => continue,
            other => {
                // One last look: the final read may have completed the message.
                if let Some(value) = done(buf) {
                    return Ok(value);
                }
                return Err(other);
            }
        }
    }
}

/// The result for a response that ended early, as the layer-7 checks (pgsql, mysql, http)
/// report it: a timeout is `L7TOUT`, a reset `SOCKERR` with the OS text (a TLS error too,
/// see [`io_failure`]), a close or an over-long answer `L7RSP` with `what` saying what was
/// missing.
pub(super) fn incomplete(clock: &Clock, read: Read, what: &str) -> CheckResult {
    match read {
        Read::Timeout => clock.result(Status::L7Tout, ""),
        Read::Error(e) => {
            let (status, info) = io_failure(&e);
            clock.result(status, info)
        }
        Read::Eof => clock.result(Status::L7Rsp, format!("connection closed before {what}")),
        Read::Full => clock.result(
            Status::L7Rsp,
            format!("no {what} in the first {MAX_RESPONSE} bytes"),
        ),
        Read::Data => clock.result(Status::L7Rsp, format!("incomplete {what}")),
    }
}

/// How a read or write error once connected is reported, as HAProxy 2.6 reports an I/O
/// error on an established check connection (`chk_report_conn_err`): `SOCKERR` with the OS
/// error's text (`Connection reset by peer`), or for a TLS error (a fatal alert, e.g. a
/// server refusing the client certificate after a TLS 1.3 handshake) "SSL fatal error".
pub(super) fn io_failure(e: &io::Error) -> (Status, String) {
    let tls = e
        .get_ref()
        .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some());
    if tls {
        (Status::SockErr, "SSL fatal error".into())
    } else {
        (Status::SockErr, os_error_text(e))
    }
}

/// The result for a failed write of a request.
pub(super) fn write_failed(clock: &Clock, e: WriteError) -> CheckResult {
    match e {
        WriteError::Timeout => clock.result(Status::L7Tout, ""),
        WriteError::Io(e) => {
            let (status, info) = io_failure(&e);
            clock.result(status, info)
        }
    }
}

/// Text of server-sent bytes safe for a log line: lossy UTF-8, control characters escaped,
/// at most `max` characters.
pub(super) fn printable(bytes: &[u8], max: usize) -> String {
    let mut out = String::new();
    for (i, c) in String::from_utf8_lossy(bytes).chars().enumerate() {
        if i >= max {
            out.push_str("...");
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_error_text_drops_the_rust_suffix() {
        let e = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(os_error_text(&e), "Connection refused");
        let custom = io::Error::other("plain");
        assert_eq!(os_error_text(&custom), "plain");
    }

    #[test]
    fn printable_escapes_and_truncates() {
        assert_eq!(printable(b"ab\r\n\x00c", 100), "ab\\r\\n\\u{0}c");
        assert_eq!(printable(b"abcdef", 3), "abc...");
        assert_eq!(printable(&[0xff, b'a'], 10), "\u{fffd}a");
    }
}
