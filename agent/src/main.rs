//! The `rolelb-agent` command line: run the agent, check its config (`-c`), or set the local
//! admin state (`state drain|maint|ready`). Everything else lives in the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};

use rolelb_agent::agent_check::AgentCheck;
use rolelb_agent::cli::{Cli, Command, StateWord};
use rolelb_agent::config::{Config, DEFAULT_CONFIG_PATH, DEFAULT_STATE_FILE};
use rolelb_agent::http::Http;
use rolelb_agent::status::{AdminState, Status};
use rolelb_agent::{listener, poller, state_file};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match (&cli.command, cli.check) {
        (Some(Command::State { state }), _) => set_state(cli.file.as_deref(), *state),
        (None, true) => return check(&config_path(cli.file.as_deref())),
        (None, false) => run(&config_path(cli.file.as_deref())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rolelb-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn config_path(file: Option<&Path>) -> PathBuf {
    file.map_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH), Path::to_path_buf)
}

/// `-c`: validate the config.
fn check(path: &Path) -> ExitCode {
    match Config::load(path) {
        Ok(_) => {
            println!("Configuration file is valid");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// `state [WORD]`: write (or show) the admin state. Without `-f`, a missing default config
/// means the default state file.
fn set_state(file: Option<&Path>, word: Option<StateWord>) -> anyhow::Result<()> {
    let (state_path, inter) = match file {
        Some(path) => {
            let c = Config::load(path)?;
            (c.state_file, Some(c.inter))
        }
        None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
            let c = Config::load(Path::new(DEFAULT_CONFIG_PATH))?;
            (c.state_file, Some(c.inter))
        }
        None => (PathBuf::from(DEFAULT_STATE_FILE), None),
    };
    match word {
        None => println!("{}", state_file::read(&state_path)?),
        Some(word) => {
            let state = AdminState::from(word);
            state_file::write(&state_path, state)?;
            let within = inter.map_or(String::new(), |i| format!(" within {}ms", i.as_millis()));
            println!(
                "admin state {state} written to {}; a running agent applies it{within}",
                state_path.display()
            );
        }
    }
    Ok(())
}

/// Runs the agent until SIGTERM or SIGINT.
fn run(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let admin = state_file::load_at_start(&config.state_file);
    // The poller stores a result at least every inter + timeout; twice inter of slack more
    // and the result counts as stale (down).
    let status = Status::new(admin, config.inter * 2 + config.timeout);
    let agent_listener = listener::bind(config.listen.agent)
        .with_context(|| format!("listen.agent {}", config.listen.agent))?;
    let http_listener = listener::bind(config.listen.http)
        .with_context(|| format!("listen.http {}", config.listen.http))?;
    tokio::spawn(poller::run(
        config.database.clone(),
        config.inter,
        config.timeout,
        Arc::clone(&status),
    ));
    // Answer only once the database has been asked: a restarted agent must not report a
    // healthy primary `down` for a moment (HAProxy with `fall 1` would cut its sessions).
    // Checkers meanwhile wait in the backlog, at most one poll timeout.
    if tokio::time::timeout(config.timeout * 2, status.first_poll())
        .await
        .is_err()
    {
        tracing::warn!(
            "no poll result after {}ms; answering anyway",
            (config.timeout * 2).as_millis()
        );
    }
    tracing::info!(
        agent = %config.listen.agent,
        http = %config.listen.http,
        database = %config.database.target(),
        kind = %config.database.kind,
        admin = %admin,
        "rolelb-agent started"
    );
    tokio::spawn(state_file::watch(
        config.state_file.clone(),
        config.inter,
        Arc::clone(&status),
    ));
    let agent = AgentCheck {
        status: Arc::clone(&status),
        max_lag: config.max_lag,
        agent_send_wait: config.agent_send_wait,
    };
    tokio::spawn(listener::serve(
        agent_listener,
        config.max_connections,
        "agent",
        move |stream| agent.clone().handle(stream),
    ));
    let http = Http {
        status: Arc::clone(&status),
        max_lag: config.max_lag,
    };
    tokio::spawn(listener::serve(
        http_listener,
        config.max_connections,
        "http",
        move |stream| http.clone().handle(stream),
    ));
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
    Ok(())
}
