//! Unit tests of the proxy keyword table.

use std::time::Duration;

use crate::config::testing::{errors, parse};

#[test]
fn zero_timeouts_mean_not_set_and_override_defaults() {
    let c = parse(
        "defaults\ntimeout client 5s\ntimeout server 5s\ntimeout connect 5s\n\
         timeout queue 5s\ntimeout check 5s\ntimeout tunnel 5s\n\
         timeout client-fin 5s\ntimeout server-fin 5s\n\
         listen l\nbind :1\ntimeout client 0\ntimeout server 0s\ntimeout connect 0ms\n\
         timeout queue 0\ntimeout check 0\ntimeout tunnel 0\n\
         timeout client-fin 0\ntimeout server-fin 0us\nserver s 127.0.0.1:2\n",
    )
    .expect("valid");
    let (f, b) = (&c.frontends[0], &c.backends[0]);
    assert_eq!((f.timeout_client, f.timeout_client_fin), (None, None));
    assert_eq!(
        (
            b.timeout_server,
            b.timeout_connect,
            b.timeout_queue,
            b.timeout_check,
            b.timeout_tunnel,
            b.timeout_server_fin
        ),
        (None, None, None, None, None, None)
    );
}

#[test]
fn maxconn_zero_takes_the_global_one_and_counts_stop_at_int_max() {
    let c = parse("global\nmaxconn 0\nlisten l\nbind :1\nmaxconn 0\nserver s 127.0.0.1:2\n")
        .expect("valid");
    assert_eq!((c.global.maxconn, c.frontends[0].maxconn), (None, None));
    let c = parse("listen l\nbind :1\nmaxconn 2147483647\nretries 2147483647\n").expect("valid");
    assert_eq!(c.frontends[0].maxconn, Some(i32::MAX as u32));
    assert_eq!(c.backends[0].retries, i32::MAX as u32);
    for line in ["maxconn 2147483648", "retries 2147483648"] {
        let e = errors(&format!("listen l\nbind :1\n{line}\n"));
        assert!(e[0].starts_with("t.cfg:3:"), "{e:?}");
        assert!(e[0].contains("between 0 and 2147483647"), "{e:?}");
    }
}

#[test]
fn durations_round_up_to_milliseconds() {
    let c =
        parse("listen l\nbind :1\ntimeout client 100us\ntimeout server 1500us\n").expect("valid");
    assert_eq!(
        c.frontends[0].timeout_client,
        Some(Duration::from_millis(1))
    );
    assert_eq!(c.backends[0].timeout_server, Some(Duration::from_millis(2)));
    let e = errors("listen l\nbind :1\ntimeout client 25d\n");
    assert!(
        e[0].starts_with("t.cfg:3:") && e[0].contains("overflows"),
        "{e:?}"
    );
}

#[test]
fn stats_refresh_zero_does_not_refresh() {
    let c = parse("listen st\nmode http\nbind :1\nstats enable\nstats refresh 0\n").expect("valid");
    assert_eq!(c.stats[0].refresh, None);
}

#[test]
fn old_listen_syntax_and_redispatch_show_the_modern_form() {
    let e = errors(
        "listen db 127.0.0.1:5000
server s 127.0.0.1:2
",
    );
    assert!(
        e[0].starts_with("t.cfg:1: 'listen db 127.0.0.1:5000' is the pre-1.5 syntax")
            && e[0].contains("'bind 127.0.0.1:5000'"),
        "{e:?}"
    );
    let e = errors(
        "frontend f :5000
",
    );
    assert!(e[0].contains("'bind :5000'"), "{e:?}");
    // Not for backends, which never had an address there.
    let e = errors(
        "backend b :5000
",
    );
    assert!(e[0].contains("unexpected argument ':5000'"), "{e:?}");
    for old in ["redispatch", "redisp"] {
        let e = errors(&format!(
            "listen l
bind :1
{old}
server s 127.0.0.1:2
"
        ));
        assert!(
            e[0].starts_with(&format!("t.cfg:3: '{old}' is not supported anymore"))
                && e[0].contains("'option redispatch'"),
            "{e:?}"
        );
    }
}

