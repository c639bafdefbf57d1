//! `show stat` (HAProxy 2.6's CSV, every column in HAProxy's order) and `show info`
//! (`Name: value` lines). Columns rolelb does not measure stay empty, as HAProxy leaves the
//! HTTP-only ones empty for TCP proxies.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::Env;
use super::view::{self, BackendView, CheckShown, Proxy, ServerView};
use crate::table::Table;

/// HAProxy 2.6's `show stat` columns, in order (statistics modules included, as Debian's build
/// prints them).
pub const COLUMNS: &[&str] = &[
    "pxname",
    "svname",
    "qcur",
    "qmax",
    "scur",
    "smax",
    "slim",
    "stot",
    "bin",
    "bout",
    "dreq",
    "dresp",
    "ereq",
    "econ",
    "eresp",
    "wretr",
    "wredis",
    "status",
    "weight",
    "act",
    "bck",
    "chkfail",
    "chkdown",
    "lastchg",
    "downtime",
    "qlimit",
    "pid",
    "iid",
    "sid",
    "throttle",
    "lbtot",
    "tracked",
    "type",
    "rate",
    "rate_lim",
    "rate_max",
    "check_status",
    "check_code",
    "check_duration",
    "hrsp_1xx",
    "hrsp_2xx",
    "hrsp_3xx",
    "hrsp_4xx",
    "hrsp_5xx",
    "hrsp_other",
    "hanafail",
    "req_rate",
    "req_rate_max",
    "req_tot",
    "cli_abrt",
    "srv_abrt",
    "comp_in",
    "comp_out",
    "comp_byp",
    "comp_rsp",
    "lastsess",
    "last_chk",
    "last_agt",
    "qtime",
    "ctime",
    "rtime",
    "ttime",
    "agent_status",
    "agent_code",
    "agent_duration",
    "check_desc",
    "agent_desc",
    "check_rise",
    "check_fall",
    "check_health",
    "agent_rise",
    "agent_fall",
    "agent_health",
    "addr",
    "cookie",
    "mode",
    "algo",
    "conn_rate",
    "conn_rate_max",
    "conn_tot",
    "intercepted",
    "dcon",
    "dses",
    "wrew",
    "connect",
    "reuse",
    "cache_lookups",
    "cache_hits",
    "srv_icur",
    "src_ilim",
    "qtime_max",
    "ctime_max",
    "rtime_max",
    "ttime_max",
    "eint",
    "idle_conn_cur",
    "safe_conn_cur",
    "used_conn_cur",
    "need_conn_est",
    "uweight",
    "agg_server_status",
    "agg_server_check_status",
    "agg_check_status",
    "-",
    "ssl_sess",
    "ssl_reused_sess",
    "ssl_failed_handshake",
    "h2_headers_rcvd",
    "h2_data_rcvd",
    "h2_settings_rcvd",
    "h2_rst_stream_rcvd",
    "h2_goaway_rcvd",
    "h2_detected_conn_protocol_errors",
    "h2_detected_strm_protocol_errors",
    "h2_rst_stream_resp",
    "h2_goaway_resp",
    "h2_open_connections",
    "h2_backend_open_streams",
    "h2_total_connections",
    "h2_backend_total_streams",
    "h1_open_connections",
    "h1_open_streams",
    "h1_total_connections",
    "h1_total_streams",
    "h1_bytes_in",
    "h1_bytes_out",
    "h1_spliced_bytes_in",
    "h1_spliced_bytes_out",
];

/// `show stat` filters: `show stat [{<iid>|<proxy>} <type> <sid>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatFilter {
    /// Only this proxy (by id or name); `None` = all.
    pub proxy: Option<String>,
    /// Bit mask of row types: 1 frontends, 2 backends, 4 servers.
    pub types: u8,
    /// Only this server id; `None` = all.
    pub sid: Option<u32>,
}

impl Default for StatFilter {
    fn default() -> Self {
        StatFilter {
            proxy: None,
            types: 7,
            sid: None,
        }
    }
}

/// One CSV row being filled by column name.
struct Row(Vec<String>);

impl Row {
    fn new() -> Row {
        let mut row = Row(vec![String::new(); COLUMNS.len()]);
        row.set("-", "-");
        row.set("pid", 1);
        row.set("mode", "tcp");
        row
    }

    fn set(&mut self, column: &str, value: impl ToString) {
        if let Some(i) = COLUMNS.iter().position(|c| *c == column) {
            self.0[i] = value.to_string();
        }
    }

    fn write(&self, out: &mut String) {
        for field in &self.0 {
            out.push_str(&csv_field(field));
            out.push(',');
        }
        out.push('\n');
    }
}

/// A CSV field as HAProxy writes it: quoted when it holds a comma, quote or line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// The header line of `show stat`.
pub fn header() -> String {
    format!("# {},\n", COLUMNS.join(","))
}

