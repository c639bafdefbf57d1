//! For unit tests here and in the admin view: configurations from text, and tables made as
//! `control` makes them (prepare, build, swap, then the swap's changes) against one registry.

use std::sync::Arc;
use std::time::Instant;

use super::{Registry, Table, prepare};
use crate::config::{self, Config};

/// The process's `maxconn` when `global` sets none, in tables built here.
pub(crate) const DEFAULT_MAXCONN: u32 = 2000;

/// Parses `text` as the one file `t.cfg`; panics with the errors (a test's own text).
pub(crate) fn parse(text: &str) -> Arc<Config> {
    let config = config::parse_sources(&[("t.cfg", text)])
        .unwrap_or_else(|e| panic!("config: {e:?}\n{text}"));
    Arc::new(config)
}

/// Prepares `config` against `registry` and builds its table: everything before a swap.
pub(crate) fn build(config: &Arc<Config>, registry: &Registry, generation: u64) -> Table {
    Table::build(
        &prepare(config.clone(), registry, DEFAULT_MAXCONN),
        generation,
        Instant::now(),
    )
}

/// Tables swapped in one after the other against one registry, as `control` does.
pub(crate) struct Swaps {
    /// The live state of every table.
    pub(crate) registry: Registry,
    /// The table in force.
    pub(crate) current: Arc<Table>,
    generation: u64,
}

impl Swaps {
    /// An empty registry and the empty table.
    pub(crate) fn new() -> Swaps {
        Swaps {
            registry: Registry::default(),
            current: Arc::new(Table::empty()),
            generation: 0,
        }
    }

    /// Prepares and builds the table of `config`, puts it in force and makes the changes
    /// the swap brings, as `control`'s commit does; returns it.
    pub(crate) fn swap(&mut self, config: &Arc<Config>) -> Arc<Table> {
        self.generation += 1;
        let table = Arc::new(build(config, &self.registry, self.generation));
        let old = std::mem::replace(&mut self.current, table.clone());
        table.after_swap(&old);
        table.retain_live(&self.registry);
        table
    }
}