#[test]
fn addresses_expand_unquoted_variables() {
    let env = |n: &str| match n {
        "PORT" => Some("5000".to_string()),
        "HOST" => Some("127.0.0.1".to_string()),
        _ => None,
    };
    let c = crate::config::parse_with_env(
        &[(
            "t.cfg",
            "listen l\nbind :$PORT\nserver s ${HOST}:$PORT addr $HOST\n",
        )],
        &env,
    )
    .expect("valid");
    assert_eq!(c.frontends[0].binds[0].addr.port(), 5000);
    assert_eq!(c.backends[0].servers[0].addr.to_string(), "127.0.0.1:5000");
    let e =
        crate::config::parse_with_env(&[("t.cfg", "listen l\nbind :1\nserver s $NOPE\n")], &env)
            .expect_err("empty address");
    assert!(
        e.0[0]
            .to_string()
            .starts_with("t.cfg:3: '$NOPE' resolves to an empty address"),
        "{e}"
    );
}

#[test]
fn option_redispatch_takes_haproxy_interval() {
    let be = |lines: &str| {
        parse(&format!(
            "listen l\nbind :1\n{lines}\nserver s 127.0.0.1:2\n"
        ))
        .expect("valid")
        .backends
        .remove(0)
    };
    let b = be("option redispatch");
    assert_eq!((b.redispatch, b.redispatch_after), (true, -1));
    let b = be("option redispatch 2");
    assert_eq!((b.redispatch, b.redispatch_after), (true, 2));
    let b = be("option redispatch -2");
    assert_eq!((b.redispatch, b.redispatch_after), (true, -2));
    let b = be("option redispatch 0");
    assert_eq!((b.redispatch, b.redispatch_after), (true, 0));
    let b = parse(
        "defaults\noption redispatch 3\nlisten l\nbind :1\nno option redispatch\n\
         server s 127.0.0.1:2\nlisten m\nbind :2\nserver s 127.0.0.1:2\n",
    )
    .expect("valid");
    assert!(!b.backends[0].redispatch);
    assert_eq!(
        (b.backends[1].redispatch, b.backends[1].redispatch_after),
        (true, 3)
    );
    for (line, want) in [
        ("option redispatch x", "expects an interval"),
        ("option redispatch 1.5", "expects an interval"),
        ("option redispatch 99999999999", "expects an interval"),
        ("option redispatch 1 2", "unexpected argument"),
    ] {
        let e = errors(&format!("listen l\nbind :1\n{line}\n"));
        assert!(
            e[0].starts_with("t.cfg:3:") && e[0].contains(want),
            "{line}: {e:?}"
        );
    }
    // retries + 1 + N = 0 names no retry (HAProxy divides by zero there).
    let e = errors("defaults\noption redispatch -4\nlisten l\nbind :1\nretries 3\n");
    assert!(
        e[0].starts_with("t.cfg:2:") && e[0].contains("names no retry"),
        "{e:?}"
    );
    parse("listen l\nbind :1\nretries 3\noption redispatch -3\n").expect("valid");
    parse("listen l\nbind :1\nretries 0\noption redispatch -1\n").expect("valid");
}

