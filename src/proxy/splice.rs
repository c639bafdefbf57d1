//! Kernel splicing (splice(2), Linux): a session direction moves bytes socket → pipe →
//! socket without copying them through rolelb, as HAProxy's `option splice-request`,
//! `splice-response` and `splice-auto` do.
//!
//! When a direction splices is decided as in HAProxy 2.6 (`stream.c`, `stconn.c`): with
//! `option splice-request` (client → server) or `splice-response` (server → client) in the
//! frontend or the backend, from the first byte; with `option splice-auto`, once the direction
//! is a "fast streamer" — three reads in a row filled the buffer (all but `maxrewrite`, that is
//! `min(1024, tune.bufsize / 2)`); a read of half a buffer or less, twice, or a second of
//! silence, ends the streak ([`Streamer`]). Once a direction splices it keeps splicing.
//! Global `nosplice` turns it all off; `maxpipes` caps the pipes in use at once (default:
//! `maxconn / 4`, HAProxy's default). A direction that finds no pipe copies that round and
//! tries again later; one whose sockets refuse splicing (`EINVAL`, `ENOSYS`, ...) copies for
//! the rest of the session.
//!
//! Pipes are lent per thread like the buffers (`bufpool`): taken when the source is
//! readable, given back once drained. A pipe still holding bytes when its session ends (kill,
//! error) is closed, never lent again. A spliced direction holds at most what one pipe takes
//! (the kernel's default pipe: 16 slots, 64 KiB of full pages; or the size `tune.pipesize`
//! asks, set on each new pipe as HAProxy does) instead of `tune.bufsize`.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::config::Splice;

/// When one direction of a session splices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SpliceWhen {
    /// Never: bytes are copied through a buffer.
    #[default]
    Never,
    /// From the first byte (`option splice-request` / `splice-response`).
    Always,
    /// Once the direction streams fast (`option splice-auto`).
    Auto,
}

/// The splicing a session may do, from its frontend's and backend's options and `global`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    /// Client → server.
    pub request: SpliceWhen,
    /// Server → client.
    pub response: SpliceWhen,
    /// Pipes the process may have in use at once (`maxpipes`).
    pub maxpipes: usize,
    /// Bytes asked of the kernel for each new pipe (`tune.pipesize`; 0: its default).
    pub pipesize: usize,
}

impl Policy {
    /// A session's splicing: an option set in its frontend or its backend counts (HAProxy
    /// ORs both proxies' options); `maxpipes` 0 (`nosplice`) turns it off.
    pub fn new(frontend: Splice, backend: Splice, maxpipes: usize, pipesize: usize) -> Policy {
        let auto = frontend.auto || backend.auto;
        let when = |fixed: bool| match (maxpipes, fixed, auto) {
            (0, _, _) => SpliceWhen::Never,
            (_, true, _) => SpliceWhen::Always,
            (_, false, true) => SpliceWhen::Auto,
            (_, false, false) => SpliceWhen::Never,
        };
        Policy {
            request: when(frontend.request || backend.request),
            response: when(frontend.response || backend.response),
            maxpipes,
            pipesize,
        }
    }
}

/// Pipes lent out now, process-wide (HAProxy's `pipes_used`, checked against `maxpipes`).
static PIPES_USED: AtomicUsize = AtomicUsize::new(0);

/// Bytes moved through a pipe since start.
static SPLICED_BYTES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Pipes lent out now.
pub fn pipes_used() -> usize {
    PIPES_USED.load(Ordering::Relaxed)
}

/// Bytes moved through a pipe since start.
pub fn spliced_bytes() -> u64 {
    SPLICED_BYTES.load(Ordering::Relaxed)
}

/// Free pipes kept per thread (two descriptors each).
const POOL_MAX: usize = 16;

/// The two ends of a kernel pipe, and the `tune.pipesize` it was made with.
struct Fds {
    rd: OwnedFd,
    wr: OwnedFd,
    size: usize,
}

thread_local! {
    static FREE: RefCell<Vec<Fds>> = const { RefCell::new(Vec::new()) };
}

/// A pipe lent to one direction; given back to the pool when dropped empty, closed otherwise.
pub struct Pipe {
    fds: Option<Fds>,
    /// Bytes in the pipe not yet written out.
    data: usize,
}

