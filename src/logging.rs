//! Log output: `tracing` events to stderr (always, as SPEC section 2 says) and to the
//! `log` targets of `global` that are syslog endpoints (UDP or a unix datagram socket such as
//! `/dev/log`), one datagram per event in RFC 5424 framing with the receiver's timestamp;
//! [`send`], which writes a proxy's session log line to its `log` targets framed as HAProxy
//! 2.6 frames it for each `format` (`raw` is the line alone); and [`Throttle`], which keeps a
//! repeated failure to one line per second with a count.
//!
//! Every field is printed through [`crate::text::message`]: a log line quoting outside text (an
//! agent's reply, an etcd key, a request path) stays one line with its control characters
//! escaped and overlong tokens shortened, whatever the call site passed.

use std::io::{self, IsTerminal, Write};
use std::net::UdpSocket;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::field::Field;
use tracing::{Level, Metadata};
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogDest, LogTarget, SyslogFormat};

/// English month abbreviations, as HAProxy prints them.
pub const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A Unix time split into calendar fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokenDown {
    /// Year (e.g. 2026).
    pub year: i64,
    /// Month, 0 = January.
    pub month0: usize,
    /// Day of the month, 1..=31.
    pub mday: u32,
    /// Hour.
    pub hour: u32,
    /// Minute.
    pub min: u32,
    /// Second.
    pub sec: u32,
    /// Seconds east of UTC.
    pub gmtoff: i64,
}

/// `secs` (Unix time) in the local time zone (`local`) or in UTC.
pub fn broken_down(secs: i64, local: bool) -> BrokenDown {
    let t = libc::time_t::try_from(secs).unwrap_or(0);
    // SAFETY: `tm` is plain data, and the `_r` functions only write into it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe {
        if local {
            !libc::localtime_r(&t, &mut tm).is_null()
        } else {
            !libc::gmtime_r(&t, &mut tm).is_null()
        }
    };
    if !ok {
        return BrokenDown {
            year: 1970,
            month0: 0,
            mday: 1,
            hour: 0,
            min: 0,
            sec: 0,
            gmtoff: 0,
        };
    }
    let field = |v: libc::c_int| u32::try_from(v).unwrap_or(0);
    BrokenDown {
        year: i64::from(tm.tm_year) + 1900,
        month0: usize::try_from(tm.tm_mon).unwrap_or(0),
        mday: field(tm.tm_mday),
        hour: field(tm.tm_hour),
        min: field(tm.tm_min),
        sec: field(tm.tm_sec),
        gmtoff: tm.tm_gmtoff,
    }
}

/// This machine's host name (`%H`), read once.
pub fn hostname() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is writable for its whole length.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        if rc != 0 {
            return String::new();
        }
        let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    })
}

/// The tag in syslog headers without `log-tag` (HAProxy's default is its program name).
pub const DEFAULT_TAG: &str = "rolelb";

/// Local time as HAProxy's ISO stamps: `2026-12-01T15:01:50.622333+00:00`.
fn iso_time(now: std::time::SystemTime) -> String {
    let since = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let t = broken_down(i64::try_from(since.as_secs()).unwrap_or(0), true);
    let off = t.gmtoff.abs() / 60;
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}{}{:02}:{:02}",
        t.year,
        t.month0 + 1,
        t.mday,
        t.hour,
        t.min,
        t.sec,
        since.subsec_micros(),
        if t.gmtoff < 0 { '-' } else { '+' },
        off / 60,
        off % 60
    )
}

/// Who sends a line: the tag, and the host name `log-send-hostname` sets.
#[derive(Debug, Clone, Copy)]
pub struct Sender<'a> {
    /// `log-tag` (the proxy's, else the global one), or [`DEFAULT_TAG`].
    pub tag: &'a str,
    /// `log-send-hostname`: the host in the header of the formats that carry one.
    pub host: Option<&'a str>,
}

