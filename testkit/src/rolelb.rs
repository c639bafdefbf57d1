//! [`Rolelb`]: this build's rolelb running a test's config, reloaded, signalled and stopped by
//! the test, with its stderr (its log) captured to a file; [`rolelb_bin`] finds the binary.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::net::wait_until;
use crate::process::require_bin;
use crate::proxy::{ProxyRun, check_config};

/// The rolelb binary built for this test run.
///
/// cargo-nextest names it (`NEXTEST_BIN_EXE_rolelb`) for the root package's tests. Under
/// `cargo test` it is `rolelb` in the target directory the running test was built into
/// (`target/debug/deps/TEST` beside `target/debug/rolelb`): cargo builds a package's binaries
/// before it runs that package's integration tests. A crate whose tests do not build rolelb
/// may name one in `$ROLELB_BIN`.
pub fn rolelb_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("NEXTEST_BIN_EXE_rolelb") {
        return require_bin(path);
    }
    let beside_tests = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("rolelb")))
        .filter(|path| path.is_file());
    match (beside_tests, std::env::var_os("ROLELB_BIN")) {
        (Some(path), _) => path,
        (None, Some(path)) => require_bin(path),
        (None, None) => panic!(
            "no rolelb binary beside this test's target directory: build it (cargo build) or set ROLELB_BIN"
        ),
    }
}

/// rolelb (`rolelb -f FILE`) running a test's config, with stderr captured to a file.
pub struct Rolelb {
    run: ProxyRun,
}

impl Rolelb {
    /// Starts this build's rolelb on `cfg_text` and waits until every `bind` port listens.
    pub fn start(cfg_text: &str) -> Rolelb {
        Rolelb::start_bin(&rolelb_bin(), cfg_text)
    }

    /// Like [`Rolelb::start`] with another rolelb binary.
    pub fn start_bin(bin: &Path, cfg_text: &str) -> Rolelb {
        Rolelb {
            run: ProxyRun::start("rolelb", bin, &[], cfg_text),
        }
    }

    /// Runs rolelb on `cfg_text` expecting it to refuse to start (e.g. an address it cannot
    /// bind): whether it exited successfully, and its stderr. Panics if it is still running
    /// after 10 s (it started when it should not have).
    pub fn start_refused(cfg_text: &str) -> (bool, String) {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("lb.cfg");
        fs::write(&file, cfg_text).expect("writing the config");
        let mut child = std::process::Command::new(rolelb_bin())
            .arg("-f")
            .arg(&file)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("starting rolelb");
        let mut status = None;
        let ended = wait_until(Duration::from_secs(10), || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        if !ended {
            let _ = child.kill();
            let _ = child.wait();
            panic!("rolelb started (it should have refused to):\n{cfg_text}");
        }
        let mut err = String::new();
        if let Some(mut s) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut s, &mut err);
        }
        (status.is_some_and(|s| s.success()), err)
    }

    /// `rolelb -c -f` on `cfg_text`: (valid, output).
    pub fn check(cfg_text: &str) -> (bool, String) {
        check_config(&rolelb_bin(), cfg_text)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.run.proc.pid()
    }

    /// The config file rolelb was started with.
    pub fn config_path(&self) -> &Path {
        &self.run.cfg
    }

    /// Replaces the config file's contents (atomically, by rename); follow with [`Rolelb::reload`].
    pub fn rewrite_config(&self, cfg_text: &str) {
        let tmp = self.run.dir.path().join("proxy.cfg.new");
        fs::write(&tmp, cfg_text).expect("writing the new config");
        fs::rename(&tmp, &self.run.cfg).expect("replacing the config");
    }

    /// Sends SIGHUP: reload the config in place.
    pub fn reload(&self) {
        self.run.proc.signal(Signal::SIGHUP);
    }

    /// Sends `sig` to rolelb.
    pub fn signal(&self, sig: Signal) {
        self.run.proc.signal(sig);
    }

    /// The exit status if rolelb has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.run.proc.exited()
    }

    /// Stops rolelb (SIGTERM, 3 s grace, then SIGKILL) and returns how it exited.
    pub fn stop(&mut self) -> ExitStatus {
        self.run.proc.stop()
    }

    /// Everything rolelb wrote to stderr so far (its log).
    pub fn stderr_text(&self) -> String {
        self.run.stderr_text()
    }

    /// Waits until rolelb's stderr contains `needle`; false if `timeout` passes first.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        self.wait_for_log_since(0, needle, timeout)
    }

    /// Where the log ends now: a mark for [`Rolelb::wait_for_log_since`].
    pub fn log_mark(&self) -> usize {
        self.stderr_text().len()
    }

    /// Like [`Rolelb::wait_for_log`], looking only at what was logged after `mark`.
    pub fn wait_for_log_since(&self, mark: usize, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || {
            self.stderr_text()
                .get(mark..)
                .is_some_and(|text| text.contains(needle))
        })
    }
}
