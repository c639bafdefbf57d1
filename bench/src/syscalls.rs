//! `--syscalls N`: the system calls each proxy makes for N short connections.
//!
//! HAProxy and rolelb each run under `strace -c -f -o FILE` (all threads counted) on the
//! shared config; the same connectors as the short-connection row open exactly N
//! connections through one proxy, then the proxy gets `SIGTERM` so strace writes its
//! summary, and the next proxy follows. The two summaries are printed side by side, per
//! connection. Start-up and shutdown are in the counts too (a few hundred calls; at N =
//! 10,000 they add well under 0.1 per connection).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::proxy::{self, Kind, Proxy, Variant};
use crate::workload;

/// How long N connections may take under strace, which slows every call.
const LIMIT: Duration = Duration::from_secs(300);

/// Calls and errors of one system call.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Count {
    /// Calls.
    pub calls: u64,
    /// Calls that returned an error.
    pub errors: u64,
}

/// Parses the table `strace -c` writes: `% time, seconds, usecs/call, calls, [errors], syscall`.
pub fn parse_summary(text: &str) -> BTreeMap<String, Count> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        // Header, rulers and the "total" line are not system calls.
        if !(5..=6).contains(&words.len()) || words[0].parse::<f64>().is_err() {
            continue;
        }
        let name = words[words.len() - 1];
        if name == "total" {
            continue;
        }
        let Ok(calls) = words[3].parse::<u64>() else {
            continue;
        };
        let errors = if words.len() == 6 {
            words[4].parse().unwrap_or(0)
        } else {
            0
        };
        out.insert(name.to_string(), Count { calls, errors });
    }
    out
}

/// Renders two summaries side by side, per connection, busiest first.
pub fn side_by_side(names: [&str; 2], tables: [&BTreeMap<String, Count>; 2], conns: u64) -> String {
    let mut calls: Vec<(&String, [Count; 2])> = tables[0]
        .keys()
        .chain(tables[1].keys())
        .map(|k| {
            (
                k,
                [
                    tables[0].get(k).copied().unwrap_or_default(),
                    tables[1].get(k).copied().unwrap_or_default(),
                ],
            )
        })
        .collect();
    calls.sort_by(|a, b| {
        let max = |c: &[Count; 2]| c[0].calls.max(c[1].calls);
        max(&b.1).cmp(&max(&a.1)).then(a.0.cmp(b.0))
    });
    calls.dedup_by(|a, b| a.0 == b.0);
    let per = |n: u64| n as f64 / conns.max(1) as f64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<20} {:>12} {:>10} {:>8} {:>12} {:>10} {:>8}",
        "syscall", names[0], "per conn", "errors", names[1], "per conn", "errors"
    );
    let _ = writeln!(out, "{}", "-".repeat(86));
    let mut total = [0u64; 2];
    let (mut rest, mut rest_kinds) = ([0u64; 2], 0);
    for (name, c) in &calls {
        total[0] += c[0].calls;
        total[1] += c[1].calls;
        // Calls made less than once per 100 connections on both sides are start-up and
        // shutdown: summed in one line.
        if per(c[0].calls.max(c[1].calls)) < 0.01 {
            rest[0] += c[0].calls;
            rest[1] += c[1].calls;
            rest_kinds += 1;
            continue;
        }
        let _ = writeln!(
            out,
            "{:<20} {:>12} {:>10.2} {:>8} {:>12} {:>10.2} {:>8}",
            name,
            c[0].calls,
            per(c[0].calls),
            c[0].errors,
            c[1].calls,
            per(c[1].calls),
            c[1].errors
        );
    }
    if rest_kinds > 0 {
        let _ = writeln!(
            out,
            "{:<20} {:>12} {:>10.2} {:>8} {:>12} {:>10.2}",
            format!("({rest_kinds} others)"),
            rest[0],
            per(rest[0]),
            "",
            rest[1],
            per(rest[1])
        );
    }
    let _ = writeln!(
        out,
        "{:<20} {:>12} {:>10.2} {:>8} {:>12} {:>10.2}",
        "total",
        total[0],
        per(total[0]),
        "",
        total[1],
        per(total[1])
    );
    out
}

