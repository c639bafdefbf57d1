//! `etcd-swap`: how long rolelb takes to route by an etcd change, and what a burst of etcd
//! changes costs it.
//!
//! Starts a one-member etcd (Debian's 3.4) on 127.0.0.1 and runs rolelb against it; every
//! child process is killed on exit (and gets SIGKILL if this process dies). Three modes:
//! - `leader` and `txn` ([`swap`]): two backends `m0`/`m1`, a `role primary` +
//!   `role-source etcd` listener; the primary moves back and forth (`leader`: the `leader` key
//!   alone; `txn`: one transaction demoting the old member, promoting the new one and moving
//!   the `leader` key, as a DBaaS backend publishes a switchover) and the time from the etcd
//!   write returning to the first new connection answered by the new primary is measured.
//! - `burst` ([`burst`]): N members put one by one, then removed by one delete-range, while a
//!   persistent connection through another listener measures the data path's echo latency.

mod burst;
mod swap;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Leader,
    Txn,
    Burst,
}

/// Command-line options.
struct Options {
    rolelb: PathBuf,
    etcd: PathBuf,
    mode: Mode,
    changes: usize,
    members: usize,
    nbthread: Option<u32>,
    /// Whether the burst's echo client and server threads ask for rolelb's short slice.
    echo_short_slice: bool,
    /// `burst`: etcd and the putting client stand apart (see [`LoadPlace`]).
    etcd_place: LoadPlace,
    /// `burst`: how many times the whole sequence runs (its samples pooled).
    rounds: usize,
}

/// Where the burst's load generator — etcd and the client putting members — stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadPlace {
    /// As if on machines of their own: etcd's data on tmpfs (its disk flushes are not this
    /// machine's) and etcd, the putting client and the bare watcher at `SCHED_IDLE` (they
    /// take only CPU that rolelb and the echo leave).
    Apart,
    /// Beside rolelb as any other process: etcd's data on disk, normal priority.
    Shared,
}

const USAGE: &str = "options: --rolelb PATH --etcd PATH --mode leader|txn|burst --changes N --members N --nbthread N --echo-slice short|default --etcd-place apart|shared --rounds N";

fn options() -> Result<Options> {
    let mut o = Options {
        rolelb: PathBuf::from("target/release/rolelb"),
        etcd: PathBuf::from("/usr/bin/etcd"),
        mode: Mode::Leader,
        changes: 100,
        members: 10_000,
        nbthread: None,
        echo_short_slice: true,
        etcd_place: LoadPlace::Apart,
        rounds: 3,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            println!(
                "etcd-swap: how fast etcd changes reach rolelb's data path (see bench/etcd-swap/README.md)\n{USAGE}"
            );
            std::process::exit(0);
        }
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value ({USAGE})"))?;
        match flag.as_str() {
            "--rolelb" => o.rolelb = value.into(),
            "--etcd" => o.etcd = value.into(),
            "--mode" => {
                o.mode = match value.as_str() {
                    "leader" => Mode::Leader,
                    "txn" => Mode::Txn,
                    "burst" => Mode::Burst,
                    other => bail!("--mode {other}: want leader, txn or burst"),
                }
            }
            "--changes" => o.changes = value.parse().context("--changes N")?,
            "--members" => o.members = value.parse().context("--members N")?,
            "--nbthread" => o.nbthread = Some(value.parse().context("--nbthread N")?),
            "--echo-slice" => {
                o.echo_short_slice = match value.as_str() {
                    "short" => true,
                    "default" => false,
                    other => bail!("--echo-slice {other}: want short or default"),
                }
            }
            "--etcd-place" => {
                o.etcd_place = match value.as_str() {
                    "apart" => LoadPlace::Apart,
                    "shared" => LoadPlace::Shared,
                    other => bail!("--etcd-place {other}: want apart or shared"),
                }
            }
            "--rounds" => o.rounds = value.parse().context("--rounds N")?,
            other => bail!("unknown option {other} ({USAGE})"),
        }
    }
    if o.changes == 0 || o.members == 0 || o.rounds == 0 {
        bail!("--changes, --members and --rounds must be at least 1");
    }
    Ok(o)
}

/// A child process killed when dropped.
pub struct Killed(Child);

