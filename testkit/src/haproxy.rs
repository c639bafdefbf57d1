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
}
