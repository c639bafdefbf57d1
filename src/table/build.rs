//! Building one backend of a table from its configuration and its live entries: a pure
//! function of them (it reads live state and writes nothing, so building twice changes
//! nothing and closes no session).

use std::sync::Arc;
use std::time::Instant;

use super::prepare::BackendEntries;
use super::{BackendRt, BackendSettings, DynamicLimit, Pool, ServerRt};
use crate::balance::{self, Candidate, Cursor, MapSlots, WEIGHT_SCALE};
use crate::config::{self, Role};
use crate::live::ramps_weight;
use crate::roles::{RoleRule, admits, role_conflict, sole_primary};

/// Builds one backend from its configuration and the live entries [`super::prepare()`] made
/// for it. Reads live state only: the role conflict it sees and the writer it names are
/// recorded in the result, and `control` acts on them after the swap.
pub(crate) fn build_backend(
    be: &config::Backend,
    fullconn: u32,
    entries: &BackendEntries,
    stick: Option<Arc<super::StickRt>>,
    now: Instant,
) -> BackendRt {
    let live = entries.live.clone();
    let rule = RoleRule {
        role: be.role,
        max_lag: be.max_lag,
        source: be.role_source,
    };
    let puids = config::server_ids(be.servers.iter().map(|s| &**s));
    let servers: Vec<ServerRt> = be
        .servers
        .iter()
        .zip(&entries.servers)
        .zip(puids)
        .map(|((s, slive), puid)| {
            let weight = slive.user_weight(s.weight);
            let ramp = slive.ramp(s.slowstart, now);
            let eweight = match ramp {
                Some(r) if ramps_weight(be.balance, be.hash_type) => r.eweight(weight),
                _ => weight * WEIGHT_SCALE,
            };
            let configured = slive.maxconn(s.maxconn);
            let maxconn = configured.map(|m| match ramp {
                Some(r) if m > 0 => r.maxconn(m),
                _ => m,
            });
            // As HAProxy: an agent's `maxconn:` changes `maxconn` alone, so the limit is
            // dynamic while it differs from `minconn`.
            let dynamic = s
                .minconn
                .zip(configured.filter(|&m| m > 0))
                .filter(|(min, max)| min != max)
                .map(|(minconn, maxconn)| DynamicLimit { minconn, maxconn });
            ServerRt {
                config: s.clone(),
                maxconn,
                dynamic,
                weight,
                ramp,
                eweight,
                live: slive.clone(),
                puid,
            }
        })
        .collect();
    let is_writer = be.role == Role::Primary;
    let conflict = if is_writer {
        role_conflict(rule.source, &servers)
    } else {
        Vec::new()
    };
    let writer = if is_writer && conflict.is_empty() {
        sole_primary(rule.source, &servers)
    } else {
        None
    };
    let usable =
        |s: &ServerRt| !be.disabled && conflict.is_empty() && s.weight > 0 && admits(rule, s);
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
    // Without `option allbackups` HAProxy serves from the first usable backup alone, except
    // that its map-based algorithms fill the map over every usable backup with the first
    // one's weight as the number of slots (`recalc_server_map`).
    let map_based = balance::map_based(be.balance, be.hash_type);
    let backup_slots = if be.allbackups {
        MapSlots::Every
    } else if map_based {
        MapSlots::FirstWeight { unit: map_unit(be) }
    } else {
        backup_members.truncate(1);
        MapSlots::Every
    };
    let pool = |members: Vec<usize>, slots: MapSlots, cursor: &Arc<Cursor>| -> Pool {
        if members.is_empty() {
            return Pool::empty();
        }
        let candidates: Vec<Candidate> = members
            .iter()
            .map(|&i| {
                let s = &servers[i];
                Candidate {
                    weight: s.eweight.max(1),
                    key: u64::from(s.puid),
                }
            })
            .collect();
        let selector = balance::build(be.balance, be.hash_type, &candidates, slots, cursor.clone());
        Pool {
            members,
            selector: Some(selector),
            first_only: false,
        }
    };
    let active = pool(active_members, MapSlots::Every, &live.cursor);
    let mut backup = pool(backup_members, backup_slots, &live.backup_cursor);
    backup.first_only = !be.allbackups;
    let dynamic = servers.iter().any(|s| s.dynamic.is_some());
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
            nolinger: be.nolinger,
            independent_streams: be.independent_streams,
            smart_connect: be.smart_connect,
            abortonclose: be.abortonclose,
            splice: be.splice,
            queue_per_server: be.balance == config::Balance::Source,
            stick,
        },
        servers,
        active,
        backup,
        role: rule.role,
        max_lag: rule.max_lag,
        role_source: rule.source,
        conflict,
        writer,
        fullconn,
        dynamic,
        live,
    }
}

/// The backend's `fullconn`: given, else a tenth, rounded up and at least 1, of the `maxconn`
/// of the frontends that may route to it (each counted once, through its default backend or
/// a `use_backend` rule), a frontend without `maxconn` counting for the global one, else
/// `default_maxconn` (HAProxy 2.6's `proxy_adjust_all_maxconn`).
pub(crate) fn fullconn(config: &config::Config, be: &config::Backend, default_maxconn: u32) -> u32 {
    if let Some(n) = be.fullconn {
        return n;
    }
    let sum: u64 = config
        .frontends
        .iter()
        .filter(|f| {
            !f.disabled
                && (f.backend == be.name
                    || f.use_backend_rules.iter().any(|r| r.backend == be.name))
        })
        .map(|f| {
            u64::from(
                f.maxconn
                    .or(config.global.maxconn)
                    .unwrap_or(default_maxconn),
            )
        })
        .sum();
    u32::try_from(sum.div_ceil(10).max(1)).unwrap_or(u32::MAX)
}

/// HAProxy's weight divisor for a map (`wmult`: the GCD of the configured non-zero weights of
/// every server of the backend, fixed at load) on the candidates' scale.
fn map_unit(be: &config::Backend) -> u32 {
    let gcd = be
        .servers
        .iter()
        .map(|s| s.weight)
        .filter(|&w| w > 0)
        .fold(0, gcd);
    gcd.max(1) * WEIGHT_SCALE
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}
