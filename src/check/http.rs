//! `option httpchk` with `http-check expect` (how Patroni setups check `/primary`).

use super::{CheckResult, Target};
use crate::config::HttpCheck;

/// Sends the request and judges the answer by `http-check expect`.
pub async fn check(target: &Target, spec: &HttpCheck) -> CheckResult {
    let _ = (target, spec);
    unimplemented!("check types: being written")
}
