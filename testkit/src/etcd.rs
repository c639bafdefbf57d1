//! [`Etcd`]: a one-member etcd 3.4 cluster on free ports in its own temporary directory, and
//! `etcdctl` wrappers for putting keys and reading the revision.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use nix::sys::signal::Signal;
use tempfile::TempDir;

use crate::net::free_port;
use crate::process::{Proc, command, require_bin};

/// Debian's etcd server (3.4).
pub const ETCD_BIN: &str = "/usr/bin/etcd";
/// Debian's etcdctl (v3 API).
pub const ETCDCTL_BIN: &str = "/usr/bin/etcdctl";

/// A one-member etcd 3.4 cluster on 127.0.0.1 (client and peer ports from [`free_port`]) with
/// its data directory in its own temporary directory. It can be stopped and started again on
/// the same data, and a second process can run on that data on another client port while it
/// is stopped ([`Etcd::offline`]), to change keys that rolelb cannot see being changed.
pub struct Etcd {
    // Fields drop in order: stop the process before removing its directory.
    proc: Option<Proc>,
    dir: TempDir,
    client_port: u16,
    peer_port: u16,
}

impl Etcd {
    /// Starts a new cluster; returns once it answers.
    pub fn start() -> Etcd {
        let dir = tempfile::Builder::new()
            .prefix("rolelb-etcd-")
            .tempdir()
            .expect("creating a temporary directory");
        let mut etcd = Etcd {
            proc: None,
            dir,
            client_port: free_port(),
            peer_port: free_port(),
        };
        etcd.restart();
        etcd
    }

    /// The client URL (`http://127.0.0.1:PORT`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.client_port
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    fn spawn(&self, client_port: u16) -> Proc {
        let bin = require_bin(ETCD_BIN);
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut cmd = command(&bin, false, self.dir.path());
        cmd.args(["--name", "rolelb-test"])
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("rolelb-test={peer}")])
            .args(["--log-level", "warn", "--logger", "zap"]);
        let name = format!("etcd :{client_port}");
        let mut proc = Proc::spawn(&name, &mut cmd, &self.log_path(), Signal::SIGTERM);
        let endpoint = client.clone();
        proc.wait_ready("waiting for endpoint health", || {
            etcdctl(&endpoint, &["endpoint", "health"]).is_ok()
        });
        proc
    }

    /// Starts the server (again) on its data directory and client port; waits until ready.
    pub fn restart(&mut self) {
        assert!(
            self.proc.is_none(),
            "etcd :{} already running",
            self.client_port
        );
        self.proc = Some(self.spawn(self.client_port));
    }

    /// Stops the server (SIGTERM, waiting for it to exit); the data stays.
    pub fn stop(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.stop();
        }
    }

    /// While stopped: runs `change` against a second etcd process on the same data but
    /// another client port (so nothing watching the usual port sees it happen), then stops it.
    pub fn offline(&mut self, change: impl FnOnce(&str)) {
        assert!(self.proc.is_none(), "etcd :{} is running", self.client_port);
        let port = free_port();
        let mut proc = self.spawn(port);
        change(&format!("http://127.0.0.1:{port}"));
        proc.stop();
    }

    /// `etcdctl put KEY VALUE`.
    pub fn put(&self, key: &str, value: &str) {
        etcd_put(&self.endpoint(), key, value);
    }

    /// `etcdctl del KEY`.
    pub fn del(&self, key: &str) {
        etcd_ctl_ok(&self.endpoint(), &["del", key]);
    }

    /// The cluster's current revision.
    pub fn revision(&self) -> i64 {
        etcd_revision(&self.endpoint())
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `etcdctl --endpoints=ENDPOINT ARGS` (v3 API); Ok(stdout) or Err(stderr).
pub fn etcdctl(endpoint: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(require_bin(ETCDCTL_BIN))
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(["--dial-timeout=2s", "--command-timeout=5s"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run etcdctl: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Like [`etcdctl`], panicking with etcdctl's error.
pub fn etcd_ctl_ok(endpoint: &str, args: &[&str]) -> String {
    etcdctl(endpoint, args).unwrap_or_else(|e| panic!("etcdctl {args:?} at {endpoint}: {e}"))
}

/// `etcdctl put KEY VALUE` at `endpoint` (the value after `--`, so it may start with `-`).
pub fn etcd_put(endpoint: &str, key: &str, value: &str) {
    etcd_ctl_ok(endpoint, &["put", "--", key, value]);
}

/// The current revision at `endpoint` (from `etcdctl endpoint status -w json`).
pub fn etcd_revision(endpoint: &str) -> i64 {
    let text = etcd_ctl_ok(endpoint, &["endpoint", "status", "-w", "json"]);
    let at = text
        .find("\"revision\":")
        .expect("revision in endpoint status")
        + 11;
    text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .expect("a revision number")
}
