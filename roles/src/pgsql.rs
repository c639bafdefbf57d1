//! The PostgreSQL role query: `pg_is_in_recovery()` and, on a replica, the replay lag in
//! bytes and in time, in one round trip.
//!
//! The byte lag is WAL received but not yet replayed (`pg_last_wal_receive_lsn()` minus
//! `pg_last_wal_replay_lsn()`); NULL (unknown) when nothing streams, e.g. a standby that
//! restores from the archive only. The time lag is zero when everything received is
//! replayed (an idle primary must not make a caught-up replica look late), else the age of
//! the last replayed commit; NULL when nothing was replayed yet.

use crate::{Lag, Reading, seconds};

/// The one query both role checks run: role, lag in bytes, lag in seconds.
pub const ROLE_SQL: &str = "\
SELECT pg_is_in_recovery(),
       CASE WHEN pg_is_in_recovery()
            THEN pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::bigint
       END,
       CASE WHEN NOT pg_is_in_recovery() THEN NULL
            WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0::float8
            ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8
       END";

/// The reading for the query's three columns. A primary's lag is zero whatever the columns
/// say; a negative byte count (replay ahead of the receive pointer after a restart) is zero.
pub fn reading(in_recovery: bool, lag_bytes: Option<i64>, lag_secs: Option<f64>) -> Reading {
    if !in_recovery {
        return Reading::PRIMARY;
    }
    Reading::replica(Lag {
        bytes: lag_bytes.map(|b| u64::try_from(b).unwrap_or(0)),
        time: lag_secs.and_then(seconds),
    })
}

/// The reading in a row of [`ROLE_SQL`]; an error if the row does not have its columns.
pub fn from_row(row: &tokio_postgres::Row) -> Result<Reading, tokio_postgres::Error> {
    Ok(reading(row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::Role;

    #[test]
    fn a_primary_has_no_lag_whatever_the_columns_say() {
        assert_eq!(reading(false, None, None), Reading::PRIMARY);
        assert_eq!(reading(false, Some(99), Some(9.0)), Reading::PRIMARY);
    }

    #[test]
    fn replica_lag_is_typed_and_null_stays_unknown() {
        let r = reading(true, Some(4096), Some(0.25));
        assert_eq!(r.role, Role::Replica);
        assert_eq!(r.lag.bytes, Some(4096));
        assert_eq!(r.lag.time, Some(Duration::from_millis(250)));
        assert_eq!(reading(true, None, None).lag, Lag::UNKNOWN);
        let skewed = reading(true, Some(-8), Some(-0.5));
        assert_eq!(skewed.lag, Lag::ZERO);
    }
}
