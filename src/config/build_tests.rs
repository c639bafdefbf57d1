//! Unit tests of `build.rs`: drafts to the typed model, from configuration text.

use crate::config::testing::{errors, parse};
use crate::config::{MaxLag, Role, RoleCheck};

const PG: &str = "role-check pgsql user monitor password s3cret\n";
const MY: &str = "role-check mysql user monitor password s3cret\n";

#[test]
fn role_without_role_check_is_an_error_at_the_role_line() {
    for role in ["primary", "replica"] {
        let e = errors(&format!("backend b\nserver s 127.0.0.1:1\nrole {role}\n"));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with(&format!(
                "t.cfg:3: backend 'b' has 'role {role}' but no 'role-check'"
            )),
            "{e:?}"
        );
        assert!(e[0].contains("to know the roles"), "{e:?}");
    }
    assert!(parse("backend b\nrole any\n").is_ok());
}

#[test]
fn role_from_defaults_without_role_check_names_each_backend() {
    let e = errors(&format!(
        "defaults\nrole primary\nbackend a\nbackend b\n{PG}listen c\nbind :1\n"
    ));
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].starts_with("t.cfg:2: backend 'a' has 'role primary'"),
        "{e:?}"
    );
    assert!(
        e[1].starts_with("t.cfg:2: listen 'c' has 'role primary'"),
        "{e:?}"
    );
}

#[test]
fn max_lag_needs_role_replica() {
    let e = errors("backend b\nmax-lag 16m\n");
    assert_eq!(
        e,
        ["t.cfg:2: 'max-lag' only applies with 'role replica', and backend 'b' has 'role any'"]
    );
    let e = errors(&format!("backend b\nrole primary\n{PG}max-lag 10s\n"));
    assert!(e[0].starts_with("t.cfg:4: 'max-lag' only applies"), "{e:?}");
    assert!(e[0].contains("has 'role primary'"), "{e:?}");
}

#[test]
fn max_lag_is_judged_after_inheritance() {
    // One `defaults` for a read and a write backend: the write backend must override it.
    let text = format!(
        "defaults\n{PG}max-lag 16m\nbackend reads\nrole replica\nbackend writes\nrole primary\n"
    );
    let e = errors(&text);
    assert_eq!(
        e,
        [
            "t.cfg:3: 'max-lag' only applies with 'role replica', and backend 'writes' has 'role primary'"
        ]
    );
    let c = parse(&format!(
        "defaults\n{PG}role replica\nmax-lag 16m\nbackend reads\n"
    ))
    .unwrap();
    assert_eq!(c.backends[0].max_lag, Some(MaxLag::Bytes(16 << 20)));
}

#[test]
fn bytes_max_lag_with_mysql_is_an_error() {
    let e = errors(&format!("backend b\nrole replica\n{MY}max-lag 16m\n"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("t.cfg:4: backend 'b': a size max-lag"),
        "{e:?}"
    );
    assert!(e[0].contains("seconds only"), "{e:?}");
    assert!(parse(&format!("backend b\nrole replica\n{MY}max-lag 10s\n")).is_ok());
    // PostgreSQL and the agent report both.
    for check in [PG, "role-check agent\n"] {
        for lag in ["16m", "10s"] {
            let c = parse(&format!("backend b\nrole replica\n{check}max-lag {lag}\n"));
            assert!(c.is_ok(), "{check} {lag}: {c:?}");
        }
    }
}

#[test]
fn role_check_agent_needs_agent_check_on_every_server() {
    let e = errors(
        "backend b\nrole primary\nrole-check agent\n\
         server a 127.0.0.1:1 check agent-check agent-port 9\n\
         server b 127.0.0.1:2 check\nserver c 127.0.0.1:3\n",
    );
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].starts_with("t.cfg:5: server 'b/b' has no 'agent-check'"),
        "{e:?}"
    );
    assert!(e[1].starts_with("t.cfg:6: server 'b/c'"), "{e:?}");
    let c = parse(
        "backend b\nrole primary\nrole-check agent\n\
         default-server check agent-check agent-port 9\n\
         server a 127.0.0.1:1\nserver b 127.0.0.1:2\n",
    )
    .unwrap();
    assert_eq!(c.backends[0].role_check, Some(RoleCheck::Agent));
}

#[test]
fn role_check_with_role_any_is_valid_and_kept() {
    let c = parse(&format!("backend b\n{PG}server s 127.0.0.1:1 check\n")).unwrap();
    assert_eq!(c.backends[0].role, Role::Any);
    assert!(c.backends[0].role_check.is_some());
    assert!(
        c.warnings.iter().all(|w| !w.message.contains("role")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn role_primary_allows_any_balance() {
    for balance in ["roundrobin", "leastconn", "first", "source", "static-rr"] {
        let c = parse(&format!(
            "backend b\nrole primary\n{PG}balance {balance}\nserver s 127.0.0.1:1 check\n"
        ));
        assert!(c.is_ok(), "{balance}: {c:?}");
    }
}

#[test]
fn passwords_never_reach_an_error() {
    // Every error a role-check line can lead to, with a password on it.
    let e = errors(&format!(
        "backend a\nrole replica\n{MY}max-lag 1m\n\
         backend b\nrole-check pgsql password s3cret\n\
         backend c\nrole-check pgsql user u s3cret\n\
         backend d\nrole-check mysql user u password s3cret database s3cret\n"
    ));
    assert_eq!(e.len(), 4, "{e:?}");
}
