//! The scripted TCP peer for check scenarios: `testkit::scripted`, re-exported so a test keeps
//! its `mod scripted;` and `use scripted::...`.

pub use testkit::scripted::*;
