//! File descriptors and `maxconn` against real processes: rolelb (and HAProxy 2.6 beside it)
//! started unprivileged with a low `RLIMIT_NOFILE` refuses a `maxconn` the limit cannot hold,
//! derives `maxconn` from the limit when none is set and honours `ulimit-n`; a burst of more
//! clients than `maxconn` waits in the backlog and is served within a second of the load
//! dropping; and when descriptors run out anyway (the limit lowered under a running process),
//! accepting pauses instead of spinning, failures are logged once a second per cause with a
//! count, and service comes back within a second of the load dropping.

mod common;

use std::fs;
use std::io::{self, BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::thread;
use std::time::{Duration, Instant};

use common::{HAPROXY_BIN, NamedServer, Proc, free_port, require_bin, rolelb_bin, wait_until};
use nix::sys::signal::Signal;
use tempfile::TempDir;

/// The unprivileged user the processes run as, so they cannot raise their hard limit.
const NOBODY: u32 = 65534;

/// A proxy process started by this file: its directory, process and log.
struct Limited {
    _dir: TempDir,
    proc: Proc,
    log: PathBuf,
}

impl Limited {
    /// Starts `bin ARGS -f CFG` as `nobody` with `RLIMIT_NOFILE` = `nofile` (soft, hard).
    fn start(bin: &Path, args: &[&str], cfg_text: &str, nofile: (u64, u64)) -> Limited {
        Limited::start_as(Some(NOBODY), bin, args, cfg_text, nofile)
    }

    /// Like [`Limited::start`], as `user` (`None`: this test's own user, which may change the
    /// process's limits while it runs).
    fn start_as(
        user: Option<u32>,
        bin: &Path,
        args: &[&str],
        cfg_text: &str,
        nofile: (u64, u64),
    ) -> Limited {
        let dir = tempfile::tempdir().expect("temporary directory");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod dir");
        let cfg = dir.path().join("proxy.cfg");
        fs::write(&cfg, cfg_text).expect("writing the config");
        fs::set_permissions(&cfg, fs::Permissions::from_mode(0o644)).expect("chmod cfg");
        let log = dir.path().join("stderr.log");
        // Another user may not reach the build's binary (a checkout under /root is 0700): run
        // a copy from the test's own world-readable directory.
        let bin = match user {
            Some(_) => {
                let name = bin.file_name().expect("binary name");
                let copy = dir.path().join(name);
                fs::copy(bin, &copy).expect("copying the binary");
                fs::set_permissions(&copy, fs::Permissions::from_mode(0o755))
                    .expect("chmod binary");
                copy
            }
            None => bin.to_path_buf(),
        };
        let mut cmd = common::command(&bin, false, dir.path());
        cmd.args(args).arg("-f").arg(&cfg);
        if let Some(id) = user {
            cmd.uid(id).gid(id);
        }
        let (soft, hard) = nofile;
        // SAFETY: setrlimit is async-signal-safe and touches only the given struct.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: soft,
                    rlim_max: hard,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == -1 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let proc = Proc::spawn("proxy", &mut cmd, &log, Signal::SIGTERM);
        Limited {
            _dir: dir,
            proc,
            log,
        }
    }

    fn log_text(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Waits up to 10 s for the process to exit.
    fn wait_exit(&mut self) -> Option<ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(st) = self.proc.exited() {
                return Some(st);
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Waits until `port` listens, panicking with the log if the process exits first.
    fn wait_listening(&mut self, port: u16) {
        let ok = wait_until(Duration::from_secs(15), || {
            self.proc.exited().is_none() && common::is_listening(port)
        });
        assert!(ok, "not listening on {port}:\n{}", self.log_text());
    }

    /// Descriptors the process has open now.
    fn open_fds(&self) -> usize {
        fs::read_dir(format!("/proc/{}/fd", self.proc.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// (soft, hard) `RLIMIT_NOFILE` of the running process, from `/proc/PID/limits`.
    fn nofile(&self) -> (u64, u64) {
        let limits = fs::read_to_string(format!("/proc/{}/limits", self.proc.pid()))
            .expect("reading /proc/PID/limits");
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .expect("a 'Max open files' line");
        let mut words = line["Max open files".len()..].split_whitespace();
        let mut next = || words.next().and_then(|w| w.parse().ok()).expect("a number");
        (next(), next())
    }

    /// Sets the running process's soft `RLIMIT_NOFILE`, keeping the hard one.
    fn set_soft_nofile(&self, soft: u64) {
        let (_, hard) = self.nofile();
        let lim = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        let pid = libc::pid_t::try_from(self.proc.pid()).expect("pid");
        // SAFETY: prlimit reads `lim` and writes nothing when the old limit pointer is null.
        let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &lim, std::ptr::null_mut()) };
        assert_eq!(rc, 0, "prlimit: {}", io::Error::last_os_error());
    }

    /// CPU time (user + system) the process has used so far.
    fn cpu_time(&self) -> Duration {
        let stat =
            fs::read_to_string(format!("/proc/{}/stat", self.proc.pid())).unwrap_or_default();
        let after = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
        let fields: Vec<&str> = after.split(' ').collect();
        let ticks: u64 = [11, 12]
            .iter()
            .filter_map(|i| fields.get(*i).and_then(|f| f.parse::<u64>().ok()))
            .sum();
        // SAFETY: sysconf only reads a system constant.
        let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100);
        Duration::from_millis(ticks * 1000 / hz.max(1))
    }
}

/// `frontend fe` on `port` → one server at `server`, with `global_extra` lines in `global`.
fn config(port: u16, server: SocketAddr, global_extra: &str) -> String {
    format!(
        "global\n    nbthread 2\n{global_extra}\
         defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\
         frontend fe\n    bind 127.0.0.1:{port}\n    default_backend be\n\
         backend be\n    server s {server}\n"
    )
}

/// The first number after `prefix` in `text`.
fn number_after(text: &str, prefix: &str) -> Option<u64> {
    let rest = &text[text.find(prefix)? + prefix.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[test]
fn a_hard_limit_below_what_maxconn_needs_refuses_the_start_naming_need_and_limit_like_haproxy() {
    let backend = NamedServer::start("s");
    let port = free_port();
    let cfg = config(port, backend.addr(), "    maxconn 1000\n");

    let mut lb = Limited::start(&rolelb_bin(), &[], &cfg, (256, 256));
    let status = lb
        .wait_exit()
        .expect("rolelb must refuse to start, not run");
    let log = lb.log_text();
    println!("rolelb ({status}): {log}");
    assert!(!status.success(), "{log}");
    let need = number_after(&log, "maxconn 1000 needs ").expect("the need is named");
    assert!(need >= 2000, "2 descriptors per connection: {need}\n{log}");
    assert!(log.contains("limit is 256"), "{log}");
    assert!(!common::is_listening(port), "nothing may listen");

    let mut ha = Limited::start(&require_bin(HAPROXY_BIN), &["-db"], &cfg, (256, 256));
    let ha_status = ha.wait_exit().expect("haproxy must refuse to start too");
    println!("haproxy ({ha_status}): {}", ha.log_text());
    assert!(!ha_status.success(), "{}", ha.log_text());
}

#[test]
fn ulimit_n_is_honoured_and_must_fit_maxconn_like_haproxy() {
    let backend = NamedServer::start("s");

    // `ulimit-n` sets the limit (here below the hard one) and maxconn follows it.
    let port = free_port();
    let cfg = config(port, backend.addr(), "    ulimit-n 200\n");
    let mut lb = Limited::start(&rolelb_bin(), &[], &cfg, (1024, 4096));
    lb.wait_listening(port);
    let log = lb.log_text();
    assert_eq!(lb.nofile(), (200, 4096), "{log}");
    let maxconn = number_after(&log, "maxconn ").expect("maxconn logged");
    let reserved = number_after(&log, "per connection + ").expect("reserved logged");
    assert_eq!(maxconn, (200 - reserved) / 2, "{log}");
    drop(lb);

    // `ulimit-n` too low for an explicit maxconn: refused, as HAProxy does.
    let port = free_port();
    let cfg = config(port, backend.addr(), "    ulimit-n 100\n    maxconn 1000\n");
    let mut lb = Limited::start(&rolelb_bin(), &[], &cfg, (1024, 4096));
    let status = lb.wait_exit().expect("rolelb must refuse to start");
    let log = lb.log_text();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("'ulimit-n 100' is too low for maxconn 1000"),
        "{log}"
    );
    let mut ha = Limited::start(&require_bin(HAPROXY_BIN), &["-db"], &cfg, (1024, 4096));
    let ha_status = ha.wait_exit().expect("haproxy must refuse to start too");
    assert!(!ha_status.success(), "{}", ha.log_text());
}

/// Opens `n` client connections to `addr` (they wait in the backlog when not accepted).
fn burst(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok())
        .collect()
}

/// True when a fresh client gets the server's banner within 300 ms.
fn served(addr: SocketAddr) -> bool {
    let Ok(conn) = TcpStream::connect_timeout(&addr, Duration::from_millis(300)) else {
        return false;
    };
    if conn
        .set_read_timeout(Some(Duration::from_millis(300)))
        .is_err()
    {
        return false;
    }
    let mut line = String::new();
    BufReader::new(conn).read_line(&mut line).is_ok() && line == "s\n"
}

/// Closes `clients` and returns how long until a fresh client is served again.
fn recovery_after_closing(addr: SocketAddr, clients: Vec<TcpStream>) -> Duration {
    let closed = Instant::now();
    drop(clients);
    while !served(addr) {
        assert!(
            closed.elapsed() < Duration::from_secs(20),
            "no client served 20 s after the burst ended"
        );
    }
    closed.elapsed()
}

/// Error and warning lines of `log` per cause (the message with numbers and addresses cut).
fn failure_lines(log: &str) -> Vec<(String, usize)> {
    let mut causes: Vec<(String, usize)> = Vec::new();
    for line in log
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("WARN"))
    {
        let cause: String = line
            .split_once(": ")
            .map_or(line, |(_, m)| m)
            .chars()
            .take_while(|c| !c.is_ascii_digit() && *c != '[')
            .collect();
        match causes.iter_mut().find(|(c, _)| *c == cause) {
            Some((_, n)) => *n += 1,
            None => causes.push((cause, 1)),
        }
    }
    causes
}

#[test]
fn without_maxconn_it_is_derived_from_the_limit_logged_and_a_burst_beyond_it_is_served_within_a_second()
 {
    let backend = NamedServer::start("s");
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut lb = Limited::start(
        &rolelb_bin(),
        &[],
        &config(port, backend.addr(), ""),
        (64, 300),
    );
    lb.wait_listening(port);

    // Derived from the hard limit, logged with the need, and the soft limit raised to it.
    let log = lb.log_text();
    let maxconn = number_after(&log, "maxconn ").expect("maxconn logged");
    assert!(
        log.contains("(derived from the file descriptor limit)"),
        "{log}"
    );
    let need = number_after(&log, " needs ").expect("need logged");
    let reserved = number_after(&log, "per connection + ").expect("reserved logged");
    println!("hard limit 300: maxconn {maxconn}, need {need}, reserved {reserved}");
    assert_eq!(need, reserved + 2 * maxconn, "{log}");
    assert!((299..=300).contains(&need), "{log}");
    // The soft limit raised to what is needed (the hard one, or one below when the fixed
    // part is odd).
    assert_eq!(lb.nofile(), (need, 300), "{log}");

    // A burst beyond maxconn: the extra clients wait in the backlog, nothing fails.
    let maxconn = usize::try_from(maxconn).expect("small");
    let mark = log.len();
    let clients = burst(addr, maxconn + 150);
    let held = wait_until(Duration::from_secs(10), || backend.open() == maxconn);
    thread::sleep(Duration::from_secs(2));
    let log = lb.log_text()[mark..].to_owned();
    println!(
        "maxconn {maxconn}: {} clients, {} reached the server; fds open {} (limit {:?})",
        clients.len(),
        backend.open(),
        lb.open_fds(),
        lb.nofile()
    );
    assert!(
        held,
        "{} sessions at the server, maxconn {maxconn}",
        backend.open()
    );
    assert_eq!(backend.open(), maxconn, "never beyond maxconn");
    assert!(lb.open_fds() <= 300, "descriptors fit the limit");
    assert_eq!(
        failure_lines(&log),
        vec![],
        "a working limit fails nothing:\n{log}"
    );

    let recovery = recovery_after_closing(addr, clients);
    println!("served again {recovery:?} after the burst closed");
    assert!(recovery < Duration::from_secs(1), "{recovery:?}");
    assert!(wait_until(Duration::from_secs(5), || backend.open() == 0));
}

#[test]
fn a_limit_lowered_under_the_running_process_caps_accepting_logs_once_a_second_and_recovers() {
    let backend = NamedServer::start("s");
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let cfg = config(port, backend.addr(), "    maxconn 1000\n");
    let mut lb = Limited::start_as(None, &rolelb_bin(), &[], &cfg, (4096, 4096));
    lb.wait_listening(port);
    assert!(served(addr));
    // The soft limit is lowered under the running process (as `prlimit` does): it now
    // leaves room for far fewer connections than maxconn 1000.
    let baseline = lb.open_fds();
    let soft = u64::try_from(baseline + 80).expect("small");
    lb.set_soft_nofile(soft);
    let mark = lb.log_text().len();

    let cpu_before = lb.cpu_time();
    let started = Instant::now();
    let clients = burst(addr, 400);
    // Every client rolelb accepts has room for its server side: the descriptors it holds are
    // those it had plus two per session that reached the server.
    let settled = wait_until(Duration::from_secs(10), || {
        backend.open() > 0 && lb.open_fds() <= baseline + 2 * backend.open() + 2
    });
    thread::sleep(Duration::from_secs(3));
    let window = started.elapsed();
    let cpu = lb.cpu_time().saturating_sub(cpu_before);
    let log = lb.log_text()[mark..].to_owned();
    let causes = failure_lines(&log);
    println!(
        "soft limit {soft} ({baseline} fds open before): {} clients, {} sessions at the \
         server, {} fds open, {cpu:?} CPU in {window:?}; log lines per cause: {causes:?}",
        clients.len(),
        backend.open(),
        lb.open_fds()
    );
    let (sessions, fds) = (backend.open(), lb.open_fds());
    assert!(
        settled,
        "{fds} fds for {sessions} sessions ({baseline} before)"
    );
    assert!(
        fds <= baseline + 2 * sessions + 2,
        "clients accepted without room for their server: {fds} fds for {sessions} sessions"
    );
    assert!(
        u64::try_from(fds).expect("small") <= soft,
        "within the limit"
    );
    assert!(
        !causes.is_empty(),
        "the cap below maxconn is logged:\n{log}"
    );
    let seconds = usize::try_from(window.as_secs()).expect("small") + 1;
    for (cause, n) in &causes {
        assert!(
            *n <= seconds,
            "{n} lines in {window:?} for '{cause}':\n{log}"
        );
    }
    assert!(
        log.contains("occurrences since the last such line"),
        "{log}"
    );
    assert!(
        cpu < window / 4,
        "accepting must not spin: {cpu:?} CPU in {window:?}"
    );

    let recovery = recovery_after_closing(addr, clients);
    println!("served again {recovery:?} after the burst closed");
    assert!(recovery < Duration::from_secs(1), "{recovery:?}");
    assert!(
        wait_until(Duration::from_secs(10), || lb.open_fds() <= baseline + 2),
        "descriptors leaked: {} open, {baseline} before",
        lb.open_fds()
    );
}
