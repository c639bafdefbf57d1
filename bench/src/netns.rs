//! The bench's own network namespace, where closed connections leave no `TIME_WAIT`.
//!
//! A 1 s short-connection measurement at ~25,000 connections/s leaves as many `TIME_WAIT`
//! sockets towards its proxy and its backends, nearly the whole ephemeral port range
//! (28,232 ports) per destination, for 60 s. A target measured again within that minute
//! then has to search past them for every `connect` (on loopback the kernel may reuse one
//! only once it is a second old), and the run showed two regimes: 24,000–26,000 and
//! 14,000 connections/s for the same proxy, decided by what ran before it, with the A/A
//! pair 0.61 to 1.73 apart in one round. With `tcp_max_tw_buckets` at 0 every target starts
//! every measurement from the same empty table. The setting belongs to the network
//! namespace, so the bench takes a new one (loopback only) and leaves the host's alone.

use std::io::Write;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Moves this process (before it starts any thread) into a new network namespace with its
/// loopback up and `net.ipv4.tcp_max_tw_buckets` at 0. Needs `CAP_SYS_ADMIN` (root).
pub fn enter() -> Result<()> {
    // SAFETY: unshare(2) takes no pointers; called from main before any thread exists, so
    // every thread and child process the bench starts afterwards inherits the namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        let e = std::io::Error::last_os_error();
        bail!(
            "cannot create the bench's network namespace (unshare CLONE_NEWNET: {e}); \
             run as root, or pass --host-net to measure in the host's namespace"
        );
    }
    let status = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .context("running `ip link set lo up` (iproute2: run scripts/deps.sh)")?;
    if !status.success() {
        bail!("`ip link set lo up` in the bench's network namespace failed: {status}");
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(TW_BUCKETS)
        .and_then(|mut f| f.write_all(b"0\n"))
        .with_context(|| format!("writing 0 to {TW_BUCKETS}"))?;
    Ok(())
}

const TW_BUCKETS: &str = "/proc/sys/net/ipv4/tcp_max_tw_buckets";

/// How the report names the network the run used.
pub fn describe(host_net: bool) -> &'static str {
    if host_net {
        "the host's network namespace (--host-net): TIME_WAIT as the host has it"
    } else {
        "its own network namespace, loopback only, tcp_max_tw_buckets 0 (no TIME_WAIT left between measurements)"
    }
}
