//! Config text for the balancing scenarios: one TCP listener in front of a list of servers,
//! written once and run unchanged by rolelb and by HAProxy (only the bind port differs).

use std::fmt::Write as _;
use std::net::SocketAddr;

/// One `server` line: name, address, extra options (`weight 3 backup` ...).
pub struct Srv<'a> {
    /// Server name.
    pub name: &'a str,
    /// Traffic address.
    pub addr: SocketAddr,
    /// Options after the address.
    pub opts: &'a str,
}

impl<'a> Srv<'a> {
    /// A server line for `server` (its name and address) with `opts`.
    pub fn of(server: &'a crate::NamedServer, opts: &'a str) -> Srv<'a> {
        Srv {
            name: server.name(),
            addr: server.addr(),
            opts,
        }
    }
}

/// A `global` + `defaults` + one `listen lb` on `127.0.0.1:port` with `balance_lines` (e.g.
/// `balance roundrobin`, possibly several lines) and the servers.
pub fn listen(port: u16, balance_lines: &str, servers: &[Srv<'_>]) -> String {
    let mut cfg = String::from(
        "global\n    maxconn 4096\n\ndefaults\n    mode tcp\n    timeout connect 2s\n    \
         timeout client 30s\n    timeout server 30s\n    timeout queue 10s\n\n",
    );
    let _ = writeln!(cfg, "listen lb\n    bind 127.0.0.1:{port}");
    for line in balance_lines.lines() {
        let _ = writeln!(cfg, "    {}", line.trim());
    }
    for s in servers {
        let _ = writeln!(cfg, "    server {} {} {}", s.name, s.addr, s.opts);
    }
    cfg
}

/// `127.0.0.1:port`.
pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}
