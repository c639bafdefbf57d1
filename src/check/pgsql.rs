//! `option pgsql-check user U`: a PostgreSQL startup message, as HAProxy sends it.

use super::{CheckResult, Target};

/// Sends a startup message for `user` and accepts an authentication request or ReadyForQuery.
pub async fn check(target: &Target, user: &str) -> CheckResult {
    let _ = (target, user);
    unimplemented!("check types: being written")
}
