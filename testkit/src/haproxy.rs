//! [`Haproxy`]: Debian's HAProxy 2.6, the reference rolelb is compared against, running a
//! test's config (`haproxy -db -f FILE`).

use crate::process::require_bin;
use crate::proxy::{ProxyRun, check_config};

/// Debian's HAProxy (2.6), the reference rolelb is compared against.
pub const HAPROXY_BIN: &str = "/usr/sbin/haproxy";

/// HAProxy (`haproxy -db -f FILE`), the reference implementation, running a test's config.
pub struct Haproxy {
    run: ProxyRun,
}

impl Haproxy {
    /// Starts HAProxy on `cfg_text` and waits until every `bind` port listens.
    pub fn start(cfg_text: &str) -> Haproxy {
        let bin = require_bin(HAPROXY_BIN);
        Haproxy {
            run: ProxyRun::start("haproxy", &bin, &["-db"], cfg_text),
        }
    }

    /// `haproxy -c -f` on `cfg_text`: (valid, output).
    pub fn check(cfg_text: &str) -> (bool, String) {
        check_config(&require_bin(HAPROXY_BIN), cfg_text)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.run.proc.pid()
    }

    /// Everything HAProxy wrote to stderr so far (its log with `log stderr`).
    pub fn stderr_text(&self) -> String {
        self.run.stderr_text()
    }

    /// The first check result HAProxy logged (`option log-health-checks`) on a line that
    /// starts with `prefix` (e.g. `Health check for server l/s1 `), waiting up to 15 s:
    /// its `reason:` text up to the first comma, and the whole line. Panics with HAProxy's
    /// log when none came.
    pub fn check_reason(&self, prefix: &str) -> (String, String) {
        let mut found = None;
        let logged = crate::wait_until(std::time::Duration::from_secs(15), || {
            found = self
                .stderr_text()
                .lines()
                .find(|l| l.starts_with(prefix))
                .map(str::to_string);
            found.is_some()
        });
        assert!(
            logged,
            "HAProxy logged no check result:\n{}",
            self.stderr_text()
        );
        let line = found.unwrap_or_default();
        let reason = line
            .split("reason: ")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .unwrap_or("")
            .to_string();
        (reason, line)
    }
}
