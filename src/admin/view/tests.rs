//! The view's derivations on tables built from configurations, live state changed as checks,
//! the operator and role checks change it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::check::{CheckResult, Status};
use crate::table::testing::{Swaps, parse};
use crate::table::{AdminState, Health, NodeRole, Table};

/// Builds tables from one configuration against one registry, as `control` does.
struct Tables {
    config: Arc<Config>,
    swaps: Swaps,
}

impl Tables {
    fn new(text: &str) -> Tables {
        Tables {
            config: parse(text),
            swaps: Swaps::new(),
        }
    }

    fn build(&mut self) -> Arc<Table> {
        self.swaps.swap(&self.config)
    }
}

fn live<'a>(table: &'a Table, backend: &str, server: &str) -> &'a crate::table::ServerLive {
    let be = &table.backends[backend];
    let s = be.servers.iter().find(|s| s.name() == server);
    &s.unwrap_or_else(|| panic!("no server {server}")).live
}

fn backend<'a>(table: &'a Table, name: &str) -> BackendView<'a> {
    proxies(table)
        .iter()
        .find(|p| p.name == name)
        .and_then(Proxy::backend_view)
        .unwrap_or_else(|| panic!("no backend {name}"))
}

#[test]
fn act_and_bck_count_every_usable_server_and_the_weight_sums_the_pool_in_use() {
    let mut t = Tables::new(
        "backend be\n\
         \x20   server a 127.0.0.1:1 weight 2\n\
         \x20   server b 127.0.0.1:2 weight 3\n\
         \x20   server c 127.0.0.1:3 backup weight 5\n\
         \x20   server d 127.0.0.1:4 backup weight 7\n\
         \x20   server z 127.0.0.1:5 weight 0\n",
    );
    let table = t.build();
    let be = backend(&table, "be");
    // HAProxy's srv_act/srv_bck: up, ready, non-zero weight; every backup, not only the first.
    assert_eq!((be.active(), be.backup()), (2, 2));
    assert_eq!((be.status(), be.up()), ("UP", true));
    assert_eq!(be.weight(), 5, "a + b");

    for s in ["a", "b"] {
        live(&table, "be", s).set_admin(AdminState::Maint);
    }
    let table = t.build();
    let be = backend(&table, "be");
    assert_eq!((be.active(), be.backup()), (0, 2));
    assert_eq!(be.status(), "UP");
    assert_eq!(be.weight(), 5, "only the first backup takes traffic");

    for s in ["c", "d"] {
        live(&table, "be", s).set_admin(AdminState::Maint);
    }
    let table = t.build();
    let be = backend(&table, "be");
    assert_eq!((be.active(), be.backup(), be.weight()), (0, 0, 0));
    assert_eq!((be.status(), be.up()), ("DOWN", false));
    assert!(be.last_change(Instant::now()).is_some());
    // HAProxy's chkdown of a backend: the backend going down, not its servers' transitions.
    assert_eq!(be.down_transitions(), 1);
    assert_eq!(be.sessions(), 0);
}

#[test]
fn a_role_backend_counts_only_servers_its_role_admits_and_none_in_a_conflict() {
    let mut t = Tables::new(
        "backend w\n\
         \x20   role primary\n\
         \x20   role-check pgsql user monitor\n\
         \x20   server p 127.0.0.1:1 check\n\
         \x20   server r 127.0.0.1:2 check\n",
    );
    let table = t.build();
    for s in ["p", "r"] {
        live(&table, "w", s).set_health(Health::Up);
    }
    let table = t.build();
    let be = backend(&table, "w");
    assert_eq!((be.active(), be.status()), (0, "DOWN"), "no role known yet");
    assert_eq!(be.servers[0].lb_state(be.rt), LbState::Nolb);

    live(&table, "w", "p").set_role(NodeRole::Primary);
    live(&table, "w", "r").set_role(NodeRole::Replica);
    let table = t.build();
    let be = backend(&table, "w");
    assert_eq!((be.active(), be.status()), (1, "UP"));
    assert_eq!(be.servers[0].lb_state(be.rt), LbState::Up);
    assert_eq!(be.servers[1].lb_state(be.rt), LbState::Nolb);

    live(&table, "w", "r").set_role(NodeRole::Primary);
    let table = t.build();
    let be = backend(&table, "w");
    assert_eq!(
        (be.active(), be.status(), be.weight()),
        (0, "DOWN", 0),
        "a role conflict takes no new connections"
    );
}

#[test]
fn server_values_and_check_columns_come_from_the_view() {
    let mut t = Tables::new(
        "frontend f\n\
         \x20   bind 127.0.0.1:5000\n\
         \x20   maxconn 100\n\
         \x20   default_backend be\n\
         backend be\n\
         \x20   server a 127.0.0.1:1 maxconn 7 maxqueue 3 check\n\
         \x20   server b 127.0.0.1:2 maxqueue 0\n",
    );
    let table = t.build();
    let now = Instant::now();
    let be = backend(&table, "be");
    assert_eq!(be.fullconn(), 10, "a tenth of the frontend's maxconn");
    let fe = &table.config.frontends[0];
    assert_eq!(frontend_limit(&table, fe, 2000), 100);
    let (a, b) = (&be.servers[0], &be.servers[1]);
    assert_eq!((a.limit(), a.queue_limit()), (Some(7), Some(3)));
    assert_eq!((b.limit(), b.queue_limit()), (None, None));
    assert_eq!(
        (a.shown_weight(), a.user_weight(), a.throttle()),
        (1, 1, None)
    );
    assert!(a.downtime(now).is_some());
    assert_eq!(b.downtime(now), None, "no check, no downtime");
    assert!(b.check_shown().is_none() && b.agent_shown().is_none());

    let ini = a.check_shown().expect("a has check");
    assert_eq!((ini.status, ini.desc), ("INI", "Initializing"));
    assert_eq!((ini.code_number(), ini.duration()), (0, Duration::ZERO));

    let result = CheckResult::new(
        Status::L7Sts,
        "Service Unavailable",
        Duration::from_millis(12),
    )
    .with_code("503");
    live(&table, "be", "a")
        .last_check
        .store(Some(Arc::new(result)));
    let shown = a.check_shown().expect("a has check");
    assert_eq!((shown.status, shown.desc), ("L7STS", "Layer7 wrong status"));
    assert_eq!(shown.code_number(), 503);
    assert_eq!(shown.duration(), Duration::from_millis(12));
}

#[test]
fn maxconn_falls_back_to_the_process_default_and_lags_are_unknown_until_measured() {
    let mut t = Tables::new("backend be\n    server a 127.0.0.1:1\n");
    let table = t.build();
    assert_eq!(maxconn(&table, 4096), 4096);
    let be = backend(&table, "be");
    let a = &be.servers[0];
    assert_eq!((a.lag_bytes(), a.lag_ms()), (None, None));
    a.rt.live.lag_bytes.store(42, Ordering::Relaxed);
    assert_eq!(a.lag_bytes(), Some(42));
    assert_eq!(role_name(config::Role::Replica), "replica");
}
