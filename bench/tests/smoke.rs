//! Smoke tests of the harness itself, with HAProxy standing in on both sides.
//!
//! They prove the harness moves data through a real proxy, reports it, stops its proxies
//! on success and on a setup failure — never how fast anything is: no timing assertions.

use std::path::Path;
use std::process::{Command, Output};

const HAPROXY: &str = "/usr/sbin/haproxy";

/// HAProxy is required: a missing binary fails the test with the fix, never skips it.
fn require_haproxy() {
    assert!(
        Path::new(HAPROXY).is_file(),
        "{HAPROXY} not found: run scripts/deps.sh"
    );
}

fn bench(rolelb: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rolelb-bench"))
        .args(["--haproxy", HAPROXY, "--rolelb", rolelb])
        .args(["--quick", "--seconds", "0.3", "--rounds", "1"])
        .output()
        .expect("running rolelb-bench")
}

/// The numbers in the direct, haproxy and rolelb columns of the row starting with `label`.
fn row(stdout: &str, label: &str) -> Vec<f64> {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no row {label:?} in:\n{stdout}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    // The row ends with: direct haproxy rolelb ratio arrow.
    words[words.len() - 5..words.len() - 2]
        .iter()
        .map(|w| {
            w.parse()
                .unwrap_or_else(|_| panic!("not a number in {line:?}"))
        })
        .collect()
}

/// The pids the harness printed for the proxies it started.
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
            "proxy pid {pid} still runs after the harness exited"
        );
    }
}

#[test]
fn quick_run_moves_data_through_both_proxies_and_stops_them() {
    require_haproxy();
    let out = bench(HAPROXY);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "rolelb-bench failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for label in [
        "bulk upload MB/s",
        "bulk download MB/s",
        "short conns/s",
        "echo msgs/s",
    ] {
        for v in row(&stdout, label) {
            assert!(v > 0.0, "{label}: zero in\n{stdout}");
        }
    }
    assert!(stdout.contains("nbthread 1"));
    let pids = started_pids(&stdout);
    assert_eq!(pids.len(), 2, "{stdout}");
    assert_gone(&pids);
}

#[test]
fn proxy_that_cannot_start_fails_the_run_and_stops_the_other() {
    require_haproxy();
    let out = bench("/bin/false");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected a setup failure:\n{stdout}");
    assert!(
        stderr.contains("rolelb exited before listening"),
        "{stderr}"
    );
    let pids = started_pids(&stdout);
    assert_eq!(pids.len(), 1, "{stdout}");
    assert_gone(&pids);
}

#[test]
fn sigterm_mid_run_stops_both_proxies() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    require_haproxy();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rolelb-bench"))
        .args(["--haproxy", HAPROXY, "--rolelb", HAPROXY, "--seconds", "5"])
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
        if line.starts_with("started rolelb") {
            break;
        }
    }
    let pids = started_pids(&header);
    assert_eq!(pids.len(), 2, "{header}");
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
