//! Units in the agent's config and in `?lag=` queries: durations (`inter`, `timeout`) and
//! replication-lag thresholds (`max_lag`), which are a size in bytes or a duration.
//!
//! Durations follow HAProxy: `us`, `ms`, `s`, `m`, `h`, `d`, and a bare number means
//! milliseconds. Sizes follow PostgreSQL and Patroni's `?lag=`: `B`, `kB`, `MB`, `GB`, `TB`
//! (powers of 1024, case-insensitive), and a bare number means bytes. Size units must end in
//! `B`, so `1m` is one minute and never one mebibyte.

use std::time::Duration;

/// Why a unit string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// The text is empty.
    #[error("empty value")]
    Empty,
    /// The leading number is missing or too large.
    #[error("{0:?}: expected a number followed by an optional unit")]
    Number(String),
    /// The suffix is not a known unit.
    #[error(
        "{text:?}: unknown unit {unit:?} (sizes: B, kB, MB, GB, TB; durations: us, ms, s, m, h, d)"
    )]
    Unit {
        /// The whole value.
        text: String,
        /// The suffix that was not recognised.
        unit: String,
    },
    /// The value is a size where a duration is needed, or the reverse.
    #[error("{text:?}: expected {expected}")]
    Kind {
        /// The whole value.
        text: String,
        /// What the field takes.
        expected: &'static str,
    },
}

/// A replication-lag threshold, the same type as rolelb's `max-lag` (only the spelling of
/// sizes differs: this file reads Patroni's).
pub use rolelb_roles::LagLimit;

/// Splits `text` into its number and unit suffix, both trimmed.
fn split(text: &str) -> Result<(u64, &str), UnitError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(UnitError::Empty);
    }
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let number = text[..digits]
        .parse::<u64>()
        .map_err(|_| UnitError::Number(text.to_string()))?;
    Ok((number, text[digits..].trim()))
}

/// A duration unit's length in microseconds, if `unit` is one.
fn duration_unit_us(unit: &str) -> Option<u64> {
    Some(match unit {
        "us" => 1,
        "ms" => 1_000,
        "s" => 1_000_000,
        "m" => 60_000_000,
        "h" => 3_600_000_000,
        "d" => 86_400_000_000,
        _ => return None,
    })
}

/// A size unit's multiplier, if `unit` is one (`B`, `kB`, `MB`, ... case-insensitive).
fn size_unit(unit: &str) -> Option<u64> {
    Some(match unit.to_ascii_lowercase().as_str() {
        "b" => 1,
        "kb" => 1 << 10,
        "mb" => 1 << 20,
        "gb" => 1 << 30,
        "tb" => 1 << 40,
        _ => return None,
    })
}

/// Reads a duration: a number with `us`, `ms`, `s`, `m`, `h` or `d`; a bare number is ms.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let (n, unit) = split(text)?;
    if unit.is_empty() {
        return Ok(Duration::from_millis(n));
    }
    match duration_unit_us(unit) {
        Some(us) => n
            .checked_mul(us)
            .map(Duration::from_micros)
            .ok_or_else(|| UnitError::Number(text.trim().to_string())),
        None if size_unit(unit).is_some() => Err(UnitError::Kind {
            text: text.trim().to_string(),
            expected: "a duration (us, ms, s, m, h, d)",
        }),
        None => Err(UnitError::Unit {
            text: text.trim().to_string(),
            unit: unit.to_string(),
        }),
    }
}

/// Reads a lag threshold: a size (`16MB`, bare number = bytes) or a duration (`10s`).
pub fn parse_lag_limit(text: &str) -> Result<LagLimit, UnitError> {
    let (n, unit) = split(text)?;
    if unit.is_empty() {
        return Ok(LagLimit::Bytes(n));
    }
    if let Some(mult) = size_unit(unit) {
        return n
            .checked_mul(mult)
            .map(LagLimit::Bytes)
            .ok_or_else(|| UnitError::Number(text.trim().to_string()));
    }
    parse_duration(text).map(LagLimit::Time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_follow_haproxy_units() {
        assert_eq!(parse_duration("1500"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration(" 2s "), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("3m"), Ok(Duration::from_secs(180)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("10us"), Ok(Duration::from_micros(10)));
    }

    #[test]
    fn bad_durations_are_named() {
        assert_eq!(parse_duration(""), Err(UnitError::Empty));
        assert!(matches!(parse_duration("s"), Err(UnitError::Number(_))));
        assert!(matches!(parse_duration("-1s"), Err(UnitError::Number(_))));
        assert!(matches!(
            parse_duration("5parsecs"),
            Err(UnitError::Unit { .. })
        ));
        assert!(matches!(parse_duration("5MB"), Err(UnitError::Kind { .. })));
    }

    #[test]
    fn lag_limits_are_sizes_or_durations() {
        assert_eq!(parse_lag_limit("0"), Ok(LagLimit::Bytes(0)));
        assert_eq!(parse_lag_limit("1048576"), Ok(LagLimit::Bytes(1 << 20)));
        assert_eq!(parse_lag_limit("16MB"), Ok(LagLimit::Bytes(16 << 20)));
        assert_eq!(parse_lag_limit("16mb"), Ok(LagLimit::Bytes(16 << 20)));
        assert_eq!(parse_lag_limit("1kB"), Ok(LagLimit::Bytes(1024)));
        assert_eq!(parse_lag_limit("2GB"), Ok(LagLimit::Bytes(2 << 30)));
        assert_eq!(parse_lag_limit("1TB"), Ok(LagLimit::Bytes(1 << 40)));
        assert_eq!(parse_lag_limit("7B"), Ok(LagLimit::Bytes(7)));
        assert_eq!(
            parse_lag_limit("10s"),
            Ok(LagLimit::Time(Duration::from_secs(10)))
        );
        // `m` is minutes: sizes must end in B.
        assert_eq!(
            parse_lag_limit("1m"),
            Ok(LagLimit::Time(Duration::from_secs(60)))
        );
        assert!(matches!(parse_lag_limit("1k"), Err(UnitError::Unit { .. })));
        assert!(matches!(
            parse_lag_limit("99999999999TB"),
            Err(UnitError::Number(_))
        ));
    }
}
