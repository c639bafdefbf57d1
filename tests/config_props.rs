//! Property tests: no input, however broken, makes the configuration parser panic.

use proptest::prelude::*;

/// Lines that look like configuration: real keywords with plausible and odd arguments.
fn plausible_line() -> impl Strategy<Value = String> {
    let keyword = prop::sample::select(vec![
        "global",
        "defaults",
        "defaults base",
        "frontend fe",
        "backend be",
        "listen ls",
        "listen stats",
        "frontend fe from base",
        "bind",
        "server s1",
        "server s2",
        "default-server",
        "mode",
        "balance",
        "hash-type",
        "timeout",
        "option",
        "no option",
        "tcp-check",
        "http-check expect",
        "stats",
        "log",
        "use_backend",
        "default_backend",
        "maxconn",
        "nbthread",
        "retries",
        "user",
        "stats socket",
        "acl",
        "role",
        "role-check pgsql",
        "role-check mysql",
        "max-lag",
        "role-source",
        "etcd e",
        ".if",
        ".else",
        ".endif",
        "peers p",
        "disabled",
    ]);
    let arg = prop::sample::select(vec![
        "127.0.0.1:5432",
        ":5000",
        "*:5001",
        ":::5002",
        "[::1]:6432",
        "127.0.0.1",
        ":1-3",
        "check",
        "inter",
        "3s",
        "0",
        "257",
        "-1",
        "99999999999999999999",
        "tcp",
        "http",
        "roundrobin",
        "source",
        "consistent",
        "connect",
        "client",
        "tcp-check",
        "httpchk",
        "pgsql-check",
        "user",
        "send",
        "expect",
        "string",
        "rstring",
        "(",
        "!",
        "status",
        "200",
        "enable",
        "uri",
        "/",
        "global",
        "stderr",
        "local0",
        "be",
        "ls",
        "agent-check",
        "agent-port",
        "weight",
        "\"",
        "'",
        "\\",
        "\\x4",
        "#",
        "$X",
        "\"$\"",
        "if",
        "from",
        "base",
        "level",
        "admin",
        "mode",
        "600",
        "name",
        "fe",
        "backup",
        "send-proxy",
        "primary",
        "replica",
        "password",
        "database",
        "agent",
        "16m",
        "etcd",
    ]);
    (keyword, prop::collection::vec(arg, 0..5))
        .prop_map(|(k, args)| format!("{k} {}", args.join(" ")))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = rolelb::config::parse_sources(&[("fuzz.cfg", &text)]);
    }

    #[test]
    fn plausible_lines_never_panic(lines in prop::collection::vec(plausible_line(), 0..30)) {
        let text = lines.join("\n");
        let _ = rolelb::config::parse_sources(&[("a.cfg", &text), ("b.cfg", "backend zz\n")]);
    }
}
