//! The data path: accept client connections, pick a server from the current table, connect,
//! and copy bytes. It reads only the table and the live state it points to; it never imports
//! the control plane.

pub mod accept_proxy;
mod bufpool;
mod client_watch;
pub(crate) mod connect;
pub mod forward;
pub mod listener;
pub mod log_line;
pub mod proxy_header_in;
pub mod proxy_protocol;
pub mod rules;
pub mod session;
pub mod splice;
pub mod threads;
