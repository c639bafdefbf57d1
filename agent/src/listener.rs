//! The accept loop both servers share: accept, take a slot from a semaphore (so at most
//! `max_connections` are served at once and the rest wait in the kernel's backlog), and hand
//! the connection to the server's handler on its own task. [`bind`] opens the listening
//! socket with a backlog deep enough for a burst of health checks.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;

/// Pending connections the kernel may queue (it caps this at `net.core.somaxconn`). tokio's
/// default of 128 overflows when a few hundred checkers connect at once, and an overflow
/// costs the client a one-second SYN retransmit.
const BACKLOG: u32 = 4096;

/// Listens on `addr` (with `SO_REUSEADDR`, so a restarted agent rebinds at once).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Accepts on `listener` forever, running `handle` for each connection on its own task.
pub async fn serve<F, Fut>(
    listener: TcpListener,
    max_connections: usize,
    name: &'static str,
    handle: F,
) where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        // The semaphore is never closed, so acquiring only waits.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, _peer)) => {
                let conn = handle(stream);
                tokio::spawn(async move {
                    conn.await;
                    drop(slot);
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(listener = name, "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
