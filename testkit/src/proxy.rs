//! What HAProxy and rolelb have in common in the tests: running a config file from a temporary
//! directory until every `bind` listens ([`ProxyRun`]), `-c` config checks, one command on a
//! `stats socket` ([`stats_cli`]) and reading a row of `show stat` CSV ([`stat_row`]).

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use tempfile::TempDir;

use crate::net::{bind_addrs, is_listening};
use crate::process::{Proc, command, log_file};

/// A proxy process (HAProxy or rolelb) running a config file from its own temporary directory.
pub(crate) struct ProxyRun {
    // Fields drop in order: stop the process before removing its directory.
    pub(crate) proc: Proc,
    pub(crate) dir: TempDir,
    pub(crate) cfg: PathBuf,
    pub(crate) stderr: PathBuf,
}

impl ProxyRun {
    /// Writes `cfg_text`, runs `bin ARGS -f FILE`, and waits until every `bind` port listens.
    pub(crate) fn start(name: &str, bin: &Path, args: &[&str], cfg_text: &str) -> ProxyRun {
        let dir = tempfile::Builder::new()
            .prefix("rolelb-proxy-")
            .tempdir()
            .expect("creating a temporary directory");
        let cfg = dir.path().join("proxy.cfg");
        fs::write(&cfg, cfg_text).expect("writing the proxy config");
        let stderr = dir.path().join("stderr.log");
        let mut cmd = command(bin, false, dir.path());
        cmd.args(args).arg("-f").arg(&cfg);
        let child = cmd
            .stdout(log_file(&dir.path().join("stdout.log")))
            .stderr(log_file(&stderr))
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start {}: {e}", bin.display()));
        let mut proc = Proc {
            name: name.to_string(),
            child,
            log: stderr.clone(),
            stop_signal: Signal::SIGTERM,
            grace: Duration::from_secs(3),
            status: None,
        };
        for addr in bind_addrs(cfg_text) {
            proc.wait_ready(&format!("waiting for bind {addr}"), || {
                is_listening(addr.port())
            });
        }
        ProxyRun {
            proc,
            dir,
            cfg,
            stderr,
        }
    }

    pub(crate) fn stderr_text(&self) -> String {
        fs::read(&self.stderr)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
}

/// Runs `bin ARGS -c -f FILE` on `cfg_text`; returns (exit code 0, stdout + stderr).
pub(crate) fn check_config(bin: &Path, cfg_text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let cfg = dir.path().join("check.cfg");
    fs::write(&cfg, cfg_text).expect("writing the config to check");
    check_file(bin, &cfg, |_| {})
}

/// Runs `bin -c -f file`, after `setup` (environment variables, for instance) on the
/// command; returns (exit code 0, stdout + stderr). For rolelb and HAProxy alike.
pub fn check_file(bin: &Path, file: &Path, setup: impl FnOnce(&mut Command)) -> (bool, String) {
    let mut cmd = Command::new(bin);
    cmd.arg("-c").arg("-f").arg(file).stdin(Stdio::null());
    setup(&mut cmd);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Sends one command line to the `stats socket` at `path` and reads the reply until rolelb
/// closes (a non-interactive session answers one command).
pub fn stats_cli(path: &Path, line: &str) -> String {
    let mut s = std::os::unix::net::UnixStream::connect(path)
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", path.display()));
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    s.write_all(line.as_bytes()).expect("writing the command");
    s.write_all(b"\n").expect("writing the newline");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("reading the reply");
    out
}

/// The row of `px`/`sv` in `show stat` CSV text (HAProxy's or rolelb's): column name to value.
pub fn stat_row(csv: &str, px: &str, sv: &str) -> Option<HashMap<String, String>> {
    stat_rows(csv).into_iter().find(|row| {
        row.get("pxname").map(String::as_str) == Some(px)
            && row.get("svname").map(String::as_str) == Some(sv)
    })
}

/// Every row of `show stat` CSV text (HAProxy's or rolelb's): column name to value.
pub fn stat_rows(csv: &str) -> Vec<HashMap<String, String>> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .trim_start_matches("# ")
        .split(',')
        .collect();
    lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            header
                .iter()
                .zip(l.split(','))
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}
