//! Plain TCP connect check (a server with `check` and no `option ...-check`). As HAProxy 2.6
//! runs it: the socket is opened in delayed-ACK mode (`TCP_QUICKACK` 0), and once the server's
//! SYN-ACK has made the connect succeed it is closed with a reset (`SO_LINGER` 0) before the
//! handshake's last ACK leaves. The server's kernel answered, so the server is reachable, but
//! its application never accepts the connection: no process forked by PostgreSQL, no
//! unauthenticated connection counted by MySQL/MariaDB (`Aborted_connects`, and the host's
//! connect errors that `max_connect_errors` blocks it for), nothing in the server's logs. A
//! loaded machine that closes later than the delayed ACK (tens of milliseconds) lets the
//! connection be accepted and reset, as for HAProxy.
//!
//! With `check-ssl` the TLS handshake is the check, and passing it is `L6OK`, as in HAProxy.
//! A check that sends a PROXY header first (the server's `send-proxy` or `check-send-proxy`)
//! completes the handshake, sends it, and resets, as HAProxy does.

use super::conn::{Clock, ConnectError, connect_check, connect_delayed_ack, reset};
use super::tls::CheckStream;
use super::{CheckResult, Status, Target};

/// Connects and closes: `L4OK`, `L4TOUT` or `L4CON` (with `check-ssl`: `L6OK`, `L6TOUT`,
/// `L6RSP` for the handshake).
pub async fn check(target: &Target) -> CheckResult {
    let clock = Clock::start(target);
    if target.tls.is_none() && target.proxy_header.is_none() {
        return match probe(target).await {
            Ok(()) => clock.result(Status::L4Ok, ""),
            Err(e) => e.into_result(&clock),
        };
    }
    match connect_check(target).await {
        Ok(CheckStream::Plain(stream)) => {
            // The PROXY header was sent: reset now, as HAProxy closes its checks.
            reset(&stream);
            clock.result(Status::L4Ok, "")
        }
        Ok(CheckStream::Tls(_)) => clock.result(Status::L6Ok, ""),
        Err(e) => e.into_result(&clock),
    }
}

/// Connects to `addr` within `connect_timeout` in delayed-ACK mode and resets the connection
/// as soon as the connect succeeded.
async fn probe(target: &Target) -> Result<(), ConnectError> {
    let stream =
        connect_delayed_ack(target.addr, target.connect_timeout, target.source.as_ref()).await?;
    reset(&stream);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::time::Duration;

    fn target(addr: SocketAddr) -> Target {
        Target {
            addr,
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            tls: None,
            proxy_header: None,
            source: None,
        }
    }

    #[tokio::test]
    async fn a_listening_server_passes_without_accepting_the_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("address");
        for _ in 0..5 {
            let result = check(&target(addr)).await;
            assert_eq!(result.status, Status::L4Ok, "{result:?}");
        }
        // The resets reached the half-open connections: nothing waits to be accepted.
        tokio::time::sleep(Duration::from_millis(100)).await;
        match listener.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("a check connection was accepted: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_closed_port_is_l4con_with_the_os_error() {
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("address")
        };
        let result = check(&target(addr)).await;
        assert_eq!(result.status, Status::L4Con, "{result:?}");
        assert_eq!(result.info, "Connection refused");
    }
}
