//! Unit tests of the table: build, pick, roles and the live state's survival across swaps.

use std::sync::atomic::Ordering;

use super::*;
use crate::config::{
    Backend, Balance, CheckMethod, EtcdRole, EtcdState, EtcdView, Global, HashType, Loc, Server,
};

fn loc() -> Loc {
    Loc {
        file: Arc::from("test.cfg"),
        line: 1,
    }
}

fn server(name: &str, port: u16) -> Server {
    Server {
        name: name.into(),
        loc: loc(),
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        check: false,
        inter: Duration::from_secs(2),
        fastinter: None,
        downinter: None,
        rise: 2,
        fall: 3,
        check_port: None,
        check_addr: None,
        weight: 1,
        backup: false,
        disabled: false,
        maxconn: None,
        maxqueue: None,
        slowstart: None,
        on_marked_down_shutdown_sessions: false,
        on_marked_up_shutdown_backup_sessions: false,
        agent: None,
        send_proxy: None,
        etcd: None,
    }
}

fn config(servers: Vec<Server>, allbackups: bool) -> Config {
    Config {
        global: Global::default(),
        frontends: Vec::new(),
        backends: vec![Backend {
            name: "be".to_owned(),
            loc: loc(),
            balance: Balance::RoundRobin,
            hash_type: HashType::MapBased,
            timeout_connect: None,
            timeout_server: None,
            timeout_server_fin: None,
            timeout_queue: None,
            timeout_tunnel: None,
            timeout_check: None,
            retries: 3,
            redispatch: false,
            redispatch_after: 0,
            retry_on_conn_failure: true,
            allbackups,
            srvtcpka: false,
            check: CheckMethod::Tcp,
            servers: servers.into_iter().map(Arc::new).collect(),
            disabled: false,
            role: crate::config::Role::Any,
            role_check: None,
            max_lag: None,
            role_source: crate::config::RoleSource::Check,
            discover: None,
            default_server: server("", 0),
        }],
        stats: Vec::new(),
        etcd: Vec::new(),
        warnings: Vec::new(),
    }
}

fn names(be: &BackendRt, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let idx = be.pick(None, None).expect("a server");
            be.release(idx);
            be.servers[idx].name().to_owned()
        })
        .collect()
}

#[test]
fn live_state_survives_a_rebuild_and_is_dropped_with_its_server() {
    let reg = Registry::default();
    let now = Instant::now();
    let t1 = Table::build(
        &config(vec![server("a", 1), server("b", 2)], false),
        &reg,
        1,
        now,
    );
    let be1 = &t1.backends["be"];
    let idx = be1.pick(None, None).expect("pick");
    let live = be1.servers[idx].live.clone();
    assert_eq!(live.sessions.load(Ordering::Relaxed), 1);
    let t2 = Table::build(
        &config(vec![server("a", 1), server("b", 2)], false),
        &reg,
        2,
        now,
    );
    let same = t2.backends["be"]
        .servers
        .iter()
        .find(|s| s.name() == be1.servers[idx].name());
    assert!(Arc::ptr_eq(&same.expect("still there").live, &live));
    let t3 = Table::build(&config(vec![server("c", 3)], false), &reg, 3, now);
    t3.retain_live(&reg);
    assert_eq!(reg.server_count(), 1);
    // The session still holds its state after its server left the table.
    be1.release(idx);
    assert_eq!(live.sessions.load(Ordering::Relaxed), 0);
}

#[test]
fn maxconn_full_servers_are_skipped_then_all_full_is_reported() {
    let reg = Registry::default();
    let mut a = server("a", 1);
    a.maxconn = Some(1);
    let mut b = server("b", 2);
    b.maxconn = Some(1);
    let t = Table::build(&config(vec![a, b], false), &reg, 1, Instant::now());
    let be = &t.backends["be"];
    let first = be.pick(None, None).expect("one");
    let second = be.pick(None, None).expect("two");
    assert_ne!(first, second);
    assert_eq!(be.pick(None, None), Err(NoServer::AllFull));
    be.release(first);
    assert_eq!(be.pick(None, None), Ok(first));
}