/// The header HAProxy puts before a line for `format` (see its `build_log_header`). A host
/// name (`log-send-hostname`) turns the default format into rfc3164 with that host, and
/// replaces rfc3164's `localhost` and rfc5424's `-`, as in HAProxy.
fn header(
    format: SyslogFormat,
    sender: Sender<'_>,
    facility: u8,
    level: u8,
    now: std::time::SystemTime,
) -> String {
    let Sender { tag, host } = sender;
    let pri = u16::from(facility) * 8 + u16::from(level);
    let pid = std::process::id();
    let legacy_time = || {
        let since = now
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let t = broken_down(i64::try_from(since.as_secs()).unwrap_or(0), true);
        format!(
            "{} {:2} {:02}:{:02}:{:02}",
            MONTHS[t.month0 % 12],
            t.mday,
            t.hour,
            t.min,
            t.sec
        )
    };
    match format {
        SyslogFormat::Legacy => match host {
            Some(host) => format!("<{pri}>{} {host} {tag}[{pid}]: ", legacy_time()),
            None => format!("<{pri}>{} {tag}[{pid}]: ", legacy_time()),
        },
        SyslogFormat::Rfc3164 => format!(
            "<{pri}>{} {} {tag}[{pid}]: ",
            legacy_time(),
            host.unwrap_or("localhost")
        ),
        SyslogFormat::Rfc5424 => format!(
            "<{pri}>1 {} {} {tag} {pid} - - ",
            iso_time(now),
            host.unwrap_or("-")
        ),
        SyslogFormat::Short => format!("<{level}>"),
        SyslogFormat::Timed => format!("<{level}>{} ", iso_time(now)),
        SyslogFormat::Iso => format!("{} ", iso_time(now)),
        SyslogFormat::Raw => String::new(),
    }
}

/// Frames `line` for `target` as HAProxy does: header, the line, cut to `len`, then `\n`.
fn frame(
    target: &LogTarget,
    sender: Sender<'_>,
    level: u8,
    line: &str,
    now: std::time::SystemTime,
) -> Vec<u8> {
    let mut out = header(target.format, sender, target.facility, level, now).into_bytes();
    out.extend_from_slice(line.as_bytes());
    out.truncate(target.max_len);
    out.push(b'\n');
    out
}

/// The sockets of the syslog targets that session lines went to, opened on first use.
static SESSION_SINKS: Mutex<Vec<(LogDest, Arc<Sink>)>> = Mutex::new(Vec::new());

fn session_sink(dest: &LogDest) -> Option<Arc<Sink>> {
    let mut sinks = SESSION_SINKS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, s)) = sinks.iter().find(|(d, _)| d == dest) {
        return Some(s.clone());
    }
    let opened = LogTarget {
        dest: dest.clone(),
        facility: 0,
        max_level: None,
        min_level: None,
        format: SyslogFormat::Legacy,
        max_len: 0,
    };
    match open(&opened) {
        Ok(Some(t)) => {
            let sink = Arc::new(t.sink);
            sinks.push((dest.clone(), sink.clone()));
            Some(sink)
        }
        Ok(None) => None,
        Err(e) => {
            if let Some(n) = SESSION_SINK_FAILED.hit() {
                tracing::error!(
                    "cannot open log target {dest:?}: {e} [{n} occurrences since the last such line]"
                );
            }
            None
        }
    }
}

/// Session log targets that could not be opened, all together.
static SESSION_SINK_FAILED: Throttle = Throttle::new();

