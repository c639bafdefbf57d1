//! The integration-test harness: real servers on 127.0.0.1, never mocks.
//!
//! A workspace crate, compiled once and linked into every test binary: `tests/common/mod.rs`
//! (and `agent/tests/common/mod.rs`) re-export it, so each `tests/*.rs` does `mod common;` and
//! uses what it needs. It starts PostgreSQL 15 primaries and streaming replicas, PgBouncer,
//! HAProxy, rolelb itself, MariaDB, etcd, Patroni, and [`NamedServer`] (a tiny TCP server that
//! says its name, so a balancing test can see which backend served it). One file per thing it
//! starts; [`lbcfg`] writes balancing configs and [`scripted`] is a backend whose answer the
//! test switches. [`Lan`] builds network namespaces on a bridge, for tests that move an
//! address between nodes (keepalived).
//!
//! Rules every helper follows:
//! - Everything listens on 127.0.0.1, on ports from [`free_port`], with its files in its own
//!   temporary directory that is removed when the helper is dropped.
//! - A helper owns the process it started and stops it by that PID when dropped, including
//!   when the test panics (signal, a short grace period, then `SIGKILL`, then `wait`). Children
//!   also get `PR_SET_PDEATHSIG = SIGKILL`, so a test runner that is killed outright does not
//!   leave servers behind. Linux ties that signal to the *thread* that spawned the child:
//!   create servers on the test's own thread, not on a helper thread that ends early.
//! - A missing binary panics with "`PATH` not found: run scripts/deps.sh".
//! - When a server does not come up, the panic message carries the tail of its log.
//!
//! Database servers and PgBouncer refuse to run as root; when the tests run as root (CI does),
//! they run as the `postgres` user (set through the child's uid/gid, the same thing
//! `runuser -u postgres --` does, but the PID we hold is the server's own), and their
//! directories are owned by that user. As another user they simply run as that user.
//!
//! Synchronous on purpose (std::process, std::net, threads) so any test, async or not, can use it.

mod dnsmasq;
mod etcd;
mod fds;
mod haproxy;
mod http;
mod mariadb;
mod named;
mod net;
mod netns;
mod patroni;
mod pgbouncer;
mod postgres;
mod process;
mod proxy;
mod rolelb;
mod session;

pub mod lbcfg;
pub mod scripted;

pub use dnsmasq::*;
pub use etcd::*;
pub use fds::*;
pub use haproxy::*;
pub use http::*;
pub use mariadb::*;
pub use named::*;
pub use net::*;
pub use netns::*;
pub use patroni::*;
pub use pgbouncer::*;
pub use postgres::*;
pub use process::*;
pub use proxy::*;
pub use rolelb::*;
pub use session::*;
