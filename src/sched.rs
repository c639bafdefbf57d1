//! What rolelb's background threads (etcd watches, table builds, the admin HTTP listeners)
//! ask of the kernel's CPU scheduler, in one place: a positive `nice`, so that on a busy
//! machine the runtime's threads, which carry the sessions, get the CPU first. Each call
//! applies to the calling thread only and is best effort: failing leaves it as it was.

use std::io;

/// Lowers the calling thread's priority to `nice` (`what` names the thread in the log).
pub fn background_thread(nice: libc::c_int, what: &str) {
    // SAFETY: setpriority takes plain integers and touches no memory; on Linux,
    // PRIO_PROCESS with 0 is the calling thread (threads it starts later inherit it).
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if rc != 0 {
        tracing::debug!("{what} keeps its priority: {}", io::Error::last_os_error());
    }
}
