//! `option external-check`: each check runs `external-check command` as a child process, as
//! HAProxy 2.6 does (`extcheck.c`), and its exit status is the verdict.
//!
//! The program gets HAProxy's four arguments `<proxy_address> <proxy_port> <server_address>
//! <server_port>` (the proxy's first `bind`, or `NOT_USED` twice in a `backend`) and only
//! HAProxy's environment: `PATH` (`external-check path`, default empty) and the
//! `HAPROXY_PROXY_*` / `HAPROXY_SERVER_*` variables, `NOT_USED` shown as empty. Its
//! stdin/stdout/stderr are rolelb's own, as HAProxy leaves them, and so is its file
//! descriptor limit (HAProxy 2.6.0 gave back the limit it started with; later 2.6 releases,
//! Debian's among them, only raise limits and leave the program theirs). Exit status 0 is `PROCOK`;
//! another status or a signal is `PROCERR` with the status as the check code (a signal shows
//! HAProxy's -1 as an unsigned number); a program still running after `inter` (or `timeout
//! connect` when `timeout check` is set, if shorter) is `PROCTOUT` and keeps the previous code.
//! A program that cannot be started is `PROCERR` code 255, like HAProxy's child that fails
//! to `exec`, and the reason is logged with the path.
//!
//! The child runs in its own process group. On timeout (or when its check task stops) the
//! whole group gets `SIGTERM` (HAProxy signals the child alone, and scripts' own children
//! then linger), then `SIGKILL` if it is still there after [`KILL_GRACE`]; a task always
//! waits for it, so no zombie is left.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use super::{CheckResult, Status};
use crate::config::ExternalCheck;
use crate::table::Table;

/// How long a signalled check program may take to exit before it is killed outright.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

/// HAProxy's placeholder for an argument that does not apply.
const NOT_USED: &str = "NOT_USED";

/// What one run of the program is given: its four arguments and its whole environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// `<proxy_address> <proxy_port> <server_address> <server_port>`.
    pub args: [String; 4],
    /// Every variable the program sees, in HAProxy's order.
    pub env: Vec<(&'static str, String)>,
}

/// Who is checked, as the program is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The proxy's name (`HAPROXY_PROXY_NAME`).
    pub proxy_name: String,
    /// The proxy's id (`HAPROXY_PROXY_ID`, HAProxy's numbering).
    pub proxy_id: u32,
    /// The proxy's first listening address, when it has one (a `listen` section).
    pub proxy_addr: Option<std::net::SocketAddr>,
    /// The server's name.
    pub server_name: String,
    /// The server's id (`puid`).
    pub server_id: u32,
    /// The server's traffic address (not its check `addr`/`port`, as in HAProxy).
    pub server_addr: std::net::SocketAddr,
    /// The server's configured `maxconn` (0: none).
    pub maxconn: u32,
    /// Sessions on the server now (`HAPROXY_SERVER_CURCONN`).
    pub curconn: u32,
}

impl Subject {
    /// Server `server` of backend `backend` in `table`, or `None` when it is not there.
    pub fn find(table: &Table, backend: &str, server: &str) -> Option<Subject> {
        let be = table.backends.get(backend)?;
        let rt = be.servers.iter().find(|s| s.name() == server)?;
        let id = table.config.backends.iter().find(|b| b.name == backend)?.id;
        // A `listen`'s frontend half is the same proxy (same name and id).
        let frontend = table
            .config
            .frontends
            .iter()
            .find(|f| f.name == backend && f.id == id);
        Some(Subject {
            proxy_name: backend.to_string(),
            proxy_id: id,
            proxy_addr: frontend.and_then(|fe| fe.binds.first().map(|b| b.addr)),
            server_name: server.to_string(),
            server_id: rt.puid,
            server_addr: rt.config.addr,
            maxconn: rt.config.maxconn.unwrap_or(0),
            curconn: rt.live.sessions.load(std::sync::atomic::Ordering::Relaxed),
        })
    }

    /// A subject known only by its address (no proxy, no names, id 0).
    pub fn bare(addr: std::net::SocketAddr) -> Subject {
        Subject {
            proxy_name: String::new(),
            proxy_id: 0,
            proxy_addr: None,
            server_name: String::new(),
            server_id: 0,
            server_addr: addr,
            maxconn: 0,
            curconn: 0,
        }
    }