#[test]
fn backups_serve_only_without_active_servers_first_one_unless_allbackups() {
    let reg = Registry::default();
    let mut c = server("c", 3);
    c.backup = true;
    let mut d = server("d", 4);
    d.backup = true;
    let mut a = server("a", 1);
    a.disabled = true;
    let servers = vec![a, c, d];
    let t = Table::build(&config(servers.clone(), false), &reg, 1, Instant::now());
    assert_eq!(names(&t.backends["be"], 4), ["c", "c", "c", "c"]);
    let t = Table::build(&config(servers.clone(), true), &reg, 2, Instant::now());
    let got = names(&t.backends["be"], 4);
    assert!(
        got.contains(&"c".to_owned()) && got.contains(&"d".to_owned()),
        "{got:?}"
    );
    // Re-enabling `a` by config (a reload dropping `disabled`) takes it back.
    let mut enabled = servers;
    enabled[0].disabled = false;
    let t = Table::build(&config(enabled, false), &reg, 3, Instant::now());
    assert_eq!(names(&t.backends["be"], 3), ["a", "a", "a"]);
}

#[test]
fn drained_and_down_servers_take_no_new_connections() {
    let reg = Registry::default();
    let t = Table::build(
        &config(vec![server("a", 1), server("b", 2)], false),
        &reg,
        1,
        Instant::now(),
    );
    t.backends["be"].servers[0]
        .live
        .set_admin(AdminState::Drain);
    assert_eq!(names(&t.backends["be"], 3), ["b", "b", "b"]);
    t.backends["be"].servers[1].live.set_health(Health::Down);
    assert_eq!(t.backends["be"].pick(None, None), Err(NoServer::AllFull));
    let t = Table::build(
        &config(vec![server("a", 1), server("b", 2)], false),
        &reg,
        2,
        Instant::now(),
    );
    assert_eq!(
        t.backends["be"].pick(None, None),
        Err(NoServer::NoneAvailable)
    );
}

#[test]
fn slowstart_ramps_like_haproxy_even_at_weight_one() {
    let live = ServerLive::default();
    let slowstart = Some(Duration::from_secs(10));
    assert_eq!(
        live.ramp(slowstart, Instant::now()),
        None,
        "no ramp at first start"
    );
    live.set_health(Health::Down);
    live.set_health(Health::Up);
    let back = Instant::now();
    let at = |secs: u64| back + Duration::from_millis(secs * 1000 + 500);
    // HAProxy's eweight of a weight-1 server each second of a 10 s slowstart (out of 16).
    let expected = [1, 2, 4, 5, 7, 9, 10, 12, 13, 15];
    for (sec, want) in expected.into_iter().enumerate() {
        let ramp = live.ramp(slowstart, at(sec as u64)).expect("ramping");
        assert_eq!(ramp.eweight(1), want, "second {sec}");
        assert_eq!(ramp.eweight(3), 3 * want, "second {sec}");
    }
    assert_eq!(
        live.ramp(slowstart, at(10)),
        None,
        "full throttle after 10 s"
    );
    let first = live.ramp(slowstart, at(0)).expect("ramping");
    assert_eq!(first.maxconn(10), 1, "at least one session");
    let half = live.ramp(slowstart, at(5)).expect("ramping");
    assert_eq!(half.maxconn(10), 5);
}

