//! [`Dnsmasq`]: Debian's dnsmasq as the DNS server of DNS tests, on an ephemeral port of
//! 127.0.0.1, answering only from a hosts file the test rewrites ([`Dnsmasq::set_hosts`]:
//! the file is replaced and dnsmasq re-reads it on `SIGHUP`). No upstream, no system hosts
//! file. Stopped by PID when dropped, or at once with [`Dnsmasq::stop`] ("DNS down").

use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;
use tempfile::TempDir;

use crate::net::{free_port, wait_port};
use crate::process::{Proc, command, require_bin};

/// Where Debian's `dnsmasq-base` puts it.
pub const DNSMASQ_BIN: &str = "/usr/sbin/dnsmasq";

/// A running dnsmasq answering from a hosts file.
pub struct Dnsmasq {
    proc: Proc,
    hosts: PathBuf,
    port: u16,
    dir: TempDir,
}

impl Dnsmasq {
    /// Starts dnsmasq answering `hosts` (lines `IP NAME`) on 127.0.0.1, UDP and TCP.
    pub fn start(hosts: &str) -> Dnsmasq {
        Dnsmasq::start_with(hosts, &[])
    }

    /// Like [`Dnsmasq::start`], with more options (such as `--srv-host=...`).
    pub fn start_with(hosts: &str, options: &[String]) -> Dnsmasq {
        let dir = tempfile::Builder::new()
            .prefix("dnsmasq")
            .tempdir()
            .expect("creating a temporary directory");
        let path = dir.path().join("hosts");
        fs::write(&path, hosts).expect("writing the hosts file");
        let port = free_port();
        let proc = spawn(&dir, port, options);
        Dnsmasq {
            proc,
            hosts: path,
            port,
            dir,
        }
    }

    /// Stops it and starts it again on the same port and hosts file with `options` (what
    /// dnsmasq does not re-read on `SIGHUP`, such as `--srv-host`).
    pub fn restart_with(&mut self, options: &[String]) {
        self.proc.stop();
        self.proc = spawn(&self.dir, self.port, options);
    }

    /// The port it answers on (UDP and TCP, 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Replaces the hosts file and makes dnsmasq re-read it.
    pub fn set_hosts(&self, hosts: &str) {
        let tmp = self.hosts.with_extension("new");
        fs::write(&tmp, hosts).expect("writing the hosts file");
        fs::rename(&tmp, &self.hosts).expect("replacing the hosts file");
        self.proc.signal(Signal::SIGHUP);
    }

    /// Stops it now (the name server goes away).
    pub fn stop(&mut self) {
        self.proc.stop();
    }
}

fn spawn(dir: &TempDir, port: u16, options: &[String]) -> Proc {
    let bin = require_bin(DNSMASQ_BIN);
    let hosts = dir.path().join("hosts");
    let mut cmd = command(&bin, false, dir.path());
    cmd.args([
        "--no-daemon",
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--pid-file",
        "--user=root",
        "--group=root",
        &format!("--port={port}"),
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        "--no-resolv",
        "--no-hosts",
        "--no-negcache",
        "--local-ttl=0",
        "--log-queries",
        &format!("--addn-hosts={}", hosts.display()),
    ]);
    cmd.args(options);
    let mut proc = Proc::spawn(
        "dnsmasq",
        &mut cmd,
        &dir.path().join("log"),
        Signal::SIGTERM,
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    proc.wait_ready("dnsmasq", || wait_port(addr, Duration::from_millis(200)));
    proc
}