    /// The arguments and environment HAProxy 2.6 gives the program for this subject.
    pub fn invocation(&self, check: &ExternalCheck) -> Invocation {
        let (proxy_addr, proxy_port) = match self.proxy_addr {
            Some(a) => (a.ip().to_string(), a.port().to_string()),
            None => (NOT_USED.to_string(), NOT_USED.to_string()),
        };
        let server_addr = self.server_addr.ip().to_string();
        let server_port = self.server_addr.port().to_string();
        // HAProxy passes `NOT_USED` as an argument but an empty variable.
        let shown = |v: &str| {
            if v == NOT_USED {
                String::new()
            } else {
                v.to_string()
            }
        };
        let env = vec![
            ("PATH", check.path.clone()),
            ("HAPROXY_PROXY_NAME", self.proxy_name.clone()),
            ("HAPROXY_PROXY_ID", self.proxy_id.to_string()),
            ("HAPROXY_PROXY_ADDR", shown(&proxy_addr)),
            ("HAPROXY_PROXY_PORT", shown(&proxy_port)),
            ("HAPROXY_SERVER_NAME", self.server_name.clone()),
            ("HAPROXY_SERVER_ID", self.server_id.to_string()),
            ("HAPROXY_SERVER_ADDR", server_addr.clone()),
            ("HAPROXY_SERVER_PORT", server_port.clone()),
            ("HAPROXY_SERVER_MAXCONN", self.maxconn.to_string()),
            ("HAPROXY_SERVER_CURCONN", self.curconn.to_string()),
            // rolelb never speaks TLS to servers, and its proxies are TCP.
            ("HAPROXY_SERVER_SSL", "0".to_string()),
            ("HAPROXY_SERVER_PROTO", "tcp".to_string()),
        ];
        Invocation {
            args: [proxy_addr, proxy_port, server_addr, server_port],
            env,
        }
    }
}

/// The external check of one server: remembers what HAProxy carries from one run to the next
/// (the last exit code, shown again after a timeout) and the last start failure (logged
/// once per change, not every `inter`).
#[derive(Debug, Default)]
pub struct Runner {
    last_code: Option<String>,
    last_spawn_error: Option<String>,
}

impl Runner {
    /// Runs the program once for `subject` (`name` is `backend/server` for the logs) and
    /// waits at most `timeout` for it.
    pub async fn run(
        &mut self,
        check: &ExternalCheck,
        subject: &Subject,
        timeout: Duration,
        name: &str,
    ) -> CheckResult {
        let invocation = subject.invocation(check);
        let start = Instant::now();
        let mut child = match spawn(check, &invocation) {
            Ok(child) => {
                if self.last_spawn_error.take().is_some() {
                    tracing::info!(
                        "External check for server {name}: '{}' starts again.",
                        check.command
                    );
                }
                Running::new(child)
            }
            Err(e) => {
                let reason = e.to_string();
                if self.last_spawn_error.as_deref() != Some(&reason) {
                    tracing::warn!(
                        "External check for server {name}: cannot run '{}' (PATH=\"{}\"): {reason}.",
                        check.command,
                        check.path
                    );
                    self.last_spawn_error = Some(reason);
                }
                // HAProxy's forked child exits with -1 when exec fails.
                return self.finished(Status::ProcErr, "255", start);
            }
        };
        match tokio::time::timeout(timeout, child.wait()).await {
            Ok(Ok(status)) => {
                let code = exit_code(status);
                let verdict = if code == "0" {
                    Status::ProcOk
                } else {
                    Status::ProcErr
                };
                self.finished(verdict, &code, start)
            }
            Ok(Err(e)) => {
                tracing::warn!("External check for server {name}: lost its program: {e}.");
                self.finished(Status::ProcErr, "4294967295", start)
            }
            Err(_) => {
                tracing::warn!(
                    "External check for server {name}: '{}' still running after {}ms, killed.",
                    check.command,
                    timeout.as_millis()
                );
                drop(child);
                let mut result = CheckResult::new(Status::ProcTout, "", start.elapsed());
                result.code = Some(self.last_code.clone().unwrap_or_else(|| "0".into()));
                result
            }
        }
    }

    fn finished(&mut self, status: Status, code: &str, start: Instant) -> CheckResult {
        self.last_code = Some(code.to_string());
        CheckResult::new(status, "", start.elapsed()).with_code(code)
    }
}

/// Runs the program once for a server known only by its address (no proxy, no names), as a
/// standalone check of `addr`.
pub async fn check(
    check: &ExternalCheck,
    addr: std::net::SocketAddr,
    timeout: Duration,
) -> CheckResult {
    let name = addr.to_string();
    Runner::default()
        .run(check, &Subject::bare(addr), timeout, &name)
        .await
}

