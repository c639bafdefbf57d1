//! The listening sockets: an address bound for the data threads ([`bind`]: one socket per
//! data thread, with `SO_REUSEPORT`, or one socket with `nbthread 1`), what a new
//! configuration asks of them ([`plan`]: the addresses to bind, the kept sockets
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
/// (one socket per data thread, and a kept descriptor of each); the first that cannot be bound fails the
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

/// The addresses where an accept loop has ended on its own (it could not watch its socket,
/// or it failed): its socket, held open by the kept descriptor alone, still takes its share
/// of the clients (the kernel spreads them over the sockets of an address) and nobody would
/// accept them, so the caller closes the address (and the next swap binds it again).
pub(super) fn dead(listeners: &HashMap<SocketAddr, Accepting>) -> Vec<SocketAddr> {
    listeners
        .iter()
        .filter(|(_, a)| !a.stop.is_cancelled() && a.tasks.iter().any(|t| t.is_finished()))
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

/// A bound address: one socket per data thread for the accept loops, and a descriptor of each
/// kept by the control task to set options on at a reload.
pub(super) struct Bound {
    pub(super) per_thread: Vec<TcpListener>,
    pub(super) kept: Vec<TcpListener>,
}

/// Binds `addr`: one listening socket per data thread (`threads` > 1), each taking the
/// clients the kernel gives it, so that a new client wakes one thread and not all of them; or
/// one socket without data threads.
///
/// The sockets of one address share it with `SO_REUSEPORT`, which would also let another
/// program of the same user bind the address beside rolelb, or rolelb bind beside it, and
/// take a share of its clients. So the address is first bound alone, without
/// `SO_REUSEPORT`: when something already listens there (an HAProxy not yet stopped, a
/// second rolelb), the bind fails with "address in use" as it does with one socket.
pub(super) fn bind(
    addr: SocketAddr,
    threads: usize,
    prebind: &Prebind,
    loc: &str,
) -> io::Result<Bound> {
    let threads = threads.max(1);
    let shared = threads > 1;
    if shared {
        // Dropped at once: it only asks the kernel whether the address is free.
        listening_socket(addr, false, false, prebind, loc)?;
    }
    let per_thread = (0..threads)
        .map(|_| listening_socket(addr, shared, true, prebind, loc))
        .collect::<io::Result<Vec<_>>>()?;
    let kept = per_thread
        .iter()
        .map(TcpListener::try_clone)
        .collect::<io::Result<_>>()?;
    Ok(Bound { per_thread, kept })
}

/// A socket bound at `addr` with the `prebind` options of its `bind` line (at `loc`),
/// listening and non-blocking when `listen`.
fn listening_socket(
    addr: SocketAddr,
    reuse_port: bool,
    listen: bool,
    prebind: &Prebind,
    loc: &str,
) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
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
    if listen {
        socket.listen(DEFAULT_BACKLOG)?;
        socket.set_nonblocking(true)?;
    }
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
        config
            .frontends
            .iter()
            .filter(|fe| !fe.disabled)
            .find_map(|fe| fe.binds.iter().find(|b| b.addr == addr))
            .map(|b| {
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
        config
            .frontends
            .iter()
            .filter(|fe| !fe.disabled)
            .find_map(|fe| {
                let bind = fe.binds.iter().find(|b| b.addr == addr)?;
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
                Some(ListenOptions {
                    delayed_ack: fe.smart_accept,
                    defer_accept: bind.defer_accept,
                    fast_open: bind.tfo,
                    backlog,
                    mss: bind.socket.mss.filter(|&m| m > 0).unwrap_or(0),
                    user_timeout_ms: bind.socket.tcp_ut.map_or(0, millis),
                })
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
    fn options_are_set_and_undone_on_every_socket_of_an_address() {
        let bound = bind(free_addr(), 2, &Prebind::default(), "t.cfg:1").expect("bind");
        assert_eq!(bound.per_thread.len(), 2);
        assert_eq!(bound.kept.len(), 2);
        let on = ListenOptions {
            delayed_ack: true,
            defer_accept: true,
            fast_open: true,
            backlog: 77,
            mss: 1200,
            user_timeout_ms: 1500,
        };
        assert!(on.apply_all(&bound.kept).is_empty());
        // Seen through the threads' descriptors: the kept ones are the same sockets.
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
    fn each_data_thread_gets_its_own_socket_and_one_thread_a_plain_one() {
        let addr = free_addr();
        let bound = bind(addr, 2, &Prebind::default(), "t.cfg:1").expect("bind");
        let [a, b] = &bound.per_thread[..] else {
            panic!("two sockets")
        };
        assert_ne!(a.as_raw_fd(), b.as_raw_fd());
        for socket in &bound.per_thread {
            assert_eq!(socket.local_addr().ok(), Some(addr));
            assert_eq!(SockRef::from(socket).reuse_port().ok(), Some(true));
        }
        // A client reaches one of them: the kernel picks.
        let _client = std::net::TcpStream::connect(addr).expect("connect");
        let accepted = (0..200).find_map(|_| {
            let got = bound.per_thread.iter().find_map(|l| l.accept().ok());
            if got.is_none() {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            got
        });
        assert!(accepted.is_some(), "neither socket got the client");
        drop(bound);
        let one = bind(addr, 1, &Prebind::default(), "t.cfg:1").expect("bind again once closed");
        assert_eq!(one.per_thread.len(), 1);
        assert_eq!(
            SockRef::from(&one.per_thread[0]).reuse_port().ok(),
            Some(false)
        );
    }

    #[test]
    fn a_withdrawn_socket_leaves_its_address_to_the_others_though_still_open() {
        let addr = free_addr();
        let bound = bind(addr, 2, &Prebind::default(), "t.cfg:1").expect("bind");
        for l in &bound.per_thread {
            l.set_nonblocking(true).expect("non-blocking");
        }
        // `kept` still holds both sockets open, as the control task does.
        crate::proxy::listener::withdraw(&bound.per_thread[0], addr);
        let clients: Vec<std::net::TcpStream> = (0..20)
            .map(|_| std::net::TcpStream::connect(addr).expect("connect"))
            .collect();
        let mut on_the_other = 0;
        for _ in 0..200 {
            while bound.per_thread[1].accept().is_ok() {
                on_the_other += 1;
            }
            if on_the_other == clients.len() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(
            on_the_other,
            clients.len(),
            "every client reached the other socket"
        );
        assert!(bound.per_thread[0].accept().is_err());
    }

    #[test]
    fn an_address_another_program_listens_on_is_refused_even_with_reuse_port() {
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
