//! The `rolelb` command line: its options and what `--help` says (the man page is made from
//! the same definition).

use std::path::PathBuf;

use clap::Parser;

/// Role-aware TCP load balancer for replicated databases (HAProxy-syntax configuration).
#[derive(Debug, Parser)]
#[command(
    name = "rolelb",
    disable_version_flag = true,
    long_about = LONG_ABOUT,
    after_long_help = AFTER_LONG_HELP
)]
pub struct Cli {
    /// Configuration file (HAProxy syntax); repeat to merge several in order.
    #[arg(short = 'f', value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Check the configuration and exit.
    #[arg(short = 'c')]
    pub check: bool,
    /// Print the version and exit.
    #[arg(short = 'v', long = "version")]
    pub version: bool,
}

/// What `rolelb --help` says before the options.
const LONG_ABOUT: &str = "\
Role-aware TCP load balancer for replicated databases (PostgreSQL behind PgBouncer, MySQL,
MariaDB). It reads HAProxy's configuration language: a haproxy.cfg in TCP mode runs as is. On
top, a backend can send connections only to the primary (writes) or to the replicas (reads):
rolelb checks each node's role itself (pg_is_in_recovery(), @@read_only) or follows the
cluster's state in etcd, and switches its routing table in memory when the primary changes,
never routing to two primaries at once.";

/// What `rolelb --help` says after the options.
const AFTER_LONG_HELP: &str = "\
Signals:
  SIGHUP           reload the configuration files (sessions keep running; a file with
                   errors is refused and the running configuration stays)
  SIGTERM, SIGINT  soft stop: /healthz answers 503, listeners close (after global `grace`,
                   if set), sessions end on their own or at `hard-stop-after`; a second
                   SIGTERM or SIGINT closes them
  SIGUSR1          soft stop, as SIGTERM (HAProxy's soft-stop signal)

Administration (when the configuration enables it):
  global `admin bind ADDR`     HTTP API: /healthz, /metrics, /api/v1/... (docs/admin-api.md)
  global `stats socket PATH`   HAProxy's runtime API (show stat, set server, ...)
  `stats enable` in a listen   HAProxy's stats page and its CSV

Examples:
  rolelb -c -f /etc/rolelb/rolelb.cfg   check a configuration, print errors as FILE:LINE
  rolelb -f /etc/rolelb/rolelb.cfg      run (foreground; systemd unit: systemd/rolelb.service)

Documentation: docs/config.md (keywords, differences from HAProxy), docs/admin-api.md,
docs/metrics.md and the example configurations in conf/.";
