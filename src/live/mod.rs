//! Live state: what outlives a table swap, per server, backend and frontend (health, admin and
//! role state, session counts, counters), in a [`Registry`] keyed by name. Tables hold `Arc`s
//! to its entries; checks, discovery and the admin API write it; the data path counts in it.

mod check_result;
mod counters;
mod freq;
mod kill;
mod ramp;
mod registry;
mod role_state;
mod server;
mod stick;

pub use check_result::*;
pub use counters::*;
pub use freq::*;
pub use kill::*;
pub use ramp::*;
pub use registry::*;
pub use role_state::*;
pub use server::*;
pub use stick::*;
