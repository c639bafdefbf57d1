//! Running as a service: both units in `systemd/` pass `systemd-analyze verify` (with the
//! binaries built here in place of the installed ones); rolelb speaks `Type=notify` on a
//! `NOTIFY_SOCKET` the test provides (`READY=1` only once its listeners are bound, then
//! `RELOADING=1` with `MONOTONIC_USEC` and `READY=1` around each `SIGHUP` reload, applied or
//! refused, and `STOPPING=1` when a soft stop begins); and `--help` of both programs says
//! what they do, their signals and where to read more.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{free_port, is_listening, rolelb_bin};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The directory of the binaries under test.
fn bin_dir() -> std::path::PathBuf {
    rolelb_bin()
        .parent()
        .expect("the binary's directory")
        .to_path_buf()
}

#[test]
fn both_units_pass_systemd_analyze_verify() {
    let analyze = Path::new("/usr/bin/systemd-analyze");
    assert!(
        analyze.exists(),
        "systemd-analyze is missing: run scripts/deps.sh (package systemd)"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    for (unit, bin) in [
        ("rolelb.service", "rolelb"),
        ("rolelb-agent.service", "rolelb-agent"),
    ] {
        let text = std::fs::read_to_string(units.join(unit)).expect("reading the unit");
        let installed = format!("/usr/bin/{bin} ");
        assert!(
            text.contains(&installed),
            "{unit} runs {installed}(where the package installs it)"
        );
        let local = format!("{} ", bin_dir().join(bin).display());
        std::fs::write(dir.path().join(unit), text.replace(&installed, &local))
            .expect("writing the unit copy");
    }
    // `--man=no`: the man pages are installed by the package, not present here.
    let out = Command::new(analyze)
        .args([
            "verify",
            "--man=no",
            "rolelb.service",
            "rolelb-agent.service",
        ])
        .current_dir(dir.path())
        .output()
        .expect("running systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        out.status
    );
}

/// Reads notify messages until one contains `want`; returns it.
fn wait_message(socket: &UnixDatagram, want: &str, seen: &mut Vec<String>) -> String {
    let mut buf = [0u8; 4096];
    loop {
        let n = socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no notify message with {want} (got {seen:?}): {e}"));
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        seen.push(msg.clone());
        if msg.lines().any(|l| l == want) {
            return msg;
        }
    }
}

#[test]
fn rolelb_notifies_ready_reloading_and_stopping() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket_path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&socket_path).expect("binding the notify socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("read timeout");
    let port = free_port();
    let config = |extra: &str| {
        format!(
            "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 5s\n    \
             timeout server 5s\n\nlisten pool\n    bind 127.0.0.1:{port}\n    \
             server s1 127.0.0.1:1\n{extra}"
        )
    };
    let cfg = dir.path().join("rolelb.cfg");
    std::fs::write(&cfg, config("")).expect("writing the config");
    let mut child = Command::new(rolelb_bin())
        .arg("-f")
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &socket_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting rolelb");
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("a pid"));
    let mut seen = Vec::new();

    let ready = wait_message(&socket, "READY=1", &mut seen);
    assert!(
        is_listening(port),
        "READY=1 came before the listener was bound: {ready}"
    );
    assert!(ready.contains("STATUS="), "{ready}");

    kill(pid, Signal::SIGHUP).expect("SIGHUP");
    let reloading = wait_message(&socket, "RELOADING=1", &mut seen);
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    let reloaded = wait_message(&socket, "READY=1", &mut seen);
    assert!(
        reloaded.contains("STATUS=configuration reloaded"),
        "{reloaded}"
    );

    std::fs::write(&cfg, config("    bogus-keyword 1\n")).expect("writing a bad config");
    kill(pid, Signal::SIGHUP).expect("SIGHUP");
    wait_message(&socket, "RELOADING=1", &mut seen);
    let refused = wait_message(&socket, "READY=1", &mut seen);
    assert!(
        refused.contains("STATUS=reload refused") && refused.contains("rolelb.cfg:"),
        "a refused reload says so with FILE:LINE: {refused}"
    );
    assert!(is_listening(port), "the old configuration keeps serving");

    kill(pid, Signal::SIGUSR1).expect("SIGUSR1");
    let stopping = wait_message(&socket, "STOPPING=1", &mut seen);
    assert!(stopping.contains("SIGUSR1"), "{stopping}");
    let _ = child.kill();
    let _ = child.wait();
}

/// `BIN --help`'s output.
fn help(bin: &Path) -> String {
    let out = Command::new(bin)
        .arg("--help")
        .output()
        .expect("running --help");
    assert!(
        out.status.success(),
        "{} --help: {}",
        bin.display(),
        out.status
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn help_explains_the_programs_signals_and_documentation() {
    let rolelb = help(&rolelb_bin());
    for needle in [
        "primary",
        "haproxy.cfg",
        "SIGHUP",
        "SIGTERM",
        "SIGUSR1",
        "hard-stop-after",
        "/healthz",
        "admin bind",
        "stats socket",
        "rolelb -c -f",
        "docs/config.md",
    ] {
        assert!(
            rolelb.contains(needle),
            "rolelb --help lacks {needle:?}:\n{rolelb}"
        );
    }
    let agent = help(&bin_dir().join("rolelb-agent"));
    for needle in [
        "agent-check",
        "/primary",
        "/replica",
        "SIGTERM",
        "state drain",
        "rolelb-agent -c -f",
        "agent/README.md",
    ] {
        assert!(
            agent.contains(needle),
            "rolelb-agent --help lacks {needle:?}:\n{agent}"
        );
    }
}
