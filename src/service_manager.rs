//! What rolelb tells its service manager (systemd's `Type=notify` protocol, through the
//! `sd-notify` crate): `READY=1` once every listener is bound and privileges are dropped,
//! `RELOADING=1` when a `SIGHUP` reload starts and `READY=1` again when it ended (with the
//! outcome in `STATUS=`), `STOPPING=1` when a soft stop begins.
//!
//! Without `NOTIFY_SOCKET` in the environment (not started by systemd) every call does
//! nothing. A message that cannot be sent is logged and changes nothing else: rolelb keeps
//! serving (systemd then reports the start as timed out, which is the visible symptom).

use sd_notify::NotifyState;

/// Every listener is bound: the service is up.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(&one_line(status))]);
}

/// A reload starts (systemd 253 and later also want the monotonic time with it).
pub fn reloading() {
    let mut states = vec![NotifyState::Reloading, NotifyState::Status("reloading")];
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    send(&states);
}

/// A reload ended (applied or refused: the service runs either way).
pub fn reloaded(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(&one_line(status))]);
}

/// A soft stop begins.
pub fn stopping(status: &str) {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status(&one_line(status)),
    ]);
}

/// A status on one line: the protocol separates its assignments with newlines (a reload's
/// configuration errors come one per line).
fn one_line(status: &str) -> String {
    status.lines().collect::<Vec<_>>().join("; ")
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot notify the service manager (NOTIFY_SOCKET): {e}");
    }
}
