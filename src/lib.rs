//! rolelb: a role-aware TCP load balancer for replicated databases that reads HAProxy's
//! configuration language.
//!
//! Flow: `config` (text → typed config) → `table` (typed config + live state → one immutable
//! table behind `ArcSwap`) → `proxy` (the data path, reads only the table). `control` owns the
//! table and is the only writer. `live` holds what outlives a swap (per-server state and
//! counters, keyed by name); `roles` is the single-writer guard.

pub mod admin;
pub mod balance;
pub mod check;
pub mod cli;
pub mod config;
pub mod control;
pub mod discovery;
pub mod dns;
pub mod fd_limit;
pub mod live;
pub mod logging;
pub mod proxy;
pub mod roles;
pub mod sched;
pub mod service_manager;
pub mod table;
pub mod text;
