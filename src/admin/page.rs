//! The HTML stats page of a `listen` or `frontend` with `stats enable`: one plain table per
//! backend, a row per server with its state, role, lag, weight and sessions; with `stats admin`
//! a form per backend whose POST sets servers ready, drain or maint, answered as HAProxy does
//! with a 303 back to the page and the outcome (`;st=DONE`). Also the 401 and 403 answers of
//! the access rules. Deliberately simple (no scripts, no styles beyond a few colours);
//! dashboards read `/metrics` instead.

use std::fmt::Write as _;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use super::Env;
use super::api;
use super::http::Resp;
use super::ops;
use crate::config::StatsListener;
use crate::table::AdminState;

/// What the page shows for one request.
pub struct PageView<'a> {
    /// The listener's settings (`stats hide-version`, `show-node`, `show-legends`).
    pub listener: &'a StatsListener,
    /// `stats admin` allows the server actions: show their forms.
    pub admin: bool,
    /// `stats refresh`, unless the request says `;norefresh`.
    pub refresh: Option<Duration>,
    /// The outcome of an action, from `;st=CODE`.
    pub status: Option<Outcome>,
}

/// The outcome of a POSTed action, carried in the redirect as HAProxy's `;st=` codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `DENY`: `stats admin` does not allow actions for this request.
    Deny,
    /// `DONE`: every server named was changed.
    Done,
    /// `ERRP`: invalid parameters (unknown backend or action, or nothing changed).
    Errp,
    /// `EXCD`: the request was too large.
    Excd,
    /// `NONE`: nothing to do.
    None,
    /// `PART`: some servers were changed.
    Part,
    /// `UNKN`: an unknown code.
    Unkn,
}

impl Outcome {
    const ALL: [(Outcome, &'static str, &'static str); 7] = [
        (Outcome::Deny, "DENY", "Action denied."),
        (Outcome::Done, "DONE", "Action processed successfully."),
        (
            Outcome::Errp,
            "ERRP",
            "Action not processed because of invalid parameters.",
        ),
        (
            Outcome::Excd,
            "EXCD",
            "Action not processed: the request was too large; change fewer servers at a time.",
        ),
        (Outcome::None, "NONE", "Nothing has changed."),
        (Outcome::Part, "PART", "Action partially processed."),
        (Outcome::Unkn, "UNKN", "Unexpected result."),
    ];

    /// The code in `;st=CODE`.
    pub fn code(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(o, _, _)| *o == self)
            .map_or("UNKN", |(_, c, _)| c)
    }

    fn message(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(o, _, _)| *o == self)
            .map_or("", |(_, _, m)| m)
    }

    /// The outcome named by `;st=CODE` in what follows the stats URI, if any.
    pub fn from_query(rest: &str) -> Option<Outcome> {
        let at = rest.find(";st=")?;
        let code = rest.get(at + 4..at + 8).unwrap_or_default();
        Some(
            Self::ALL
                .iter()
                .find(|(_, c, _)| *c == code)
                .map_or(Outcome::Unkn, |(o, _, _)| *o),
        )
    }
}

