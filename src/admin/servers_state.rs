//! `show servers state [<backend>]`: HAProxy's server-state file format, version 1 (the same
//! text `server-state-file` holds), one line per server with HAProxy's numeric encodings.

use std::fmt::Write as _;
use std::time::Instant;

use super::Env;
use super::view::{self, ServerView};

/// The format version line.
const VERSION: &str = "1";

/// The column header, exactly as HAProxy 2.6 prints it.
pub const HEADER: &str = "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state \
srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result \
srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn \
srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port";

/// Why `show servers state` printed no table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The backend named does not exist.
    #[error("Can't find backend.\n")]
    NoBackend,
}

/// `show servers state`, for every backend or only `backend`.
pub fn show(env: &Env, backend: Option<&str>) -> Result<String, StateError> {
    let table = env.table().load();
    let proxies = view::proxies(&table);
    if let Some(name) = backend
        && !proxies
            .iter()
            .any(|p| p.backend.is_some() && p.name == name)
    {
        return Err(StateError::NoBackend);
    }
    let now = Instant::now();
    let mut out = format!("{VERSION}\n{HEADER}\n");
    for px in &proxies {
        let Some((_, rt)) = px.backend else {
            continue;
        };
        if backend.is_some_and(|b| b != px.name) {
            continue;
        }
        for s in view::servers(rt) {
            line(px.id, px.name, &s, now, &mut out);
        }
    }
    Ok(out)
}

fn line(be_id: u32, be_name: &str, s: &ServerView<'_>, now: Instant, out: &mut String) {
    let last = s.last_check();
    let (check_status, check_result) = if s.cfg.check {
        (
            view::status_number(last.as_deref()),
            view::result_number(last.as_deref()),
        )
    } else {
        (1, 0)
    };
    let dash = |a: Option<std::net::IpAddr>| a.map_or_else(|| "-".to_owned(), |a| a.to_string());
    // `srv_fqdn` and `srvrecord`: the name DNS resolves (an SRV name's targets are not kept).
    let (fqdn, srvrecord) = match &s.cfg.resolve {
        Some(r) if r.is_srv() => ("-", r.fqdn.as_str()),
        Some(r) => (r.fqdn.as_str(), "-"),
        None => ("-", "-"),
    };
    let _ = writeln!(
        out,
        "{be_id} {be_name} {} {} {} {} {} {} {} {} {check_status} {check_result} {} {} {} 0 {} {fqdn} {} {srvrecord} 0 {} {} {} {}",
        s.id,
        s.cfg.name,
        s.cfg.addr.ip(),
        s.op_state(now) as u8,
        s.admin_flags(),
        s.user_weight(),
        s.cfg.weight,
        s.last_change(now),
        s.check_health(now),
        s.check_state(),
        s.agent_state(),
        u8::from(s.cfg.id.is_some()),
        s.cfg.addr.port(),
        s.cfg.check_port.unwrap_or(0),
        dash(s.cfg.check_addr),
        dash(s.agent_addr()),
        s.cfg.agent.as_ref().map_or(0, |a| a.agent_port),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_has_the_25_columns_of_format_version_1() {
        assert_eq!(HEADER.split(' ').count(), 26);
        assert_eq!(StateError::NoBackend.to_string(), "Can't find backend.\n");
    }
}
