//! rolelb-agent: the health agent that runs beside each database node.
//!
//! It polls the local PostgreSQL or MySQL/MariaDB every `inter` ([`poller`]), keeps the
//! answer and the operator's admin state ([`state_file`]) in one cache ([`status`]), and
//! serves that cache, never the database, to HAProxy's agent-check protocol
//! ([`agent_check`]) and to Patroni-compatible HTTP checks ([`http`]). [`config`] turns
//! `agent.yaml` into typed settings; [`endpoint`] is the one place that decides what
//! "primary", "replica", "healthy" mean for both servers.

pub mod agent_check;
pub mod cli;
pub mod config;
pub mod endpoint;
pub mod http;
pub mod listener;
pub mod poller;
pub mod state_file;
pub mod status;
pub mod units;
