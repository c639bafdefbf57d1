//! `show table [NAME]` on the runtime socket, printed as HAProxy 2.6 prints it: without a
//! name one `# table:` line per stick table (HAProxy lists them last declared first), with a
//! name that line and then one line per entry, in key order. A session below `level
//! operator` sees the head only. Reads the backends' stick entries; changes nothing.

use std::fmt::Write;
use std::time::Instant;

use super::view;
use crate::config::StatsLevel;
use crate::config::stick::StickTable;
use crate::table::{BackendRt, Table};

/// HAProxy's reply when no table has that name.
const NO_SUCH_TABLE: &str = "No such table\n";

/// The reply to `show table` followed by `args`.
pub fn show_table(table: &Table, level: StatsLevel, args: &[&str]) -> String {
    let proxies = view::proxies(table);
    let backends = proxies
        .iter()
        .filter_map(|p| p.backend.map(|(_, rt)| rt))
        .filter(|rt| own_table(rt).is_some());
    let now = Instant::now();
    let mut out = String::new();
    match args {
        [] => {
            let all: Vec<&BackendRt> = backends.collect();
            for rt in all.into_iter().rev() {
                head(&mut out, rt, now);
            }
        }
        [name] => {
            let Some(rt) = backends.into_iter().find(|rt| rt.name == *name) else {
                return NO_SUCH_TABLE.into();
            };
            head(&mut out, rt, now);
            if level == StatsLevel::User {
                out.push_str("# contents not dumped due to insufficient privileges\n");
                return out;
            }
            entries(&mut out, rt, now);
        }
        [_, ..] => {
            return "Optional argument only supports \"data.<store_data_type>\" <operator> <value> and key <key>\n".into();
        }
    }
    out
}

/// The backend's own stick table, if it declares one.
fn own_table(rt: &BackendRt) -> Option<&StickTable> {
    rt.settings.stick.as_ref()?.own.as_ref()
}

fn head(out: &mut String, rt: &BackendRt, now: Instant) {
    let Some(table) = own_table(rt) else {
        return;
    };
    let _ = writeln!(
        out,
        "# table: {}, type: {}, size:{}, used:{}",
        rt.name,
        table.key.name(),
        table.size,
        rt.live.stick.used(table, now)
    );
}

/// The entries, each with the server id and name it was stored with (by this backend's rules
/// or by another backend's that use this table).
fn entries(out: &mut String, rt: &BackendRt, now: Instant) {
    let Some(table) = own_table(rt) else {
        return;
    };
    for e in rt.live.stick.view(table, now) {
        let _ = writeln!(
            out,
            "{:#014x}: key={} use=0 exp={} server_id={} server_key={}",
            e.stamp + 1,
            e.key,
            e.expires_in.as_millis(),
            e.server.id,
            e.server.name
        );
    }
}