#[test]
fn retry_on_keeps_only_conn_failure_for_tcp() {
    let retry_on = |lines: &str| {
        parse(&format!("listen l\nbind :1\n{lines}\n"))
            .expect("valid")
            .backends[0]
            .retry_on_conn_failure
    };
    assert!(retry_on(""), "the default is conn-failure");
    assert!(!retry_on("retry-on none"));
    assert!(
        !retry_on("retry-on empty-response 503"),
        "the list replaces the default"
    );
    assert!(retry_on("retry-on 503 conn-failure"));
    assert!(retry_on("retry-on all-retryable-errors"));
    assert!(
        !retry_on("retry-on conn-failure\nretry-on none"),
        "not cumulative"
    );
    let inherited = parse("defaults\nretry-on none\nlisten l\nbind :1\n").expect("valid");
    assert!(!inherited.backends[0].retry_on_conn_failure);
    for (line, want) in [
        ("retry-on", "expects at least one keyword"),
        ("retry-on conn-failure none", "must be alone"),
        ("retry-on none none", "must be alone"),
        (
            "retry-on conn-failur",
            "unknown keyword 'conn-failur' (did you mean 'conn-failure'?)",
        ),
        ("retry-on 502 418", "unknown keyword '418'"),
    ] {
        let e = errors(&format!("listen l\nbind :1\n{line}\n"));
        assert!(
            e[0].starts_with("t.cfg:3:") && e[0].contains(want),
            "{line}: {e:?}"
        );
    }
    let e = errors("frontend f\nbind :1\nretry-on none\n");
    assert!(
        e.iter()
            .any(|e| e.starts_with("t.cfg:3:") && e.contains("not allowed in a 'frontend'")),
        "{e:?}"
    );
}

#[test]
fn server_ids_are_unique_and_the_others_take_the_next_free_one_as_haproxy() {
    let c = parse(
        "backend be\nserver a 127.0.0.1:1\nserver b 127.0.0.1:2 id 1\nserver c 127.0.0.1:3\n\
         server d 127.0.0.1:4 id 3\nserver e 127.0.0.1:5\n",
    )
    .expect("valid");
    let ids = crate::config::server_ids(c.backends[0].servers.iter().map(|s| &**s));
    // a: 1 is taken, so 2; b: 1; c: the running number is 4 by now; d: 3; e: 6.
    assert_eq!(ids, vec![2, 1, 4, 3, 6]);
    let e = errors("backend be\nserver a 127.0.0.1:1 id 7\nserver b 127.0.0.1:2 id 7\n");
    assert!(
        e.iter().any(|e| e.contains(":3")
            && e.contains("custom id 7 already used at")
            && e.contains("('server a')")),
        "{e:?}"
    );
}

#[test]
fn rate_limit_sessions_is_a_plain_decimal_on_the_frontend_side() {
    let c = parse(
        "defaults\nrate-limit sessions 50\n\
         frontend f\nbind :1\nrate-limit sessions 7\ndefault_backend b\n\
         frontend g\nbind :2\nrate-limit sessions 0\ndefault_backend b\n\
         frontend h\nbind :3\ndefault_backend b\n\
         backend b\nrate-limit sessions 9\nserver s 127.0.0.1:2\n",
    )
    .expect("valid");
    let limits: Vec<Option<u32>> = c.frontends.iter().map(|f| f.rate_limit_sessions).collect();
    assert_eq!(
        limits,
        [Some(7), None, Some(50)],
        "0 is no limit; defaults apply"
    );
    assert!(
        c.warnings
            .iter()
            .any(|w| w.message.contains("backend 'b' has no frontend capability")),
        "{:?}",
        c.warnings
    );
    let e = |line: &str| {
        errors(&format!(
            "listen l\nbind :1\n{line}\nserver s 127.0.0.1:2\n"
        ))
    };
    assert!(e("rate-limit connections 5")[0].contains("only supports 'sessions'"));
    assert!(e("rate-limit sessions")[0].contains("expects an integer value"));
    // HAProxy's strtoul(.., 0) reads these as octal and hexadecimal.
    assert!(e("rate-limit sessions 010")[0].contains("decimal"));
    assert!(e("rate-limit sessions 0x10")[0].contains("decimal"));
    assert!(e("rate-limit sessions 5k")[0].contains("expects a number"));
    assert!(e("rate-limit sessions 4294967296")[0].contains("4294967295"));
    assert!(e("rate-limit sessions 5 6")[0].starts_with("t.cfg:3: "));
}
