//! What rolelb's background threads (etcd watches, table builds, the admin HTTP listeners)
//! ask of the kernel's CPU scheduler, in one place: a positive `nice`, so that on a busy
//! machine the runtime's threads, which carry the sessions, get the CPU first, and the
//! shortest time slice Linux grants (0.1 ms): from Linux 6.12 a thread is protected from
//! preemption for its slice once it runs, so a background thread with the default slice
//! (about 3 ms) could keep a waking data-path thread waiting that long; with the short one,
//! a waking thread takes the CPU from it within 0.1 ms. Each call applies to the calling
//! thread only and is best effort: failing leaves it as it was.

use std::io;

/// The slice background threads ask for: the shortest Linux accepts.
const BACKGROUND_SLICE_NS: u64 = 100_000;

/// Lowers the calling thread's priority to `nice` and shortens its time slice (`what` names
/// the thread in the log).
pub fn background_thread(nice: libc::c_int, what: &str) {
    // SAFETY: setpriority takes plain integers and touches no memory; on Linux,
    // PRIO_PROCESS with 0 is the calling thread (threads it starts later inherit it).
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if rc != 0 {
        tracing::debug!("{what} keeps its priority: {}", io::Error::last_os_error());
    }
    if let Err(e) = set_slice(nice, BACKGROUND_SLICE_NS) {
        tracing::debug!("{what} keeps its time slice: {e}");
    }
}

/// Sets the calling thread's time slice (`sched_setattr` with `sched_runtime`, honoured by
/// Linux 6.12 and later for `SCHED_OTHER`), keeping the policy and the given `nice`.
#[cfg(target_os = "linux")]
fn set_slice(nice: libc::c_int, slice_ns: u64) -> io::Result<()> {
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

#[cfg(not(target_os = "linux"))]
fn set_slice(_nice: libc::c_int, _slice_ns: u64) -> io::Result<()> {
    Ok(())
}