/// Sends one session log line at syslog `level` to each of `targets` whose level lets it
/// through, framed by its `format`. A line that cannot be written is dropped, as HAProxy
/// drops it: logging never stalls a session on a slow log reader.
pub fn send<'a>(
    targets: impl IntoIterator<Item = &'a LogTarget>,
    sender: Sender<'_>,
    level: u8,
    line: &str,
) {
    let now = std::time::SystemTime::now();
    for t in targets {
        if t.max_level.is_some_and(|max| level > max) {
            continue;
        }
        let level = t.min_level.map_or(level, |min| level.max(min));
        let bytes = frame(t, sender, level, line, now);
        match &t.dest {
            LogDest::Stdout => write_fd(libc::STDOUT_FILENO, &bytes),
            LogDest::Stderr => write_fd(libc::STDERR_FILENO, &bytes),
            dest => {
                if let Some(sink) = session_sink(dest) {
                    let _ = match &*sink {
                        Sink::Udp(s) => s.send(&bytes),
                        Sink::Unix(s) => s.send(&bytes),
                    };
                }
            }
        }
    }
}

/// One `write(2)` of a whole line, so lines from concurrent sessions never interleave.
fn write_fd(fd: libc::c_int, bytes: &[u8]) {
    // SAFETY: the pointer and length describe `bytes`; a failed write is ignored.
    let _ = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
}

/// One syslog endpoint.
#[derive(Debug)]
enum Sink {
    Udp(UdpSocket),
    Unix(UnixDatagram),
}

#[derive(Debug)]
struct SyslogTarget {
    sink: Sink,
    facility: u8,
    max_level: Option<u8>,
}

/// A `MakeWriter` that sends each event to every syslog target as one datagram.
#[derive(Debug, Clone)]
struct Syslog {
    targets: Arc<Vec<SyslogTarget>>,
    tag: Arc<str>,
    /// `log-send-hostname`, else the RFC 5424 nil value `-`.
    host: Arc<str>,
}

/// Buffers one event; sends it on drop.
struct Datagram {
    targets: Arc<Vec<SyslogTarget>>,
    tag: Arc<str>,
    host: Arc<str>,
    severity: u8,
    buf: Vec<u8>,
}

