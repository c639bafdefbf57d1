//! One name's resolution in a `resolvers` section, as HAProxy 2.6 keeps it (src/resolvers.c,
//! src/server.c): the records of the last answers, each kept `hold obsolete` after it stops
//! being answered, and the servers that use the name, each given an address from those
//! records. Pure state: [`Resolution::answer`] and [`Resolution::failed`] take what the
//! query found and return the servers whose address or state changed; the resolver task
//! does the queries and sends the changes to `control`.
//!
//! An address is chosen as HAProxy's `resolv_get_ip_from_response` does: a server keeps a
//! record it uses while the record lives; otherwise it takes the best record by score — the
//! preferred family (8), not used by another server of its backend (2; a record another
//! server uses is not taken at all: HAProxy's default `prevent-dup-ip`), its current address
//! (1). A server that finds no record goes to MAINT (resolution) and keeps its address. After
//! a failure (NX, refused, timeout, other), the servers keep their addresses until `hold` of
//! that status has passed since the last valid answer, then go to MAINT (resolution).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{AddrFamily, Hold};

/// How a query ended when it gave no address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// NXDOMAIN (`hold nx`).
    Nx,
    /// REFUSED (`hold refused`).
    Refused,
    /// No answer in time (`hold timeout`).
    Timeout,
    /// Anything else: no record of either family, a server failure (`hold other`).
    Other,
}

impl Failure {
    /// How long the last addresses are kept after this failure.
    pub(super) fn hold(self, hold: &Hold) -> Duration {
        match self {
            Failure::Nx => hold.nx,
            Failure::Refused => hold.refused,
            Failure::Timeout => hold.timeout,
            Failure::Other => hold.other,
        }
    }
}

/// A server that uses the name: what DNS gives it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Its backend.
    pub backend: String,
    /// Its name.
    pub server: Arc<str>,
    /// Its address now (the one it started with until DNS gives one).
    pub ip: IpAddr,
    /// In MAINT (resolution): no address to use.
    pub maint: bool,
    /// Whether it uses a record of the answers (HAProxy's `ip_rec_item` link).
    attached: bool,
}

impl Owner {
    /// A server starting at `ip` (`maint` when `init-addr none` left it without one).
    pub fn new(backend: &str, server: Arc<str>, ip: IpAddr, maint: bool) -> Owner {
        Owner {
            backend: backend.to_owned(),
            server,
            ip,
            maint,
            attached: false,
        }
    }
}

/// One record of the answers and when it was last answered.
#[derive(Debug, Clone, Copy)]
struct Record {
    ip: IpAddr,
    last_seen: Instant,
}

/// One name, its records and its servers.
#[derive(Debug)]
pub struct Resolution {
    /// The name.
    pub fqdn: String,
    /// `resolve-prefer` of its servers.
    pub prefer: AddrFamily,
    /// Its servers, in configuration order.
    pub owners: Vec<Owner>,
    records: Vec<Record>,
    /// When the last valid answer came (the task's start before the first one).
    last_valid: Instant,
}

impl Resolution {
    /// A name with its servers, before any answer.
    pub fn new(fqdn: String, prefer: AddrFamily, owners: Vec<Owner>, now: Instant) -> Self {
        Resolution {
            fqdn,
            prefer,
            owners,
            records: Vec::new(),
            last_valid: now,
        }
    }

    /// Takes a valid answer (the addresses, in the order they came); returns the servers
    /// whose address or state changed.
    pub fn answer(&mut self, ips: &[IpAddr], hold: &Hold, now: Instant) -> Vec<Owner> {
        self.last_valid = now;
        for ip in ips {
            match self.records.iter_mut().find(|r| r.ip == *ip) {
                Some(r) => r.last_seen = now,
                None => self.records.push(Record {
                    ip: *ip,
                    last_seen: now,
                }),
            }
        }
        // Records not answered for longer than `hold obsolete` go, and so do their users.
        self.records.retain(|r| {
            ips.contains(&r.ip) || now.saturating_duration_since(r.last_seen) < hold.obsolete
        });
        let alive: Vec<IpAddr> = self.records.iter().map(|r| r.ip).collect();
        for o in &mut self.owners {
            if o.attached && !alive.contains(&o.ip) {
                o.attached = false;
            }
        }
        let mut changed = Vec::new();
        for i in 0..self.owners.len() {
            let before = self.owners[i].clone();
            if before.attached {
                // Its record lives: it keeps it (and leaves MAINT after a failure).
                self.owners[i].maint = false;
            } else {
                self.assign(i);
            }
            if (self.owners[i].ip, self.owners[i].maint) != (before.ip, before.maint) {
                changed.push(self.owners[i].clone());
            }
        }
        changed
    }

    /// Gives server `i` a record, or MAINT (resolution) when there is none for it.
    fn assign(&mut self, i: usize) {
        match self.pick(i) {
            Some(ip) => {
                let o = &mut self.owners[i];
                o.ip = ip;
                o.attached = true;
                o.maint = false;
            }
            None => self.owners[i].maint = true,
        }
    }

