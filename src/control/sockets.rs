//! The listening sockets: an address bound once and shared by the data threads ([`bind`]),
//! what a new configuration asks of them ([`plan`]: the addresses to bind, the kept sockets
//! whose options change) and the socket options themselves — `option tcp-smart-accept`
//! (`TCP_QUICKACK`), `bind ... defer-accept` (`TCP_DEFER_ACCEPT`) and `bind ... tfo`
//! (`TCP_FASTOPEN`). As HAProxy 2.6 does when it binds, each option is set or explicitly
//! unset; a reload that changes them sets them again on a kept socket, once every new address
//! was bound, so a refused reload changes nothing.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, AsRawFd};

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio_util::sync::CancellationToken;

use super::ReloadError;
use crate::config::Config;
use crate::config::model::{Bind, Frontend};

/// A listening socket's accept loops, one per data thread: cancelling `stop` makes them
/// return, which closes the socket.
pub(super) struct Accepting {
    pub(super) stop: CancellationToken,
    pub(super) tasks: Vec<tokio::task::JoinHandle<()>>,
    /// A descriptor of each of the address's sockets for the control task: their options
    /// are set again when a reload changes them. Closed with the loops' descriptors when the
    /// address is removed.
    pub(super) kept: Vec<TcpListener>,
    /// The options set on it.
    pub(super) options: ListenOptions,
    /// The options it was bound with, which only a new socket can change.
    pub(super) prebind: Prebind,
}

/// What a configuration asks of the listening sockets beyond those already accepting: the
/// addresses bound for it (with their options set), and the kept sockets whose options
/// change, which [`Plan::apply`] sets once every new address was bound.
pub(super) struct Plan {
    fresh: Vec<(SocketAddr, Bound, ListenOptions, Prebind)>,
    changed: Vec<(SocketAddr, String, ListenOptions)>,
}

/// Binds the addresses of `config`'s enabled frontends that `listeners` does not have yet
/// (`threads` descriptors each, plus the kept one); the first that cannot be bound fails the
/// plan, naming its `bind` line, and what was bound so far is closed.
pub(super) fn plan(
    config: &Config,
    listeners: &HashMap<SocketAddr, Accepting>,
    threads: usize,
    global_maxconn: u32,
) -> Result<Plan, ReloadError> {
    let mut plan = Plan {
        fresh: Vec::new(),
        changed: Vec::new(),
    };
    let binds = config
        .frontends
        .iter()
        .filter(|f| !f.disabled)
        .flat_map(|fe| fe.binds.iter());
    for b in binds {
        let (addr, loc) = (b.addr, b.loc.to_string());
        let options = ListenOptions::of(config, addr, global_maxconn);
        let prebind = Prebind::of(config, addr);
        if let Some(kept) = listeners.get(&addr) {
            if kept.prebind != prebind {
                return Err(ReloadError::Rebind {
                    addr,
                    loc,
                    was: kept.prebind.to_string(),
                    now: prebind.to_string(),
                });
            }
            if kept.options != options && !plan.changed.iter().any(|(a, _, _)| *a == addr) {
                plan.changed.push((addr, loc, options));
            }
            continue;
        }
        if plan.fresh.iter().any(|(a, ..)| *a == addr) {
            continue;
        }
        let bound = bind(addr, threads, &prebind, &loc).map_err(|source| ReloadError::Bind {
            addr,
            loc: loc.clone(),
            source,
        })?;
        listen_options(addr, &loc, options, &bound.kept);
        plan.fresh.push((addr, bound, options, prebind));
    }
    Ok(plan)
}

impl Plan {
    /// Sets the changed options on the kept sockets of `listeners`; returns the new sockets
    /// to start accepting on.
    pub(super) fn apply(
        self,
        listeners: &mut HashMap<SocketAddr, Accepting>,
    ) -> Vec<(SocketAddr, Bound, ListenOptions, Prebind)> {
        for (addr, loc, options) in self.changed {
            if let Some(kept) = listeners.get_mut(&addr) {
                listen_options(addr, &loc, options, &kept.kept);
                kept.options = options;
            }
        }
        self.fresh
    }
}

