//! `option tcp-check` with `tcp-check connect|send|expect string|rstring` rules.

use super::{CheckResult, Target};
use crate::config::TcpCheckRule;

/// Runs the rules in order.
pub async fn check(target: &Target, rules: &[TcpCheckRule]) -> CheckResult {
    let _ = (target, rules);
    unimplemented!("check types: being written")
}
