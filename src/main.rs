//! The `rolelb` binary: command line → load config → run. Nothing else lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Role-aware TCP load balancer for replicated databases (HAProxy-syntax configuration).
#[derive(Debug, Parser)]
#[command(name = "rolelb", disable_version_flag = true)]
struct Cli {
    /// Configuration file (HAProxy syntax); repeat to merge several in order.
    #[arg(short = 'f', value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Check the configuration and exit.
    #[arg(short = 'c')]
    check: bool,
    /// Print the version and exit.
    #[arg(short = 'v', long = "version")]
    version: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.version {
        println!("rolelb version {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    if cli.files.is_empty() {
        eprintln!("rolelb: no configuration file given (use -f FILE)");
        return ExitCode::from(1);
    }
    let config = match rolelb::config::load(&cli.files) {
        Ok(config) => config,
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            return ExitCode::from(1);
        }
    };
    for w in &config.warnings {
        eprintln!("[WARNING] {w}");
    }
    if cli.check {
        println!("Configuration file is valid");
        return ExitCode::SUCCESS;
    }
    eprintln!("rolelb: running is being written");
    ExitCode::from(1)
}
