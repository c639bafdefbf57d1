//! Building one backend of a table from its configuration and the live registry.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{BackendRt, BackendSettings, Pool, ServerRt};
use crate::balance::{self, Candidate, Cursor, WEIGHT_SCALE};
use crate::config::{self, Role, RoleSource};
use crate::live::{NodeRole, Registry, ramps_weight};
use crate::roles::{
    RoleRule, admits, describe_conflict, hand_over_writes, primaries, role_conflict,
};

pub(crate) fn server_key(backend: &str, server: &str) -> u64 {
    let mut h = DefaultHasher::new();
    backend.hash(&mut h);
    server.hash(&mut h);
    h.finish()
}

pub(crate) fn build_backend(be: &config::Backend, registry: &Registry, now: Instant) -> BackendRt {
    let live = registry.backend(&be.name);
    let rule = RoleRule {
        role: be.role,
        max_lag: be.max_lag,
        source: be.role_source,
    };
    let servers: Vec<ServerRt> = be
        .servers
        .iter()
        .map(|s| {
            let (slive, _) = registry.server(&be.name, &s.name);
            slive.apply_config_disabled(s.disabled);
            slive.apply_role_target(s.check_target());
            let etcd_was = slive.apply_etcd(s.etcd);
            if etcd_was == NodeRole::Primary
                && slive.etcd_role() != NodeRole::Primary
                && be.role == Role::Primary
                && be.role_source != RoleSource::Check
            {
                tracing::warn!(
                    backend = %be.name,
                    "etcd no longer names {} the primary: closing its sessions",
                    s.name
                );
                slive.shutdown_sessions();
            }
            let weight = slive.user_weight(s.weight);
            let ramp = slive.ramp(s.slowstart, now);
            let eweight = match ramp {
                Some(r) if ramps_weight(be.balance, be.hash_type) => r.eweight(weight),
                _ => weight * WEIGHT_SCALE,
            };
            let maxconn = slive.maxconn(s.maxconn).map(|m| match ramp {
                Some(r) if m > 0 => r.maxconn(m),
                _ => m,
            });
            ServerRt {
                config: s.clone(),
                maxconn,
                weight,
                ramp,
                eweight,
                live: slive,
            }
        })
        .collect();
    let is_writer = be.role == Role::Primary;
    let conflicting = if is_writer {
        role_conflict(rule.source, &servers)
    } else {
        Vec::new()
    };
    let conflict = !conflicting.is_empty();
    let was = live.role_conflict.swap(conflict, Ordering::AcqRel);
    if conflict && !was {
        let who = describe_conflict(rule.source, &conflicting);
        let what = match rule.source {
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
    let usable = |s: &ServerRt| !be.disabled && !conflict && s.weight > 0 && admits(rule, s);
    let writers: Vec<String> = if is_writer && !conflict {
        primaries(rule.source, &servers)
            .iter()
            .map(|s| s.name().to_owned())
            .collect()
    } else {
        Vec::new()
    };
    if let [only] = writers.as_slice() {
        hand_over_writes(&be.name, &servers, &live, only);
    }
    let members = |backup: bool| -> Vec<usize> {
        servers
            .iter()
            .enumerate()
            .filter(|(_, s)| s.config.backup == backup && usable(s))
            .map(|(i, _)| i)
            .collect()
    };
    let active_members = members(false);
    let mut backup_members = members(true);
    if !be.allbackups {
        backup_members.truncate(1);
    }
    let pool = |members: Vec<usize>, cursor: &Arc<Cursor>| -> Pool {
        if members.is_empty() {
            return Pool::empty();
        }
        let candidates: Vec<Candidate> = members
            .iter()
            .map(|&i| {
                let s = &servers[i];
                Candidate {
                    weight: s.eweight.max(1),
                    key: server_key(&be.name, s.name()),
                }
            })
            .collect();
        let selector = balance::build(be.balance, be.hash_type, &candidates, cursor.clone());
        Pool {
            members,
            selector: Some(selector),
        }
    };
    live.downtime.set(
        active_members.is_empty() && backup_members.is_empty(),
        Instant::now(),
    );
    let active = pool(active_members, &live.cursor);
    let backup = pool(backup_members, &live.backup_cursor);
    BackendRt {
        name: be.name.clone(),
        settings: BackendSettings {
            timeout_connect: be.timeout_connect,
            timeout_server: be.timeout_server,
            timeout_server_fin: be.timeout_server_fin,
            timeout_queue: be.timeout_queue.or(be.timeout_connect),
            timeout_tunnel: be.timeout_tunnel,
            retries: be.retries,
            redispatch: be.redispatch.then_some(be.redispatch_after),
            retry_on_conn_failure: be.retry_on_conn_failure,
            hashed: be.balance == config::Balance::Source,
            redispatch_avoids: !(be.balance == config::Balance::Source
                && be.hash_type == config::HashType::MapBased),
            srvtcpka: be.srvtcpka,
            queue_per_server: be.balance == config::Balance::Source,
        },
        servers,
        active,
        backup,
        role: rule.role,
        max_lag: rule.max_lag,
        role_source: rule.source,
        live,
    }
}
