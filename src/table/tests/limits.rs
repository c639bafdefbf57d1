//! `fullconn` and `minconn`: the backend's `fullconn` as HAProxy 2.6 computes it, and the
//! dynamic server limits picks obey.

use std::sync::atomic::Ordering;

use super::*;
use crate::live::Registry;
use crate::table::testing::{DEFAULT_MAXCONN, build};

fn table(text: &str) -> Table {
    build(&parse(text), &Registry::default(), 1)
}

#[test]
fn fullconn_is_given_or_a_tenth_of_the_frontends_that_may_route_here_rounded_up() {
    let t = table(
        "global\n    maxconn 95\n\
         frontend f1\n    bind 127.0.0.1:1\n    maxconn 101\n    default_backend a\n\
         frontend f2\n    bind 127.0.0.1:2\n    use_backend b if TRUE\n    default_backend a\n\
         frontend off\n    bind 127.0.0.1:3\n    maxconn 1000\n    disabled\n    default_backend a\n\
         listen l\n    bind 127.0.0.1:4\n    server s 127.0.0.1:9\n\
         backend a\n    server s 127.0.0.1:9\n\
         backend b\n    fullconn 7\n    server s 127.0.0.1:9\n\
         backend c\n    server s 127.0.0.1:9\n",
    );
    // a: f1's 101 and f2's global 95 (not the disabled one): 196 / 10, rounded up.
    assert_eq!(t.backends["a"].fullconn, 20);
    assert_eq!(t.backends["b"].fullconn, 7, "given");
    assert_eq!(t.backends["l"].fullconn, 10, "a listen counts itself");
    assert_eq!(t.backends["c"].fullconn, 1, "no frontend: at least 1");
    // Without a global maxconn a frontend counts for the process's default.
    let t = table("listen l\n    bind 127.0.0.1:4\n    server s 127.0.0.1:9\n");
    assert_eq!(t.backends["l"].fullconn, DEFAULT_MAXCONN / 10);
}

#[test]
fn a_dynamic_limit_grows_from_minconn_to_maxconn_with_the_backends_load() {
    let t = table(
        "backend be\n    fullconn 100\n\
         \x20   server d 127.0.0.1:1 minconn 10 maxconn 50\n\
         \x20   server s 127.0.0.1:2 maxconn 50\n\
         \x20   server m 127.0.0.1:3 minconn 30\n\
         \x20   server e 127.0.0.1:4 minconn 50 maxconn 40\n",
    );
    let be = &t.backends["be"];
    let limit = |i: usize, beconn| be.limit(&be.servers[i], beconn);
    // maxconn * beconn / fullconn, at least minconn; maxconn from fullconn on.
    assert_eq!(limit(0, 0), Some(10));
    assert_eq!(limit(0, 21), Some(10));
    assert_eq!(limit(0, 40), Some(20));
    assert_eq!(limit(0, 99), Some(49));
    assert_eq!(limit(0, 100), Some(50));
    assert_eq!(limit(0, 5000), Some(50));
    // Static: maxconn alone; minconn alone, or above maxconn, becomes maxconn.
    assert_eq!(limit(1, 0), Some(50));
    assert_eq!(limit(2, 0), Some(30));
    assert_eq!(limit(3, 0), Some(50));
    assert!(be.dynamic);
    assert!(!table("backend b\n    server s 127.0.0.1:1 maxconn 5\n").backends["b"].dynamic);
}

#[test]
fn picks_count_the_picking_session_and_the_queue_in_the_backends_load() {
    // fullconn 10, maxconn 10, minconn 2: the limit is the backend's load, at least 2.
    let t = table("backend be\n    fullconn 10\n    server d 127.0.0.1:1 minconn 2 maxconn 10\n");
    let be = &t.backends["be"];
    // The picking session counts: alone it makes the load 1, and the floor of 2 holds;
    // then each open session and the one picking make room for one more, up to maxconn.
    for _ in 0..10 {
        assert!(be.pick(None, None).is_ok());
    }
    assert_eq!(
        be.pick(None, None),
        Err(NoServer::AllFull),
        "maxconn reached"
    );
    for _ in 0..10 {
        be.release(0);
    }

    // fullconn 20: the limit is half the load. Sessions waiting in the queue count.
    let t = table("backend be\n    fullconn 20\n    server d 127.0.0.1:1 minconn 2 maxconn 10\n");
    let be = &t.backends["be"];
    be.live.queued.store(10, Ordering::Relaxed);
    for _ in 0..5 {
        assert!(be.pick(None, None).is_ok());
    }
    // 5 open and 6 waiting, one of which picks: 11 / 2 = 5, full. A new session would
    // make it 12: room for a sixth.
    be.live.queued.store(6, Ordering::Relaxed);
    assert_eq!(
        be.pick_via(None, None, true).map(|(i, _)| i),
        Err(NoServer::AllFull),
        "a waiting session is counted once"
    );
    assert!(be.pick_via(None, None, false).is_ok());
}

#[test]
fn fullconn_comes_from_defaults_and_a_frontend_ignores_it_with_a_warning() {
    let c = parse(
        "defaults\n    fullconn 30\n\
         frontend f\n    bind 127.0.0.1:1\n    fullconn 5\n    default_backend be\n\
         backend be\n    server s 127.0.0.1:9\n\
         backend zero\n    fullconn 0\n    server s 127.0.0.1:9\n",
    );
    let t = build(&c, &Registry::default(), 1);
    assert_eq!(t.backends["be"].fullconn, 30, "from defaults");
    // 0 is "not set": computed (no frontend routes here: 1).
    assert_eq!(t.backends["zero"].fullconn, 1);
    assert!(
        c.warnings.iter().any(|w| w
            .message
            .contains("'fullconn' ignored because frontend 'f' has no backend capability")),
        "{:?}",
        c.warnings
    );
}
