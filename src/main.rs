//! The `rolelb` binary: command line → load config → run. Nothing else lives here.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use arc_swap::ArcSwap;
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use rolelb::admin;
use rolelb::cli::Cli;
use rolelb::config::{self, Account, Config, Global};
use rolelb::control::Control;
use rolelb::fd_limit::{self, FdPlan};
use rolelb::logging;
use rolelb::proxy::listener::{Limits, Shared};
use rolelb::proxy::threads::{DataThreads, Workers};
use rolelb::service_manager;
use rolelb::table::Table;

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
    let config = match config::load(&cli.files) {
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
    logging::init(
        &config.global.logs,
        logging::Sender {
            tag: config
                .global
                .log_tag
                .as_deref()
                .unwrap_or(logging::DEFAULT_TAG),
            host: config.global.log_send_hostname.as_deref(),
        },
    );
    match run(cli.files, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::from(1)
        }
    }
}

/// Settles `maxconn` against the file descriptor limit (raising it to fit, or refusing to
/// start), and logs what it needs, as HAProxy does at startup.
fn settle_fd_limit(config: &Config) -> Result<FdPlan> {
    let threads = data_threads(&config.global);
    let listeners: usize = config
        .frontends
        .iter()
        .filter(|f| !f.disabled)
        .map(|f| f.binds.len())
        .sum();
    // With data threads, the main thread's runtime comes on top. Each listening socket is
    // counted once in the fixed part; its accept loops (one per data thread) hold their own
    // descriptors of it besides the control task's.
    let (runtimes, listener_copies) = if threads > 1 {
        (threads + 1, listeners * threads)
    } else {
        (1, listeners)
    };
    let fixed = fd_limit::fixed_need(config, runtimes, admin::http::MAX_CONNECTIONS)
        + u64::try_from(listener_copies).unwrap_or(u64::MAX);
    let plan = fd_limit::apply(config.global.maxconn, config.global.ulimit_n, fixed)?;
    let origin = if plan.derived {
        "derived from the file descriptor limit"
    } else {
        "global maxconn"
    };
    tracing::info!(
        "maxconn {} ({origin}) needs {} file descriptors ({} per connection + {} reserved); \
         file descriptor limit set to {} (hard {})",
        plan.maxconn,
        plan.need,
        fd_limit::PER_CONNECTION,
        plan.fixed,
        plan.soft,
        plan.hard,
    );
    Ok(plan)
}

/// The data path's thread count: `nbthread`, or one per core as HAProxy 2.6 when unset.
fn data_threads(global: &Global) -> usize {
    global.nbthread.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    })
}

/// The main thread's runtime: with one data thread it is the whole process, as HAProxy's
/// `nbthread 1`; with more it keeps the control plane (control task, checks, etcd, stats
/// socket, signals) while each data thread runs its own (see [`Workers`]).
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

fn run(files: Vec<PathBuf>, config: Config) -> Result<()> {
    if config.global.daemon {
        tracing::warn!(
            "'daemon' is set: rolelb stays in the foreground (run it under a service manager)"
        );
    }
    let fds = settle_fd_limit(&config)?;
    let workers =
        Workers::start(data_threads(&config.global)).context("starting the data threads")?;
    let served = runtime()?.block_on(serve(files, config, &fds, workers.threads()));
    workers.stop();
    served
}

/// Switches to `group` then `user` (after the sockets are bound), as HAProxy does. Without
/// `group`/`gid`, the user's own group from the user database, when it has an entry (HAProxy
/// leaves the group alone then); the supplementary groups are dropped either way.
fn drop_privileges(global: &Global) -> Result<()> {
    use nix::unistd::{Gid, Group, Uid, User, setgid, setgroups, setuid};
    let user = match &global.user {
        Some(Account::Name(name)) => Some(
            User::from_name(name)
                .with_context(|| format!("looking up user '{name}'"))?
                .with_context(|| format!("global 'user {name}': no such user"))?,
        ),
        Some(Account::Id(id)) => Some(
            User::from_uid(Uid::from_raw(*id))
                .with_context(|| format!("looking up uid {id}"))?
                .unwrap_or_else(|| nameless_user(*id)),
        ),
        None => None,
    };
    let gid = match &global.group {
        Some(Account::Name(name)) => Some(
            Group::from_name(name)
                .with_context(|| format!("looking up group '{name}'"))?
                .with_context(|| format!("global 'group {name}': no such group"))?
                .gid,
        ),
        Some(Account::Id(id)) => Some(Gid::from_raw(*id)),
        None => user.as_ref().map(|u| u.gid),
    };
    if gid.is_some() || user.is_some() {
        setgroups(&[]).context("dropping the supplementary groups")?;
    }
    if let Some(gid) = gid {
        setgid(gid).with_context(|| format!("setgid to {gid}"))?;
    }
    if let Some(user) = user {
        setuid(user.uid).with_context(|| format!("setuid to '{}'", user.name))?;
        tracing::info!(user = %user.name, uid = user.uid.as_raw(), "dropped privileges");
    }
    Ok(())
}