/// `show stat`: the header, then for each proxy its FRONTEND row, server rows, BACKEND row.
pub fn show_stat(env: &Env, filter: &StatFilter) -> String {
    let table = env.table().load();
    let now = Instant::now();
    let mut out = header();
    for px in view::proxies(&table) {
        let wanted = match &filter.proxy {
            None => true,
            Some(p) => *p == px.name || p.parse::<u32>().ok() == Some(px.id),
        };
        if !wanted {
            continue;
        }
        if filter.types & 1 != 0 {
            frontend_row(env, &table, &px, &mut out);
        }
        if let Some(be) = px.backend_view() {
            if filter.types & 4 != 0 {
                for s in be
                    .servers
                    .iter()
                    .filter(|s| filter.sid.is_none_or(|sid| sid == s.id))
                {
                    server_row(&px, s, now, &mut out);
                }
            }
            if filter.types & 2 != 0 {
                backend_row(&px, &be, now, &mut out);
            }
        }
    }
    out
}

fn frontend_row(env: &Env, table: &Table, px: &Proxy<'_>, out: &mut String) {
    let Some((cfg, rt)) = px.frontend else {
        return;
    };
    let mut row = Row::new();
    row.set("pxname", px.name);
    row.set("svname", "FRONTEND");
    row.set(
        "slim",
        view::frontend_limit(table, cfg, env.default_maxconn),
    );
    row.set("status", if cfg.disabled { "STOP" } else { "OPEN" });
    row.set("rate_lim", cfg.rate_limit_sessions.unwrap_or(0));
    row.set("iid", px.id);
    row.set("sid", 0);
    row.set("type", 0);
    if let Some(rt) = rt {
        let live = &rt.live;
        row.set("scur", live.conns.load(Ordering::Relaxed));
        row.set("smax", live.max_conns.load(Ordering::Relaxed));
        row.set("stot", live.total_sessions.load(Ordering::Relaxed));
        row.set("conn_tot", live.total_conns.load(Ordering::Relaxed));
        row.set("bin", live.bytes_in.load(Ordering::Relaxed));
        row.set("bout", live.bytes_out.load(Ordering::Relaxed));
        // `tcp-request connection reject` counts `dcon`, `tcp-request content reject`
        // `dreq`; rolelb has no `tcp-request session` rules (`dses`) nor responses to deny.
        row.set("dcon", live.denied_conns.load(Ordering::Relaxed));
        row.set("dreq", live.denied_reqs.load(Ordering::Relaxed));
        row.set("dses", 0);
        row.set("dresp", 0);
    }
    row.write(out);
}

/// The columns of a check or an agent check (`check_*` or `agent_*`, `last_chk` or
/// `last_agt`).
fn check_columns(row: &mut Row, prefix: &str, last: &str, shown: &CheckShown) {
    row.set(&format!("{prefix}_status"), shown.status);
    row.set(&format!("{prefix}_desc"), shown.desc);
    if let Some(r) = &shown.last {
        row.set(
            &format!("{prefix}_code"),
            r.code.clone().unwrap_or_default(),
        );
        row.set(&format!("{prefix}_duration"), r.duration.as_millis());
        row.set(last, &r.info);
    }
}

fn server_row(px: &Proxy<'_>, s: &ServerView<'_>, now: Instant, out: &mut String) {
    let live = &s.rt.live;
    let mut row = Row::new();
    row.set("pxname", px.name);
    row.set("svname", &s.cfg.name);
    row.set("qcur", 0);
    row.set("qmax", 0);
    row.set("scur", live.sessions.load(Ordering::Relaxed));
    row.set("smax", live.max_sessions.load(Ordering::Relaxed));
    if let Some(m) = s.limit() {
        row.set("slim", m);
    }
    row.set("stot", live.total_sessions.load(Ordering::Relaxed));
    row.set("lbtot", live.lb_total.load(Ordering::Relaxed));
    row.set("bin", live.bytes_in.load(Ordering::Relaxed));
    row.set("bout", live.bytes_out.load(Ordering::Relaxed));
    row.set("econ", live.connect_errors.load(Ordering::Relaxed));
    row.set("wretr", live.traffic.get().retries.load(Ordering::Relaxed));
    row.set(
        "wredis",
        live.traffic.get().redispatches.load(Ordering::Relaxed),
    );
    row.set("status", s.status(now));
    row.set("weight", s.shown_weight());
    row.set("uweight", s.user_weight());
    row.set("act", u8::from(!s.cfg.backup));
    row.set("bck", u8::from(s.cfg.backup));
    row.set("lastchg", s.last_change(now));
    if let Some(q) = s.queue_limit() {
        row.set("qlimit", q);
    }
    row.set("iid", px.id);
    row.set("sid", s.id);
    row.set("type", 2);
    if let Some(throttle) = s.throttle() {
        row.set("throttle", throttle);
    }
    if let Some(check) = s.check_shown() {
        row.set("chkfail", live.check_failures.load(Ordering::Relaxed));
        row.set("chkdown", live.down_transitions.load(Ordering::Relaxed));
        row.set("check_rise", s.cfg.rise);
        row.set("check_fall", s.cfg.fall);
        row.set("check_health", s.check_health(now));
        check_columns(&mut row, "check", "last_chk", &check);
    }
    if let Some(agent) = s.agent_shown() {
        row.set("agent_rise", 1);
        row.set("agent_fall", 1);
        row.set(
            "agent_health",
            u8::from(live.agent_health() == crate::table::Health::Up),
        );
        if agent.last.is_none() {
            row.set("agent_duration", 0);
        }
        check_columns(&mut row, "agent", "last_agt", &agent);
    }
    row.set("addr", s.cfg.addr);
    row.write(out);
}

