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
}

/// What a configuration asks of the listening sockets beyond those already accepting: the
/// addresses bound for it (with their options set), and the kept sockets whose options
/// change, which [`Plan::apply`] sets once every new address was bound.
pub(super) struct Plan {
    fresh: Vec<(SocketAddr, Bound, ListenOptions)>,
    changed: Vec<(SocketAddr, String, ListenOptions)>,
}

/// Binds the addresses of `config`'s enabled frontends that `listeners` does not have yet
/// (one socket per data thread, and a kept descriptor of each); the first that cannot be bound fails the
/// plan, naming its `bind` line, and what was bound so far is closed.
pub(super) fn plan(
    config: &Config,
    listeners: &HashMap<SocketAddr, Accepting>,
    threads: usize,
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
        let options = ListenOptions::of(config, addr);
        if let Some(kept) = listeners.get(&addr) {
            if kept.options != options && !plan.changed.iter().any(|(a, _, _)| *a == addr) {
                plan.changed.push((addr, loc, options));
            }
            continue;
        }
        if plan.fresh.iter().any(|(a, _, _)| *a == addr) {
            continue;
        }
        let bound = bind(addr, threads).map_err(|source| ReloadError::Bind {
            addr,
            loc: loc.clone(),
            source,
        })?;
        listen_options(addr, &loc, options, &bound.kept);
        plan.fresh.push((addr, bound, options));
    }
    Ok(plan)
}

impl Plan {
    /// Sets the changed options on the kept sockets of `listeners`; returns the new sockets
    /// to start accepting on.
    pub(super) fn apply(
        self,
        listeners: &mut HashMap<SocketAddr, Accepting>,
    ) -> Vec<(SocketAddr, Bound, ListenOptions)> {
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

/// Listen backlog of every bound socket (also the Fast Open queue length, as HAProxy takes
/// the listener's backlog for it).
pub(super) const BACKLOG: i32 = 1024;

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
pub(super) fn bind(addr: SocketAddr, threads: usize) -> io::Result<Bound> {
    let threads = threads.max(1);
    let shared = threads > 1;
    if shared {
        // Dropped at once: it only asks the kernel whether the address is free.
        listening_socket(addr, false, false)?;
    }
    let per_thread = (0..threads)
        .map(|_| listening_socket(addr, shared, true))
        .collect::<io::Result<Vec<_>>>()?;
    let kept = per_thread
        .iter()
        .map(TcpListener::try_clone)
        .collect::<io::Result<_>>()?;
    Ok(Bound { per_thread, kept })
}

/// A socket bound at `addr`, listening and non-blocking when `listen`.
fn listening_socket(addr: SocketAddr, reuse_port: bool, listen: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        // `:::PORT` takes IPv4 too, as HAProxy's `v4v6` on most systems.
        let _ = socket.set_only_v6(false);
    }
    socket.bind(&addr.into())?;
    if listen {
        socket.listen(BACKLOG)?;
        socket.set_nonblocking(true)?;
    }
    Ok(socket.into())
}

/// The options of one listening socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct ListenOptions {
    /// `option tcp-smart-accept` in the frontend: delayed ACKs, so the client's first data is
    /// acknowledged together with the answer (accepted connections inherit the mode).
    pub(super) delayed_ack: bool,
    /// `defer-accept` on the bind line.
    pub(super) defer_accept: bool,
    /// `tfo` on the bind line.
    pub(super) fast_open: bool,
}

impl ListenOptions {
    /// What `config` asks of the socket bound at `addr`: the first enabled frontend's bind
    /// line for that address (all off when there is none).
    pub(super) fn of(config: &Config, addr: SocketAddr) -> ListenOptions {
        config
            .frontends
            .iter()
            .filter(|fe| !fe.disabled)
            .find_map(|fe| {
                let bind = fe.binds.iter().find(|b| b.addr == addr)?;
                Some(ListenOptions {
                    delayed_ack: fe.smart_accept,
                    defer_accept: bind.defer_accept,
                    fast_open: bind.tfo,
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
        if self.fast_open {
            if let Err(e) = set_tcp_int(socket, libc::TCP_FASTOPEN, BACKLOG) {
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
    let len =
        libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).map_err(io::Error::other)?;
    // SAFETY: the descriptor is borrowed open for the call; the kernel reads `len` bytes of
    // the `c_int` it points to.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_fd().as_raw_fd(),
            libc::IPPROTO_TCP,
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
        let bound = bind(free_addr(), 2).expect("bind");
        assert_eq!(bound.per_thread.len(), 2);
        assert_eq!(bound.kept.len(), 2);
        let on = ListenOptions {
            delayed_ack: true,
            defer_accept: true,
            fast_open: true,
        };
        assert!(on.apply_all(&bound.kept).is_empty());
        // Seen through the threads' descriptors: the kept ones are the same sockets.
        for socket in &bound.per_thread {
            // The kernel reports the defer delay rounded to its retransmission steps: not 0.
            assert_ne!(get_tcp_int(socket, libc::TCP_DEFER_ACCEPT).ok(), Some(0));
            // The kernel caps the Fast Open queue at `net.core.somaxconn`: on, not 1024.
            assert!(get_tcp_int(socket, libc::TCP_FASTOPEN).is_ok_and(|q| q > 0));
            assert_eq!(SockRef::from(socket).tcp_quickack().ok(), Some(false));
        }
        assert!(ListenOptions::default().apply_all(&bound.kept).is_empty());
        for socket in &bound.per_thread {
            assert_eq!(get_tcp_int(socket, libc::TCP_DEFER_ACCEPT).ok(), Some(0));
            assert_eq!(get_tcp_int(socket, libc::TCP_FASTOPEN).ok(), Some(0));
            assert_eq!(SockRef::from(socket).tcp_quickack().ok(), Some(true));
        }
    }

    #[test]
    fn each_data_thread_gets_its_own_socket_and_one_thread_a_plain_one() {
        let addr = free_addr();
        let bound = bind(addr, 2).expect("bind");
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
        let one = bind(addr, 1).expect("bind again once closed");
        assert_eq!(one.per_thread.len(), 1);
        assert_eq!(
            SockRef::from(&one.per_thread[0]).reuse_port().ok(),
            Some(false)
        );
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
            let e = bind(addr, threads).err().expect("refused");
            assert_eq!(
                e.kind(),
                io::ErrorKind::AddrInUse,
                "{threads} thread(s): {e}"
            );
        }
    }
}