#[test]
fn throttle_and_weight_columns_follow_haproxy() {
    let live = Arc::new(ServerLive::default());
    let mut config = server("s", 1);
    config.slowstart = Some(Duration::from_secs(10));
    let config = Arc::new(config);
    let rt = |weight: u32, ramp: Option<Ramp>| ServerRt {
        config: config.clone(),
        maxconn: None,
        weight,
        ramp,
        eweight: ramp.map_or(weight * WEIGHT_SCALE, |r| r.eweight(weight)),
        live: live.clone(),
    };
    assert_eq!(rt(1, None).throttle(), None);
    assert_eq!(rt(1, None).shown_weight(), 1);
    let step = |elapsed| {
        Some(Ramp {
            elapsed,
            length: 10,
        })
    };
    // server_throttle_rate: (100 * eweight + 15) / (16 * uweight), rounded as HAProxy does.
    assert_eq!(rt(1, step(0)).throttle(), Some(7));
    assert_eq!(rt(1, step(0)).shown_weight(), 1);
    assert_eq!(rt(1, step(5)).throttle(), Some(57));
    assert_eq!(rt(100, step(5)).throttle(), Some(56));
    assert_eq!(rt(100, step(5)).shown_weight(), 57);
    assert_eq!(rt(1, step(9)).throttle(), Some(94));
    live.set_health(Health::Down);
    assert_eq!(rt(1, step(5)).throttle(), None, "not shown while down");
}

fn role_config(servers: Vec<Server>, role: crate::config::Role, max_lag: Option<MaxLag>) -> Config {
    let mut c = config(servers, false);
    c.backends[0].role = role;
    c.backends[0].max_lag = max_lag;
    c
}

#[test]
fn role_primary_admits_only_a_reported_primary_and_unknown_is_never_eligible() {
    let reg = Registry::default();
    let c = role_config(vec![server("a", 1), server("b", 2)], Role::Primary, None);
    let t = Table::build(&c, &reg, 1, Instant::now());
    assert_eq!(
        t.backends["be"].pick(None, None),
        Err(NoServer::NoneAvailable),
        "no role answer yet"
    );
    t.backends["be"].servers[1].live.set_role(NodeRole::Primary);
    t.backends["be"].servers[0].live.set_role(NodeRole::Replica);
    let t = Table::build(&c, &reg, 2, Instant::now());
    assert_eq!(names(&t.backends["be"], 3), ["b", "b", "b"]);
}

#[test]
fn two_primaries_refuse_every_new_connection_until_one_steps_down() {
    let reg = Registry::default();
    let c = role_config(vec![server("a", 1), server("b", 2)], Role::Primary, None);
    let t = Table::build(&c, &reg, 1, Instant::now());
    t.backends["be"].servers[0].live.set_role(NodeRole::Primary);
    // Even before the next table: the guard reads the live roles on every pick.
    t.backends["be"].servers[1].live.set_role(NodeRole::Primary);
    assert_eq!(
        t.backends["be"].pick(None, None),
        Err(NoServer::RoleConflict)
    );
    let t = Table::build(&c, &reg, 2, Instant::now());
    assert!(t.backends["be"].live.role_conflict.load(Ordering::Relaxed));
    assert!(t.backends["be"].active.members.is_empty());
    // An operator's maintenance on one of them resolves it.
    t.backends["be"].servers[0]
        .live
        .set_admin(AdminState::Maint);
    let t = Table::build(&c, &reg, 3, Instant::now());
    assert!(!t.backends["be"].live.role_conflict.load(Ordering::Relaxed));
    assert_eq!(names(&t.backends["be"], 2), ["b", "b"]);
}

#[test]
fn a_new_sole_primary_closes_the_sessions_of_the_old_one() {
    let reg = Registry::default();
    let c = role_config(vec![server("a", 1), server("b", 2)], Role::Primary, None);
    let t = Table::build(&c, &reg, 1, Instant::now());
    let (a, b) = (
        t.backends["be"].servers[0].live.clone(),
        t.backends["be"].servers[1].live.clone(),
    );
    a.set_role(NodeRole::Primary);
    b.set_role(NodeRole::Replica);
    Table::build(&c, &reg, 2, Instant::now());
    let a_session = a.kill_token();
    // a goes silent (unknown): its sessions stay until another primary exists.
    a.set_role(NodeRole::Unknown);
    Table::build(&c, &reg, 3, Instant::now());
    assert!(!a_session.is_cancelled());
    b.set_role(NodeRole::Primary);
    Table::build(&c, &reg, 4, Instant::now());
    assert!(
        a_session.is_cancelled(),
        "old writer's sessions closed once b is the primary"
    );
    assert!(!b.kill_token().is_cancelled());
}

