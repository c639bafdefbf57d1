//! What comes before a build: the configuration and etcd's view applied to live state.
//! `control` calls [`prepare()`] on the thread that builds the table. It makes the live entries
//! of new servers, backends and frontends in the [`Registry`], applies each server's
//! `disabled` (only a change, so run-time state survives reloads), its role target (a server
//! moved to another node forgets its role) and etcd's view, and hands [`Table::build`] the
//! entries in configuration order: the build itself only reads.
//!
//! [`Table::build`]: super::Table::build

use std::sync::Arc;

use crate::config::Config;
use crate::live::{BackendLive, FrontendLive, Registry, ServerLive};

/// A configuration whose servers, backends and frontends have their live entries, with the
/// configuration's and etcd's state applied: what [`super::Table::build`] builds from.
#[derive(Debug)]
pub struct Prepared {
    /// The configuration the entries were made for.
    config: Arc<Config>,
    /// One per backend of `config`, in its order.
    pub(super) backends: Vec<BackendEntries>,
    /// One per frontend of `config`, in its order.
    pub(super) frontends: Vec<Arc<FrontendLive>>,
    /// The process's `maxconn` when `global` sets none (from the descriptor limit): what a
    /// frontend without `maxconn` counts for in a backend's default `fullconn`.
    pub(super) default_maxconn: u32,
}

/// The live entries of one backend and of its servers, in declaration order.
#[derive(Debug)]
pub(super) struct BackendEntries {
    pub(super) live: Arc<BackendLive>,
    pub(super) servers: Vec<Arc<ServerLive>>,
}

impl Prepared {
    /// The configuration the entries were made for.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }
}

/// Applies `config` to live state in `registry` (entries for what is new, `disabled`, role
/// targets, etcd's view) and returns what the build of its table needs; `default_maxconn` is
/// the process's `maxconn` when `global` sets none.
pub fn prepare(config: Arc<Config>, registry: &Registry, default_maxconn: u32) -> Prepared {
    let backends = config
        .backends
        .iter()
        .map(|be| BackendEntries {
            live: registry.backend(&be.name),
            servers: be
                .servers
                .iter()
                .map(|s| {
                    let (live, _) = registry.server(&be.name, &s.name);
                    live.apply_config_disabled(s.disabled);
                    live.apply_dns_maint(s.dns_maint);
                    live.apply_role_target(s);
                    // A server etcd stops naming primary has its sessions closed after the
                    // swap, from the two tables' views (`roles::take_over`).
                    live.apply_etcd(s.etcd);
                    live
                })
                .collect(),
        })
        .collect();
    let frontends = config
        .frontends
        .iter()
        .map(|fe| registry.frontend(&fe.name))
        .collect();
    Prepared {
        config,
        backends,
        frontends,
        default_maxconn,
    }
}
