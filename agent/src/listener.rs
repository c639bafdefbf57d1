//! The accept loop both servers share: accept, take a slot from a semaphore (so at most
//! `max_connections` are served at once and the rest wait in the kernel's backlog), and hand
//! the connection to the server's handler on its own task.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

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