#[test]
fn role_replica_needs_replicas_within_max_lag_and_backups_fall_back() {
    let reg = Registry::default();
    let mut p = server("p", 3);
    p.backup = true;
    let c = role_config(
        vec![server("r1", 1), server("r2", 2), p],
        Role::Replica,
        Some(MaxLag::Bytes(1024)),
    );
    let t = Table::build(&c, &reg, 1, Instant::now());
    let s = |i: usize| t.backends["be"].servers[i].live.clone();
    s(0).set_role(NodeRole::Replica);
    s(1).set_role(NodeRole::Replica);
    s(2).set_role(NodeRole::Primary);
    s(0).set_lag_ok(true);
    let t = Table::build(&c, &reg, 2, Instant::now());
    assert_eq!(
        names(&t.backends["be"], 2),
        ["r1", "r1"],
        "r2's lag is not known to be within max-lag"
    );
    s(0).set_lag_ok(false);
    let t = Table::build(&c, &reg, 3, Instant::now());
    assert_eq!(
        names(&t.backends["be"], 2),
        ["p", "p"],
        "no replica eligible: the backup primary takes reads"
    );
}

#[test]
fn a_reload_that_moves_a_server_to_another_node_forgets_its_role() {
    let reg = Registry::default();
    let c = role_config(vec![server("a", 1)], Role::Primary, None);
    let t = Table::build(&c, &reg, 1, Instant::now());
    t.backends["be"].servers[0].live.set_role(NodeRole::Primary);
    let t = Table::build(&c, &reg, 2, Instant::now());
    assert_eq!(
        t.backends["be"].servers[0].live.role(),
        NodeRole::Primary,
        "same node: kept"
    );
    let moved = role_config(vec![server("a", 9)], Role::Primary, None);
    let t = Table::build(&moved, &reg, 3, Instant::now());
    assert_eq!(t.backends["be"].servers[0].live.role(), NodeRole::Unknown);
    assert_eq!(
        t.backends["be"].pick(None, None),
        Err(NoServer::NoneAvailable)
    );
}

#[test]
fn shutdown_sessions_cancels_current_tokens_only() {
    let live = ServerLive::default();
    let old = live.kill_token();
    live.shutdown_sessions();
    assert!(old.is_cancelled());
    assert!(!live.kill_token().is_cancelled());
}

fn etcd(role: EtcdRole, state: EtcdState) -> Option<EtcdView> {
    Some(EtcdView { role, state })
}

/// A `role primary` backend whose servers a and b were discovered, with their etcd views.
fn etcd_config(source: RoleSource, a: Option<EtcdView>, b: Option<EtcdView>) -> Config {
    let (mut sa, mut sb) = (server("a", 1), server("b", 2));
    sa.etcd = a;
    sb.etcd = b;
    let mut c = role_config(vec![sa, sb], Role::Primary, None);
    c.backends[0].role_source = source;
    c
}

const P: EtcdRole = EtcdRole::Primary;
const R: EtcdRole = EtcdRole::Replica;
const READY: EtcdState = EtcdState::Ready;

#[test]
fn role_source_etcd_routes_to_etcds_primary_whatever_the_checks_say() {
    let reg = Registry::default();
    let c = etcd_config(RoleSource::Etcd, etcd(P, READY), etcd(R, READY));
    let t = Table::build(&c, &reg, 1, Instant::now());
    t.backends["be"].servers[1].live.set_role(NodeRole::Primary);
    assert_eq!(names(&t.backends["be"], 2), ["a", "a"]);
    // The leader moves: b takes the writes, a's sessions are closed.
    let a_session = t.backends["be"].servers[0].live.kill_token();
    let c = etcd_config(RoleSource::Etcd, etcd(R, READY), etcd(P, READY));
    let t = Table::build(&c, &reg, 2, Instant::now());
    assert!(a_session.is_cancelled());
    assert_eq!(names(&t.backends["be"], 2), ["b", "b"]);
    // etcd naming two primaries is a conflict.
    let c = etcd_config(RoleSource::Etcd, etcd(P, READY), etcd(P, READY));
    let t = Table::build(&c, &reg, 3, Instant::now());
    assert_eq!(
        t.backends["be"].pick(None, None),
        Err(NoServer::RoleConflict)
    );
}