impl Write for Datagram {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Datagram {
    fn drop(&mut self) {
        let msg = String::from_utf8_lossy(&self.buf);
        let msg = msg.trim_end();
        if msg.is_empty() {
            return;
        }
        let pid = std::process::id();
        for t in self.targets.iter() {
            if t.max_level.is_some_and(|max| self.severity > max) {
                continue;
            }
            let pri = u16::from(t.facility) * 8 + u16::from(self.severity);
            let line = format!("<{pri}>1 - {} {} {pid} - - {msg}", self.host, self.tag);
            // Logging must never stall or fail the process; a lost datagram is acceptable.
            let _ = match &t.sink {
                Sink::Udp(s) => s.send(line.as_bytes()),
                Sink::Unix(s) => s.send(line.as_bytes()),
            };
        }
    }
}

fn severity(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

impl<'a> MakeWriter<'a> for Syslog {
    type Writer = Datagram;

    fn make_writer(&'a self) -> Datagram {
        self.datagram(6)
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Datagram {
        self.datagram(severity(meta.level()))
    }
}

impl Syslog {
    fn datagram(&self, severity: u8) -> Datagram {
        Datagram {
            targets: self.targets.clone(),
            tag: self.tag.clone(),
            host: self.host.clone(),
            severity,
            buf: Vec::with_capacity(256),
        }
    }
}

fn open(target: &LogTarget) -> io::Result<Option<SyslogTarget>> {
    let sink = match &target.dest {
        LogDest::Stderr | LogDest::Stdout => return Ok(None),
        LogDest::Udp(addr) => {
            let bind = if addr.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            };
            let s = UdpSocket::bind(bind)?;
            s.connect(addr)?;
            s.set_nonblocking(true)?;
            Sink::Udp(s)
        }
        LogDest::Unix(path) => {
            let s = UnixDatagram::unbound()?;
            s.connect(path)?;
            s.set_nonblocking(true)?;
            Sink::Unix(s)
        }
    };
    Ok(Some(SyslogTarget {
        sink,
        facility: target.facility,
        max_level: target.max_level,
    }))
}

/// The field formatter of every log layer: each field through [`safe_field`].
fn safe_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + 'static {
    tracing_subscriber::fmt::format::debug_fn(safe_field).delimited(" ")
}

/// Writes one field of an event, made safe to print: the message as text, others as `name=value`.
fn safe_field(w: &mut Writer<'_>, field: &Field, value: &dyn std::fmt::Debug) -> std::fmt::Result {
    let text = format!("{value:?}");
    let text = crate::text::message(&text);
    if field.name() == "message" {
        write!(w, "{text}")
    } else {
        write!(w, "{}={text}", field.name())
    }
}

/// Installs the global subscriber: stderr (filtered by `RUST_LOG`, default `info`) plus the
/// syslog targets among `targets`, whose lines carry `sender`'s tag (the global `log-tag`)
/// and host (`log-send-hostname`). A target that cannot be opened is reported and skipped.
pub fn init(targets: &[LogTarget], sender: Sender<'_>) {
    let mut syslog = Vec::new();
    let mut problems = Vec::new();
    for t in targets {
        match open(t) {
            Ok(Some(s)) => syslog.push(s),
            Ok(None) => {}
            Err(e) => problems.push(format!("cannot open log target {:?}: {e}", t.dest)),
        }
    }
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let stderr = tracing_subscriber::fmt::layer()
        .with_ansi(io::stderr().is_terminal())
        .fmt_fields(safe_fields())
        .with_writer(io::stderr)
        .with_filter(filter());
    let syslog_layer = (!syslog.is_empty()).then(|| {
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .without_time()
            .with_level(false)
            .fmt_fields(safe_fields())
            .with_writer(Syslog {
                targets: Arc::new(syslog),
                tag: Arc::from(sender.tag),
                host: Arc::from(sender.host.unwrap_or("-")),
            })
            .with_filter(filter())
    });
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(syslog_layer)
        .try_init();
    for p in problems {
        tracing::error!("{p}");
    }
}

/// Shortest time between two log lines of one [`Throttle`].
const THROTTLE_INTERVAL: Duration = Duration::from_secs(1);

/// Rate-limits one cause of repeated log lines (a failing `accept`, say) to one line per
/// second: every occurrence is counted, and the line that is let through carries how many
/// occurrences it stands for, so a flood neither fills the log nor goes unnoticed.
#[derive(Debug, Default)]
pub struct Throttle {
    /// When the last line was let through (`None`: never).
    last: Mutex<Option<Instant>>,
    /// Occurrences since the last line was let through.
    count: AtomicU64,
}

impl Throttle {
    /// A throttle that lets its first occurrence through.
    pub const fn new() -> Throttle {
        Throttle {
            last: Mutex::new(None),
            count: AtomicU64::new(0),
        }
    }

