//! Watching a client while its session waits for a server, as HAProxy 2.6 does: what the
//! client sends meanwhile is kept (up to `tune.bufsize`, HAProxy's request buffer) and sent
//! to the server once connected, and a client that leaves is noticed.
//!
//! HAProxy gives up on a waiting session (`back_may_abort_req`) when the client reset, or
//! when it closed and either sent nothing or the backend has `option abortonclose`: in the
//! queue (`CQ`) and, with `option abortonclose` only, while connecting (`CC`). A client that
//! closed after sending something, without the option, keeps its place: its bytes and then
//! its close are passed on once a server is connected.

use std::future::pending;

use tokio::net::TcpStream;

/// Most bytes one read takes while a session waits.
const READ_STEP: usize = 4096;

/// What a waiting session has seen of its client.
#[derive(Debug)]
pub(super) struct ClientWatch {
    /// Bytes the client sent while the session waited, for the server.
    early: Vec<u8>,
    /// The most `early` holds (`tune.bufsize`, HAProxy's request buffer).
    limit: usize,
    /// The client closed (after sending `early`, which is kept for the server).
    closed: bool,
}

impl ClientWatch {
    /// Watches a client that may send up to `limit` bytes while its session waits.
    pub(super) fn new(limit: usize) -> ClientWatch {
        ClientWatch {
            early: Vec::new(),
            limit,
            closed: false,
        }
    }

    /// Completes when the waiting session should be given up: the client reset, or closed
    /// having sent nothing or with `abortonclose`. Meanwhile keeps what the client sends, up
    /// to its limit (then it stops reading, as a full HAProxy buffer does). Cancel-safe:
    /// what was read stays here.
    pub(super) async fn gone(&mut self, client: &TcpStream, abortonclose: bool) {
        use tokio_util::bytes::BufMut;
        loop {
            if self.closed && !abortonclose {
                // Kept for the server, close included; nothing more to watch.
                return pending().await;
            }
            if self.closed {
                return;
            }
            // Read into the heap, not the stack: this future lives in every session's.
            let room = self.limit.saturating_sub(self.early.len()).min(READ_STEP);
            if room == 0 {
                return pending().await;
            }
            if client.readable().await.is_err() {
                return;
            }
            self.early.reserve_exact(room);
            match client.try_read_buf(&mut (&mut self.early).limit(room)) {
                Ok(0) => {
                    self.closed = true;
                    if self.early.is_empty() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                // A reset or another error: the client is gone.
                Err(_) => return,
            }
        }
    }

    /// The bytes the client sent while the session waited.
    pub(super) fn early(&self) -> &[u8] {
        &self.early
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;

    /// A connected pair: (the client's end, the proxy's end).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (client.expect("connect"), accepted.expect("accept").0)
    }

    /// Whether `gone` completes within 200 ms.
    async fn gone_soon(w: &mut ClientWatch, s: &TcpStream, abortonclose: bool) -> bool {
        tokio::time::timeout(Duration::from_millis(200), w.gone(s, abortonclose))
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_client_that_closes_having_sent_nothing_is_gone() {
        let (client, proxied) = pair().await;
        let mut w = ClientWatch::new(16);
        assert!(!gone_soon(&mut w, &proxied, false).await, "still there");
        drop(client);
        assert!(gone_soon(&mut w, &proxied, false).await);
    }

    #[tokio::test]
    async fn bytes_then_a_close_keep_the_place_unless_abortonclose() {
        let (mut client, proxied) = pair().await;
        client.write_all(b"startup").await.expect("write");
        let mut w = ClientWatch::new(16);
        assert!(!gone_soon(&mut w, &proxied, false).await);
        assert_eq!(w.early(), b"startup");
        client.shutdown().await.expect("FIN");
        assert!(
            !gone_soon(&mut w, &proxied, false).await,
            "kept for the server"
        );
        assert_eq!(w.early(), b"startup");
        assert!(
            gone_soon(&mut w, &proxied, true).await,
            "abortonclose: gone"
        );
    }

    #[tokio::test]
    async fn a_reset_is_gone_and_reading_stops_at_the_limit() {
        let (mut client, proxied) = pair().await;
        client.write_all(&[7u8; 40]).await.expect("write");
        let mut w = ClientWatch::new(16);
        assert!(!gone_soon(&mut w, &proxied, false).await);
        assert_eq!(w.early().len(), 16, "up to the limit");
        let (mut client2, proxied2) = pair().await;
        client2.write_all(b"x").await.expect("write");
        socket2::SockRef::from(&client2)
            .set_linger(Some(Duration::ZERO))
            .expect("linger");
        drop(client2);
        let mut w2 = ClientWatch::new(16);
        assert!(gone_soon(&mut w2, &proxied2, false).await, "a reset");
        drop(client);
    }
}
