//! HAProxy's runtime API on `stats socket PATH [mode M] [level L]`: one Unix stream socket
//! per line of `global`, bound at startup (before privileges are dropped), each with its own
//! accept loop. A connection sends one line of commands separated by `;`, gets the replies
//! (each ends with an empty line) and is closed, as HAProxy does; after `prompt` it stays open
//! and reads line after line, printing `> ` after each reply. Lines are capped in length and
//! sessions in idle and total time, so no client can hold a session or memory for long.
//!
//! A socket is bound under a temporary name, given its mode, then renamed over `PATH`, so a
//! stale socket left by a crash is replaced atomically and nobody connects before the mode is
//! set. On stop the file is removed if it is still ours.

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::Env;
use super::cli::{self, Outcome};
use crate::config::{Global, Loc, StatsLevel, StatsSocket};

/// Longest command line accepted (HAProxy's default buffer size).
const MAX_LINE: usize = 16 * 1024;
/// A reply that cannot be written within this time closes the session.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// No interactive session lives longer than this.
const MAX_SESSION: Duration = Duration::from_secs(3600);

/// Why a stats socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Binding, chmod or renaming into place failed.
    #[error("{loc}: cannot bind stats socket {}: {source}", path.display())]
    Bind {
        /// Where the `stats socket` line is.
        loc: Loc,
        /// The socket's path.
        path: PathBuf,
        /// The system's error.
        source: io::Error,
    },
}

/// One bound socket, not yet serving.
struct Bound {
    listener: std::os::unix::net::UnixListener,
    path: PathBuf,
    level: StatsLevel,
    inode: Option<(u64, u64)>,
}

/// Every `stats socket` of `global`, bound and ready to serve.
pub struct StatsSockets {
    bound: Vec<Bound>,
}

fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

fn bind_one(socket: &StatsSocket) -> io::Result<Bound> {
    let mut tmp = socket.path.clone().into_os_string();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let listener = std::os::unix::net::UnixListener::bind(&tmp)?;
    let placed = (|| {
        if let Some(mode) = socket.mode {
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
        }
        std::fs::rename(&tmp, &socket.path)
    })();
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    listener.set_nonblocking(true)?;
    Ok(Bound {
        listener,
        inode: identity(&socket.path),
        path: socket.path.clone(),
        level: socket.level,
    })
}

/// Binds every socket; the first failure names its `stats socket` line.
pub fn bind(sockets: &[StatsSocket]) -> Result<StatsSockets, RuntimeError> {
    let mut bound = Vec::new();
    for s in sockets {
        match bind_one(s) {
            Ok(b) => bound.push(b),
            Err(source) => {
                // Undo what this startup already placed.
                drop(StatsSockets { bound }.into_running(CancellationToken::new()));
                return Err(RuntimeError::Bind {
                    loc: s.loc.clone(),
                    path: s.path.clone(),
                    source,
                });
            }
        }
    }
    Ok(StatsSockets { bound })
}

/// The serving sockets; dropping this stops them and removes their files.
pub struct Running {
    files: Vec<(PathBuf, Option<(u64, u64)>)>,
    stop: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
        for (path, inode) in &self.files {
            // Another process may have replaced the socket since: leave that one alone.
            if inode.is_some() && identity(path) == *inode {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

impl StatsSockets {
    fn into_running(self, stop: CancellationToken) -> Running {
        Running {
            files: self.bound.into_iter().map(|b| (b.path, b.inode)).collect(),
            stop,
        }
    }

    /// Starts one accept loop per socket (call from inside the runtime). As HAProxy's CLI:
    /// at most `stats maxconn` sessions over all the sockets (more wait in the kernel's
    /// backlog), each closed once idle for `stats timeout`.
    pub fn serve(self, env: Env, global: &Global) -> Running {
        let stop = CancellationToken::new();
        let env = Arc::new(env);
        let limits = Limits {
            idle: global.stats_timeout(),
            sessions: Arc::new(Semaphore::new(global.stats_maxconn())),
        };
        let mut files = Vec::new();
        for b in self.bound {
            files.push((b.path.clone(), b.inode));
            match UnixListener::from_std(b.listener) {
                Ok(listener) => {
                    tracing::info!(path = %b.path.display(), "stats socket listening");
                    tokio::spawn(accept_loop(
                        listener,
                        limits.clone(),
                        b.level,
                        format!("stats socket {}", b.path.display()),
                        env.clone(),
                        stop.clone(),
                    ));
                }
                Err(e) => tracing::error!(path = %b.path.display(), "stats socket: {e}"),
            }
        }
        Running { files, stop }
    }
}

/// `stats timeout` and `stats maxconn`, shared by every stats socket.
#[derive(Clone)]
struct Limits {
    idle: Duration,
    sessions: Arc<Semaphore>,
}

async fn accept_loop(
    listener: UnixListener,
    limits: Limits,
    level: StatsLevel,
    origin: String,
    env: Arc<Env>,
    stop: CancellationToken,
) {
    let accept = || listener.accept();
    let idle = limits.idle;
    super::accept_limited(
        limits.sessions,
        &stop,
        &origin,
        accept,
        |(stream, _), permit| {
            let env = env.clone();
            let origin = origin.clone();
            tokio::spawn(async move {
                let _permit = permit;
                if let Err(e) = session(stream, level, idle, &env, &origin).await {
                    tracing::debug!("{origin}: session ended: {e}");
                }
            });
        },
    )
    .await;
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_owned())
}

/// Serves one connection: one line (or, after `prompt`, line after line).
async fn session(
    stream: UnixStream,
    level: StatsLevel,
    idle: Duration,
    env: &Env,
    origin: &str,
) -> io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let deadline = Instant::now() + MAX_SESSION;
    let mut interactive = false;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let limit = u64::try_from(MAX_LINE + 1).unwrap_or(u64::MAX);
        let n = tokio::time::timeout(idle, (&mut rd).take(limit).read_until(b'\n', &mut buf))
            .await
            .map_err(|_| timed_out("idle"))??;
        if n == 0 {
            return Ok(());
        }
        if buf.len() > MAX_LINE {
            let reply = format!("Command line too long (at most {MAX_LINE} bytes).\n\n");
            let _ = tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(reply.as_bytes())).await;
            return Ok(());
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches(['\n', '\r']);
        let (out, quit) = run_line(env, level, line, origin, &mut interactive).await;
        tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(out.as_bytes()))
            .await
            .map_err(|_| timed_out("write"))??;
        if quit || !interactive || Instant::now() >= deadline {
            let _ = wr.shutdown().await;
            return Ok(());
        }
    }
}

/// Runs every command of one line; returns the text to send and whether to close.
async fn run_line(
    env: &Env,
    level: StatsLevel,
    line: &str,
    origin: &str,
    interactive: &mut bool,
) -> (String, bool) {
    let commands = cli::split_commands(line);
    let several = commands.len() > 1;
    let mut out = String::new();
    for words in commands {
        // `a;;b` or a trailing `;` leave empty commands: skip them; an empty line is not.
        if several && words.is_empty() {
            continue;
        }
        match cli::execute(env, level, &words, origin).await {
            Outcome::Reply(text) => {
                out.push_str(&text);
                out.push('\n');
            }
            Outcome::TogglePrompt => {
                *interactive = !*interactive;
                out.push('\n');
            }
            Outcome::Quit => return (out, true),
        }
    }
    if *interactive {
        out.push_str("> ");
    }
    (out, false)
}
