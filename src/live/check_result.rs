//! The outcome of one check run ([`CheckResult`], with HAProxy's [`Status`] codes), kept in
//! each server's live state (`last_check`, `last_agent`) and shown by the admin API, `show
//! stat` and `/metrics`. The checks in `check` make them; `check` re-exports both.

use std::fmt;
use std::time::Duration;

/// HAProxy's check status codes, as shown in its logs and `show stat` (`check_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// An agent reply that carried no health word (a weight, an administrative state): no
    /// verdict, the server's state does not move (HAProxy's neutral `CHECKED`).
    Checked,
    /// A socket error once connected (with TLS: a fatal alert after the handshake, such as a
    /// server refusing the client certificate).
    SockErr,
    /// Layer 4 (TCP connect) passed, nothing more was checked.
    L4Ok,
    /// Layer 4 timeout.
    L4Tout,
    /// Layer 4 connection problem (refused, unreachable, reset).
    L4Con,
    /// Layer 6 (TLS handshake) passed, nothing more was checked (`check-ssl` on a connect check).
    L6Ok,
    /// Layer 6 (handshake) timeout.
    L6Tout,
    /// Layer 6 invalid response.
    L6Rsp,
    /// Layer 7 passed.
    L7Ok,
    /// Layer 7 passed conditionally (e.g. HTTP 404 with `disable-on-404`).
    L7Okc,
    /// Layer 7 timeout.
    L7Tout,
    /// Layer 7 invalid response (protocol error, unexpected content).
    L7Rsp,
    /// Layer 7 wrong status (HTTP status, SQL error packet).
    L7Sts,
    /// External check program exited with a non-zero status or was killed by a signal.
    ProcErr,
    /// External check program did not exit in time (it is killed).
    ProcTout,
    /// External check program exited with status 0.
    ProcOk,
}

impl Status {
    /// The code HAProxy prints (`L4OK`, `L7STS`, ...).
    pub fn code(self) -> &'static str {
        match self {
            Status::Checked => "CHECKED",
            Status::SockErr => "SOCKERR",
            Status::L4Ok => "L4OK",
            Status::L4Tout => "L4TOUT",
            Status::L4Con => "L4CON",
            Status::L6Ok => "L6OK",
            Status::L6Tout => "L6TOUT",
            Status::L6Rsp => "L6RSP",
            Status::L7Ok => "L7OK",
            Status::L7Okc => "L7OKC",
            Status::L7Tout => "L7TOUT",
            Status::L7Rsp => "L7RSP",
            Status::L7Sts => "L7STS",
            Status::ProcErr => "PROCERR",
            Status::ProcTout => "PROCTOUT",
            Status::ProcOk => "PROCOK",
        }
    }

    /// HAProxy's wording in state-change logs (`Layer4 connection problem`, ...).
    pub fn describe(self) -> &'static str {
        match self {
            Status::Checked => "No status change",
            Status::SockErr => "Socket error",
            Status::L4Ok => "Layer4 check passed",
            Status::L4Tout => "Layer4 timeout",
            Status::L4Con => "Layer4 connection problem",
            Status::L6Ok => "Layer6 check passed",
            Status::L6Tout => "Layer6 timeout",
            Status::L6Rsp => "Layer6 invalid response",
            Status::L7Ok => "Layer7 check passed",
            Status::L7Okc => "Layer7 check conditionally passed",
            Status::L7Tout => "Layer7 timeout",
            Status::L7Rsp => "Layer7 invalid response",
            Status::L7Sts => "Layer7 wrong status",
            Status::ProcErr => "External check error",
            Status::ProcTout => "External check timeout",
            Status::ProcOk => "External check passed",
        }
    }

    /// Whether the check counts as passed.
    pub fn passed(self) -> bool {
        matches!(
            self,
            Status::L4Ok | Status::L6Ok | Status::L7Ok | Status::L7Okc | Status::ProcOk
        )
    }
}

/// The result of one check run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// The status.
    pub status: Status,
    /// The layer-7 code when there is one (HTTP status, MySQL/PostgreSQL error code).
    pub code: Option<String>,
    /// Detail for humans (`Connection refused`, the server's error message, ...).
    pub info: String,
    /// How long the check took.
    pub duration: Duration,
}

impl CheckResult {
    /// A result with no code.
    pub fn new(status: Status, info: impl Into<String>, duration: Duration) -> CheckResult {
        CheckResult {
            status,
            code: None,
            info: info.into(),
            duration,
        }
    }

    /// Adds a layer-7 code.
    pub fn with_code(mut self, code: impl Into<String>) -> CheckResult {
        self.code = Some(code.into());
        self
    }
}

impl fmt::Display for CheckResult {
    /// HAProxy's form: `Layer7 wrong status, code: 503, info: "Service Unavailable", check duration: 2ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.status.describe())?;
        if let Some(code) = &self.code {
            write!(f, ", code: {code}")?;
        }
        if !self.info.is_empty() {
            write!(f, ", info: \"{}\"", self.info)?;
        }
        write!(f, ", check duration: {}ms", self.duration.as_millis())
    }
}
