//! Kernel splicing settings: the proxies' `option splice-request`, `splice-response` and
//! `splice-auto`, and the pipes `global` allows them (`maxpipes`, `nosplice`).

use super::{Config, Global};

/// A proxy's `option splice-request`, `splice-response` and `splice-auto`; a session splices
/// as its frontend's and backend's together allow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Splice {
    /// `option splice-request`: client → server from the first byte.
    pub request: bool,
    /// `option splice-response`: server → client from the first byte.
    pub response: bool,
    /// `option splice-auto`: either direction once it streams fast.
    pub auto: bool,
}

impl Splice {
    /// True when the option splices in some case.
    pub fn any(self) -> bool {
        self.request || self.response || self.auto
    }
}

impl Config {
    /// Pipes splicing may use at once, as HAProxy 2.6 settles `maxpipes`: the configured one;
    /// else none when no proxy has a `splice-*` option (HAProxy's default is then 0); else as
    /// [`Global::maxpipes`]. 0 with `nosplice`.
    pub fn maxpipes(&self) -> usize {
        let splicing = self.frontends.iter().any(|f| f.splice.any())
            || self.backends.iter().any(|b| b.splice.any());
        if self.global.maxpipes.is_none() && !splicing {
            return 0;
        }
        self.global.maxpipes()
    }
}

impl Global {
    /// Pipes splicing may use at once when some proxy splices: `maxpipes`, else a quarter of
    /// `maxconn` as HAProxy (all of it under 4), else no limit of rolelb's own (a pipe that
    /// cannot be made means copying instead); 0 with `nosplice`.
    pub fn maxpipes(&self) -> usize {
        if self.nosplice {
            return 0;
        }
        self.maxpipes.unwrap_or_else(|| {
            self.maxconn.map_or(usize::MAX, |m| {
                let m = m as usize;
                if m >= 4 { m / 4 } else { m }
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{errors, parse};

    const PROXIES: &str = "defaults\n    mode tcp\n    option splice-auto\n\
        frontend fe\n    bind 127.0.0.1:1\n    option splice-request\n    default_backend be\n\
        backend be\n    no option splice-auto\n    option splice-response\n    server a 127.0.0.1:2\n";

    #[test]
    fn splice_options_are_read_per_proxy_with_defaults_and_no() {
        let c = parse(PROXIES).expect("parses");
        let fe = c.frontends[0].splice;
        let be = c.backends[0].splice;
        assert!(fe.auto && fe.request && !fe.response, "{fe:?}");
        assert!(!be.auto && !be.request && be.response, "{be:?}");
    }

    #[test]
    fn maxpipes_defaults_to_a_quarter_of_maxconn_and_nosplice_turns_splicing_off() {
        let global = |g: &str| {
            parse(&format!("global\n{g}\n{PROXIES}"))
                .expect("parses")
                .global
        };
        assert_eq!(global("    maxconn 1000").maxpipes(), 250);
        assert_eq!(global("    maxconn 3").maxpipes(), 3);
        assert_eq!(global("    maxconn 1000\n    maxpipes 7").maxpipes(), 7);
        assert_eq!(global("    maxconn 1000\n    maxpipes 0").maxpipes(), 250);
        assert_eq!(global("    log-tag x").maxpipes(), usize::MAX);
        assert_eq!(global("    maxpipes 7\n    nosplice").maxpipes(), 0);
        // No proxy splices: HAProxy's default is no pipe at all.
        let plain =
            "defaults\n    mode tcp\nlisten l\n    bind 127.0.0.1:1\n    server a 127.0.0.1:2\n";
        let config =
            |g: &str, proxies: &str| parse(&format!("global\n{g}\n{proxies}")).expect("parses");
        assert_eq!(config("    maxconn 1000", plain).maxpipes(), 0);
        assert_eq!(
            config("    maxconn 1000\n    maxpipes 7", plain).maxpipes(),
            7
        );
        assert_eq!(config("    maxconn 1000", PROXIES).maxpipes(), 250);
        let e = errors(&format!("global\n    maxpipes lots\n{PROXIES}"));
        assert!(
            e[0].starts_with("t.cfg:2: ") && e[0].contains("maxpipes"),
            "{e:?}"
        );
    }
}