#[test]
fn role_source_both_needs_agreement_and_a_disagreement_is_a_conflict() {
    let reg = Registry::default();
    let c = etcd_config(RoleSource::Both, etcd(P, READY), etcd(R, READY));
    let t = Table::build(&c, &reg, 1, Instant::now());
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
    let t = Table::build(&c, &reg, 2, Instant::now());
    assert_eq!(names(&t.backends["be"], 2), ["a", "a"]);
    // The checks see b promoted while etcd still names a: refuse, both are named.
    a.set_role(NodeRole::Replica);
    b.set_role(NodeRole::Primary);
    assert_eq!(
        t.backends["be"].pick(None, None),
        Err(NoServer::RoleConflict)
    );
    let conflict = role_conflict(RoleSource::Both, &t.backends["be"].servers);
    assert_eq!(
        describe_conflict(RoleSource::Both, &conflict),
        "a (check replica, etcd primary) and b (check primary, etcd replica)"
    );
    let t = Table::build(&c, &reg, 3, Instant::now());
    assert!(t.backends["be"].live.role_conflict.load(Ordering::Relaxed));
    // etcd catches up: resolved, b takes the writes.
    let c = etcd_config(RoleSource::Both, etcd(R, READY), etcd(P, READY));
    let t = Table::build(&c, &reg, 4, Instant::now());
    assert!(!t.backends["be"].live.role_conflict.load(Ordering::Relaxed));
    assert_eq!(names(&t.backends["be"], 2), ["b", "b"]);
    // One server that etcd calls primary and its check calls replica is a conflict too.
    let c = etcd_config(RoleSource::Both, etcd(P, READY), etcd(R, READY));
    b.set_role(NodeRole::Replica);
    let t = Table::build(&c, &reg, 5, Instant::now());
    assert_eq!(
        t.backends["be"].pick(None, None),
        Err(NoServer::RoleConflict)
    );
}

#[test]
fn etcd_state_drains_and_maints_and_cannot_lift_an_operators_maint() {
    let live = ServerLive::default();
    live.apply_etcd(etcd(R, EtcdState::Drain));
    assert_eq!(live.effective_admin(), AdminState::Drain);
    live.apply_etcd(etcd(R, EtcdState::Maint));
    assert_eq!(live.effective_admin(), AdminState::Maint);
    live.set_admin(AdminState::Maint);
    live.apply_etcd(etcd(R, READY));
    assert_eq!(live.effective_admin(), AdminState::Maint);
    live.set_admin(AdminState::Ready);
    assert!(live.eligible());
    assert_eq!(live.apply_etcd(None), NodeRole::Replica);
    assert_eq!(live.etcd_role(), NodeRole::Unknown);
}

#[test]
fn removing_the_primary_closes_its_sessions_and_removing_a_replica_drains_it() {
    let reg = Registry::default();
    let c = etcd_config(RoleSource::Etcd, etcd(P, READY), etcd(R, READY));
    let old = Table::build(&c, &reg, 1, Instant::now());
    let (a, b) = (
        old.backends["be"].servers[0].live.kill_token(),
        old.backends["be"].servers[1].live.kill_token(),
    );
    let mut without_b = c.clone();
    without_b.backends[0].servers.truncate(1);
    let new = Table::build(&without_b, &reg, 2, Instant::now());
    close_removed_writers(&old, &new);
    assert!(!b.is_cancelled(), "a removed replica drains");
    let mut without_a = c.clone();
    without_a.backends[0].servers.remove(0);
    let newer = Table::build(&without_a, &reg, 3, Instant::now());
    close_removed_writers(&old, &newer);
    assert!(a.is_cancelled(), "a removed primary's sessions are closed");
}