    /// The record server `i` takes, by HAProxy's score; `None` when every record is used by
    /// another server of its backend.
    fn pick(&self, i: usize) -> Option<IpAddr> {
        let me = &self.owners[i];
        let mut best: Option<(u32, IpAddr)> = None;
        for r in &self.records {
            let used = self
                .owners
                .iter()
                .enumerate()
                .any(|(j, o)| j != i && o.attached && o.ip == r.ip && o.backend == me.backend);
            if used {
                continue;
            }
            let family = match r.ip {
                IpAddr::V4(_) => AddrFamily::Ipv4,
                IpAddr::V6(_) => AddrFamily::Ipv6,
            };
            let score = 8 * u32::from(family == self.prefer) + 2 + u32::from(r.ip == me.ip);
            if best.is_none_or(|(s, _)| score > s) {
                best = Some((score, r.ip));
            }
        }
        best.map(|(_, ip)| ip)
    }

    /// Takes a failed resolution; returns the servers that go to MAINT (resolution) because
    /// `hold` of this failure has passed since the last valid answer.
    pub fn failed(&mut self, failure: Failure, hold: &Hold, now: Instant) -> Vec<Owner> {
        if now.saturating_duration_since(self.last_valid) < failure.hold(hold) {
            return Vec::new();
        }
        let mut changed = Vec::new();
        for o in &mut self.owners {
            if !o.maint {
                o.maint = true;
                changed.push(o.clone());
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    fn slots(n: usize) -> Vec<Owner> {
        (1..=n)
            .map(|i| Owner::new("be", format!("s{i}").into(), ip(0), true))
            .collect()
    }

    fn state(r: &Resolution) -> Vec<Option<IpAddr>> {
        r.owners
            .iter()
            .map(|o| (!o.maint).then_some(o.ip))
            .collect()
    }

    #[test]
    fn template_slots_take_distinct_records_and_the_rest_stay_in_maint() {
        let t0 = Instant::now();
        let hold = Hold::default();
        let mut r = Resolution::new("db".into(), AddrFamily::Ipv6, slots(3), t0);
        let changed = r.answer(&[ip(2), ip(3)], &hold, t0);
        assert_eq!(changed.len(), 2);
        assert_eq!(state(&r), [Some(ip(2)), Some(ip(3)), None]);
        // Same answer in another order: nobody moves.
        assert!(r.answer(&[ip(3), ip(2)], &hold, t0).is_empty());
        // A record goes (hold obsolete 0): its server takes the new one.
        let changed = r.answer(&[ip(3), ip(4)], &hold, t0);
        assert_eq!(state(&r), [Some(ip(4)), Some(ip(3)), None]);
        assert_eq!(changed.len(), 1);
        // One record left: the first slot goes to MAINT, keeping its address.
        r.answer(&[ip(3)], &hold, t0);
        assert_eq!(state(&r), [None, Some(ip(3)), None]);
        assert_eq!(r.owners[0].ip, ip(4));
    }

    #[test]
    fn hold_obsolete_keeps_a_record_that_stops_being_answered() {
        let t0 = Instant::now();
        let hold = Hold {
            obsolete: Duration::from_secs(30),
            ..Hold::default()
        };
        let mut r = Resolution::new("db".into(), AddrFamily::Ipv4, slots(2), t0);
        r.answer(&[ip(2), ip(3)], &hold, t0);
        r.answer(&[ip(2)], &hold, t0 + Duration::from_secs(10));
        assert_eq!(state(&r), [Some(ip(2)), Some(ip(3))]);
        r.answer(&[ip(2)], &hold, t0 + Duration::from_secs(41));
        assert_eq!(state(&r), [Some(ip(2)), None]);
    }

    #[test]
    fn a_server_moves_when_its_record_changes_and_prefers_its_family() {
        let t0 = Instant::now();
        let hold = Hold::default();
        let owners = vec![Owner::new("be", "a".into(), ip(9), false)];
        let mut r = Resolution::new("db".into(), AddrFamily::Ipv6, owners, t0);
        let v6: IpAddr = "::1".parse().unwrap();
        r.answer(&[ip(2), v6], &hold, t0);
        assert_eq!(state(&r), [Some(v6)]);
        let mut r = Resolution::new("db".into(), AddrFamily::Ipv4, r.owners.clone(), t0);
        r.owners[0].attached = false;
        r.answer(&[ip(2)], &hold, t0);
        assert_eq!(state(&r), [Some(ip(2))]);
        r.answer(&[ip(3)], &hold, t0);
        assert_eq!(state(&r), [Some(ip(3))]);
    }

    #[test]
    fn failures_keep_the_address_for_their_hold_then_maint() {
        let t0 = Instant::now();
        let hold = Hold {
            nx: Duration::from_secs(5),
            timeout: Duration::from_secs(20),
            ..Hold::default()
        };
        let owners = vec![Owner::new("be", "a".into(), ip(9), false)];
        let mut r = Resolution::new("db".into(), AddrFamily::Ipv4, owners, t0);
        r.answer(&[ip(2)], &hold, t0);
        let t = |s| t0 + Duration::from_secs(s);
        assert!(r.failed(Failure::Timeout, &hold, t(10)).is_empty());
        assert!(r.failed(Failure::Nx, &hold, t(4)).is_empty());
        let changed = r.failed(Failure::Nx, &hold, t(6));
        assert_eq!(changed.len(), 1);
        assert_eq!(state(&r), [None]);
        assert_eq!(r.owners[0].ip, ip(2), "the address is kept");
        // A valid answer brings it back.
        r.answer(&[ip(2)], &hold, t(7));
        assert_eq!(state(&r), [Some(ip(2))]);
    }
}
