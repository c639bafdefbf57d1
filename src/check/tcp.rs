//! Plain TCP connect check (a server with `check` and no `option ...-check`): connect within
//! `connect_timeout`, then close. Nothing is sent or read.

use super::conn::{Clock, connect};
use super::{CheckResult, Status, Target};

/// Connects and closes: `L4OK`, `L4TOUT` or `L4CON`.
pub async fn check(target: &Target) -> CheckResult {
    let clock = Clock::start(target);
    match connect(target.addr, target.connect_timeout).await {
        Ok(stream) => {
            drop(stream);
            clock.result(Status::L4Ok, "")
        }
        Err(e) => e.into_result(&clock),
    }
}