/// The addresses whose accept loops have all ended on their own (none could watch the
/// socket, or one failed): held open by the kept descriptor alone, the kernel would complete
/// handshakes nobody accepts, so the caller closes them (and the next swap binds them again).
pub(super) fn dead(listeners: &HashMap<SocketAddr, Accepting>) -> Vec<SocketAddr> {
    listeners
        .iter()
        .filter(|(_, a)| !a.stop.is_cancelled() && a.tasks.iter().all(|t| t.is_finished()))
        .map(|(addr, _)| *addr)
        .collect()
}

/// Sets `options` on the sockets bound at `addr` (its `bind` line at `loc`), warning about
/// each one the system refuses: the address listens all the same, as in HAProxy.
fn listen_options(addr: SocketAddr, loc: &str, options: ListenOptions, sockets: &[TcpListener]) {
    for warning in options.apply_all(sockets) {
        tracing::warn!(%addr, "{loc}: {warning}");
    }
}

/// Listen backlog of a socket whose `bind` line, frontend and `maxconn` set none: HAProxy's
/// 1024. It is also the Fast Open queue length, as HAProxy takes the listener's backlog for
/// it.
const DEFAULT_BACKLOG: i32 = 1024;

/// How long the kernel holds a connection whose client has sent nothing before it is
/// accepted anyway, with `defer-accept`: HAProxy's one second.
const DEFER_ACCEPT_SECS: libc::c_int = 1;

/// A bound address: one descriptor of its socket per data thread for the accept loops, and
/// one kept by the control task to set options on at a reload (a `Vec` of the address's
/// sockets: one).
pub(super) struct Bound {
    pub(super) per_thread: Vec<TcpListener>,
    pub(super) kept: Vec<TcpListener>,
}

/// Binds `addr` (one socket, shared by the data threads as HAProxy 2.6 shares one across
/// its threads: whichever thread is free accepts the next client; `threads` + 1
/// descriptors of it).
///
/// One socket per thread (`SO_REUSEPORT`) was measured and not kept: it wakes one thread per
/// client instead of every waiting one, but gained nothing in `bench/` (connections per
/// second and CPU per connection the same against HAProxy), and a client the kernel gives
/// to a busy thread waits behind that thread's sessions while the other one idles.
pub(super) fn bind(
    addr: SocketAddr,
    threads: usize,
    prebind: &Prebind,
    loc: &str,
) -> io::Result<Bound> {
    let kept = listening_socket(addr, prebind, loc)?;
    let per_thread = (0..threads.max(1))
        .map(|_| kept.try_clone())
        .collect::<io::Result<_>>()?;
    Ok(Bound {
        per_thread,
        kept: vec![kept],
    })
}

