//! The integration-test harness for this package's tests: the workspace's `testkit` crate
//! (`testkit/`), compiled once and re-exported here so every `tests/*.rs` keeps its
//! `mod common;` and `use common::...`.

pub use testkit::*;
