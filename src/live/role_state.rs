//! What a role check found: the role a node reports ([`NodeRole`]), why a check gave none
//! ([`RoleProblem`]), and the last check's outcome ([`RoleCheckState`]).

use std::time::Duration;

/// The role a node reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum NodeRole {
    /// Not known yet, or the last role checks failed: never eligible where a role is required.
    Unknown = 0,
    /// Accepts writes.
    Primary = 1,
    /// In recovery / read-only.
    Replica = 2,
}

impl NodeRole {
    pub(super) fn from_u8(v: u8) -> NodeRole {
        match v {
            1 => NodeRole::Primary,
            2 => NodeRole::Replica,
            _ => NodeRole::Unknown,
        }
    }

    /// Lower-case name (`primary`, `replica`, `unknown`).
    pub fn name(self) -> &'static str {
        match self {
            NodeRole::Unknown => "unknown",
            NodeRole::Primary => "primary",
            NodeRole::Replica => "replica",
        }
    }
}

/// Why a role check did not give a role, kept apart so a broken check transport never looks
/// like a demoted database, nor the reverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RoleProblem {
    /// The check port could not be reached in time (timeout, unreachable network).
    Unreachable,
    /// The connection was refused (nothing listens: the database is down).
    Refused,
    /// The database answered but refused us (authentication, permissions).
    Rejected,
    /// The answer was not what a database says (garbage, protocol error, hang mid-handshake).
    BadAnswer,
}

impl RoleProblem {
    /// Short name for logs and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            RoleProblem::Unreachable => "unreachable",
            RoleProblem::Refused => "refused",
            RoleProblem::Rejected => "rejected",
            RoleProblem::BadAnswer => "bad_answer",
        }
    }
}

/// The outcome of the last role check.
#[derive(Debug, Clone, PartialEq)]
pub struct RoleCheckState {
    /// The role reported, or `Unknown`.
    pub role: NodeRole,
    /// Why there is no role, when the check failed.
    pub problem: Option<RoleProblem>,
    /// Detail for humans (the driver's error, the lag numbers).
    pub detail: String,
    /// How long the check took.
    pub duration: Duration,
}
