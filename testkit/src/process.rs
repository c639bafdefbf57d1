//! Processes the harness starts: finding a binary ([`require_bin`]), building its command
//! (dies with the test's thread, optionally as the database user), and [`Proc`], which owns a
//! running server and stops it by PID when dropped (signal, grace period, `SIGKILL`, `wait`).

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::os::unix::fs::chown;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::{Pid, User};
use tempfile::TempDir;

/// How long a server may take to come up before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Returns `path` if it is an existing file, else panics telling the reader to run deps.sh.
pub fn require_bin(path: impl AsRef<Path>) -> PathBuf {
    let path = path.as_ref();
    assert!(
        path.is_file(),
        "{} not found: run scripts/deps.sh",
        path.display()
    );
    path.to_path_buf()
}

/// The last `max` lines of a log file, for panic messages.
pub fn log_tail(path: &Path, max: usize) -> String {
    let text = fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|e| format!("<cannot read {}: {e}>", path.display()));
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(max);
    let mut out = format!("--- last lines of {} ---\n", path.display());
    for l in &lines[from..] {
        let _ = writeln!(out, "{l}");
    }
    out
}

/// The uid/gid database servers run as: `postgres` when we are root, else ourselves (`None`).
pub(crate) fn db_user() -> Option<(u32, u32)> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let user = User::from_name("postgres")
        .expect("looking up the postgres user")
        .expect("the postgres user not found: run scripts/deps.sh");
    Some((user.uid.as_raw(), user.gid.as_raw()))
}

/// A temporary directory the database user owns (it must be able to write there).
pub(crate) fn db_tempdir(prefix: &str) -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("creating a temporary directory");
    if let Some((uid, gid)) = db_user() {
        chown(dir.path(), Some(uid), Some(gid)).expect("chown of the temporary directory");
    }
    dir
}

/// A command for `program` that dies with the spawning thread (PDEATHSIG) and, when
/// `as_db_user`, runs as the database user from `cwd` (which that user can enter).
pub fn command(program: &Path, as_db_user: bool, cwd: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(cwd).stdin(Stdio::null());
    if as_db_user && let Some((uid, gid)) = db_user() {
        cmd.uid(uid)
            .gid(gid)
            .env("HOME", cwd)
            .env("USER", "postgres");
    }
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// Runs a short-lived command to completion, panicking with its output if it fails.
pub(crate) fn run_ok(what: &str, cmd: &mut Command) -> Output {
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Opens `path` for appending, to hand to a child as stdout/stderr.
pub(crate) fn log_file(path: &Path) -> fs::File {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("opening log {}: {e}", path.display()))
}

/// A running server process that this test started, stopped by its PID when dropped.
pub struct Proc {
    pub(crate) name: String,
    pub(crate) child: Child,
    pub(crate) log: PathBuf,
    pub(crate) stop_signal: Signal,
    pub(crate) grace: Duration,
    pub(crate) status: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path, stop_signal: Signal) -> Proc {
        let child = cmd
            .stdout(log_file(log))
            .stderr(log_file(log))
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start: {e}"));
        Proc {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
            stop_signal,
            grace: Duration::from_secs(10),
            status: None,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Sends `sig` to the process.
    pub fn signal(&self, sig: Signal) {
        let pid = Pid::from_raw(self.child.id() as i32);
        signal::kill(pid, sig).unwrap_or_else(|e| panic!("{}: kill {sig}: {e}", self.name));
    }

    /// Panics with the log tail unless the process is still running.
    pub(crate) fn assert_running(&mut self, while_doing: &str) {
        if let Some(status) = self.exited() {
            panic!(
                "{} exited ({status}) while {while_doing}\n{}",
                self.name,
                log_tail(&self.log, 40)
            );
        }
    }

    /// Waits until `ready()` holds, panicking with the log if the process dies or time runs out.
    pub fn wait_ready(&mut self, what: &str, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            self.assert_running(what);
            if ready() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: not ready after {START_TIMEOUT:?} ({what})\n{}",
                self.name,
                log_tail(&self.log, 40)
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the process: its stop signal, up to the grace period, then SIGKILL; then reaps it.
    pub fn stop(&mut self) -> ExitStatus {
        if let Some(status) = self.exited() {
            return status;
        }
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = signal::kill(pid, self.stop_signal);
        let deadline = Instant::now() + self.grace;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return status;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let status = self
            .child
            .wait()
            .unwrap_or_else(|e| panic!("{}: wait: {e}", self.name));
        self.status = Some(status);
        status
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}