fn spawn(check: &ExternalCheck, invocation: &Invocation) -> std::io::Result<Child> {
    let mut cmd = Command::new(&check.command);
    cmd.args(&invocation.args)
        .env_clear()
        .envs(invocation.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        // Its own group, so a timeout can stop whatever the script started too.
        .process_group(0);
    cmd.spawn()
}

/// The exit status as HAProxy keeps it in the check code: the exit status, or -1 (shown as
/// an unsigned 32-bit number) when a signal ended the program.
fn exit_code(status: ExitStatus) -> String {
    match status.code() {
        Some(code) => code.to_string(),
        None => u32::MAX.to_string(),
    }
}

/// A started program; dropped before it was waited for, its process group is stopped and a
/// task reaps it.
struct Running {
    child: Option<Child>,
}

impl Running {
    fn new(child: Child) -> Running {
        Running { child: Some(child) }
    }

    async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let Some(child) = self.child.as_mut() else {
            return Err(std::io::Error::other("already waited for"));
        };
        let status = child.wait().await;
        self.child = None;
        status
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let Some(pid) = child.id() else {
            return;
        };
        let group = Pid::from_raw(pid as i32);
        let _ = killpg(group, Signal::SIGTERM);
        let reap = async move {
            if tokio::time::timeout(KILL_GRACE, child.wait())
                .await
                .is_err()
            {
                tracing::warn!(
                    "External check program {pid} ignored SIGTERM for {}s; killing its process group.",
                    KILL_GRACE.as_secs()
                );
                let _ = killpg(group, Signal::SIGKILL);
                let _ = child.wait().await;
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(reap);
            }
            // Outside a runtime (process exit): kill outright; tokio's orphan queue reaps it.
            Err(_) => {
                let _ = killpg(group, Signal::SIGKILL);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn subject(proxy_addr: Option<SocketAddr>) -> Subject {
        Subject {
            proxy_name: "be".into(),
            proxy_id: 3,
            proxy_addr,
            server_name: "s1".into(),
            server_id: 2,
            server_addr: "[::1]:5432".parse().unwrap(),
            maxconn: 10,
            curconn: 4,
        }
    }

    fn check(command: &str) -> ExternalCheck {
        ExternalCheck {
            command: command.into(),
            path: "/usr/bin:/bin".into(),
        }
    }

    #[test]
    fn backend_gets_not_used_arguments_and_empty_variables() {
        let inv = subject(None).invocation(&check("/bin/true"));
        assert_eq!(inv.args, ["NOT_USED", "NOT_USED", "::1", "5432"]);
        let env: std::collections::HashMap<_, _> = inv.env.iter().cloned().collect();
        assert_eq!(env["HAPROXY_PROXY_ADDR"], "");
        assert_eq!(env["HAPROXY_PROXY_PORT"], "");
        assert_eq!(env["HAPROXY_SERVER_ADDR"], "::1");
        assert_eq!(env["HAPROXY_SERVER_CURCONN"], "4");
        assert_eq!(env["HAPROXY_SERVER_MAXCONN"], "10");
        assert_eq!(env["PATH"], "/usr/bin:/bin");
        assert_eq!(inv.env.len(), 13);
    }

    #[test]
    fn listen_gets_its_first_bind() {
        let inv = subject(Some("127.0.0.1:5000".parse().unwrap())).invocation(&check("x"));
        assert_eq!(inv.args[..2], ["127.0.0.1", "5000"]);
    }

    #[tokio::test]
    async fn exit_status_is_the_verdict_and_the_code() {
        let mut runner = Runner::default();
        let s = subject(None);
        let t = Duration::from_secs(10);
        let ok = runner.run(&check("true"), &s, t, "be/s1").await;
        assert_eq!((ok.status, ok.code.as_deref()), (Status::ProcOk, Some("0")));
        let err = runner.run(&check("false"), &s, t, "be/s1").await;
        assert_eq!(
            (err.status, err.code.as_deref()),
            (Status::ProcErr, Some("1"))
        );
    }

    #[tokio::test]
    async fn missing_program_is_a_failed_check() {
        let r = Runner::default()
            .run(
                &check("/nonexistent/rolelb-check"),
                &subject(None),
                Duration::from_secs(1),
                "be/s1",
            )
            .await;
        assert_eq!(
            (r.status, r.code.as_deref()),
            (Status::ProcErr, Some("255"))
        );
    }

    #[tokio::test]
    async fn timeout_kills_and_keeps_the_last_code() {
        let mut runner = Runner::default();
        let s = subject(None);
        runner
            .run(&check("false"), &s, Duration::from_secs(10), "be/s1")
            .await;
        let started = Instant::now();
        let dir = tempdir();
        let script = dir.join("sleep.sh");
        std::fs::write(&script, "#!/bin/sh\nsleep 30\n").unwrap();
        make_executable(&script);
        let r = runner
            .run(
                &check(script.to_str().unwrap()),
                &s,
                Duration::from_millis(200),
                "be/s1",
            )
            .await;
        assert_eq!((r.status, r.code.as_deref()), (Status::ProcTout, Some("1")));
        assert!(started.elapsed() < Duration::from_secs(5));
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempdir() -> std::path::PathBuf {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("rolelb-extcheck-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn make_executable(path: &std::path::Path) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}