/// A socket bound at `addr` with the `prebind` options of its `bind` line (at `loc`),
/// listening and non-blocking.
fn listening_socket(addr: SocketAddr, prebind: &Prebind, loc: &str) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if prebind.transparent {
        make_foreign(&socket, addr)?;
    }
    if let Some(name) = &prebind.interface
        && let Err(e) = socket.bind_device(Some(name.as_bytes()))
    {
        // HAProxy warns and binds all the same (the option needs CAP_NET_RAW).
        tracing::warn!(%addr, "{loc}: cannot bind receiver to device '{name}' ({e})");
    }
    if addr.is_ipv6()
        && let Some(only) = prebind.v6only
    {
        socket.set_only_v6(only)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(DEFAULT_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// `transparent`: lets `socket` bind an address this host does not have, as HAProxy does:
/// `IP_TRANSPARENT` (`IPV6_TRANSPARENT`), which needs `CAP_NET_ADMIN`, else `IP_FREEBIND`,
/// which does not.
fn make_foreign(socket: &Socket, addr: SocketAddr) -> io::Result<()> {
    let done = if addr.is_ipv4() {
        socket.set_ip_transparent_v4(true).is_ok() || socket.set_freebind_v4(true).is_ok()
    } else {
        set_int(socket, libc::IPPROTO_IPV6, libc::IPV6_TRANSPARENT, 1).is_ok()
            || socket.set_freebind_v6(true).is_ok()
    };
    if done {
        Ok(())
    } else {
        Err(io::Error::other(
            "cannot make receiving socket transparent (neither IP_TRANSPARENT nor IP_FREEBIND)",
        ))
    }
}

/// The `bind` line that sets up the socket at `addr`: the first enabled frontend's (and that
/// frontend), as both the options set before binding and those set after are read from it.
fn owner(config: &Config, addr: SocketAddr) -> Option<(&Frontend, &Bind)> {
    config
        .frontends
        .iter()
        .filter(|fe| !fe.disabled)
        .find_map(|fe| Some((fe, fe.binds.iter().find(|b| b.addr == addr)?)))
}

/// What a `bind` line sets before its address is bound: changing it needs a new socket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Prebind {
    transparent: bool,
    v6only: Option<bool>,
    interface: Option<String>,
}

impl Prebind {
    /// What `config`'s first enabled frontend binding `addr` asks for.
    pub(super) fn of(config: &Config, addr: SocketAddr) -> Prebind {
        owner(config, addr)
            .map(|(_, b)| {
                let (transparent, v6only, interface) = b.socket.before_bind();
                Prebind {
                    transparent,
                    v6only,
                    interface: interface.map(str::to_string),
                }
            })
            .unwrap_or_default()
    }
}

impl std::fmt::Display for Prebind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut words = Vec::new();
        if self.transparent {
            words.push("transparent".to_string());
        }
        match self.v6only {
            Some(true) => words.push("v6only".into()),
            Some(false) => words.push("v4v6".into()),
            None => {}
        }
        if let Some(name) = &self.interface {
            words.push(format!("interface {name}"));
        }
        if words.is_empty() {
            f.write_str("none of transparent, v4v6, v6only, interface")
        } else {
            f.write_str(&words.join(" "))
        }
    }
}

/// The options of one listening socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ListenOptions {
    /// `option tcp-smart-accept` in the frontend: delayed ACKs, so the client's first data is
    /// acknowledged together with the answer (accepted connections inherit the mode).
    pub(super) delayed_ack: bool,
    /// `defer-accept` on the bind line.
    pub(super) defer_accept: bool,
    /// `tfo` on the bind line.
    pub(super) fast_open: bool,
    /// The listen backlog: `backlog` on the bind line, else its `maxconn`, else the
    /// frontend's `maxconn`, else
    /// the global one (the kernel caps it at `net.core.somaxconn`), as HAProxy 2.6 computes
    /// it.
    pub(super) backlog: i32,
    /// `mss` on the bind line when positive (`TCP_MAXSEG`), else 0 (the kernel's).
    pub(super) mss: i32,
    /// `tcp-ut` on the bind line, in ms (`TCP_USER_TIMEOUT`, inherited by accepted
    /// connections), else 0.
    pub(super) user_timeout_ms: i32,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            delayed_ack: false,
            defer_accept: false,
            fast_open: false,
            backlog: DEFAULT_BACKLOG,
            mss: 0,
            user_timeout_ms: 0,
        }
    }
}

