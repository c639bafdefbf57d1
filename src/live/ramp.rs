//! A server's `slowstart` ramp, in the whole seconds HAProxy counts it in.

use crate::balance::WEIGHT_SCALE;
use crate::config::{self};

/// A server's place in its `slowstart` ramp, in the whole seconds HAProxy counts it in
/// (`server_recalc_eweight`): it steps once a second after the server came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ramp {
    /// Whole seconds since the server came back.
    pub(crate) elapsed: u64,
    /// `slowstart` in seconds (more than `elapsed`).
    pub(crate) length: u64,
}

impl Ramp {
    /// The effective weight of a server with user weight `uweight` on HAProxy's scale
    /// (`uweight * 16` at full throttle): `uweight * ((16 * elapsed + length) / length)`,
    /// so a weight-1 server starts at 1/16 of its share and gains a step every second.
    pub fn eweight(self, uweight: u32) -> u32 {
        let step = (u64::from(WEIGHT_SCALE) * self.elapsed + self.length) / self.length;
        u32::try_from(u64::from(uweight) * step).unwrap_or(u32::MAX)
    }

    /// `maxconn` throttled as HAProxy's `srv_dynamic_maxconn` does while starting: the
    /// whole percentage of the ramp done, at least one session.
    pub fn maxconn(self, maxconn: u32) -> u32 {
        let ratio = 100 * self.elapsed / self.length;
        u32::try_from(u64::from(maxconn) * ratio / 100)
            .unwrap_or(maxconn)
            .max(1)
    }
}

/// Whether HAProxy ramps the weight of `balance` under `slowstart` (its "dynamic"
/// algorithms); `static-rr` and map-based hashing keep full weights, only `maxconn` ramps.
pub fn ramps_weight(balance: config::Balance, hash_type: config::HashType) -> bool {
    use config::{Balance, HashType};
    match balance {
        Balance::RoundRobin | Balance::LeastConn | Balance::First => true,
        Balance::StaticRr => false,
        Balance::Source => hash_type == HashType::Consistent,
    }
}