impl Killed {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `cmd` with stdout and stderr to `log`, killed if this process dies.
pub fn spawn(cmd: &mut Command, log: &Path) -> Result<Killed> {
    let log = std::fs::File::create(log)?;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    Ok(Killed(child))
}

/// A free port on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A running one-member etcd.
pub struct Etcd {
    /// The process.
    pub proc: Killed,
    /// A client connected to it.
    pub client: etcd_client::Client,
    /// Its client URL.
    pub endpoint: String,
    /// Its data directory when not under the caller's (dropped after `proc`: removed once
    /// etcd is gone).
    _data: Option<tempfile::TempDir>,
}

/// Puts the calling thread (or, in `pre_exec`, the process about to run) at `SCHED_IDLE`, or
/// back at `SCHED_OTHER`. Threads it creates afterwards inherit the policy.
pub fn sched_idle(idle: bool) -> std::io::Result<()> {
    let policy = if idle {
        libc::SCHED_IDLE
    } else {
        libc::SCHED_OTHER
    };
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: the kernel reads `param`, which lives across the call; pid 0 is the caller.
    if unsafe { libc::sched_setscheduler(0, policy, &param) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Starts a one-member etcd with its data in `dir` (its log there too); with
/// [`LoadPlace::Apart`] its data go to a directory in `/dev/shm` (removed with the returned
/// [`Etcd`]) and it runs at `SCHED_IDLE`.
pub async fn start_etcd(bin: &Path, dir: &Path, place: LoadPlace) -> Result<Etcd> {
    let (client, peer) = (free_port()?, free_port()?);
    let endpoint = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let shm = match place {
        LoadPlace::Apart => Some(
            tempfile::tempdir_in("/dev/shm")
                .context("etcd's data on tmpfs (--etcd-place apart): /dev/shm")?,
        ),
        LoadPlace::Shared => None,
    };
    let data = shm.as_ref().map_or(dir, |d| d.path()).join("etcd");
    let mut cmd = Command::new(bin);
    if place == LoadPlace::Apart {
        // SAFETY: sched_setscheduler is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| sched_idle(true));
        }
    }
    let proc = spawn(
        cmd.args(["--name", "bench", "--data-dir"])
            .arg(data)
            .args(["--listen-client-urls", &endpoint])
            .args(["--advertise-client-urls", &endpoint])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("bench={peer_url}")])
            .args(["--log-level", "warn", "--logger", "zap"]),
        &dir.join("etcd.log"),
    )?;
    for _ in 0..100 {
        if let Ok(mut c) = etcd_client::Client::connect([endpoint.as_str()], None).await
            && c.status().await.is_ok()
        {
            return Ok(Etcd {
                proc,
                client: c,
                endpoint,
                _data: shm,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "etcd did not come up at {endpoint} (log: {})",
        dir.display()
    )
}

/// Starts rolelb on `cfg_text` (written to `dir/rolelb.cfg`).
pub fn start_rolelb(bin: &Path, dir: &Path, cfg_text: &str) -> Result<Killed> {
    let cfg = dir.join("rolelb.cfg");
    std::fs::write(&cfg, cfg_text)?;
    spawn(
        Command::new(bin).arg("-f").arg(&cfg),
        &dir.join("rolelb.log"),
    )
}

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// `1.23 ms`.
pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// User + system CPU time of process `pid` so far (all threads), from `/proc/PID/stat`.
pub fn cpu_time(pid: u32) -> Result<Duration> {
    cpu_time_of(&format!("/proc/{pid}/stat"))
}

/// User + system CPU time from a `/proc/.../stat` file (a process's or one thread's).
pub fn cpu_time_of(path: &str) -> Result<Duration> {
    let stat = std::fs::read_to_string(path)?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks: u64 = fields
        .get(11..13)
        .context("short /proc/PID/stat")?
        .iter()
        .map(|f| f.parse::<u64>().unwrap_or(0))
        .sum();
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_millis(ticks * 1000 / hz))
}

/// Resident set size of process `pid` in bytes (`VmRSS`).
pub fn rss(pid: u32) -> Result<u64> {
    status_bytes(pid, "VmRSS:")
}

/// The highest resident set size of process `pid` so far (`VmHWM`), in bytes.
pub fn peak_rss(pid: u32) -> Result<u64> {
    status_bytes(pid, "VmHWM:")
}

fn status_bytes(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .with_context(|| format!("no {field} in /proc/PID/status"))?;
    Ok(kb * 1024)
}

/// The 1-minute load average (`/proc/loadavg`), to say how busy the machine was.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

/// `GET path` over HTTP/1.0 at `addr`; the body.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    let mut conn = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    conn.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())?;
    let mut text = String::new();
    conn.read_to_string(&mut text)?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .context("no HTTP body")?;
    Ok(body)
}

/// Waits until `cond` holds, checking every `every`; the moment it did, or an error after `limit`.
pub fn wait_until(
    limit: Duration,
    every: Duration,
    mut cond: impl FnMut() -> bool,
) -> Result<Instant> {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!("not reached within {limit:?}");
        }
        std::thread::sleep(every);
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let o = options()?;
    match o.mode {
        Mode::Leader | Mode::Txn => swap::run(&o).await,
        Mode::Burst => burst::run(&o).await,
    }
}
