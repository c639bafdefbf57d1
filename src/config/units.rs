//! Numbers with units, as HAProxy writes them: durations (`us ms s m h d`, a bare number in
//! a given default unit) and sizes (`k m g`, powers of 1024). Overflow and junk are errors.

use std::time::Duration;

/// HAProxy's largest timer: 2^31-1 ms (about 24.8 days); larger values overflow its clock.
pub const MAX_DURATION_MS: u128 = i32::MAX as u128;

/// Unit of a bare number in a duration, and the precision the value is kept in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeUnit {
    /// Milliseconds (timeouts, check intervals).
    Millis,
    /// Seconds.
    Seconds,
}

impl TimeUnit {
    fn micros(self) -> u128 {
        match self {
            TimeUnit::Millis => 1_000,
            TimeUnit::Seconds => 1_000_000,
        }
    }
}

/// Parses a duration like `500`, `3s`, `1m`, `250ms`, `2h`, `1d`, `100us`.
///
/// As HAProxy's `parse_time_err`, the value is kept in whole `bare` units, rounded up (so
/// `100us` is 1 ms, never 0), and must stay below 2^31 of them: `2147483647` ms is the
/// largest timeout, `25d` overflows. Zero stays zero; callers decide what it means.
pub fn parse_duration(text: &str, bare: TimeUnit) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() {
        return Err(format!(
            "invalid duration '{text}': expected a number with an optional unit (us, ms, s, m, h, d)"
        ));
    }
    let value: u128 = digits
        .parse()
        .map_err(|_| format!("duration '{text}' is too large"))?;
    let micros_per_unit: u128 = match unit {
        "" => bare.micros(),
        "us" => 1,
        "ms" => 1_000,
        "s" => 1_000_000,
        "m" => 60_000_000,
        "h" => 3_600_000_000,
        "d" => 86_400_000_000,
        _ => {
            return Err(format!(
                "invalid unit '{unit}' in duration '{text}' (use us, ms, s, m, h or d)"
            ));
        }
    };
    let micros = value
        .checked_mul(micros_per_unit)
        .ok_or_else(|| format!("duration '{text}' is too large"))?;
    let units = micros.div_ceil(bare.micros());
    if units > MAX_DURATION_MS {
        let max = match bare {
            TimeUnit::Millis => "2147483647 ms (about 24.8 days)",
            TimeUnit::Seconds => "2147483647 s",
        };
        return Err(format!("duration '{text}' overflows: the maximum is {max}"));
    }
    let micros = u64::try_from(units * bare.micros())
        .map_err(|_| format!("duration '{text}' is too large"))?;
    Ok(Duration::from_micros(micros))
}

/// Parses a size like `512`, `64k`, `16m`, `1g` (case-insensitive, powers of 1024) to bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() {
        return Err(format!(
            "invalid size '{text}': expected a number with an optional unit (k, m, g)"
        ));
    }
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("size '{text}' is too large"))?;
    let factor: u64 = match unit.to_ascii_lowercase().as_str() {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => {
            return Err(format!(
                "invalid unit '{unit}' in size '{text}' (use k, m or g)"
            ));
        }
    };
    value
        .checked_mul(factor)
        .ok_or_else(|| format!("size '{text}' is too large"))
}

/// Largest count HAProxy stores (`maxconn`, `maxqueue`, `retries`, `rise`, `fall`): a C
/// `int`, which larger numbers would wrap to negative values.
pub const MAX_COUNT: u64 = i32::MAX as u64;

/// Parses an unsigned integer within `min..=max`; `what` names it in the error.
pub fn parse_int(text: &str, what: &str, min: u64, max: u64) -> Result<u64, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{what} expects a number, got '{text}'"));
    }
    let value: u64 = text
        .parse()
        .map_err(|_| format!("{what} '{text}' is too large (maximum {max})"))?;
    if value < min || value > max {
        return Err(format!(
            "{what} must be between {min} and {max}, got {value}"
        ));
    }
    Ok(value)
}

/// Parses a TCP port, 1..=65535.
pub fn parse_port(text: &str, what: &str) -> Result<u16, String> {
    let value = parse_int(text, what, 1, 65535)?;
    u16::try_from(value).map_err(|_| format!("{what} must be between 1 and 65535"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_with_units() {
        let ms = |t| parse_duration(t, TimeUnit::Millis).unwrap();
        assert_eq!(ms("500"), Duration::from_millis(500));
        assert_eq!(ms("3s"), Duration::from_secs(3));
        assert_eq!(ms("250ms"), Duration::from_millis(250));
        // Rounded up to whole milliseconds, as HAProxy does: never down to zero.
        assert_eq!(ms("100us"), Duration::from_millis(1));
        assert_eq!(ms("1500us"), Duration::from_millis(2));
        assert_eq!(ms("0us"), Duration::ZERO);
        assert_eq!(
            parse_duration("1500ms", TimeUnit::Seconds).unwrap(),
            Duration::from_secs(2)
        );
        assert_eq!(ms("2m"), Duration::from_secs(120));
        assert_eq!(ms("1h"), Duration::from_secs(3600));
        assert_eq!(ms("1d"), Duration::from_secs(86400));
        assert_eq!(
            parse_duration("2", TimeUnit::Seconds).unwrap(),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn duration_junk_and_overflow() {
        for bad in ["", "s", "5x", "5 s", "-1", "1.5s", "5sec"] {
            assert!(parse_duration(bad, TimeUnit::Millis).is_err(), "{bad}");
        }
        assert!(
            parse_duration("25d", TimeUnit::Millis)
                .unwrap_err()
                .contains("overflows")
        );
        assert!(parse_duration("24d", TimeUnit::Millis).is_ok());
        assert!(parse_duration("2147483647", TimeUnit::Millis).is_ok());
        assert!(parse_duration("2147483648", TimeUnit::Millis).is_err());
        // 2147483647.001 ms rounds up past the maximum.
        assert!(parse_duration("2147483647001us", TimeUnit::Millis).is_err());
        assert!(
            parse_duration(
                "99999999999999999999999999999999999999999",
                TimeUnit::Millis
            )
            .is_err()
        );
        assert!(
            parse_duration("340282366920938463463374607431768211455d", TimeUnit::Millis).is_err()
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("64k").unwrap(), 65536);
        assert_eq!(parse_size("16M").unwrap(), 16 << 20);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert!(parse_size("1t").is_err());
        assert!(parse_size("k").is_err());
        assert!(parse_size("18446744073709551615k").is_err());
    }

    #[test]
    fn integers_and_ports() {
        assert_eq!(parse_int("256", "weight", 0, 256).unwrap(), 256);
        assert!(
            parse_int("257", "weight", 0, 256)
                .unwrap_err()
                .contains("between 0 and 256")
        );
        assert!(parse_int("-1", "weight", 0, 256).is_err());
        assert!(parse_int("1e3", "x", 0, 10).is_err());
        assert!(parse_int("99999999999999999999999", "x", 0, 10).is_err());
        assert_eq!(parse_port("5432", "port").unwrap(), 5432);
        assert!(parse_port("0", "port").is_err());
        assert!(parse_port("65536", "port").is_err());
    }
}
