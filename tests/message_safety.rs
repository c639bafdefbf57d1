//! Log lines quoting what a peer sent stay one printable line: a server answering an HTTP check
//! with escape sequences, a carriage return and a NUL in its reason phrase is logged with them
//! escaped.

mod common;
mod scripted;

use std::time::Duration;

use common::{NamedServer, Rolelb, free_port};
use scripted::{Reply, Scripted};

#[test]
fn a_check_replys_hostile_text_is_logged_escaped_on_one_line() {
    let a = NamedServer::start("a");
    let web = Scripted::start(
        Reply::text("HTTP/1.0 503 evil \x1b[2J\x1b[31mred\rforged line\0nul\r\n\r\n"),
        true,
    );
    let port = free_port();
    let lb = Rolelb::start(&format!(
        "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 10s\n    timeout server 10s\n\n\
         listen lb\n    bind 127.0.0.1:{port}\n    \
    option httpchk GET /primary\n    \
         server a {} check port {} inter 200ms\n",
        a.addr(),
        web.port()
    ));
    assert!(
        lb.wait_for_log(
            "is DOWN, reason: Layer7 wrong status",
            Duration::from_secs(20)
        ),
        "the failed check was not logged:\n{}",
        lb.stderr_text()
    );
    let log = lb.stderr_text();
    let line = log
        .lines()
        .find(|l| l.contains("is DOWN, reason: Layer7 wrong status"))
        .unwrap_or_else(|| panic!("no DOWN line in:\n{log}"));
    assert!(
        line.contains("evil ") && line.contains("forged line") && line.contains("nul"),
        "the reason phrase is not quoted whole on its line: {line:?}"
    );
    assert!(
        !log.contains('\x1b') && !log.contains('\0'),
        "raw control bytes in the log:\n{log:?}"
    );
    assert!(
        !log.lines().any(|l| l.starts_with("forged line")),
        "the CR started a forged line:\n{log}"
    );
}
