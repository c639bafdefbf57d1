//! Smoke tests of the harness itself, with real HAProxy (in both columns, or against a
//! freshly built rolelb with a real etcd).
//!
//! They prove the harness moves data through real proxies, reports every row, stops its
//! proxies (and etcd) on success, on a setup failure and on `SIGTERM` — never how fast
//! anything is: no timing assertions.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const HAPROXY: &str = "/usr/sbin/haproxy";
const ETCD: &str = "/usr/bin/etcd";

/// A required binary: missing, the test fails with the fix, never skips.
fn require(path: &str) {
    assert!(
        Path::new(path).is_file(),
        "{path} not found: run scripts/deps.sh"
    );
}

/// A quick, small run; `extra` adds or overrides flags.
fn bench(rolelb: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rolelb-bench"))
        .args(["--haproxy", HAPROXY, "--rolelb", rolelb])
        .args(["--quick", "--seconds", "0.3", "--rounds", "1"])
        .args(["--idle-sessions", "50"])
        .args(extra)
        .output()
        .expect("running rolelb-bench")
}

/// The first table block's values in the direct, haproxy, +splice, rolelb, r+splice and
/// haproxy#2 columns of the row starting with `label` (`None` for "-").
fn row(stdout: &str, label: &str) -> Vec<Option<f64>> {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no row {label:?} in:\n{stdout}"));
    // The label takes the first 38 characters.
    let values: String = line.chars().skip(38).collect();
    values
        .split_whitespace()
        .take(6)
        .map(|w| {
            (w != "-").then(|| {
                w.parse()
                    .unwrap_or_else(|_| panic!("not a number {w:?} in {line:?}"))
            })
        })
        .collect()
}

/// The pids the harness printed for the processes it started.
fn started_pids(stdout: &str) -> Vec<u32> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("started "))
        .filter_map(|l| l.split_whitespace().nth(2)?.parse().ok())
        .collect()
}

fn assert_gone(pids: &[u32]) {
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} still runs after the harness exited"
        );
    }
}

fn assert_success(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "rolelb-bench failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn quick_run_moves_data_through_every_proxy_and_stops_them() {
    require(HAPROXY);
    let host_tw = || std::fs::read_to_string("/proc/sys/net/ipv4/tcp_max_tw_buckets").ok();
    let before = host_tw();
    let out = bench(HAPROXY, &["--churn-members", "0"]);
    let stdout = assert_success(&out);
    assert_eq!(
        host_tw(),
        before,
        "the bench changed the host's TIME_WAIT cap"
    );
    for label in [
        "conns/s",
        "ping-pong msg/s",
        "bulk upload Gbit/s",
        "bulk download Gbit/s",
    ] {
        for v in row(&stdout, label) {
            assert!(v.is_some_and(|v| v > 0.0), "{label}: zero in\n{stdout}");
        }
    }
    // Idle RSS is measured on the proxies only: direct has none.
    let idle = row(&stdout, "idle RSS KiB per session (50)");
    assert_eq!(idle[0], None, "{stdout}");
    assert!(idle[1..].iter().all(Option::is_some), "{stdout}");
    assert!(stdout.contains("== nbthread 1 ==") && stdout.contains("== nbthread 2 =="));
    assert!(stdout.contains("A/A spread (nbthread 2)"), "{stdout}");
    assert!(stdout.contains("option splice-auto"), "{stdout}");
    // Every echo measurement gives its connections' own p99s (lowest/median/highest).
    let echo_lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("round ") && l.contains(" echo "))
        .collect();
    assert!(!echo_lines.is_empty(), "{stdout}");
    for line in echo_lines {
        let spread = line
            .split("p99 per conn ")
            .nth(1)
            .unwrap_or_else(|| panic!("no per-connection p99 in {line:?}"));
        let values: Vec<f64> = spread
            .split(" µs")
            .next()
            .unwrap_or_default()
            .split('/')
            .map(|v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("not a number {v:?} in {line:?}"))
            })
            .collect();
        assert_eq!(values.len(), 3, "{line}");
        assert!(values[0] <= values[1] && values[1] <= values[2], "{line}");
    }
    let pids = started_pids(&stdout);
    assert_eq!(pids.len(), 10, "{stdout}");
    assert_gone(&pids);
}

/// The rolelb binary of this build profile, built first (it sits next to rolelb-bench).
fn built_rolelb() -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "-p", "rolelb", "--bin", "rolelb"])
        .status()
        .expect("running cargo build -p rolelb");
    assert!(status.success(), "cargo build -p rolelb failed");
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_rolelb-bench"));
    let rolelb = bench.with_file_name("rolelb");
    assert!(rolelb.is_file(), "{} not built", rolelb.display());
    rolelb
}

#[test]
fn etcd_churn_row_runs_against_a_real_etcd_and_rolelb_sees_every_member() {
    require(HAPROXY);
    require(ETCD);
    let rolelb = built_rolelb();
    let out = bench(
        rolelb.to_str().expect("utf-8 path"),
        &["--nbthread", "1", "--churn-members", "20"],
    );
    let stdout = assert_success(&out);
    let churn = row(&stdout, "etcd churn echo p99 µs (20 members)");
    assert!(churn.iter().all(|v| v.is_some_and(|v| v > 0.0)), "{stdout}");
    assert!(
        stdout.contains("rolelb+etcd/t1       churn")
            && stdout.contains("all in its table")
            && !stdout.contains("NOT all in its table"),
        "{stdout}"
    );
    // etcd, five proxies and the etcd-watching rolelb.
    let pids = started_pids(&stdout);
    assert_eq!(pids.len(), 7, "{stdout}");
    assert_gone(&pids);
}