/// Runs the syscall count for `conns` connections through each proxy and prints the table.
pub async fn run(
    haproxy: &Path,
    rolelb: &Path,
    strace: &Path,
    dir: &Path,
    nbthread: u32,
    workers: usize,
    conns: u64,
) -> Result<()> {
    if !strace.is_file() {
        bail!(
            "{}: no such file (install Debian's strace package)",
            strace.display()
        );
    }
    let backends = crate::backend::start(2).await?;
    let variant = Variant {
        nbthread,
        splice_auto: false,
    };
    let mut tables = Vec::new();
    for (kind, program) in [(Kind::Haproxy, haproxy), (Kind::Rolelb, rolelb)] {
        let addr = proxy::free_ports(1)?[0];
        let cfg = proxy::config_text(addr, &backends.addrs, variant);
        let out = dir.join(format!("{}.strace", kind.name()));
        let wrap_args: Vec<OsString> =
            vec!["-c".into(), "-f".into(), "-o".into(), out.clone().into()];
        let label = format!("{}/t{nbthread}", kind.name());
        let mut p = Proxy::start_wrapped(
            kind,
            &label,
            program,
            dir,
            addr,
            &cfg,
            Some((strace, &wrap_args)),
        )?;
        println!(
            "started {label} pid {} (strace, tracing it) on {addr}",
            p.pid()
        );
        let r = workload::conn_count(addr, workers, conns, LIMIT).await;
        println!(
            "  {} connections done, {} failed, in {:.1} s (slowed by strace)",
            r.ok,
            r.errors,
            r.elapsed.as_secs_f64()
        );
        if !p.stop_wrapped(Duration::from_secs(30))? {
            bail!("strace around {label} did not exit within 30 s of SIGTERM to the proxy");
        }
        let text =
            std::fs::read_to_string(&out).with_context(|| format!("reading {}", out.display()))?;
        tables.push(parse_summary(&text));
    }
    println!(
        "\nsystem calls for {conns} short connections (connect, 18 bytes, 17-byte echo, close), \
         {workers} connectors, nbthread {nbthread}; strace -c -f, all threads, start-up and \
         shutdown included:\n"
    );
    print!(
        "{}",
        side_by_side(["haproxy", "rolelb"], [&tables[0], &tables[1]], conns)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 40.00    0.004000           2      2000           epoll_wait
 30.00    0.003000           1      3000      1000 recvfrom
  0.00    0.000000           0         1           close
------ ----------- ----------- --------- --------- ----------------
100.00    0.007000           1      5001      1000 total
";

    #[test]
    fn parses_calls_and_errors_and_skips_total() {
        let t = parse_summary(SAMPLE);
        assert_eq!(t.len(), 3);
        assert_eq!(
            t["recvfrom"],
            Count {
                calls: 3000,
                errors: 1000
            }
        );
        assert_eq!(t["epoll_wait"].errors, 0);
        assert!(!t.contains_key("total"));
    }

    #[test]
    fn side_by_side_lists_each_call_once_busiest_first() {
        let a = parse_summary(SAMPLE);
        let mut b = BTreeMap::new();
        b.insert(
            "epoll_wait".to_string(),
            Count {
                calls: 5000,
                errors: 0,
            },
        );
        let text = side_by_side(["haproxy", "rolelb"], [&a, &b], 1000);
        // `close`, once in 1,000 connections, is folded into the others.
        assert!(
            text.contains("(1 others)") && !text.contains("close"),
            "{text}"
        );
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[2].starts_with("epoll_wait") && lines[2].contains("5.00"),
            "{text}"
        );
        assert!(lines[3].starts_with("recvfrom"), "{text}");
        assert_eq!(text.matches("epoll_wait").count(), 1, "{text}");
        assert!(
            lines
                .last()
                .is_some_and(|l| l.starts_with("total") && l.contains("5001"))
        );
    }
}