/// A `uid` the user database does not know: taken as is, with the group rolelb has.
fn nameless_user(id: u32) -> nix::unistd::User {
    let group = nix::unistd::getegid();
    tracing::warn!(
        "global 'uid {id}' has no entry in the user database: rolelb keeps group {group} \
         (set 'gid' to change it)"
    );
    nix::unistd::User {
        name: format!("uid {id}"),
        passwd: Default::default(),
        uid: nix::unistd::Uid::from_raw(id),
        gid: group,
        gecos: Default::default(),
        dir: Default::default(),
        shell: Default::default(),
    }
}

fn write_pidfile(path: &Path) -> Result<()> {
    std::fs::write(path, format!("{}\n", std::process::id()))
        .with_context(|| format!("writing pidfile {}", path.display()))
}

async fn serve(
    files: Vec<PathBuf>,
    config: Config,
    fds: &FdPlan,
    threads: DataThreads,
) -> Result<()> {
    let shared = Shared {
        table: Arc::new(ArcSwap::from_pointee(Table::empty())),
        limits: Arc::new(Limits::default()),
        sessions: TaskTracker::new(),
        hard_stop: Arc::new(rolelb::live::KillSwitch::new()),
        default_maxconn: fds.maxconn,
        fd_reserved: fds.fixed,
        stopping: CancellationToken::new(),
        threads,
    };
    let global = config.global.clone();
    let control = Control::start(files, config, shared.clone())?;
    if control.bound().is_empty() {
        bail!("no frontend has a bind address: nothing to listen on");
    }
    let handle = control.handle();
    let mut env = admin::Env::new(&shared, handle.clone());
    env.etcd = control.etcd_board();
    // Bound while still privileged, like listeners; dropping `_runtime_api` removes the files.
    let _runtime_api = admin::runtime::bind(&global.stats_sockets)?.serve(env.clone(), &global);
    let stats_listeners = control.config().stats.clone();
    let _http = admin::http::bind(global.admin.as_ref(), &stats_listeners)?.serve(env);
    // The pidfile is written while still privileged (it usually lives in /run), as HAProxy does.
    if let Some(path) = &global.pidfile {
        write_pidfile(path)?;
    }
    drop_privileges(&global)?;
    tracing::info!(pid = std::process::id(), "rolelb started");
    let listening = control.bound().len();
    tokio::spawn(control.run());

    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    // Only now: a reload the service manager sends right after READY must find the handler
    // (SIGHUP's default action would end the process).
    service_manager::ready(&format!("serving on {listening} listening addresses"));
    let why = loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the configuration");
                service_manager::reloading();
                // The control task logs the outcome.
                let status = match handle.reload().await {
                    Ok(generation) => format!("configuration reloaded (table generation {generation})"),
                    Err(e) => format!("reload refused, the previous configuration serves: {e}"),
                };
                service_manager::reloaded(&status);
            }
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = usr1.recv() => break "SIGUSR1",
        }
    };
    // From here `/healthz` answers 503, so a VRRP check moves the address away first.
    shared.stopping.cancel();
    service_manager::stopping(&format!("{why}: soft stop, waiting for sessions to end"));
    // `grace` (HAProxy's): listeners keep accepting a while, so a VRRP check that saw the 503
    // moves the address away before clients still sent here are refused. A second SIGTERM or
    // SIGINT ends the wait early.
    if let Some(grace) = global.grace {
        tracing::warn!("{why}: soft stop in {grace:?} (grace); /healthz answers 503 meanwhile");
        tokio::select! {
            _ = tokio::time::sleep(grace) => tracing::info!("grace period expired, proceeding with the soft stop"),
            _ = term.recv() => tracing::warn!("SIGTERM again: grace period cut short"),
            _ = int.recv() => tracing::warn!("SIGINT again: grace period cut short"),
        }
    }
    let open = shared.sessions.len();
    tracing::info!(
        sessions = open,
        "{why}: soft stop, no new connections; waiting for sessions to end"
    );
    let _ = handle.stop_accepting().await;
    shared.sessions.close();
    let hard_stop_after = async {
        match global.hard_stop_after {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = shared.sessions.wait() => tracing::info!("all sessions ended"),
        _ = hard_stop_after => {
            tracing::warn!(sessions = shared.sessions.len(), "hard-stop-after expired: closing remaining sessions");
        }
        _ = term.recv() => tracing::warn!("SIGTERM again: closing remaining sessions"),
        _ = int.recv() => tracing::warn!("SIGINT again: closing remaining sessions"),
    }
    shared.hard_stop.trip();
    let _ = tokio::time::timeout(Duration::from_secs(1), shared.sessions.wait()).await;
    if let Some(path) = &global.pidfile {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}
