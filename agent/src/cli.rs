//! The `rolelb-agent` command line: its options, subcommand and what `--help` says (the man
//! page is made from the same definition).

use std::path::PathBuf;

use clap::{ArgAction, Parser, Subcommand, ValueEnum};

use crate::status::AdminState;

/// Health agent beside a database node: role, lag and admin state for HAProxy and rolelb.
#[derive(Debug, Parser)]
#[command(
    name = "rolelb-agent",
    version,
    disable_version_flag = true,
    long_about = LONG_ABOUT,
    after_long_help = AFTER_LONG_HELP
)]
pub struct Cli {
    /// The agent's YAML config.
    #[arg(short = 'f', long = "file", global = true, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Check the config, print "Configuration file is valid" or the errors, and exit.
    #[arg(short = 'c', long = "check")]
    pub check: bool,
    /// Print the version.
    #[arg(short = 'v', long = "version", action = ArgAction::Version)]
    pub version: Option<bool>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What `rolelb-agent --help` says before the options.
const LONG_ABOUT: &str = "\
Health agent beside a database node (PostgreSQL, MySQL, MariaDB). It polls the local database
for its role (primary or replica), its replication lag and whether it answers, and serves the
result to load balancers: as HAProxy's agent-check (`agent-port`) and as Patroni-style HTTP
health endpoints for `option httpchk` (/primary, /replica?lag=..., /read-only, /health, ...).
The operator's admin state (ready, drain, maint) goes out with every answer.";

/// What `rolelb-agent --help` says after the options.
const AFTER_LONG_HELP: &str = "\
Signals:
  SIGTERM, SIGINT  stop (the listeners close; load balancers see the node down)

Examples:
  rolelb-agent -c -f /etc/rolelb/agent.yaml   check a configuration
  rolelb-agent -f /etc/rolelb/agent.yaml      run (systemd unit: systemd/rolelb-agent.service)
  rolelb-agent state drain                    no new connections to this node
  rolelb-agent state                          print the admin state

Documentation: agent/README.md (configuration, endpoints, HAProxy examples).";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Set the local admin state (kept in `state_file`; the running agent applies it within
    /// one `inter`), or print it when no state is given.
    State {
        /// ready: normal; drain: no new connections; maint: out of service.
        state: Option<StateWord>,
    },
}

/// The admin states as command-line words.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StateWord {
    Ready,
    Drain,
    Maint,
}

impl From<StateWord> for AdminState {
    fn from(w: StateWord) -> AdminState {
        match w {
            StateWord::Ready => AdminState::Ready,
            StateWord::Drain => AdminState::Drain,
            StateWord::Maint => AdminState::Maint,
        }
    }
}
