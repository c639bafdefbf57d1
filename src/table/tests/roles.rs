//! Roles: who a `role primary` or `role replica` backend admits, role conflicts, the writer
//! hand-over, a server moved to another node, and etcd's view as a role source.

use std::sync::atomic::Ordering;

use super::*;
use crate::table::testing::{Swaps, build};

const PG: &str = "    role-check pgsql user monitor\n";

/// Backend `be` with `role ROLE`, a role check, and servers a (port 1) and b (port 2).
fn two(role: &str) -> Arc<Config> {
    parse(&format!(
        "backend be\n    role {role}\n{PG}    server a 127.0.0.1:1\n    server b 127.0.0.1:2\n"
    ))
}

#[test]
fn role_primary_admits_only_a_reported_primary_and_unknown_is_never_eligible() {
    let reg = Registry::default();
    let c = two("primary");
    let t = build(&c, &reg, 1);
    assert_eq!(
        t.backends["be"].pick(None, None),
        Err(NoServer::NoneAvailable),
        "no role answer yet"
    );
    t.backends["be"].servers[1].live.set_role(NodeRole::Primary);
    t.backends["be"].servers[0].live.set_role(NodeRole::Replica);
    let t = build(&c, &reg, 2);
    assert_eq!(names(&t.backends["be"], 3), ["b", "b", "b"]);
}

#[test]
fn two_primaries_refuse_every_new_connection_until_one_steps_down() {
    let mut swaps = Swaps::new();
    let c = two("primary");
    let t = swaps.swap(&c);
    t.backends["be"].servers[0].live.set_role(NodeRole::Primary);
    // Even before the next table: the guard reads the live roles on every pick.
    t.backends["be"].servers[1].live.set_role(NodeRole::Primary);
    assert_eq!(
        t.backends["be"].pick(None, None),
        Err(NoServer::RoleConflict)
    );
    let t = swaps.swap(&c);
    assert!(t.backends["be"].live.role_conflict.load(Ordering::Relaxed));
    assert!(t.backends["be"].active.members.is_empty());
    // An operator's maintenance on one of them resolves it.
    t.backends["be"].servers[0]
        .live
        .set_admin(AdminState::Maint);
    let t = swaps.swap(&c);
    assert!(!t.backends["be"].live.role_conflict.load(Ordering::Relaxed));
    assert_eq!(names(&t.backends["be"], 2), ["b", "b"]);
}

#[test]
fn a_new_sole_primary_closes_the_sessions_of_the_old_one() {
    let mut swaps = Swaps::new();
    let c = two("primary");
    let t = swaps.swap(&c);
    let (a, b) = (
        t.backends["be"].servers[0].live.clone(),
        t.backends["be"].servers[1].live.clone(),
    );
    a.set_role(NodeRole::Primary);
    b.set_role(NodeRole::Replica);
    swaps.swap(&c);
    let a_session = a.kill_switch();
    // a goes silent (unknown): its sessions stay until another primary exists.
    a.set_role(NodeRole::Unknown);
    swaps.swap(&c);
    assert!(!a_session.is_tripped());
    b.set_role(NodeRole::Primary);
    swaps.swap(&c);
    assert!(
        a_session.is_tripped(),
        "old writer's sessions closed once b is the primary"
    );
    assert!(!b.kill_switch().is_tripped());
}

#[test]
fn role_replica_needs_replicas_within_max_lag_and_backups_fall_back() {
    let reg = Registry::default();
    let c = parse(&format!(
        "backend be\n    role replica\n{PG}    max-lag 1k\n\
         \x20   server r1 127.0.0.1:1\n    server r2 127.0.0.1:2\n    server p 127.0.0.1:3 backup\n"
    ));
    assert_eq!(c.backends[0].max_lag, Some(MaxLag::Bytes(1024)));
    let t = build(&c, &reg, 1);
    let s = |i: usize| t.backends["be"].servers[i].live.clone();
    s(0).set_role(NodeRole::Replica);
    s(1).set_role(NodeRole::Replica);
    s(2).set_role(NodeRole::Primary);
    s(0).set_lag_ok(true);
    let t = build(&c, &reg, 2);
    assert_eq!(
        names(&t.backends["be"], 2),
        ["r1", "r1"],
        "r2's lag is not known to be within max-lag"
    );
    s(0).set_lag_ok(false);
    let t = build(&c, &reg, 3);
    assert_eq!(
        names(&t.backends["be"], 2),
        ["p", "p"],
        "no replica eligible: the backup primary takes reads"
    );
}