fn plain(status: StatusCode, content_type: &'static str, body: &'static str) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// 401 with `WWW-Authenticate: Basic realm="REALM"` (HAProxy's answer and body).
pub fn unauthorized(realm: &str) -> Resp {
    let mut resp = plain(
        StatusCode::UNAUTHORIZED,
        "text/html",
        "<html><body><h1>401 Unauthorized</h1>\nYou need a valid user and password to access this content.\n</body></html>\n",
    );
    // Control characters cannot go in a header; the realm is the configuration's text.
    let realm: String = realm.chars().filter(|c| !c.is_control()).collect();
    if let Ok(v) = HeaderValue::from_bytes(format!("Basic realm=\"{realm}\"").as_bytes()) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

/// 403 (`stats http-request deny`), HAProxy's body.
pub fn forbidden() -> Resp {
    plain(
        StatusCode::FORBIDDEN,
        "text/html",
        "<html><body><h1>403 Forbidden</h1>\nRequest forbidden by administrative rules.\n</body></html>\n",
    )
}

/// 303 to the page with the outcome (`;st=CODE`), keeping `;up` and `;norefresh`.
pub fn redirect(listener: &StatsListener, outcome: Outcome, rest: &str) -> Resp {
    let mut location = format!("{};st={}", listener.uri, outcome.code());
    if rest.contains(";up") {
        location.push_str(";up");
    }
    if listener.refresh.is_some() && rest.contains(";norefresh") {
        location.push_str(";norefresh");
    }
    let mut resp = plain(StatusCode::SEE_OTHER, "text/plain", "");
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// `%XX` and `+` decoded; `None` when an escape is malformed or the text is not UTF-8.
fn url_decode(s: &str) -> Option<String> {
    String::from_utf8(crate::text::form_decode(s)?).ok()
}

/// The actions of the page's form (`b=BACKEND&s=SERVER...&action=ACTION`), as HAProxy reads
/// them: the last `b` and `action` count, every `s` is a server of that backend.
pub async fn post_action(env: &Env, body: &[u8]) -> Outcome {
    let Ok(body) = std::str::from_utf8(body) else {
        return Outcome::Errp;
    };
    let (mut backend, mut action, mut servers) = (None, None, Vec::new());
    for pair in body.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (Some(k), Some(v)) = (url_decode(k), url_decode(v)) else {
            return Outcome::Errp;
        };
        match k.as_str() {
            "b" => backend = Some(v),
            "action" => action = Some(v),
            "s" => servers.push(v),
            _ => {}
        }
    }
    let (Some(backend), Some(action)) = (backend, action) else {
        return Outcome::None;
    };
    if !env
        .table()
        .load()
        .config
        .backends
        .iter()
        .any(|b| b.name == backend)
    {
        return Outcome::Errp;
    }
    // (target state, whether the server's current state is one the action changes).
    let change: fn(AdminState) -> Option<AdminState> = match action.as_str() {
        "ready" => |_| Some(AdminState::Ready),
        "drain" => |_| Some(AdminState::Drain),
        "maint" => |_| Some(AdminState::Maint),
        "disable" => |s| (s != AdminState::Maint).then_some(AdminState::Maint),
        "enable" => |s| (s == AdminState::Maint).then_some(AdminState::Ready),
        "stop" => |s| (s != AdminState::Drain).then_some(AdminState::Drain),
        "start" => |s| (s == AdminState::Drain).then_some(AdminState::Ready),
        // HAProxy's health and agent actions and `shutdown`: rolelb has no equivalent,
        // so the servers count as not changed.
        "dhlth" | "ehlth" | "hrunn" | "hnolb" | "hdown" | "dagent" | "eagent" | "arunn"
        | "adown" | "shutdown" => |_| None,
        _ => return Outcome::Errp,
    };
    let legacy = matches!(action.as_str(), "disable" | "enable" | "stop" | "start");
    let (mut total, mut altered) = (0, 0);
    for server in &servers {
        let Ok(found) = ops::lookup(env, &backend, server) else {
            total += 1;
            continue;
        };
        match change(found.live.admin()) {
            Some(state) => {
                ops::set_state(env, &found, state, "the stats page").await;
                total += 1;
                altered += 1;
            }
            // HAProxy counts a legacy action on a server already in that state as nothing.
            None if legacy => {}
            None => total += 1,
        }
    }
    match (total, altered) {
        (0, _) => Outcome::None,
        (_, 0) => Outcome::Errp,
        (t, a) if t == a => Outcome::Done,
        _ => Outcome::Part,
    }
}

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

/// The page for one request.
pub fn render(env: &Env, view: &PageView) -> String {
    let listener = view.listener;
    let table = env.table().load();
    let report = api::backends(&table);
    let mut out = String::from("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">");
    if let Some(r) = view.refresh {
        let _ = write!(
            out,
            "<meta http-equiv=\"refresh\" content=\"{}\">",
            r.as_secs().max(1)
        );
    }
    let version = if listener.hide_version {
        String::new()
    } else {
        format!(" {}", env!("CARGO_PKG_VERSION"))
    };
    let node = match listener.show_node.as_deref() {
        None => String::new(),
        // Without a name: the global `node`, else the host's name, as in HAProxy.
        Some("") => format!(" on {}", esc(table.config.global.node_name())),
        Some(name) => format!(" on {}", esc(name)),
    };
    let _ = write!(
        out,
        "<title>rolelb statistics</title></head><body>\n<h1>rolelb{version} statistics{node}</h1>\n<p>pid {}, uptime {}s, table generation {}</p>\n",
        std::process::id(),
        env.started.elapsed().as_secs(),
        report.generation
    );
    if let Some(status) = view.status {
        let _ = writeln!(out, "<p><b>{}</b></p>", status.message());
    }
    if listener.show_legends {
        out.push_str("<p>Legend: ");
        for state in ["UP", "DOWN", "DRAIN", "MAINT"] {
            let _ = write!(
                out,
                "<span style=\"background:{}\">&nbsp;{state}&nbsp;</span> ",
                colour(state)
            );
        }
        out.push_str("</p>\n");
    }
    for be in &report.backends {
        let _ = writeln!(
            out,
            "<h2>{} <small>(role {}, {}{})</small></h2>",
            esc(&be.name),
            be.role,
            be.status,
            if be.role_conflict {
                ", ROLE CONFLICT"
            } else {
                ""
            },
        );
        if view.admin {
            let _ = writeln!(
                out,
                "<form method=\"post\" action=\"{}\"><input type=\"hidden\" name=\"b\" value=\"{}\">",
                esc(&listener.uri),
                esc(&be.name)
            );
        }
        out.push_str("<table border=\"1\" cellspacing=\"0\" cellpadding=\"3\">\n<tr>");
        if view.admin {
            out.push_str("<th></th>");
        }
        out.push_str("<th>server</th>");
        // Addresses only with `stats show-legends`, as HAProxy.
        if listener.show_legends {
            out.push_str("<th>address</th>");
        }
        out.push_str(
            "<th>state</th><th>role</th><th>lag bytes</th><th>lag s</th>\
             <th>weight</th><th>sessions</th><th>total</th><th>last check</th></tr>\n",
        );
        for s in &be.servers {
            let check = s
                .last_check
                .as_ref()
                .map(|c| format!("{} {}", c.status, esc(&c.info)))
                .unwrap_or_default();
            let _ = write!(out, "<tr style=\"background:{}\">", colour(s.state));
            if view.admin {
                let _ = write!(
                    out,
                    "<td><input type=\"checkbox\" name=\"s\" value=\"{}\"></td>",
                    esc(&s.name)
                );
            }
            let _ = write!(out, "<td>{}</td>", esc(&s.name));
            if listener.show_legends {
                let _ = write!(out, "<td>{}</td>", esc(&s.address));
            }
            let _ = writeln!(
                out,
                "<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
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
        if view.admin {
            out.push_str(
                "Choose the action to perform on the checked servers: <select name=\"action\">\
                 <option value=\"ready\">Set state to READY</option>\
                 <option value=\"drain\">Set state to DRAIN</option>\
                 <option value=\"maint\">Set state to MAINT</option></select>\
                 <input type=\"submit\" value=\"Apply\"></form>\n",
            );
        }
    }
    out.push_str("</body></html>\n");
    out
}