impl ListenOptions {
    /// What `config` asks of the socket bound at `addr`: the first enabled frontend's bind
    /// line for that address (all off when there is none).
    pub(super) fn of(config: &Config, addr: SocketAddr, global_maxconn: u32) -> ListenOptions {
        owner(config, addr)
            .map(|(fe, bind)| {
                let backlog = bind
                    .socket
                    .backlog
                    .or(fe.backlog)
                    .or(bind.maxconn)
                    .or(fe.maxconn.filter(|&m| m > 0))
                    .or(config.global.maxconn)
                    .unwrap_or(global_maxconn);
                let backlog = match backlog {
                    0 => DEFAULT_BACKLOG,
                    n => i32::try_from(n).unwrap_or(i32::MAX),
                };
                let millis =
                    |d: std::time::Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX);
                ListenOptions {
                    delayed_ack: fe.smart_accept,
                    defer_accept: bind.defer_accept,
                    fast_open: bind.tfo,
                    backlog,
                    mss: bind.socket.mss.filter(|&m| m > 0).unwrap_or(0),
                    user_timeout_ms: bind.socket.tcp_ut.map_or(0, millis),
                }
            })
            .unwrap_or_default()
    }

    /// Sets each option on every socket of an address, or unsets it; a refusal the sockets
    /// share is returned once.
    fn apply_all(self, sockets: &[TcpListener]) -> Vec<String> {
        let mut warnings: Vec<String> = Vec::new();
        for warning in sockets.iter().flat_map(|s| self.apply(s)) {
            if !warnings.contains(&warning) {
                warnings.push(warning);
            }
        }
        warnings
    }

    /// Sets each option on `socket`, or unsets it. A refusal does not stop the others; it is
    /// returned as a warning naming the option (HAProxy warns and listens all the same).
    pub(super) fn apply(self, socket: &impl AsFd) -> Vec<String> {
        let mut warnings = Vec::new();
        let sock = SockRef::from(socket);
        if let Err(e) = sock.set_tcp_quickack(!self.delayed_ack) {
            warnings.push(format!(
                "cannot {} delayed ACKs (option tcp-smart-accept): {e}",
                if self.delayed_ack {
                    "enable"
                } else {
                    "disable"
                }
            ));
        }
        let defer = if self.defer_accept {
            DEFER_ACCEPT_SECS
        } else {
            0
        };
        if let Err(e) = set_tcp_int(socket, libc::TCP_DEFER_ACCEPT, defer)
            && self.defer_accept
        {
            warnings.push(format!(
                "cannot enable TCP_DEFER_ACCEPT (defer-accept): {e}"
            ));
        }
        if let Err(e) = SockRef::from(socket).listen(self.backlog) {
            warnings.push(format!(
                "cannot set the listen backlog to {}: {e}",
                self.backlog
            ));
        }
        // As HAProxy: set when asked, else back to the kernel's (0 clears both).
        if let Err(e) = set_tcp_int(socket, libc::TCP_MAXSEG, self.mss)
            && self.mss > 0
        {
            warnings.push(format!("cannot set MSS to {} (mss): {e}", self.mss));
        }
        if let Err(e) = set_tcp_int(socket, libc::TCP_USER_TIMEOUT, self.user_timeout_ms)
            && self.user_timeout_ms > 0
        {
            warnings.push(format!("cannot set TCP User Timeout (tcp-ut): {e}"));
        }
        if self.fast_open {
            if let Err(e) = set_tcp_int(socket, libc::TCP_FASTOPEN, self.backlog) {
                warnings.push(format!("cannot enable TCP_FASTOPEN (tfo): {e}"));
            }
        } else if get_tcp_int(socket, libc::TCP_FASTOPEN).is_ok_and(|q| q != 0) {
            // Only turned off where it was on: setting 0 would make the kernel allocate a
            // Fast Open queue (as HAProxy notes).
            if let Err(e) = set_tcp_int(socket, libc::TCP_FASTOPEN, 0) {
                warnings.push(format!("cannot disable TCP_FASTOPEN: {e}"));
            }
        }
        warnings
    }
}

/// `setsockopt(IPPROTO_TCP, opt, value)` for an integer option socket2 does not offer.
fn set_tcp_int(socket: &impl AsFd, opt: libc::c_int, value: libc::c_int) -> io::Result<()> {
    set_int(socket, libc::IPPROTO_TCP, opt, value)
}

