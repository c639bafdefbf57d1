//! A keyword's code is found by grepping the keyword: for each keyword below, its text (as in
//! haproxy.cfg) or the field named after it (`-` and ` ` as `_`) appears both in the file that
//! parses it and in the file that carries out what it means. A rename on the way (the field
//! of a runtime type no longer named after its keyword) fails here.

use std::path::Path;

/// Keyword, the file that parses it, the files that do what it says.
const REACH: &[(&str, &str, &[&str])] = &[
    (
        "on-marked-down",
        "src/config/keywords/server.rs",
        &["src/check/tasks.rs"],
    ),
    (
        "on-marked-up",
        "src/config/keywords/server.rs",
        &["src/check/tasks.rs"],
    ),
    (
        "agent-inter",
        "src/config/keywords/server.rs",
        &["src/check/tasks.rs"],
    ),
    (
        "agent-send",
        "src/config/keywords/server.rs",
        &["src/check/tasks.rs"],
    ),
    (
        "maxqueue",
        "src/config/keywords/server.rs",
        &["src/table/pick.rs"],
    ),
    (
        "send-proxy-v2",
        "src/config/keywords/server.rs",
        &["src/proxy/proxy_protocol.rs"],
    ),
    (
        "slowstart",
        "src/config/keywords/server.rs",
        &["src/live/ramp.rs", "src/table/build.rs"],
    ),
    (
        "timeout tunnel",
        "src/config/keywords/proxy.rs",
        &["src/proxy/session.rs"],
    ),
    (
        "timeout queue",
        "src/config/keywords/proxy.rs",
        &["src/table/build.rs", "src/proxy/session.rs"],
    ),
    (
        "retry-on",
        "src/config/keywords/proxy.rs",
        &["src/table/build.rs", "src/proxy/connect.rs"],
    ),
    (
        "retries",
        "src/config/keywords/proxy.rs",
        &["src/table/build.rs", "src/proxy/connect.rs"],
    ),
    (
        "resolvers",
        "src/config/keywords/server.rs",
        &["src/dns/mod.rs"],
    ),
    (
        "init-addr",
        "src/config/keywords/server.rs",
        &["src/config/keywords/resolvers.rs"],
    ),
    (
        "timeout resolve",
        "src/config/keywords/resolvers.rs",
        &["src/dns/mod.rs"],
    ),
    (
        "timeout retry",
        "src/config/keywords/resolvers.rs",
        &["src/dns/query.rs"],
    ),
    (
        "resolve_retries",
        "src/config/keywords/resolvers.rs",
        &["src/dns/query.rs"],
    ),
    (
        "accepted_payload_size",
        "src/config/keywords/resolvers.rs",
        &["src/dns/query.rs"],
    ),
    (
        "server-template",
        "src/config/keywords/proxy.rs",
        &["src/config/keywords/resolvers.rs"],
    ),
];

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("cannot read {}: {e}", full.display()))
}

/// Whether `text` names `keyword`: the keyword itself, or its field (snake case).
fn names(text: &str, keyword: &str) -> bool {
    let field = keyword.replace(['-', ' '], "_");
    text.contains(keyword) || text.contains(&field)
}

#[test]
fn grepping_a_keyword_reaches_its_parser_and_its_behaviour() {
    let mut missing = Vec::new();
    for (keyword, parser, behaviour) in REACH {
        // A `timeout` is parsed from its second word (`"tunnel"`): there the field it fills
        // must be named after the whole keyword; a one-word keyword appears as itself.
        let parsed = read(parser);
        let field = keyword.replace(['-', ' '], "_");
        let found = if keyword.contains(' ') {
            parsed.contains(&field)
        } else {
            parsed.contains(&format!("\"{keyword}\""))
        };
        if !found {
            missing.push(format!(
                "{parser}: does not parse '{keyword}' under its name"
            ));
        }
        for file in *behaviour {
            if !names(&read(file), keyword) {
                missing.push(format!("{file}: neither '{keyword}' nor '{field}'"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "keywords lost on the way:\n{}",
        missing.join("\n")
    );
}