#[test]
fn proxy_that_cannot_start_fails_the_run_and_stops_the_others() {
    require(HAPROXY);
    let out = bench("/bin/false", &["--churn-members", "0"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected a setup failure:\n{stdout}");
    assert!(
        stderr.contains("rolelb/t1 (rolelb) exited before listening"),
        "{stderr}"
    );
    // haproxy/t1 and haproxy+splice/t1 were up.
    let pids = started_pids(&stdout);
    assert_eq!(pids.len(), 2, "{stdout}");
    assert_gone(&pids);
}

#[test]
fn sigterm_mid_run_stops_every_proxy() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    require(HAPROXY);
    let mut child = Command::new(env!("CARGO_BIN_EXE_rolelb-bench"))
        .args(["--haproxy", HAPROXY, "--rolelb", HAPROXY, "--seconds", "5"])
        .args(["--churn-members", "0", "--idle-sessions", "50"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting rolelb-bench");
    let stdout = child.stdout.take().expect("piped stdout");
    // Bounded: the header is a few dozen lines, and EOF ends it if the harness exits early.
    let mut header = String::new();
    for line in BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .take(200)
    {
        header.push_str(&line);
        header.push('\n');
        if line == "all proxies started" {
            break;
        }
    }
    let pids = started_pids(&header);
    assert_eq!(pids.len(), 10, "{header}");
    // The proxies run in the bench's own network namespace, where closes leave no TIME_WAIT.
    let ns_of = |pid: &str| {
        std::fs::read_link(format!("/proc/{pid}/ns/net"))
            .unwrap_or_else(|e| panic!("network namespace of {pid}: {e}"))
    };
    let bench_ns = ns_of(&child.id().to_string());
    assert_ne!(
        bench_ns,
        ns_of("self"),
        "the bench runs in the host's namespace"
    );
    for &p in &pids {
        assert_eq!(
            ns_of(&p.to_string()),
            bench_ns,
            "pid {p} not in the bench's namespace"
        );
    }
    // /proc/sys/net shows the reader's namespace: read it from inside the bench's.
    let tw = Command::new("nsenter")
        .arg(format!("--net=/proc/{}/ns/net", child.id()))
        .args(["cat", "/proc/sys/net/ipv4/tcp_max_tw_buckets"])
        .output()
        .expect("running nsenter (util-linux)");
    assert_eq!(String::from_utf8_lossy(&tw.stdout).trim(), "0", "{tw:?}");
    assert!(header.contains("tcp_max_tw_buckets 0"), "{header}");
    let pid = i32::try_from(child.id()).expect("pid fits i32");
    // SAFETY: kill(2) on a child we started and have not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("polling rolelb-bench") {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    assert_gone(&pids);
}

#[test]
fn syscalls_mode_counts_both_proxies_per_connection() {
    require(HAPROXY);
    let strace = "/usr/bin/strace";
    assert!(
        Path::new(strace).is_file(),
        "{strace} not found: run scripts/deps.sh"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_rolelb-bench"))
        .args(["--haproxy", HAPROXY, "--rolelb", HAPROXY])
        .args(["--strace", strace, "--syscalls", "200", "--nbthread", "1"])
        .output()
        .expect("running rolelb-bench --syscalls");
    let stdout = assert_success(&out);
    // Every connection is accepted once by each proxy, and each makes one connect to a backend.
    for call in ["accept4", "connect"] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(call))
            .unwrap_or_else(|| panic!("no {call} row in:\n{stdout}"));
        let words: Vec<&str> = line.split_whitespace().collect();
        let calls: Vec<u64> = [words[1], words[4]]
            .iter()
            .map(|w| w.parse().unwrap_or(0))
            .collect();
        assert!(calls.iter().all(|&c| c >= 200), "{line}");
    }
    assert!(
        stdout.contains("200 connections done, 0 failed"),
        "{stdout}"
    );
    assert_gone(&started_pids(&stdout));
}

#[test]
fn profile_mode_splits_both_proxies_cpu_per_connection() {
    require(HAPROXY);
    let perf = "/usr/bin/perf";
    assert!(
        Path::new(perf).is_file(),
        "{perf} not found: run scripts/deps.sh"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_rolelb-bench"))
        .args(["--haproxy", HAPROXY, "--rolelb", HAPROXY])
        .args(["--perf", perf, "--profile", "2000", "--nbthread", "1"])
        .output()
        .expect("running rolelb-bench --profile");
    let stdout = assert_success(&out);
    assert_eq!(
        stdout.matches("2000 connections done, 0 failed").count(),
        2,
        "{stdout}"
    );
    // µs per connection of each proxy: CPU, in the kernel, in user space.
    let values = |label: &str| -> Vec<f64> {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no {label:?} row in:\n{stdout}"));
        line[label.len()..]
            .split_whitespace()
            .take(2)
            .map(|w| w.parse().unwrap_or_else(|_| panic!("{w:?} in {line:?}")))
            .collect()
    };
    let (cpu, kernel, user) = (
        values("CPU in all"),
        values("  in the kernel"),
        values("  in user space"),
    );
    for i in 0..2 {
        assert!(cpu[i] > 0.0 && kernel[i] > 0.0, "{stdout}");
        assert!((kernel[i] + user[i] - cpu[i]).abs() < 0.02, "{stdout}");
    }
    for name in ["haproxy", "rolelb"] {
        let heading = format!("busiest user-space functions of {name}, µs per connection:");
        assert!(stdout.contains(&heading), "{stdout}");
    }
    assert!(
        stdout.contains(
            "context switches per connection (all threads, /proc/PID/task/*/status): haproxy "
        ),
        "{stdout}"
    );
    assert_gone(&started_pids(&stdout));
}
