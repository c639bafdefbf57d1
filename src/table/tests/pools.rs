//! Pools and picks: live state across rebuilds, `maxconn`, backups and `option allbackups`,
//! drained and down servers, `slowstart` and the columns derived from it.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::*;
use crate::table::testing::{DEFAULT_MAXCONN, build};

/// Backend `be` with servers a (port 1) and b (port 2).
const AB: &str = "backend be\n    server a 127.0.0.1:1\n    server b 127.0.0.1:2\n";

#[test]
fn live_state_survives_a_rebuild_and_is_dropped_with_its_server() {
    let reg = Registry::default();
    let now = Instant::now();
    let ab = parse(AB);
    let t1 = Table::build(&prepare(ab.clone(), &reg, DEFAULT_MAXCONN), 1, now);
    let be1 = &t1.backends["be"];
    let idx = be1.pick(None, None).expect("pick");
    let live = be1.servers[idx].live.clone();
    assert_eq!(live.sessions.load(Ordering::Relaxed), 1);
    let t2 = Table::build(&prepare(ab, &reg, DEFAULT_MAXCONN), 2, now);
    let same = t2.backends["be"]
        .servers
        .iter()
        .find(|s| s.name() == be1.servers[idx].name());
    assert!(Arc::ptr_eq(&same.expect("still there").live, &live));
    let c = parse("backend be\n    server c 127.0.0.1:3\n");
    let t3 = Table::build(&prepare(c, &reg, DEFAULT_MAXCONN), 3, now);
    t3.retain_live(&reg);
    assert_eq!(reg.servers.lock().expect("lock").len(), 1);
    // The session still holds its state after its server left the table.
    be1.release(idx);
    assert_eq!(live.sessions.load(Ordering::Relaxed), 0);
}

#[test]
fn maxconn_full_servers_are_skipped_then_all_full_is_reported() {
    let reg = Registry::default();
    let c = parse(
        "backend be\n    server a 127.0.0.1:1 maxconn 1\n    server b 127.0.0.1:2 maxconn 1\n",
    );
    let t = build(&c, &reg, 1);
    let be = &t.backends["be"];
    let first = be.pick(None, None).expect("one");
    let second = be.pick(None, None).expect("two");
    assert_ne!(first, second);
    assert_eq!(be.pick(None, None), Err(NoServer::AllFull));
    be.release(first);
    assert_eq!(be.pick(None, None), Ok(first));
}

/// Backend `be`: a (maybe `disabled`), then backups c and d.
fn with_backups(allbackups: bool, a_disabled: bool) -> Arc<Config> {
    let option = if allbackups {
        "    option allbackups\n"
    } else {
        ""
    };
    let disabled = if a_disabled { " disabled" } else { "" };
    parse(&format!(
        "backend be\n{option}    server a 127.0.0.1:1{disabled}\n\
         \x20   server c 127.0.0.1:3 backup\n    server d 127.0.0.1:4 backup\n"
    ))
}

#[test]
fn backups_serve_only_without_active_servers_first_one_unless_allbackups() {
    let reg = Registry::default();
    let t = build(&with_backups(false, true), &reg, 1);
    assert_eq!(names(&t.backends["be"], 4), ["c", "c", "c", "c"]);
    let t = build(&with_backups(true, true), &reg, 2);
    let got = names(&t.backends["be"], 4);
    assert!(
        got.contains(&"c".to_owned()) && got.contains(&"d".to_owned()),
        "{got:?}"
    );
    // Re-enabling `a` by config (a reload dropping `disabled`) takes it back.
    let t = build(&with_backups(false, false), &reg, 3);
    assert_eq!(names(&t.backends["be"], 3), ["a", "a", "a"]);
}

#[test]
fn drained_and_down_servers_take_no_new_connections() {
    let reg = Registry::default();
    let c = parse(AB);
    let t = build(&c, &reg, 1);
    t.backends["be"].servers[0]
        .live
        .set_admin(AdminState::Drain);
    assert_eq!(names(&t.backends["be"], 3), ["b", "b", "b"]);
    t.backends["be"].servers[1].live.set_health(Health::Down);
    assert_eq!(t.backends["be"].pick(None, None), Err(NoServer::AllFull));
    let t = build(&c, &reg, 2);
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
    let c = parse("backend be\n    server s 127.0.0.1:1 slowstart 10s\n");
    let config = c.backends[0].servers[0].clone();
    assert_eq!(config.slowstart, Some(Duration::from_secs(10)));
    let rt = |weight: u32, ramp: Option<Ramp>| ServerRt {
        config: config.clone(),
        maxconn: None,
        dynamic: None,
        weight,
        ramp,
        eweight: ramp.map_or(weight * WEIGHT_SCALE, |r| r.eweight(weight)),
        live: live.clone(),
        puid: 1,
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
