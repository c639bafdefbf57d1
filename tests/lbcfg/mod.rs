//! Config text for the balancing scenarios: `testkit::lbcfg`, re-exported so a test keeps its
//! `mod lbcfg;` and `use lbcfg::...`.

pub use testkit::lbcfg::*;