    /// Counts one occurrence; `Some(n)` when a line may be logged now, `n` being the
    /// occurrences it reports (this one included), `None` while the interval runs.
    pub fn hit(&self) -> Option<u64> {
        self.count.fetch_add(1, Ordering::AcqRel);
        let now = Instant::now();
        // A poisoned lock only means another thread panicked while logging: keep counting.
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| now.duration_since(t) < THROTTLE_INTERVAL) {
            return None;
        }
        *last = Some(now);
        Some(self.count.swap(0, Ordering::AcqRel))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Collects what a layer writes.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            if let Ok(mut b) = self.0.lock() {
                b.extend_from_slice(data);
            }
            Ok(data.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn outside_text_in_a_log_event_stays_one_escaped_line() {
        let buffer = Buffer::default();
        let out = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .fmt_fields(safe_fields())
            .with_writer(move || buffer.clone())
            .finish();
        let key = "/db/members/n1\x1b[2J\rforged line\0";
        let long = "v".repeat(1000);
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(
                backend = "be\n2",
                "etcd key {key} for backend 'be': bad value {long}"
            );
        });
        let text = String::from_utf8(out.0.lock().map(|b| b.clone()).unwrap_or_default())
            .unwrap_or_default();
        assert_eq!(text.lines().count(), 1, "{text:?}");
        assert!(text.contains("n1\\x1b[2J\\rforged line\\0"), "{text:?}");
        assert!(text.contains("…(1000 chars)"), "{text:?}");
        assert!(text.contains(r#"backend="be\n2""#), "{text:?}");
        assert!(
            !text.trim_end().contains(|c: char| c.is_control()),
            "{text:?}"
        );
    }

    fn target(format: SyslogFormat, max_len: usize) -> LogTarget {
        LogTarget {
            dest: LogDest::Stderr,
            facility: 16,
            max_level: None,
            min_level: None,
            format,
            max_len,
        }
    }

    #[test]
    fn each_log_format_frames_the_line_as_haproxy() {
        let now = std::time::UNIX_EPOCH + Duration::from_micros(1_796_137_310_622_333);
        let pid = std::process::id();
        let framed_by = |format, len, host| {
            let sender = Sender {
                tag: DEFAULT_TAG,
                host,
            };
            String::from_utf8(frame(&target(format, len), sender, 6, "LINE", now))
                .unwrap_or_default()
        };
        let framed = |format, len| framed_by(format, len, None);
        let iso = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.622333[+-]\d{2}:\d{2}";
        let legacy = r"[A-Z][a-z]{2} [ 1-3]\d \d{2}:\d{2}:\d{2}";
        for (format, pattern) in [
            (SyslogFormat::Raw, "LINE".to_string()),
            (SyslogFormat::Short, "<6>LINE".to_string()),
            (
                SyslogFormat::Legacy,
                format!("<134>{legacy} rolelb\\[{pid}\\]: LINE"),
            ),
            (
                SyslogFormat::Rfc3164,
                format!("<134>{legacy} localhost rolelb\\[{pid}\\]: LINE"),
            ),
            (
                SyslogFormat::Rfc5424,
                format!("<134>1 {iso} - rolelb {pid} - - LINE"),
            ),
            (SyslogFormat::Timed, format!("<6>{iso} LINE")),
            (SyslogFormat::Iso, format!("{iso} LINE")),
        ] {
            let line = framed(format, 1024);
            let re = regex::Regex::new(&format!("^{pattern}\n$")).unwrap();
            assert!(re.is_match(&line), "{format:?}: {line:?} !~ {pattern}");
        }
        assert_eq!(framed(SyslogFormat::Short, 5), "<6>LI\n");
        // `log-send-hostname db1`: the host where each format has one (the default format
        // becomes rfc3164's), nothing elsewhere.
        for (format, pattern) in [
            (
                SyslogFormat::Legacy,
                format!("<134>{legacy} db1 rolelb\\[{pid}\\]: LINE"),
            ),
            (
                SyslogFormat::Rfc3164,
                format!("<134>{legacy} db1 rolelb\\[{pid}\\]: LINE"),
            ),
            (
                SyslogFormat::Rfc5424,
                format!("<134>1 {iso} db1 rolelb {pid} - - LINE"),
            ),
            (SyslogFormat::Short, "<6>LINE".to_string()),
            (SyslogFormat::Iso, format!("{iso} LINE")),
        ] {
            let line = framed_by(format, 1024, Some("db1"));
            let re = regex::Regex::new(&format!("^{pattern}\n$")).unwrap();
            assert!(re.is_match(&line), "{format:?}: {line:?} !~ {pattern}");
        }
    }

    #[test]
    fn throttle_lets_one_line_a_second_through_with_the_count() {
        let t = Throttle::new();
        assert_eq!(t.hit(), Some(1));
        for _ in 0..99 {
            assert_eq!(t.hit(), None);
        }
        *t.last.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Instant::now() - THROTTLE_INTERVAL);
        assert_eq!(t.hit(), Some(100));
        assert_eq!(t.hit(), None);
    }
}
