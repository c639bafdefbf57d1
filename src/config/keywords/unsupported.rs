//! Keywords rolelb knows but refuses, each with what to do instead: HAProxy features that make
//! no sense for a TCP database balancer. Keeping them here gives users a clear answer instead
//! of "unknown keyword".

/// A refused keyword and why.
pub struct Refused {
    /// The keyword.
    pub name: &'static str,
    /// The explanation that follows `'NAME' `.
    pub why: &'static str,
}

const fn no(name: &'static str, why: &'static str) -> Refused {
    Refused { name, why }
}

/// Why an ACL-driven keyword is refused outside a stats listener.
pub const TCP_ONLY: &str =
    "is not supported: rolelb is a TCP balancer; use an unconditional use_backend/default_backend";
const HTTP_ONLY: &str = "only applies to HTTP and is not supported: rolelb is a TCP balancer";

/// HAProxy proxy keywords refused in proxies.
pub const PROXY_REFUSED: &[Refused] = &[
    no("tcp-response", TCP_ONLY),
    no("http-request", TCP_ONLY),
    no("http-response", TCP_ONLY),
    no("http-after-response", TCP_ONLY),
    no("use-server", TCP_ONLY),
    no(
        "persist",
        "is not supported: use 'balance source' for client affinity",
    ),
    no("force-persist", TCP_ONLY),
    no("ignore-persist", TCP_ONLY),
    no("cookie", HTTP_ONLY),
    no("redirect", HTTP_ONLY),
    no("capture", HTTP_ONLY),
    no("compression", HTTP_ONLY),
    no("unique-id-format", HTTP_ONLY),
    no("unique-id-header", HTTP_ONLY),
    no("http-reuse", HTTP_ONLY),
    no("http-send-name-header", HTTP_ONLY),
    no("monitor-uri", HTTP_ONLY),
    no("monitor", HTTP_ONLY),
    no("filter", "is not supported by rolelb"),
    no("dispatch", "is not supported: declare a 'server'"),
    no("transparent", "is not supported: declare a 'server'"),
    no("hash-balance-factor", "is not supported by rolelb"),
    no(
        "email-alert",
        "is not supported: watch rolelb's metrics or logs instead",
    ),
    no(
        "load-server-state-from-file",
        "is not supported: server states live in memory and survive reloads",
    ),
    no(
        "server-state-file-name",
        "is not supported: server states live in memory and survive reloads",
    ),
    no("declare", HTTP_ONLY),
    no("http-error", HTTP_ONLY),
    no(
        "contimeout",
        "was removed from HAProxy 2.1: use 'timeout connect'",
    ),
    no(
        "clitimeout",
        "was removed from HAProxy 2.1: use 'timeout client'",
    ),
    no(
        "srvtimeout",
        "was removed from HAProxy 2.1: use 'timeout server'",
    ),
    no("bind-process", "was removed from HAProxy 2.5: delete it"),
    no(
        "redispatch",
        "is not supported anymore since HAProxy 2.1: use 'option redispatch'",
    ),
    no(
        "redisp",
        "is not supported anymore since HAProxy 2.1: use 'option redispatch'",
    ),
];

/// HAProxy global keywords refused in `global`.
pub const GLOBAL_REFUSED: &[Refused] = &[
    no("nbproc", "was removed from HAProxy 2.5: use 'nbthread'"),
    no("lua-load", "is not supported: rolelb has no Lua"),
    no("lua-prepend-path", "is not supported: rolelb has no Lua"),
    no(
        "server-state-file",
        "is not supported: server states live in memory and survive reloads",
    ),
    no(
        "server-state-base",
        "is not supported: server states live in memory and survive reloads",
    ),
    no(
        "setenv",
        "is not supported: set environment variables before starting rolelb",
    ),
    no(
        "presetenv",
        "is not supported: set environment variables before starting rolelb",
    ),
    no(
        "resetenv",
        "is not supported: set environment variables before starting rolelb",
    ),
    no(
        "unsetenv",
        "is not supported: set environment variables before starting rolelb",
    ),
    no(
        "tune.chksize",
        "is not supported any more (tune.bufsize is used instead)",
    ),
    no(
        "tune.fd.edge-triggered",
        "is an experimental HAProxy poller setting with no meaning for rolelb; remove it",
    ),
];

/// HAProxy section keywords refused (the section's lines are skipped).
pub const SECTION_REFUSED: &[Refused] = &[
    no(
        "peers",
        "sections are not supported: rolelb's stick tables are local to each process",
    ),
    no(
        "mailers",
        "sections are not supported: watch rolelb's metrics or logs instead",
    ),
    no(
        "program",
        "sections are not supported: run helper programs under your supervisor",
    ),
    no(
        "http-errors",
        "sections only apply to HTTP and are not supported",
    ),
    no("cache", "sections only apply to HTTP and are not supported"),
    no(
        "fcgi-app",
        "sections only apply to HTTP and are not supported",
    ),
    no(
        "ring",
        "sections are not supported: log to stderr, stdout or syslog",
    ),
    no("log-forward", "sections are not supported"),
    no(
        "crt-store",
        "sections are not supported: rolelb does not terminate TLS",
    ),
    no("traces", "sections are not supported"),
];

/// Finds `name` in a refused list.
pub fn find(list: &'static [Refused], name: &str) -> Option<&'static Refused> {
    list.iter().find(|r| r.name == name)
}