impl Pipe {
    /// A pipe from this thread's pool or a new one of `size` bytes (`tune.pipesize`, 0: the
    /// kernel's default), unless `maxpipes` are in use or the process is out of descriptors.
    /// A pooled pipe of another size (a reload changed `tune.pipesize`) is closed.
    pub fn take(maxpipes: usize, size: usize) -> Option<Pipe> {
        let used = PIPES_USED.fetch_add(1, Ordering::AcqRel);
        if used >= maxpipes {
            PIPES_USED.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let pooled = FREE
            .try_with(|f| {
                let mut f = f.borrow_mut();
                // A pipe of an old size on top (a reload changed `tune.pipesize`) empties the
                // pool: cheaper than sorting it on every take, and the rare pipe of the new
                // size closed with them is made again when needed.
                if f.last().is_some_and(|p| p.size != size) {
                    f.clear();
                }
                f.pop()
            })
            .ok()
            .flatten();
        let fds = pooled.or_else(|| {
            nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)
                .map(|(rd, wr)| {
                    resize(&wr, size);
                    Fds { rd, wr, size }
                })
                .map_err(|e| tracing::debug!("no pipe for splicing: {e}"))
                .ok()
        });
        match fds {
            Some(fds) => Some(Pipe {
                fds: Some(fds),
                data: 0,
            }),
            None => {
                PIPES_USED.fetch_sub(1, Ordering::AcqRel);
                None
            }
        }
    }

    /// Moves what `from` has into the pipe, as much as the pipe's slots take. `Ok(0)` is the
    /// peer's FIN; `WouldBlock` means nothing was there after all (readiness is cleared).
    ///
    /// The kernel fills one pipe slot per piece of the socket's received data (a page, or a
    /// larger piece of a compound page), so how many bytes fit depends on how the sender's
    /// data was cut: the call asks for everything, as HAProxy does, not for the pipe's size
    /// in bytes (64 KiB for 16 slots), which would stop at two pieces of 32 KiB each.
    pub fn fill(&mut self, from: &TcpStream) -> io::Result<usize> {
        let Some(fds) = &self.fds else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        let n = from.try_io(Interest::READABLE, || {
            splice(
                from,
                None,
                fds.wr.as_fd(),
                None,
                SPLICE_AT_ONCE,
                SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK,
            )
            .map_err(io::Error::from)
        })?;
        self.data += n;
        Ok(n)
    }

    /// Writes everything in the pipe to `to`, telling `written` each chunk as it leaves.
    pub async fn drain(
        &mut self,
        to: &TcpStream,
        mut written: impl FnMut(usize),
    ) -> io::Result<()> {
        while self.data > 0 {
            let Some(fds) = &self.fds else {
                return Err(io::ErrorKind::NotConnected.into());
            };
            // The socket's writer slot, not `writable()`'s own waiter (see `forward`).
            std::future::poll_fn(|cx| to.poll_write_ready(cx)).await?;
            let left = self.data;
            let sent = to.try_io(Interest::WRITABLE, || {
                splice(
                    fds.rd.as_fd(),
                    None,
                    to,
                    None,
                    left,
                    SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK,
                )
                .map_err(io::Error::from)
            });
            match sent {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.data -= n;
                    SPLICED_BYTES.fetch_add(n as u64, Ordering::Relaxed);
                    written(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        PIPES_USED.fetch_sub(1, Ordering::AcqRel);
        // A pipe with bytes left in it is closed with them: never lent again.
        if let Some(fds) = self.fds.take().filter(|_| self.data == 0) {
            let _ = FREE.try_with(|f| {
                let mut f = f.borrow_mut();
                if f.len() < POOL_MAX {
                    f.push(fds);
                }
            });
        }
    }
}

/// Set once the kernel refused a `tune.pipesize`: it is said once, not per pipe.
static RESIZE_REFUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Asks the kernel to size a new pipe to `size` bytes (`F_SETPIPE_SZ`; 0: leave its
/// default), as HAProxy does with `tune.pipesize`. The kernel rounds it up to a power of two
/// pages. Refused (above `/proc/sys/fs/pipe-max-size` without `CAP_SYS_RESOURCE`, or the
/// user's pipe pages exhausted), the pipe keeps its size and the first refusal is logged.
fn resize(wr: &OwnedFd, size: usize) {
    if size == 0 {
        return;
    }
    let asked = i32::try_from(size).unwrap_or(i32::MAX);
    if let Err(e) = fcntl(wr.as_fd(), FcntlArg::F_SETPIPE_SZ(asked))
        && !RESIZE_REFUSED.swap(true, Ordering::Relaxed)
    {
        tracing::warn!(
            "tune.pipesize {size}: the kernel refused this pipe size ({e}; an unprivileged \
             process may not exceed /proc/sys/fs/pipe-max-size); pipes keep the kernel's \
             default size"
        );
    }
}

/// The most bytes asked of one splice into a pipe (HAProxy's `MAX_SPLICE_AT_ONCE`): the
/// pipe's slots, not this, decide how many come.
const SPLICE_AT_ONCE: usize = 1 << 30;

/// Whether a splice error means these sockets cannot splice (copy instead), not that the
/// connection failed.
pub fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP | Errno::EBADF | Errno::ESPIPE)
    )
}

/// HAProxy's `tune.idle-timer`: a streak of full reads ends after this much silence.
const IDLE_TIMER: Duration = Duration::from_secs(1);

/// HAProxy's fast-streamer detection of one direction (`CF_STREAMER_FAST`), fed with the
/// size of every read.
#[derive(Debug, Default)]
pub struct Streamer {
    large: u8,
    small: u8,
    streamer: bool,
    fast: bool,
    last_read: Option<Instant>,
}

impl Streamer {
    /// Whether the direction streams fast (`splice-auto` then splices it).
    pub fn fast(&self) -> bool {
        self.fast
    }

