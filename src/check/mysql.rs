//! `option mysql-check user U [post-41]`: the MySQL handshake, as HAProxy does it.

use super::{CheckResult, Target};

/// Reads the server greeting, authenticates as `user` without a password, and quits.
pub async fn check(target: &Target, user: &str, post_41: bool) -> CheckResult {
    let _ = (target, user, post_41);
    unimplemented!("check types: being written")
}
