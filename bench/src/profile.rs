//! `--profile N`: where each proxy's CPU goes for N short connections.
//!
//! HAProxy and then rolelb run alone on the shared config. After a warm-up, `perf record -a
//! -e cpu-clock -F 1999` samples every CPU 1,999 times per second of CPU time while the
//! same connectors as the short-connection row open exactly N connections through the
//! proxy; then perf stops and only the proxy's own samples are kept (`perf script --pid`).
//! Each sample is in the kernel or in user space: the two proxies' CPU per connection is
//! printed split that way, with each one's busiest user-space functions and its context
//! switches per connection.
//!
//! Sampling every CPU, not the proxy's threads (`perf record -p`), matters: per-thread
//! sampling switches perf's events with every context switch of the proxy, which charges a
//! proxy that sleeps and wakes more often (rolelb at `nbthread 2`) with perf's own work —
//! measured here, 1.20–1.22× HAProxy's CPU per connection with per-thread sampling against
//! 0.99–1.02× sampling every CPU, as in the benchmark's own rows.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::proxy::{self, Kind, Proxy, Variant};
use crate::workload;

/// Samples per second of CPU time.
const FREQUENCY: u32 = 1999;

/// How long N connections may take under perf.
const LIMIT: Duration = Duration::from_secs(300);

/// User-space functions listed per proxy.
const TOP: usize = 12;

/// Connections through each proxy before sampling starts.
const WARM_UP: u64 = 2000;

/// The samples of one proxy.
#[derive(Debug, Default, PartialEq)]
pub struct Samples {
    /// Samples taken in the kernel.
    pub kernel: u64,
    /// Samples taken in user space, per function (`[unknown]` where the binary has no
    /// symbol for it).
    pub user: HashMap<String, u64>,
}

impl Samples {
    /// Samples taken in user space.
    pub fn user_total(&self) -> u64 {
        self.user.values().sum()
    }

    /// User-space functions, busiest first (ties by name).
    pub fn top_user(&self, n: usize) -> Vec<(&str, u64)> {
        let mut v: Vec<(&str, u64)> = self.user.iter().map(|(s, n)| (s.as_str(), *n)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        v.truncate(n);
        v
    }
}

/// Parses `perf script -F ip,sym,dso`: one sample per line, `ADDRESS SYMBOL (DSO)`; a DSO
/// of `[kernel.kallsyms]` (or any `[kernel...]`) is the kernel.
pub fn parse_script(text: &str) -> Samples {
    let mut out = Samples::default();
    for line in text.lines() {
        let Some((_ip, rest)) = line.trim().split_once(char::is_whitespace) else {
            continue;
        };
        let rest = rest.trim();
        let (sym, dso) = match rest.rsplit_once(" (") {
            Some((sym, dso)) => (sym.trim(), dso.trim_end_matches(')')),
            None => (rest, ""),
        };
        if dso.starts_with("[kernel") {
            out.kernel += 1;
        } else {
            let sym = if sym.is_empty() { "[unknown]" } else { sym };
            *out.user.entry(sym.to_string()).or_default() += 1;
        }
    }
    out
}

/// Renders the two proxies' samples per connection, side by side.
pub fn side_by_side(names: [&str; 2], samples: [&Samples; 2], conns: u64) -> String {
    // One sample is 1/FREQUENCY s of CPU time.
    let us = |n: u64| n as f64 * 1e6 / f64::from(FREQUENCY) / conns.max(1) as f64;
    let ratio = |a: u64, b: u64| {
        if a > 0 {
            format!("{:.2}", b as f64 / a as f64)
        } else {
            "-".to_string()
        }
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<26} {:>10} {:>10} {:>15}",
        "µs per connection",
        names[0],
        names[1],
        format!("{}/{}", names[1], names[0])
    );
    let _ = writeln!(out, "{}", "-".repeat(64));
    let rows = [
        ("CPU in all", samples.map(|s| s.kernel + s.user_total())),
        ("  in the kernel", samples.map(|s| s.kernel)),
        ("  in user space", samples.map(Samples::user_total)),
    ];
    for (label, [a, b]) in rows {
        let _ = writeln!(
            out,
            "{label:<26} {:>10.2} {:>10.2} {:>15}",
            us(a),
            us(b),
            ratio(a, b)
        );
    }
    let _ = writeln!(
        out,
        "{:<26} {:>10} {:>10}",
        "(samples)",
        samples[0].kernel + samples[0].user_total(),
        samples[1].kernel + samples[1].user_total()
    );
    for (name, s) in names.iter().zip(samples) {
        let _ = writeln!(
            out,
            "\nbusiest user-space functions of {name}, µs per connection:"
        );
        for (sym, n) in s.top_user(TOP) {
            let sym: String = sym.chars().take(72).collect();
            let _ = writeln!(out, "{:>7.2}  {sym}", us(n));
        }
    }
    out
}

