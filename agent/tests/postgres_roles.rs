//! One agent per node of a real PostgreSQL 15 primary + streaming replica: the agent-check
//! line and the HTTP endpoints tell primary from replica, and follow a promotion within one
//! `inter`.

mod common;

use std::time::{Duration, Instant};

use common::{Agent, Postgres, agent_line, http_get, pg_database};

const INTER: Duration = Duration::from_millis(300);
const EXTRA: &str = "inter: 300ms\ntimeout: 1s\nmax_lag: 16MB\n";

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
}

#[test]
fn agents_tell_primary_from_replica_and_follow_promotion() {
    let mut primary = Postgres::primary();
    let replica = Postgres::replica_of(&primary);
    let a1 = Agent::start(&pg_database(primary.port(), "postgres"), EXTRA);
    let a2 = Agent::start(&pg_database(replica.port(), "postgres"), EXTRA);

    let startup = Duration::from_secs(10);
    a1.wait_line(startup, |l| {
        l == "up ready 100% #role=primary lag=0 lag_s=0\n"
    });
    a2.wait_line(startup, |l| {
        l.starts_with("up ready 100% #role=replica lag=")
    });
    println!("primary line: {}replica line: {}", a1.line(), a2.line());

    // The Patroni endpoints, both ways round.
    assert_eq!(a1.get("/primary").0, 200);
    assert_eq!(a2.get("/primary").0, 503);
    assert_eq!(a1.get("/replica").0, 503);
    let (code, body) = a2.get("/replica");
    assert_eq!(code, 200, "{body}");
    let j = json(&body);
    assert_eq!(j["role"], "replica");
    assert_eq!(j["state"], "up");
    assert!(j["lag"].is_u64(), "{body}");
    for path in ["/", "/master", "/read-write"] {
        assert_eq!(a1.get(path).0, 200, "{path}");
        assert_eq!(a2.get(path).0, 503, "{path}");
    }
    for a in [&a1, &a2] {
        assert_eq!(a.get("/read-only").0, 200);
        assert_eq!(a.get("/health").0, 200);
        assert_eq!(a.get("/readiness").0, 200);
        assert_eq!(a.get("/liveness").0, 200);
        assert_eq!(a.get("/nope").0, 404);
        let (code, body) = http_get(a.http, "HEAD", "/read-only");
        assert_eq!((code, body.as_str()), (200, ""));
        assert_eq!(http_get(a.http, "OPTIONS", "/read-only").0, 200);
    }
    // agent-send naming an endpoint gets a role-specific answer only when configured to
    // wait for it; by default the line is role-neutral.
    assert!(agent_line(a2.agent, Some("primary\n")).starts_with("up ready"));

    // Promotion: stop the old primary, promote the replica.
    primary.stop();
    replica.promote();
    let promoted = Instant::now();
    a2.wait_status("/primary", 200, Duration::from_secs(10));
    let took = promoted.elapsed();
    println!("new primary's agent answered /primary 200 {took:?} after pg_promote returned");
    // A behaviour bound (the agent polls every `inter`), with a margin a loaded 2-core
    // machine holds: how fast the promotion is seen is bench/'s business, not a test's.
    assert!(
        took <= INTER * 2 + Duration::from_millis(1500),
        "promotion seen after {took:?}, inter is {INTER:?}"
    );
    assert!(a2.line().starts_with("up ready 100% #role=primary lag=0"));
    assert_eq!(a2.get("/replica").0, 503);

    // The old primary's agent says down, with the reason.
    a1.wait_status("/primary", 503, Duration::from_secs(5));
    let (_, body) = a1.get("/health");
    let j = json(&body);
    assert_eq!(j["state"], "down");
    assert_eq!(j["role"], "unknown");
    assert!(
        j["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{body}"
    );
    assert!(a1.line().starts_with("down ready 100% #role=unknown"));
}
