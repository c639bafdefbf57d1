//! [`Lan`]: a private Ethernet segment built from Linux network namespaces, for tests that need
//! more than 127.0.0.1 (keepalived moving a VIP between nodes): one namespace holds a bridge,
//! every member namespace is plugged into it by a veth pair and gets `eth0` with its own
//! address. Names are unique per run (`rlka-PID-N-...`), the addresses exist only inside those
//! namespaces, and dropping the [`Lan`] deletes them all.
//!
//! Code reaches a member namespace two ways: [`Lan::command`] runs a program in it (`ip netns
//! exec NS PROGRAM`, which execs, so the PID is the program's own and [`crate::Proc`] stops it
//! by that PID), and [`in_ns`] runs a closure on a thread that entered it, so sockets it opens
//! (a client connection, a listener) belong to that namespace. [`NsServer`] is a
//! [`NamedServer`] listening inside a namespace.
//!
//! Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN): without, [`Lan::new`] panics saying so.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use crate::named::NamedServer;
use crate::process::{command, require_bin};

/// iproute2's `ip`.
pub const IP_BIN: &str = "/usr/sbin/ip";

/// Where `ip netns add` puts the namespaces' handles.
const NETNS_DIR: &str = "/run/netns";

/// The prefix of every namespace this harness creates.
const NS_PREFIX: &str = "rlka-";

/// Runs `ip ARGS`, panicking with its error output when it fails.
pub fn ip(args: &[&str]) -> String {
    let out = Command::new(require_bin(IP_BIN))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ip {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Enters network namespace `ns` on the calling thread.
fn enter(ns: &str) -> Result<(), String> {
    let path = Path::new(NETNS_DIR).join(ns);
    let file = File::open(&path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    // SAFETY: setns on a descriptor we own; it changes only this thread's network namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "setns({}): {}",
            path.display(),
            std::io::Error::last_os_error()
        ))
    }
}

/// Runs `f` on a new thread inside network namespace `ns` and returns its result (a panic in
/// `f` is the caller's panic). Sockets `f` creates stay in `ns` when they are used elsewhere.
pub fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    thread::scope(|s| {
        let joined = s
            .spawn(|| {
                enter(ns).unwrap_or_else(|e| panic!("{e}"));
                f()
            })
            .join();
        joined.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Deletes namespaces named `PREFIX<pid>-...` of earlier runs whose process is gone (a run
/// killed outright leaves its namespaces behind, and their veth pairs with them; their
/// processes died with it through PDEATHSIG).
pub fn remove_stale(prefix: &str) {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new(IP_BIN).args(["netns", "del", &name]).output();
        }
    }
}

/// A bridged segment of network namespaces: each member has `eth0` with its address/24.
pub struct Lan {
    tag: String,
    /// Every namespace created, bridge first; deleted in reverse on drop.
    created: Vec<String>,
}

impl Lan {
    /// Creates the bridge namespace and one namespace per `(member, address)`, each plugged
    /// into the bridge with `eth0` up and `address/24` on it (and `lo` up).
    pub fn new(members: &[(&str, Ipv4Addr)]) -> Lan {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        require_bin(IP_BIN);
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test builds network namespaces (ip netns add, veth, bridge) and needs root \
             (CAP_NET_ADMIN and CAP_SYS_ADMIN); run it as root"
        );
        remove_stale(NS_PREFIX);
        let tag = format!(
            "{NS_PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let mut lan = Lan {
            tag,
            created: Vec::new(),
        };
        let br = lan.add_ns("br");
        ip(&["-n", &br, "link", "add", "br0", "type", "bridge"]);
        // No snooping: VRRP adverts (224.0.0.18) reach every port whatever IGMP says.
        ip(&[
            "-n",
            &br,
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ]);
        ip(&["-n", &br, "link", "set", "br0", "up"]);
        for (i, (member, addr)) in members.iter().enumerate() {
            let ns = lan.add_ns(member);
            let port = format!("p{i}");
            ip(&[
                "-n", &br, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ]);
            ip(&["-n", &br, "link", "set", &port, "master", "br0", "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        lan
    }

    fn add_ns(&mut self, member: &str) -> String {
        let name = self.ns(member);
        let out = Command::new(IP_BIN)
            .args(["netns", "add", &name])
            .output()
            .unwrap_or_else(|e| panic!("cannot run ip netns add: {e}"));
        assert!(
            out.status.success(),
            "ip netns add {name} failed: {} (this test needs root: CAP_NET_ADMIN and CAP_SYS_ADMIN)",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        self.created.push(name.clone());
        name
    }

    /// The namespace name of `member`.
    pub fn ns(&self, member: &str) -> String {
        format!("{}-{member}", self.tag)
    }

    /// A command running `program` inside `member`'s namespace (`ip netns exec`), from `cwd`,
    /// that dies with the spawning thread.
    pub fn command(&self, member: &str, program: &Path, cwd: &Path) -> Command {
        let mut cmd = command(&require_bin(IP_BIN), false, cwd);
        cmd.args(["netns", "exec", &self.ns(member)]).arg(program);
        cmd
    }

    /// The IPv4 addresses on `member`'s `eth0` (`ip -4 -o addr show`).
    pub fn addrs(&self, member: &str) -> Vec<Ipv4Addr> {
        ip(&[
            "-n",
            &self.ns(member),
            "-4",
            "-o",
            "addr",
            "show",
            "dev",
            "eth0",
        ])
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "inet")?;
            words.next()?.split('/').next()?.parse().ok()
        })
        .collect()
    }

    /// Runs `f` inside `member`'s namespace (see [`in_ns`]).
    pub fn run<T: Send>(&self, member: &str, f: impl FnOnce() -> T + Send) -> T {
        in_ns(&self.ns(member), f)
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        // Deleting a namespace its processes have left frees its veth, addresses and bridge.
        for ns in self.created.iter().rev() {
            let _ = Command::new(IP_BIN).args(["netns", "del", ns]).output();
        }
    }
}

/// A [`NamedServer`] listening on an address inside a namespace. Stopping it connects to it
/// to wake its accept loop, so that happens inside the namespace too.
pub struct NsServer {
    ns: String,
    server: Option<NamedServer>,
}

impl NsServer {
    /// Starts a [`NamedServer`] called `name` on `addr` inside `member`'s namespace.
    pub fn start(lan: &Lan, member: &str, name: &str, addr: SocketAddr) -> NsServer {
        let ns = lan.ns(member);
        let server = in_ns(&ns, || NamedServer::start_on(name, addr));
        NsServer {
            ns,
            server: Some(server),
        }
    }

    /// The server.
    pub fn server(&self) -> &NamedServer {
        self.server
            .as_ref()
            .expect("NsServer holds its server until dropped")
    }
}

impl Drop for NsServer {
    fn drop(&mut self) {
        let Some(server) = self.server.take() else {
            return;
        };
        let ns = self.ns.clone();
        // Never panic in drop: if the namespace cannot be entered, leak the server rather
        // than hang on a wake-up connection that cannot reach it.
        let leftover = thread::spawn(move || match enter(&ns) {
            Ok(()) => {
                drop(server);
                None
            }
            Err(_) => Some(server),
        })
        .join();
        if let Ok(Some(server)) = leftover {
            std::mem::forget(server);
        }
    }
}