#[test]
fn a_reload_that_moves_a_server_to_another_node_forgets_its_role() {
    let reg = Registry::default();
    let at = |port: u16| {
        parse(&format!(
            "backend be\n    role primary\n{PG}    server a 127.0.0.1:{port}\n"
        ))
    };
    let c = at(1);
    let t = build(&c, &reg, 1);
    t.backends["be"].servers[0].live.set_role(NodeRole::Primary);
    let t = build(&c, &reg, 2);
    assert_eq!(
        t.backends["be"].servers[0].live.role(),
        NodeRole::Primary,
        "same node: kept"
    );
    let t = build(&at(9), &reg, 3);
    assert_eq!(t.backends["be"].servers[0].live.role(), NodeRole::Unknown);
    assert_eq!(
        t.backends["be"].pick(None, None),
        Err(NoServer::NoneAvailable)
    );
}

#[test]
fn shutdown_sessions_cancels_current_tokens_only() {
    let live = ServerLive::default();
    let old = live.kill_switch();
    live.shutdown_sessions();
    assert!(old.is_tripped());
    assert!(!live.kill_switch().is_tripped());
}

/// Backend `be`, `role primary`, discovering its servers, with `role-source SOURCE` (and a
/// role check unless etcd alone decides).
fn discovering(source: &str) -> Etcd {
    let check = if source == "etcd" { "" } else { PG };
    Etcd::new(&format!(
        "backend be\n    role primary\n    role-source {source}\n{check}"
    ))
}

#[test]
fn role_source_etcd_routes_to_etcds_primary_whatever_the_checks_say() {
    let mut swaps = Swaps::new();
    let mut etcd = discovering("etcd");
    let c = etcd.put(&[("a", 1, P, READY), ("b", 2, R, READY)]);
    assert_eq!(c.backends[0].role_source, RoleSource::Etcd);
    let t = swaps.swap(&c);
    t.backends["be"].servers[1].live.set_role(NodeRole::Primary);
    assert_eq!(names(&t.backends["be"], 2), ["a", "a"]);
    // The leader moves: b takes the writes, a's sessions are closed.
    let a_session = t.backends["be"].servers[0].live.kill_switch();
    let c = etcd.put(&[("a", 1, R, READY), ("b", 2, P, READY)]);
    let t = swaps.swap(&c);
    assert!(a_session.is_tripped());
    assert_eq!(names(&t.backends["be"], 2), ["b", "b"]);
    // etcd naming two primaries is a conflict.
    let c = etcd.put(&[("a", 1, P, READY)]);
    let t = swaps.swap(&c);
    assert_eq!(
        t.backends["be"].pick(None, None),
        Err(NoServer::RoleConflict)
    );
}

#[test]
fn role_source_both_needs_agreement_and_a_disagreement_is_a_conflict() {
    let mut swaps = Swaps::new();
    let mut etcd = discovering("both");
    let c = etcd.put(&[("a", 1, P, READY), ("b", 2, R, READY)]);
    assert_eq!(c.backends[0].role_source, RoleSource::Both);
    let t = swaps.swap(&c);
    let (a, b) = (
        t.backends["be"].servers[0].live.clone(),
        t.backends["be"].servers[1].live.clone(),
    );
    // Checks not answered yet: nobody is the primary, and it is no conflict.
    assert_eq!(
        t.backends["be"].pick(None, None),
        Err(NoServer::NoneAvailable)
    );
    a.set_role(NodeRole::Primary);
    b.set_role(NodeRole::Replica);
    let t = swaps.swap(&c);
    assert_eq!(names(&t.backends["be"], 2), ["a", "a"]);
    // The checks see b promoted while etcd still names a: refuse, both are named.
    a.set_role(NodeRole::Replica);
    b.set_role(NodeRole::Primary);
    assert_eq!(
        t.backends["be"].pick(None, None),
        Err(NoServer::RoleConflict)
    );
    let servers = &t.backends["be"].servers;
    let conflict = role_conflict(RoleSource::Both, servers);
    assert_eq!(
        describe_conflict(RoleSource::Both, servers, &conflict),
        "a (check replica, etcd primary) and b (check primary, etcd replica)"
    );
    let t = swaps.swap(&c);
    assert!(t.backends["be"].live.role_conflict.load(Ordering::Relaxed));
    // etcd catches up: resolved, b takes the writes.
    let c = etcd.put(&[("a", 1, R, READY), ("b", 2, P, READY)]);
    let t = swaps.swap(&c);
    assert!(!t.backends["be"].live.role_conflict.load(Ordering::Relaxed));
    assert_eq!(names(&t.backends["be"], 2), ["b", "b"]);
    // One server that etcd calls primary and its check calls replica is a conflict too.
    let c = etcd.put(&[("a", 1, P, READY), ("b", 2, R, READY)]);
    b.set_role(NodeRole::Replica);
    let t = swaps.swap(&c);
    assert_eq!(
        t.backends["be"].pick(None, None),
        Err(NoServer::RoleConflict)
    );
}

