//! The words after `#` in an agent-check reply by which rolelb-agent hands its reading to
//! rolelb (`role-check agent`): `role=primary|replica|unknown lag=BYTES lag_s=SECONDS`, with
//! `unknown` for a lag the database did not report. HAProxy only logs them.

use std::time::Duration;

use crate::{Lag, Reading, Role, seconds};

/// The words for `role` (`None`: the database is down) and `lag`:
/// `role=replica lag=4096 lag_s=1.25`.
pub fn format(role: Option<Role>, lag: Lag) -> String {
    let role = role.map_or("unknown", Role::as_str);
    let bytes = lag.bytes.map_or("unknown".to_owned(), |b| b.to_string());
    let time = lag.time.map_or("unknown".to_owned(), format_seconds);
    format!("role={role} lag={bytes} lag_s={time}")
}

/// Seconds with millisecond precision and no trailing zeros: `0`, `1.5`, `12.034`.
pub fn format_seconds(d: Duration) -> String {
    let text = format!("{:.3}", d.as_secs_f64());
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Reads `role=... lag=... lag_s=...` from the text after `#`. Words it does not know are
/// ignored, an unreadable lag is unknown (never zero), and a missing or unknown role
/// (`role=unknown` included) is an error. `master`, `standby` and `slave` are accepted.
pub fn parse(text: &str) -> Result<Reading, String> {
    let mut role = None;
    let mut lag = Lag::UNKNOWN;
    for word in text.split([' ', '\t', ',']).filter(|w| !w.is_empty()) {
        let Some((key, value)) = word.split_once('=') else {
            continue;
        };
        match key.to_ascii_lowercase().as_str() {
            "role" => {
                role = Some(match value.to_ascii_lowercase().as_str() {
                    "primary" | "master" => Role::Primary,
                    "replica" | "standby" | "slave" => Role::Replica,
                    other => return Err(format!("unknown role '{other}' in agent reply")),
                })
            }
            "lag" => lag.bytes = value.parse::<u64>().ok(),
            "lag_s" => lag.time = value.parse::<f64>().ok().and_then(seconds),
            _ => {}
        }
    }
    match role.ok_or_else(|| "agent reply has no #role= word".to_owned())? {
        Role::Primary => Ok(Reading::PRIMARY),
        Role::Replica => Ok(Reading::replica(lag)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_give_role_and_lag() {
        let r = parse("role=replica lag=4096 lag_s=1.5").expect("parses");
        assert_eq!(r.role, Role::Replica);
        assert_eq!(r.lag.bytes, Some(4096));
        assert_eq!(r.lag.time, Some(Duration::from_millis(1500)));
        let p = parse("role=primary lag=0").expect("parses");
        assert_eq!((p.role, p.lag.bytes), (Role::Primary, Some(0)));
        let unknown_lag = parse("role=replica lag=unknown").expect("parses");
        assert_eq!(
            unknown_lag.lag.bytes, None,
            "unparseable lag is unknown, not zero"
        );
    }

    #[test]
    fn without_a_known_role_is_an_error() {
        assert!(parse("lag=0").is_err());
        assert!(parse("role=leader").is_err());
        assert!(parse("role=unknown lag=unknown lag_s=unknown").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn what_is_written_reads_back() {
        let lag = Lag {
            bytes: Some(4096),
            time: Some(Duration::from_millis(1250)),
        };
        let words = format(Some(Role::Replica), lag);
        assert_eq!(words, "role=replica lag=4096 lag_s=1.25");
        assert_eq!(parse(&words), Ok(Reading::replica(lag)));
        let unknown = format(Some(Role::Replica), Lag::UNKNOWN);
        assert_eq!(unknown, "role=replica lag=unknown lag_s=unknown");
        assert_eq!(parse(&unknown), Ok(Reading::replica(Lag::UNKNOWN)));
        assert_eq!(
            parse(&format(Some(Role::Primary), Lag::ZERO)),
            Ok(Reading::PRIMARY)
        );
        assert_eq!(
            format(None, Lag::UNKNOWN),
            "role=unknown lag=unknown lag_s=unknown"
        );
    }

    #[test]
    fn seconds_are_compact() {
        assert_eq!(format_seconds(Duration::ZERO), "0");
        assert_eq!(format_seconds(Duration::from_secs(10)), "10");
        assert_eq!(format_seconds(Duration::from_millis(1500)), "1.5");
        assert_eq!(format_seconds(Duration::from_micros(400)), "0");
        assert_eq!(format_seconds(Duration::from_micros(12_034_400)), "12.034");
    }
}
