//! Plain TCP connect check (a server with `check` and no `option ...-check`): connect within
//! `connect_timeout`, then close. Nothing is sent or read. With `check-ssl` the TLS handshake
//! is the check, and passing it is `L6OK`, as in HAProxy.

use super::conn::{Clock, connect_check};
use super::tls::CheckStream;
use super::{CheckResult, Status, Target};

/// Connects and closes: `L4OK`, `L4TOUT` or `L4CON` (with `check-ssl`: `L6OK`, `L6TOUT`,
/// `L6RSP` for the handshake).
pub async fn check(target: &Target) -> CheckResult {
    let clock = Clock::start(target);
    match connect_check(target).await {
        Ok(CheckStream::Plain(_)) => clock.result(Status::L4Ok, ""),
        Ok(CheckStream::Tls(_)) => clock.result(Status::L6Ok, ""),
        Err(e) => e.into_result(&clock),
    }
}