fn view(role: EtcdRole, state: EtcdState) -> Option<EtcdView> {
    Some(EtcdView { role, state })
}

#[test]
fn etcd_state_drains_and_maints_and_cannot_lift_an_operators_maint() {
    let live = ServerLive::default();
    live.apply_etcd(view(R, EtcdState::Drain));
    assert_eq!(live.effective_admin(), AdminState::Drain);
    live.apply_etcd(view(R, EtcdState::Maint));
    assert_eq!(live.effective_admin(), AdminState::Maint);
    live.set_admin(AdminState::Maint);
    live.apply_etcd(view(R, READY));
    assert_eq!(live.effective_admin(), AdminState::Maint);
    live.set_admin(AdminState::Ready);
    assert!(live.eligible());
    assert_eq!(live.apply_etcd(None), NodeRole::Replica);
    assert_eq!(live.etcd_role(), NodeRole::Unknown);
}

#[test]
fn removing_the_primary_closes_its_sessions_and_removing_a_replica_drains_it() {
    let reg = Registry::default();
    let mut etcd = discovering("etcd");
    let c = etcd.put(&[("a", 1, P, READY), ("b", 2, R, READY)]);
    let old = build(&c, &reg, 1);
    let (a, b) = (
        old.backends["be"].servers[0].live.kill_switch(),
        old.backends["be"].servers[1].live.kill_switch(),
    );
    let without_b = etcd.change(&[], &["b"]);
    assert_eq!(without_b.backends[0].servers.len(), 1);
    let new = build(&without_b, &reg, 2);
    close_removed_writers(&old, &new);
    assert!(!b.is_tripped(), "a removed replica drains");
    let without_a = etcd.change(&[("b", 2, R, READY)], &["a"]);
    assert_eq!(&*without_a.backends[0].servers[0].name, "b");
    let newer = build(&without_a, &reg, 3);
    close_removed_writers(&old, &newer);
    assert!(a.is_tripped(), "a removed primary's sessions are closed");
}

#[test]
fn a_server_etcd_stops_naming_primary_loses_its_sessions_at_the_swap_unless_checks_decide() {
    let mut swaps = Swaps::new();
    let mut etcd = discovering("etcd");
    let c = etcd.put(&[("a", 1, P, READY), ("b", 2, R, READY)]);
    let old = swaps.swap(&c);
    let a = old.backends["be"].servers[0].live.kill_switch();
    // The leader key goes: etcd names no primary, so no writer takes over from a.
    let c = etcd.put(&[("a", 1, R, READY)]);
    let new = build(&c, &swaps.registry, 10);
    assert_eq!(new.backends["be"].writer, None);
    assert!(!a.is_tripped(), "not by the build");
    new.after_swap(&old);
    assert!(a.is_tripped(), "at the swap");

    // With `role-source check` etcd's view is no role: a stays the writer, its sessions too.
    let mut swaps = Swaps::new();
    let mut etcd = discovering("check");
    let c = etcd.put(&[("a", 1, P, READY), ("b", 2, R, READY)]);
    let t = swaps.swap(&c);
    t.backends["be"].servers[0].live.set_role(NodeRole::Primary);
    t.backends["be"].servers[1].live.set_role(NodeRole::Replica);
    let t = swaps.swap(&c);
    let a = t.backends["be"].servers[0].live.kill_switch();
    let t = swaps.swap(&etcd.put(&[("a", 1, R, READY)]));
    assert_eq!(t.backends["be"].writer, Some(0));
    assert!(!a.is_tripped());
}