/// Samples `conns` connections through each proxy and prints where their CPU went.
pub async fn run(
    haproxy: &Path,
    rolelb: &Path,
    perf: &Path,
    dir: &Path,
    nbthread: u32,
    workers: usize,
    conns: u64,
) -> Result<()> {
    if !perf.is_file() {
        bail!(
            "{}: no such file (install Debian's linux-perf package: run scripts/deps.sh)",
            perf.display()
        );
    }
    let backends = crate::backend::start(2).await?;
    let variant = Variant {
        nbthread,
        splice_auto: false,
    };
    let mut samples = Vec::new();
    let mut switches = Vec::new();
    for (kind, program) in [(Kind::Haproxy, haproxy), (Kind::Rolelb, rolelb)] {
        let addr = proxy::free_ports(1)?[0];
        let cfg = proxy::config_text(addr, &backends.addrs, variant);
        let label = format!("{}/t{nbthread}", kind.name());
        let p = Proxy::start(kind, &label, program, dir, addr, &cfg)?;
        let pid = p.pid();
        println!("started {label} pid {pid} on {addr}");
        let warm = workload::conn_count(addr, workers, WARM_UP, LIMIT).await;
        if warm.ok == 0 {
            bail!("{label} forwarded no connection in the warm-up");
        }
        let data = dir.join(format!("{}.perf", kind.name()));
        let mut sampler = Sampler::start(perf, &data, dir)?;
        let switches0 = proxy::context_switches(pid);
        let r = workload::conn_count(addr, workers, conns, LIMIT).await;
        let switched = proxy::context_switches(pid)
            .zip(switches0)
            .map(|(b, a)| b.saturating_sub(a));
        sampler.stop()?;
        drop(p);
        println!(
            "  {} connections done, {} failed, in {:.1} s",
            r.ok,
            r.errors,
            r.elapsed.as_secs_f64()
        );
        let s = read_samples(perf, &data, pid)?;
        if s.kernel + s.user_total() == 0 {
            bail!("perf took no samples of {label} ({})", data.display());
        }
        samples.push(s);
        switches.push(switched);
    }
    println!(
        "\nCPU for {conns} short connections (connect, 18 bytes, 17-byte echo, close), {workers} \
         connectors, nbthread {nbthread}; perf record -a -e cpu-clock -F {FREQUENCY}, the \
         proxy's threads' samples, from after a warm-up of {WARM_UP} connections to the last \
         connection:\n"
    );
    print!(
        "{}",
        side_by_side(["haproxy", "rolelb"], [&samples[0], &samples[1]], conns)
    );
    let per = |s: Option<u64>| {
        s.map_or("-".to_string(), |s| {
            format!("{:.2}", s as f64 / conns.max(1) as f64)
        })
    };
    println!(
        "\ncontext switches per connection (all threads, /proc/PID/task/*/status): haproxy {}, rolelb {}",
        per(switches[0]),
        per(switches[1])
    );
    Ok(())
}

/// `perf record -a` sampling every CPU in the background until [`Sampler::stop`]; killed on
/// drop, and by the kernel if the bench dies.
struct Sampler {
    child: Child,
    log: PathBuf,
}