    /// Called before a read: a pause of [`IDLE_TIMER`] with nothing pending is not
    /// congestion, and ends the streak.
    pub fn before_read(&mut self, now: Instant) {
        if (self.streamer || self.fast)
            && self
                .last_read
                .is_some_and(|at| now.duration_since(at) >= IDLE_TIMER)
        {
            *self = Streamer::default();
        }
    }

    /// Records a read of `n > 0` bytes into a buffer of `bufsize`.
    pub fn after_read(&mut self, n: usize, bufsize: usize, now: Instant) {
        let maxrewrite = 1024.min(bufsize / 2);
        if (self.streamer || self.fast) && n <= bufsize / 2 {
            self.large = 0;
            self.small = self.small.saturating_add(1);
            if self.small >= 3 {
                self.streamer = false;
                self.fast = false;
            } else if self.small >= 2 {
                self.fast = false;
            }
        } else if !self.fast && n >= bufsize - maxrewrite {
            self.small = 0;
            self.large = self.large.saturating_add(1);
            if self.large >= 3 {
                self.streamer = true;
                self.fast = true;
            }
        } else {
            self.small = 0;
            self.large = 0;
        }
        self.last_read = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_full_reads_in_a_row_make_a_fast_streamer() {
        let now = Instant::now();
        let mut s = Streamer::default();
        s.after_read(16384, 16384, now);
        s.after_read(15360, 16384, now);
        assert!(!s.fast());
        s.after_read(16384, 16384, now);
        assert!(s.fast());
        // Two small reads end it.
        s.after_read(100, 16384, now);
        assert!(s.fast());
        s.after_read(100, 16384, now);
        assert!(!s.fast());
    }

    #[test]
    fn a_read_short_of_full_breaks_the_streak() {
        let now = Instant::now();
        let mut s = Streamer::default();
        s.after_read(16384, 16384, now);
        s.after_read(16384, 16384, now);
        s.after_read(15000, 16384, now);
        s.after_read(16384, 16384, now);
        assert!(!s.fast());
    }

    #[test]
    fn a_pause_of_one_second_ends_the_streak() {
        let now = Instant::now();
        let mut s = Streamer::default();
        for _ in 0..3 {
            s.after_read(16384, 16384, now);
        }
        assert!(s.fast());
        s.before_read(now + Duration::from_millis(500));
        assert!(s.fast());
        s.before_read(now + IDLE_TIMER);
        assert!(!s.fast());
    }

    #[test]
    fn a_session_splices_as_its_frontend_or_its_backend_asks() {
        let none = Splice::default();
        let auto = Splice { auto: true, ..none };
        let request = Splice {
            request: true,
            ..none
        };
        let p = Policy::new(request, auto, 10, 0);
        assert_eq!(
            (p.request, p.response),
            (SpliceWhen::Always, SpliceWhen::Auto)
        );
        let p = Policy::new(auto, request, 10, 0);
        assert_eq!(
            (p.request, p.response),
            (SpliceWhen::Always, SpliceWhen::Auto)
        );
        let p = Policy::new(request, auto, 0, 0);
        assert_eq!(
            (p.request, p.response),
            (SpliceWhen::Never, SpliceWhen::Never)
        );
        let p = Policy::new(none, none, 10, 0);
        assert_eq!(
            (p.request, p.response),
            (SpliceWhen::Never, SpliceWhen::Never)
        );
    }

    #[test]
    fn no_pipe_is_lent_beyond_maxpipes() {
        assert!(Pipe::take(0, 0).is_none());
        let p = Pipe::take(usize::MAX, 0).expect("a pipe");
        assert!(pipes_used() >= 1);
        drop(p);
    }
}
