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
