//! The single-writer guard: which servers of a backend may take traffic by role, who is in a
//! role conflict (two primaries, or the checks and etcd disagreeing), and the writer hand-over
//! that closes the old primary's sessions when a table swap names a new one.

use std::sync::PoisonError;

use crate::config::{MaxLag, Role, RoleSource};
use crate::live::{AdminState, BackendLive, NodeRole, ServerLive};
use crate::table::{ServerRt, Table};

/// The rules that decide which servers of a backend may take traffic by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleRule {
    /// `role`.
    pub role: Role,
    /// `max-lag` (with `role replica`).
    pub max_lag: Option<MaxLag>,
    /// `role-source`: who decides each server's role.
    pub source: RoleSource,
}

/// The role of a server as `source` decides it: the role checks', etcd's, or, with `both`,
/// the role both agree on (`Unknown` while they disagree or either does not know).
pub fn role_in_force(source: RoleSource, live: &ServerLive) -> NodeRole {
    match source {
        RoleSource::Check => live.role(),
        RoleSource::Etcd => live.etcd_role(),
        RoleSource::Both if live.role() == live.etcd_role() => live.role(),
        RoleSource::Both => NodeRole::Unknown,
    }
}

/// Whether `s` may take a new connection under `rule`: eligible (admin, health) and having
/// the role the backend needs. Backups of a `role replica` backend (typically the primary,
/// the read fallback) need a known role, not `replica`.
pub fn admits(rule: RoleRule, s: &ServerRt) -> bool {
    if !s.live.eligible() {
        return false;
    }
    let role = role_in_force(rule.source, &s.live);
    match rule.role {
        Role::Any => true,
        Role::Primary => role == NodeRole::Primary,
        Role::Replica if s.config.backup => role != NodeRole::Unknown,
        Role::Replica => role == NodeRole::Replica && (rule.max_lag.is_none() || s.live.lag_ok()),
    }
}

/// The servers of a `role primary` backend whose role under `source` is primary, leaving
/// out those in maintenance.
pub fn primaries(source: RoleSource, servers: &[ServerRt]) -> Vec<&ServerRt> {
    servers
        .iter()
        .filter(|s| {
            role_in_force(source, &s.live) == NodeRole::Primary
                && s.live.effective_admin() != AdminState::Maint
        })
        .collect()
}

/// The servers in a role conflict in a `role primary` backend (empty when there is none),
/// leaving out those in maintenance: more than one primary by the checks (split brain) or by
/// etcd; with `role-source both` also a disagreement, i.e. the checks and etcd naming
/// different primaries, or one calling a server primary that the other calls replica.
pub fn role_conflict(source: RoleSource, servers: &[ServerRt]) -> Vec<&ServerRt> {
    if !in_role_conflict(source, servers) {
        return Vec::new();
    }
    servers
        .iter()
        .filter(|s| claims_primary(source, &s.live))
        .collect()
}

/// Whether [`role_conflict`] would name anyone; allocation-free, for the data path's check on
/// every pick.
pub fn in_role_conflict(source: RoleSource, servers: &[ServerRt]) -> bool {
    let mut claimed = 0;
    for s in servers.iter().filter(|s| claims_primary(source, &s.live)) {
        claimed += 1;
        // With `both`, one side says primary and the other replica (not merely "unknown").
        let (check, etcd) = (s.live.role(), s.live.etcd_role());
        let contradicted = source == RoleSource::Both
            && check != etcd
            && check != NodeRole::Unknown
            && etcd != NodeRole::Unknown;
        if claimed > 1 || contradicted {
            return true;
        }
    }
    false
}

/// Whether a server out of maintenance is called primary by the role source (by either side
/// with `both`).
pub(crate) fn claims_primary(source: RoleSource, live: &ServerLive) -> bool {
    let by_check = live.role() == NodeRole::Primary;
    let by_etcd = live.etcd_role() == NodeRole::Primary;
    let claims = match source {
        RoleSource::Check => by_check,
        RoleSource::Etcd => by_etcd,
        RoleSource::Both => by_check || by_etcd,
    };
    claims && live.effective_admin() != AdminState::Maint
}

/// Says who claims what in a conflict, for the log: `a (check primary, etcd replica)`.
pub(crate) fn describe_conflict(source: RoleSource, servers: &[&ServerRt]) -> String {
    let names: Vec<String> = servers
        .iter()
        .map(|s| match source {
            RoleSource::Check | RoleSource::Etcd => s.name().to_owned(),
            RoleSource::Both => format!(
                "{} (check {}, etcd {})",
                s.name(),
                s.live.role().name(),
                s.live.etcd_role().name()
            ),
        })
        .collect();
    names.join(" and ")
}

/// Closes the sessions of servers that a swap from `old` to `new` removes from a `role
/// primary` backend while they were its primary. A removed server otherwise drains (its
/// sessions run to their end), but writes must not go on to a node that lost the writer's
/// place. A backend removed whole is left alone, as any removed backend.
pub fn close_removed_writers(old: &Table, new: &Table) {
    for (name, before) in &old.backends {
        let Some(after) = new.backends.get(name) else {
            continue;
        };
        if before.role != Role::Primary {
            continue;
        }
        for s in primaries(before.role_source, &before.servers) {
            if !after.servers.iter().any(|x| x.name() == s.name()) {
                tracing::warn!(
                    backend = %name,
                    "the primary {} was removed: closing its sessions",
                    s.name()
                );
                s.live.shutdown_sessions();
            }
        }
    }
}

/// Records `primary` as the one writer of `backend`; when it differs from the previous one,
/// closes every session on the other servers, so that writes opened before a failover cannot
/// keep going to the old primary (even one that stayed reachable through a pooler).
pub(crate) fn hand_over_writes(
    backend: &str,
    servers: &[ServerRt],
    live: &BackendLive,
    primary: &str,
) {
    let mut writer = live.writer.lock().unwrap_or_else(PoisonError::into_inner);
    match writer.as_deref() {
        Some(prev) if prev != primary => {
            tracing::warn!(
                backend,
                "{primary} is now the primary (was {prev}): closing sessions to every other server"
            );
            for s in servers.iter().filter(|s| s.name() != primary) {
                s.live.shutdown_sessions();
            }
        }
        Some(_) => return,
        None => {}
    }
    *writer = Some(primary.to_owned());
}
