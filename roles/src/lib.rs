//! Database roles, defined once for rolelb's role checks and for rolelb-agent's poller.
//!
//! A role check asks the database itself: [`pgsql`] and [`mysql`] hold the queries and turn
//! their answers into a [`Reading`] (role and [`Lag`]); [`LagLimit`] and [`Lag::within`] judge
//! that lag against `max-lag` / `max_lag` / `?lag=`; [`description`] writes and reads the
//! `#role= lag= lag_s=` words by which the agent hands a reading to rolelb. Connecting,
//! timeouts and error classification stay with each side: only what both compute lives here.
//! How each side *writes* a limit differs on purpose (haproxy.cfg sizes vs Patroni's `?lag=`),
//! so the parsing of limits stays with each config language.

pub mod description;
pub mod mysql;
pub mod pgsql;

use std::fmt;
use std::time::Duration;

/// The replication role a database reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Takes writes (`pg_is_in_recovery()` false; `read_only` and `super_read_only` off).
    Primary,
    /// A read-only copy (in recovery; or `read_only`/`super_read_only` on).
    Replica,
}

impl Role {
    /// The word used on the wire and in logs: `primary` or `replica`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
        }
    }
}

/// How far a node is behind its primary; `None` where the database does not say (NULL:
/// replication not running, nothing replayed yet, or MySQL, which reports no bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lag {
    /// WAL received but not yet replayed, in bytes (PostgreSQL only).
    pub bytes: Option<u64>,
    /// Replay delay in time.
    pub time: Option<Duration>,
}

impl Lag {
    /// A primary's lag: zero by definition.
    pub const ZERO: Lag = Lag {
        bytes: Some(0),
        time: Some(Duration::ZERO),
    };

    /// Lag that nothing reported.
    pub const UNKNOWN: Lag = Lag {
        bytes: None,
        time: None,
    };

    /// Whether this lag is within `limit`: `None` when the quantity the limit measures is
    /// unknown (which no limit lets through). Equal to the limit is within.
    pub fn within(&self, limit: LagLimit) -> Option<bool> {
        match limit {
            LagLimit::Bytes(max) => self.bytes.map(|b| b <= max),
            LagLimit::Time(max) => self.time.map(|t| t <= max),
        }
    }
}

impl fmt::Display for Lag {
    /// `lag 4096 bytes, 250ms` (`unknown` for either part the database did not say).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("lag ")?;
        match self.bytes {
            Some(b) => write!(f, "{b} bytes")?,
            None => f.write_str("unknown")?,
        }
        match self.time {
            Some(t) => write!(f, ", {}ms", t.as_millis()),
            None => f.write_str(", unknown"),
        }
    }
}

/// A replication-lag limit (`max-lag` in haproxy.cfg, `max_lag` and `?lag=` in the agent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LagLimit {
    /// At most this many bytes of WAL not yet replayed (PostgreSQL only).
    Bytes(u64),
    /// At most this long behind (PostgreSQL, and MySQL's `Seconds_Behind_Master`).
    Time(Duration),
}

impl fmt::Display for LagLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LagLimit::Bytes(b) => write!(f, "{b}B"),
            LagLimit::Time(d) => write!(f, "{}s", d.as_secs_f64()),
        }
    }
}

/// What one role query found: the role and, on a replica, the lag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// Primary or replica.
    pub role: Role,
    /// [`Lag::ZERO`] on a primary.
    pub lag: Lag,
}

impl Reading {
    /// A primary: no lag by definition, whatever the query said about it.
    pub const PRIMARY: Reading = Reading {
        role: Role::Primary,
        lag: Lag::ZERO,
    };

    /// A replica with `lag`.
    pub fn replica(lag: Lag) -> Reading {
        Reading {
            role: Role::Replica,
            lag,
        }
    }
}

/// Seconds as a database reports them (float, possibly negative from clock skew, or NaN)
/// as a [`Duration`]: negative is zero, NaN or out of range is unknown.
pub fn seconds(s: f64) -> Option<Duration> {
    if s.is_nan() {
        return None;
    }
    Duration::try_from_secs_f64(s.max(0.0)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_within_a_limit_is_inclusive_and_unknown_is_never_within() {
        let lag = Lag {
            bytes: Some(1000),
            time: Some(Duration::from_secs(2)),
        };
        assert_eq!(lag.within(LagLimit::Bytes(1000)), Some(true));
        assert_eq!(lag.within(LagLimit::Bytes(999)), Some(false));
        assert_eq!(
            lag.within(LagLimit::Time(Duration::from_secs(2))),
            Some(true)
        );
        assert_eq!(
            lag.within(LagLimit::Time(Duration::from_millis(1999))),
            Some(false)
        );
        let no_bytes = Lag {
            bytes: None,
            time: Some(Duration::ZERO),
        };
        assert_eq!(no_bytes.within(LagLimit::Bytes(u64::MAX)), None);
        assert_eq!(no_bytes.within(LagLimit::Time(Duration::ZERO)), Some(true));
        assert_eq!(Lag::UNKNOWN.within(LagLimit::Time(Duration::MAX)), None);
    }

    #[test]
    fn database_seconds_clamp_negative_and_drop_nonsense() {
        assert_eq!(seconds(1.5), Some(Duration::from_millis(1500)));
        assert_eq!(seconds(-3.0), Some(Duration::ZERO));
        assert_eq!(seconds(f64::NAN), None);
        assert_eq!(seconds(f64::INFINITY), None);
    }

    #[test]
    fn lag_and_limits_print_their_units() {
        assert_eq!(Lag::ZERO.to_string(), "lag 0 bytes, 0ms");
        assert_eq!(Lag::UNKNOWN.to_string(), "lag unknown, unknown");
        assert_eq!(LagLimit::Bytes(16).to_string(), "16B");
        assert_eq!(
            LagLimit::Time(Duration::from_millis(1500)).to_string(),
            "1.5s"
        );
    }
}