/// `setsockopt(level, opt, value)` for an integer option.
fn set_int(
    socket: &impl AsFd,
    level: libc::c_int,
    opt: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    let len =
        libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).map_err(io::Error::other)?;
    // SAFETY: the descriptor is borrowed open for the call; the kernel reads `len` bytes of
    // the `c_int` it points to.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_fd().as_raw_fd(),
            level,
            opt,
            std::ptr::from_ref(&value).cast(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `getsockopt(IPPROTO_TCP, opt)` for an integer option.
fn get_tcp_int(socket: &impl AsFd, opt: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len =
        libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).map_err(io::Error::other)?;
    // SAFETY: the descriptor is borrowed open for the call; the kernel writes at most `len`
    // bytes into `value` and the length it wrote into `len`.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_fd().as_raw_fd(),
            libc::IPPROTO_TCP,
            opt,
            std::ptr::from_mut(&mut value).cast(),
            &raw mut len,
        )
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port nothing listens on now.
    fn free_addr() -> SocketAddr {
        let probe = TcpListener::bind("127.0.0.1:0").expect("an ephemeral port");
        probe.local_addr().expect("its address")
    }

    #[test]
    fn options_are_set_and_undone_on_a_kept_socket() {
        let bound = bind(free_addr(), 2, &Prebind::default(), "t.cfg:1").expect("bind");
        assert_eq!(bound.per_thread.len(), 2);
        let on = ListenOptions {
            delayed_ack: true,
            defer_accept: true,
            fast_open: true,
            backlog: 77,
            mss: 1200,
            user_timeout_ms: 1500,
        };
        assert!(on.apply_all(&bound.kept).is_empty());
        // Seen through the threads' descriptors: the same socket as the kept one.
        for socket in &bound.per_thread {
            // The kernel reports the defer delay rounded to its retransmission steps: not 0.
            assert_ne!(get_tcp_int(socket, libc::TCP_DEFER_ACCEPT).ok(), Some(0));
            // The kernel caps the Fast Open queue at `net.core.somaxconn`: on, not 1024.
            assert!(get_tcp_int(socket, libc::TCP_FASTOPEN).is_ok_and(|q| q > 0));
            assert_eq!(SockRef::from(socket).tcp_quickack().ok(), Some(false));
            assert_eq!(get_tcp_int(socket, libc::TCP_MAXSEG).ok(), Some(1200));
            assert_eq!(get_tcp_int(socket, libc::TCP_USER_TIMEOUT).ok(), Some(1500));
        }
        assert!(ListenOptions::default().apply_all(&bound.kept).is_empty());
        for socket in &bound.per_thread {
            assert_eq!(get_tcp_int(socket, libc::TCP_DEFER_ACCEPT).ok(), Some(0));
            assert_eq!(get_tcp_int(socket, libc::TCP_FASTOPEN).ok(), Some(0));
            assert_eq!(SockRef::from(socket).tcp_quickack().ok(), Some(true));
            assert_eq!(get_tcp_int(socket, libc::TCP_USER_TIMEOUT).ok(), Some(0));
        }
    }

    #[test]
    fn one_socket_serves_every_data_thread() {
        let addr = free_addr();
        let bound = bind(addr, 2, &Prebind::default(), "t.cfg:1").expect("bind");
        assert_eq!((bound.per_thread.len(), bound.kept.len()), (2, 1));
        let inode = |l: &TcpListener| {
            std::fs::metadata(format!("/proc/self/fd/{}", l.as_raw_fd()))
                .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
                .expect("the descriptor's inode")
        };
        let first = inode(&bound.kept[0]);
        assert!(bound.per_thread.iter().all(|l| inode(l) == first));
        assert_eq!(SockRef::from(&bound.kept[0]).reuse_port().ok(), Some(false));
    }

    #[test]
    fn an_address_another_program_listens_on_is_refused() {
        // What an HAProxy (SO_REUSEPORT by default) left running would hold.
        let addr = free_addr();
        let other = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
        other.set_reuse_address(true).expect("SO_REUSEADDR");
        other.set_reuse_port(true).expect("SO_REUSEPORT");
        other.bind(&addr.into()).expect("bind");
        other.listen(16).expect("listen");
        for threads in [1, 2] {
            let e = bind(addr, threads, &Prebind::default(), "t.cfg:1")
                .err()
                .expect("refused");
            assert_eq!(
                e.kind(),
                io::ErrorKind::AddrInUse,
                "{threads} thread(s): {e}"
            );
        }
    }
}