fn backend_row(px: &Proxy<'_>, be: &BackendView<'_>, now: Instant, out: &mut String) {
    let live = &be.rt.live;
    let mut row = Row::new();
    row.set("pxname", px.name);
    row.set("svname", "BACKEND");
    row.set("qcur", live.queued.load(Ordering::Relaxed));
    row.set("scur", be.sessions());
    row.set("slim", be.fullconn());
    row.set("stot", live.total_sessions.load(Ordering::Relaxed));
    row.set("lbtot", be.lb_total());
    row.set("bin", be.bytes_in());
    row.set("bout", be.bytes_out());
    row.set("econ", be.connect_errors());
    row.set("wretr", be.retries());
    row.set("wredis", be.redispatches());
    row.set("status", be.status());
    let weight = be.weight();
    row.set("weight", weight);
    row.set("uweight", weight);
    row.set("act", be.active());
    row.set("bck", be.backup());
    row.set("chkdown", be.down_transitions());
    if let Some(secs) = be.last_change(now) {
        row.set("lastchg", secs);
    }
    row.set("iid", px.id);
    row.set("sid", 0);
    row.set("type", 1);
    row.set("algo", view::algo_name(be.cfg.balance));
    row.write(out);
}

/// `Uptime` as HAProxy writes it: `1d 2h03m04s`.
fn uptime(secs: u64) -> String {
    format!(
        "{}d {}h{:02}m{:02}s",
        secs / 86_400,
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60
    )
}

/// `show info`: HAProxy's field names, in HAProxy's order, for what rolelb knows.
pub fn show_info(env: &Env) -> String {
    let table = env.table().load();
    let up = env.started.elapsed().as_secs();
    let maxconn = view::maxconn(&table, env.default_maxconn);
    let ulimit = view::max_fds();
    let bytes_out = view::bytes_out(&table);
    let global = &table.config.global;
    let start_sec = view::start_time_secs(env.started_wall);
    let version = env!("CARGO_PKG_VERSION");
    let fields: Vec<(&str, String)> = vec![
        ("Name", "rolelb".to_owned()),
        ("Version", version.to_owned()),
        ("Release_date", "-".to_owned()),
        ("Nbthread", env.nbthread.to_string()),
        ("Nbproc", "1".to_owned()),
        ("Process_num", "1".to_owned()),
        ("Pid", std::process::id().to_string()),
        ("Uptime", uptime(up)),
        ("Uptime_sec", up.to_string()),
        ("Ulimit-n", ulimit.to_string()),
        ("Maxconn", maxconn.to_string()),
        ("Hard_maxconn", maxconn.to_string()),
        (
            "CurrConns",
            env.limits.conns.load(Ordering::Relaxed).to_string(),
        ),
        (
            "CumConns",
            env.limits.total_conns.load(Ordering::Relaxed).to_string(),
        ),
        ("ConnRateLimit", global.maxconnrate.unwrap_or(0).to_string()),
        ("SessRateLimit", global.maxsessrate.unwrap_or(0).to_string()),
        ("node", global.node_name().to_owned()),
        // As HAProxy, only when set.
        (
            "description",
            global.description.clone().unwrap_or_default(),
        ),
        ("Stopping", "0".to_owned()),
        ("Listeners", table.listeners.len().to_string()),
        ("TotalBytesOut", bytes_out.to_string()),
        ("Build info", version.to_owned()),
        ("Start_time_sec", start_sec.to_string()),
    ];
    let mut out = String::new();
    for (name, value) in fields {
        if name == "description" && value.is_empty() {
            continue;
        }
        let _ = writeln!(out, "{name}: {value}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_has_haproxy_26_columns_in_order() {
        assert_eq!(COLUMNS.len(), 128);
        let h = header();
        assert!(h.starts_with("# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,"));
        assert!(h.ends_with(",h1_spliced_bytes_in,h1_spliced_bytes_out,\n"));
    }

    #[test]
    fn rows_have_one_field_per_column_and_quote_commas() {
        let mut row = Row::new();
        row.set("last_chk", "a, \"b\"");
        row.set("no-such-column", 1);
        let mut out = String::new();
        row.write(&mut out);
        assert!(out.contains(",\"a, \"\"b\"\"\","), "{out}");
        let plain = out.replace("\"a, \"\"b\"\"\"", "x");
        assert_eq!(plain.matches(',').count(), COLUMNS.len());
    }

    #[test]
    fn uptime_is_written_like_haproxy() {
        assert_eq!(uptime(12), "0d 0h00m12s");
        assert_eq!(uptime(90_061), "1d 1h01m01s");
    }
}