impl Sampler {
    /// Starts perf writing to `data` and waits until it samples.
    fn start(perf: &Path, data: &Path, dir: &Path) -> Result<Sampler> {
        let log = dir.join("perf-record.log");
        let err = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new(perf);
        cmd.args(["record", "--quiet", "-a", "-e", "cpu-clock", "-F"])
            .arg(FREQUENCY.to_string())
            .arg("-o")
            .arg(data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err);
        proxy::die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {} record", perf.display()))?;
        let mut sampler = Sampler { child, log };
        // perf writes its file's header once its events are open on every CPU.
        let start = Instant::now();
        while !std::fs::metadata(data).is_ok_and(|m| m.len() > 0) {
            if let Some(status) = sampler.child.try_wait().context("polling perf")? {
                bail!(
                    "perf record exited at once ({status}): {}",
                    sampler.output()
                );
            }
            if start.elapsed() > Duration::from_secs(10) {
                bail!(
                    "perf record wrote nothing within 10 s: {}",
                    sampler.output()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(200));
        Ok(sampler)
    }

    /// Stops it with `SIGINT` (perf then writes the rest of its samples) and waits for it.
    fn stop(&mut self) -> Result<()> {
        let pid = i32::try_from(self.child.id()).context("perf's pid")?;
        // SAFETY: kill(2) on a child we started and have not reaped.
        if unsafe { libc::kill(pid, libc::SIGINT) } != 0 {
            return Err(std::io::Error::last_os_error()).context("SIGINT to perf record");
        }
        let start = Instant::now();
        while self.child.try_wait().context("polling perf")?.is_none() {
            if start.elapsed() > Duration::from_secs(30) {
                bail!(
                    "perf record did not exit within 30 s of SIGINT: {}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// What perf printed, for error messages.
    fn output(&self) -> String {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .trim()
            .to_string()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The samples perf took of process `pid`.
fn read_samples(perf: &Path, data: &Path, pid: u32) -> Result<Samples> {
    let script = Command::new(perf)
        .arg("script")
        .arg("-i")
        .arg(data)
        .arg(format!("--pid={pid}"))
        .args(["-F", "ip,sym,dso"])
        .output()
        .with_context(|| format!("running {} script", perf.display()))?;
    if !script.status.success() {
        bail!(
            "perf script -i {} failed ({}): {}",
            data.display(),
            script.status,
            String::from_utf8_lossy(&script.stderr).trim()
        );
    }
    Ok(parse_script(&String::from_utf8_lossy(&script.stdout)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRIPT: &str = "\
    ffffffff8164be62 __slab_free ([kernel.kallsyms])
    ffffffff81bdc82d tcp_poll ([kernel.kallsyms])
        7fcbffa440af __vdso_clock_gettime ([vdso])
        55d470a6929d [unknown] (/usr/sbin/haproxy)
        55d470a6929e [unknown] (/usr/sbin/haproxy)
        55d470a6929f rolelb::proxy::session::serve::{{closure}} (/x/rolelb)

";

    #[test]
    fn kernel_and_user_samples_are_told_apart_by_their_dso() {
        let s = parse_script(SCRIPT);
        assert_eq!(s.kernel, 2);
        assert_eq!(s.user_total(), 4);
        assert_eq!(
            s.top_user(2),
            vec![("[unknown]", 2), ("__vdso_clock_gettime", 1)]
        );
        assert_eq!(s.user["rolelb::proxy::session::serve::{{closure}}"], 1);
    }

    #[test]
    fn side_by_side_gives_microseconds_per_connection_and_the_ratio() {
        // 1,999 samples = 1 s of CPU; over 1,000 connections, 1,000 µs each.
        let a = Samples {
            kernel: 1999,
            user: HashMap::from([("f".to_string(), 1999)]),
        };
        let b = Samples {
            kernel: 1999,
            user: HashMap::from([("g".to_string(), 3998)]),
        };
        let text = side_by_side(["haproxy", "rolelb"], [&a, &b], 1000);
        let line = |label: &str| {
            text.lines()
                .find(|l| l.starts_with(label))
                .unwrap_or_default()
                .split_whitespace()
                .rev()
                .take(3)
                .collect::<Vec<_>>()
        };
        assert_eq!(line("CPU in all"), ["1.50", "3000.00", "2000.00"], "{text}");
        assert_eq!(
            line("  in the kernel"),
            ["1.00", "1000.00", "1000.00"],
            "{text}"
        );
        assert_eq!(
            line("  in user space"),
            ["2.00", "2000.00", "1000.00"],
            "{text}"
        );
        assert!(
            text.contains("functions of haproxy, µs per connection:\n1000.00  f\n")
                && text.contains("functions of rolelb, µs per connection:\n2000.00  g\n"),
            "{text}"
        );
    }
}
