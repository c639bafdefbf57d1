//! Options and keywords that do nothing in a TCP proxy, which HAProxy 2.6 accepts with a
//! warning (or silently) and rolelb must accept too, not refuse: a `defaults` section written
//! for `mode http` is common in real haproxy.cfg files that also carry TCP listeners.

mod common;

use common::{Haproxy, Rolelb, free_port};

fn config(line: &str, section: &str) -> String {
    format!(
        "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 1m\n    timeout server 1m\n\
         {section}\n    bind 127.0.0.1:{}\n    {line}\n    server s 127.0.0.1:9\n",
        free_port()
    )
}

#[test]
fn http_only_options_are_accepted_with_haproxys_warning_in_a_tcp_proxy() {
    for option in [
        "prefer-last-server",
        "checkcache",
        "http-use-proxy-header",
        "accept-invalid-http-request",
        "accept-invalid-http-response",
        "forwardfor",
    ] {
        let cfg = config(&format!("option {option}"), "listen a");
        let (h_ok, h_text) = Haproxy::check(&cfg);
        let (r_ok, r_text) = Rolelb::check(&cfg);
        assert!(h_ok, "HAProxy accepts 'option {option}': {h_text}");
        assert!(
            h_text.contains(&format!("'option {option}' ignored for proxy 'a'")),
            "HAProxy warns: {h_text}"
        );
        assert!(r_ok, "rolelb accepts 'option {option}': {r_text}");
        assert!(
            r_text.contains(&format!(
                "'option {option}' ignored for listen 'a' as it requires HTTP mode"
            )),
            "rolelb warns as HAProxy does: {r_text}"
        );
    }
}

#[test]
fn backlog_is_a_frontend_keyword_and_a_backend_one_is_only_warned_about() {
    let fe = config("backlog 200", "listen a");
    assert!(Haproxy::check(&fe).0);
    let (ok, text) = Rolelb::check(&fe);
    assert!(ok, "{text}");
    let be = format!(
        "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 1m\n    timeout server 1m\n\
         frontend f\n    bind 127.0.0.1:{}\n    default_backend b\n\
         backend b\n    backlog 10\n    server s 127.0.0.1:9\n",
        free_port()
    );
    let (h_ok, h_text) = Haproxy::check(&be);
    assert!(h_ok && h_text.contains("'backlog'"), "{h_text}");
    let (r_ok, r_text) = Rolelb::check(&be);
    assert!(
        r_ok && r_text.contains("'backlog' ignored because backend 'b' has no frontend capability"),
        "{r_text}"
    );
    // HAProxy refuses a missing number; it reads `x` as 0 and takes -1 (atol), which rolelb
    // refuses rather than guess.
    assert!(!Haproxy::check(&config("backlog", "listen a")).0);
    for bad in ["backlog x", "backlog -1", "backlog"] {
        let cfg = config(bad, "listen a");
        let (ok, text) = Rolelb::check(&cfg);
        assert!(
            !ok && text.contains(".cfg:"),
            "rolelb refuses '{bad}' at its line: {text}"
        );
    }
}
