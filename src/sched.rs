//! What rolelb's threads ask of the kernel's CPU scheduler, in one place.
//!
//! The data path's threads (the runtime's workers, or the main thread with `nbthread 1`)
//! move bytes in short bursts and then sleep; the background threads (etcd watches, table
//! builds, the admin HTTP listeners) do longer stretches of work that can wait. Two knobs
//! keep the second from delaying the first on a busy machine:
//!
//! - background threads run at a positive `nice` (a smaller share of the CPU when it is
//!   contended);
//! - data-path threads ask for a short time slice (`sched_setattr` with `sched_runtime`
//!   for `SCHED_OTHER`, Linux 6.12 and later). Linux's fair scheduler lets a thread that
//!   wakes up with a shorter slice than the running one take the CPU at once, instead of
//!   waiting for the running thread's slice (about 1.5–3 ms on a small machine) to end:
//!   without it, a session's next packet can wait behind a table build that happened to
//!   start first. Older kernels ignore the value; a refusal is logged at debug and
//!   changes nothing else.
//!
//! Each call applies to the calling thread only, and is best effort: failing leaves the
//! thread as it was.

use std::io;

/// The slice asked for the data path's threads: the shortest Linux accepts (0.1 ms).
const DATA_PATH_SLICE_NS: u64 = 100_000;

/// Makes the calling thread a data-path thread (see the module documentation).
pub fn data_path_thread() {
    #[cfg(target_os = "linux")]
    if let Err(e) = set_slice(DATA_PATH_SLICE_NS) {
        tracing::debug!("data-path thread keeps the default time slice: {e}");
    }
}

/// Lowers the calling thread's priority to `nice` (`what` names the thread in the log).
pub fn background_thread(nice: libc::c_int, what: &str) {
    // SAFETY: setpriority takes plain integers and touches no memory; on Linux,
    // PRIO_PROCESS with 0 is the calling thread (threads it starts later inherit it).
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if rc != 0 {
        tracing::debug!("{what} keeps its priority: {}", io::Error::last_os_error());
    }
}

/// Sets the calling thread's time slice, keeping its policy (`SCHED_OTHER`) and `nice`.
#[cfg(target_os = "linux")]
fn set_slice(slice_ns: u64) -> io::Result<()> {
    // SAFETY: getpriority reads a plain integer; errno is cleared first because -1 is
    // also a valid nice value.
    let nice = unsafe {
        *libc::__errno_location() = 0;
        libc::getpriority(libc::PRIO_PROCESS, 0)
    };
    let errno = io::Error::last_os_error();
    if nice == -1 && errno.raw_os_error().unwrap_or(0) != 0 {
        return Err(errno);
    }
    // SAFETY: sched_attr is plain integers; all-zero is a valid value to start from.
    let mut attr: libc::sched_attr = unsafe { std::mem::zeroed() };
    attr.size = u32::try_from(std::mem::size_of::<libc::sched_attr>()).unwrap_or(u32::MAX);
    attr.sched_policy = u32::try_from(libc::SCHED_OTHER).unwrap_or(0);
    attr.sched_nice = nice;
    attr.sched_runtime = slice_ns;
    // SAFETY: the kernel reads `size` bytes of `attr`, which lives across the call; pid 0
    // is the calling thread.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_setattr,
            0,
            &attr as *const libc::sched_attr,
            0,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The slice is asked for without touching the thread's nice value or policy.
    #[test]
    fn a_data_path_thread_keeps_its_nice_value() {
        std::thread::spawn(|| {
            background_thread(3, "test thread");
            // SAFETY: reads a plain integer.
            let before = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
            assert_eq!(before, 3);
            let applied = set_slice(DATA_PATH_SLICE_NS);
            // SAFETY: as above.
            let after = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
            assert_eq!(after, 3, "sched_setattr reset the nice value ({applied:?})");
            // SAFETY: sched_getscheduler takes a pid and returns the policy.
            assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_OTHER);
            if kernel_at_least(6, 12) {
                applied.expect("sched_setattr refused the slice");
                assert_eq!(
                    slice(),
                    DATA_PATH_SLICE_NS,
                    "the kernel reports another slice"
                );
            }
        })
        .join()
        .expect("the test thread panicked");
    }

    /// The calling thread's slice as `sched_getattr` reports it (Linux 6.12 and later).
    fn slice() -> u64 {
        // SAFETY: as in set_slice; the kernel writes at most `size` bytes into `attr`.
        let mut attr: libc::sched_attr = unsafe { std::mem::zeroed() };
        let size = u32::try_from(std::mem::size_of::<libc::sched_attr>()).unwrap_or(u32::MAX);
        // SAFETY: see above; pid 0 is the calling thread.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_sched_getattr,
                0,
                &mut attr as *mut libc::sched_attr,
                size,
                0,
            )
        };
        assert_eq!(rc, 0, "sched_getattr: {}", io::Error::last_os_error());
        attr.sched_runtime
    }

    /// Whether the running kernel is at least `major.minor` (from `uname -r`).
    fn kernel_at_least(major: u32, minor: u32) -> bool {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut parts = release
            .trim()
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|p| p.parse::<u32>().ok());
        let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        found >= (major, minor)
    }
}
