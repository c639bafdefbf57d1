//! Another process's descriptors, read from the outside: duplicated into the test with
//! `pidfd_getfd` (Linux 5.6+, as root) so their socket options or pipe sizes can be asked
//! of the kernel, whatever program (rolelb, HAProxy) holds them.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The descriptors of process `pid` whose `/proc/PID/fd` link (e.g. `socket:[123]`,
/// `pipe:[456]`) satisfies `wanted`, duplicated into this process. One closed meanwhile is
/// skipped.
pub fn fds_of(pid: u32, wanted: impl Fn(&str) -> bool) -> Vec<OwnedFd> {
    // SAFETY: a plain system call on integers; the result is checked.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    assert!(
        pidfd >= 0,
        "pidfd_open({pid}): {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: `pidfd` was just opened and is owned here.
    let pidfd = unsafe { OwnedFd::from_raw_fd(i32::try_from(pidfd).expect("a descriptor")) };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).expect("/proc/PID/fd") {
        let Ok(entry) = entry else { continue };
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if !wanted(&target.to_string_lossy()) {
            continue;
        }
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: as above.
        let dup = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
        if dup < 0 {
            continue;
        }
        // SAFETY: `dup` is a new descriptor of this process, owned here.
        found.push(unsafe { OwnedFd::from_raw_fd(i32::try_from(dup).expect("a descriptor")) });
    }
    found
}

/// An integer socket option of `fd` (`getsockopt`).
pub fn sockopt_int(fd: &OwnedFd, level: libc::c_int, opt: libc::c_int) -> i32 {
    let mut value: libc::c_int = 0;
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).expect("fits");
    // SAFETY: the descriptor is open; the kernel writes at most `len` bytes into `value`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            std::ptr::from_mut(&mut value).cast(),
            &raw mut len,
        )
    };
    assert_eq!(rc, 0, "getsockopt: {}", std::io::Error::last_os_error());
    value
}

/// The sockets of `pid` on local port `port` in TCP state `state` (hex, as `/proc/net/tcp*`
/// writes it: `0A` listening, `01` established), duplicated into this process.
pub fn sockets_of(pid: u32, port: u16, state: &str) -> Vec<OwnedFd> {
    sockets_where(pid, state, |local, _| local == port)
}

/// The established sockets of `pid` whose peer is on port `port` (its server connections).
pub fn sockets_to(pid: u32, port: u16) -> Vec<OwnedFd> {
    sockets_where(pid, "01", |_, remote| remote == port)
}

/// The sockets of `pid` in TCP state `state` whose local and remote ports `wanted` accepts.
pub fn sockets_where(pid: u32, state: &str, wanted: impl Fn(u16, u16) -> bool) -> Vec<OwnedFd> {
    let port_of = |addr: Option<&&str>| {
        addr.and_then(|a| a.rsplit(':').next())
            .and_then(|p| u16::from_str_radix(p, 16).ok())
    };
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let ports = port_of(f.get(1)).zip(port_of(f.get(2)));
            if ports.is_some_and(|(local, remote)| wanted(local, remote))
                && f.get(3) == Some(&state)
            {
                inodes.push(format!("socket:[{}]", f[9]));
            }
        }
    }
    fds_of(pid, |target| inodes.iter().any(|i| i == target))
}
