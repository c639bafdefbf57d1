//! Plain TCP connect check (a server with `check` and no `option ...-check`).

use super::{CheckResult, Target};

/// Connects and closes: `L4OK`, `L4TOUT` or `L4CON`.
pub async fn check(target: &Target) -> CheckResult {
    let _ = target;
    unimplemented!("check types: being written")
}
