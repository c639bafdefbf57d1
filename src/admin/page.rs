//! The HTML stats page of a `listen` with `stats enable`: one plain table per backend, a row
//! per server with its state, role, lag, weight and sessions. Deliberately simple (no scripts,
//! no styles beyond a few colours); dashboards read `/metrics` instead.

use std::fmt::Write as _;
use std::time::Duration;

use super::Env;
use super::api;

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn colour(state: &str) -> &'static str {
    match state {
        "UP" => "#c0ffc0",
        "DOWN" => "#ffc0c0",
        "NOLB" | "DRAIN" => "#ffe0a0",
        _ => "#d0d0ff",
    }
}

/// The page, refreshed every `refresh` when set (`stats refresh`).
pub fn render(env: &Env, refresh: Option<Duration>) -> String {
    let table = env.table().load();
    let report = api::backends(&table);
    let mut out = String::from("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">");
    if let Some(r) = refresh {
        let _ = write!(
            out,
            "<meta http-equiv=\"refresh\" content=\"{}\">",
            r.as_secs().max(1)
        );
    }
    let _ = write!(
        out,
        "<title>rolelb statistics</title></head><body>\n<h1>rolelb {} statistics</h1>\n<p>pid {}, uptime {}s, table generation {}</p>\n",
        env!("CARGO_PKG_VERSION"),
        std::process::id(),
        env.started.elapsed().as_secs(),
        report.generation
    );
    for be in &report.backends {
        let _ = write!(
            out,
            "<h2>{} <small>(role {}, {}{})</small></h2>\n<table border=\"1\" cellspacing=\"0\" cellpadding=\"3\">\n\
             <tr><th>server</th><th>address</th><th>state</th><th>role</th><th>lag bytes</th><th>lag s</th>\
             <th>weight</th><th>sessions</th><th>total</th><th>last check</th></tr>\n",
            esc(&be.name),
            be.role,
            be.status,
            if be.role_conflict {
                ", ROLE CONFLICT"
            } else {
                ""
            },
        );
        for s in &be.servers {
            let check = s
                .last_check
                .as_ref()
                .map(|c| format!("{} {}", c.status, esc(&c.info)))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "<tr style=\"background:{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                colour(s.state),
                esc(&s.name),
                esc(&s.address),
                s.state,
                s.role,
                s.lag_bytes.map(|v| v.to_string()).unwrap_or_default(),
                s.lag_seconds.map(|v| v.to_string()).unwrap_or_default(),
                s.weight,
                s.sessions,
                s.sessions_total,
                check,
            );
        }
        out.push_str("</table>\n");
    }
    out.push_str("</body></html>\n");
    out
}
