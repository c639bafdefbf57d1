//! The single-writer guard: which servers of a backend may take traffic by role, who is in a
//! role conflict (two primaries, or the checks and etcd disagreeing), and what a table swap
//! does about roles ([`take_over`], right after it): the conflict flag and its log, and the
//! writer hand-over that closes the sessions of a primary the new table no longer names.

use std::sync::PoisonError;
use std::sync::atomic::Ordering;

use crate::config::{EtcdRole, MaxLag, Role, RoleSource};
use crate::live::{AdminState, BackendLive, NodeRole, ServerLive};
use crate::table::{BackendRt, ServerRt, Table};

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

/// Whether `s`, out of maintenance, is a primary by the role `source` decides.
fn is_primary(source: RoleSource, s: &ServerRt) -> bool {
    role_in_force(source, &s.live) == NodeRole::Primary
        && s.live.effective_admin() != AdminState::Maint
}

/// The servers of a `role primary` backend whose role under `source` is primary, leaving
/// out those in maintenance.
pub fn primaries(source: RoleSource, servers: &[ServerRt]) -> Vec<&ServerRt> {
    servers.iter().filter(|s| is_primary(source, s)).collect()
}

/// The index of the one primary among `servers` under `source` (maintenance left out);
/// `None` when there is none or more than one.
pub fn sole_primary(source: RoleSource, servers: &[ServerRt]) -> Option<usize> {
    let mut found = None;
    for (i, s) in servers.iter().enumerate() {
        if is_primary(source, s) {
            if found.is_some() {
                return None;
            }
            found = Some(i);
        }
    }
    found
}

/// The indexes of the servers in a role conflict in a `role primary` backend (empty when
/// there is none), leaving out those in maintenance: more than one primary by the checks
/// (split brain) or by etcd; with `role-source both` also a disagreement, i.e. the checks and
/// etcd naming different primaries, or one calling a server primary that the other calls
/// replica.
pub fn role_conflict(source: RoleSource, servers: &[ServerRt]) -> Vec<usize> {
    if !in_role_conflict(source, servers) {
        return Vec::new();
    }
    servers
        .iter()
        .enumerate()
        .filter(|(_, s)| claims_primary(source, &s.live))
        .map(|(i, _)| i)
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

/// Says who claims what in a conflict (`conflict` indexes `servers`), for the log:
/// `a (check primary, etcd replica)`.
pub(crate) fn describe_conflict(
    source: RoleSource,
    servers: &[ServerRt],
    conflict: &[usize],
) -> String {
    let names: Vec<String> = conflict
        .iter()
        .filter_map(|&i| servers.get(i))
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

/// The single-writer guard's part of a swap from `old` to `new`, made by `control` right
/// after it (the build only reads live state; these are the changes it decided): per backend,
/// in configuration order, the sessions of a server etcd no longer names primary are closed,
/// the role-conflict flag takes the new table's value (logged when it changes), and the one
/// primary the new table names takes the writes over ([`hand_over_writes`]); then the
/// sessions of primaries the swap removed are closed ([`close_removed_writers`]).
///
/// The new table already keeps new connections from a demoted writer (and every pick re-reads
/// the live roles, [`admits`]), so closing its sessions right after the swap leaves no moment
/// where two servers take new writes.
pub fn take_over(old: &Table, new: &Table) {
    for be in &new.config.backends {
        let Some(after) = new.backends.get(&be.name) else {
            continue;
        };
        if let Some(before) = old.backends.get(&be.name) {
            close_demoted_by_etcd(before, after);
        }
        flag_conflict(after);
        if let Some(writer) = after.writer.and_then(|i| after.servers.get(i)) {
            hand_over_writes(&after.name, &after.servers, &after.live, writer.name());
        }
    }
    close_removed_writers(old, new);
}

/// Closes the sessions of each server of `after`, a `role primary` backend whose roles etcd
/// decides (alone or with the checks), that etcd named primary in `before` and no longer does.
fn close_demoted_by_etcd(before: &BackendRt, after: &BackendRt) {
    if after.role != Role::Primary || after.role_source == RoleSource::Check {
        return;
    }
    let etcd_primary = |s: &ServerRt| s.config.etcd.is_some_and(|v| v.role == EtcdRole::Primary);
    for was in before.servers.iter().filter(|s| etcd_primary(s)) {
        let Some(now) = after.servers.iter().find(|s| s.name() == was.name()) else {
            // Removed: `close_removed_writers` sees to it.
            continue;
        };
        if !etcd_primary(now) {
            tracing::warn!(
                backend = %after.name,
                "etcd no longer names {} the primary: closing its sessions",
                now.name()
            );
            now.live.shutdown_sessions();
        }
    }
}

/// Sets the backend's role-conflict flag to what the build of `be` saw; logs a change.
fn flag_conflict(be: &BackendRt) {
    let conflict = !be.conflict.is_empty();
    let was = be.live.role_conflict.swap(conflict, Ordering::AcqRel);
    if conflict && !was {
        let who = describe_conflict(be.role_source, &be.servers, &be.conflict);
        let what = match be.role_source {
            RoleSource::Check => format!("servers {who} all report primary"),
            RoleSource::Etcd => format!("etcd names servers {who} primary"),
            RoleSource::Both => format!("etcd and the role checks disagree on the primary: {who}"),
        };
        tracing::error!(
            backend = %be.name,
            "role conflict: {what}; refusing new connections until it is resolved"
        );
    } else if was && !conflict {
        tracing::warn!(backend = %be.name, "role conflict resolved; routing resumes");
    }
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
