//! One SRV name's resolution (`server-template PREFIX NUM _service._proto.name`), as HAProxy
//! 2.6 fills servers from SRV records (src/resolvers.c `resolv_check_response`): each record
//! (target and port) is given to the server that already has it, else to the first free
//! server, which takes the record's port, its weight (`(weight + 255) / 256`, unless
//! `resolve-opts ignore-weight`) and the target's address. A record missing from the answers
//! for longer than `hold obsolete` frees its server, which goes to MAINT (resolution) and
//! back to the end of the free list; so do all of them when resolutions fail for longer than
//! the `hold` of the failure. Servers without a record are in MAINT (resolution).

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use super::resolution::Failure;
use crate::config::Hold;

/// One SRV record of an answer, its target resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvItem {
    /// The target host name (lower case, without the final dot).
    pub target: String,
    /// The port.
    pub port: u16,
    /// The DNS weight (0..=65535).
    pub weight: u16,
    /// The target's address, when it resolved (additional records or a query).
    pub ip: Option<IpAddr>,
}

/// A server filled from the SRV records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvOwner {
    /// Its backend.
    pub backend: String,
    /// Its name.
    pub server: Arc<str>,
    /// The record it has (target, port).
    pub item: Option<(String, u16)>,
    /// Its address.
    pub ip: IpAddr,
    /// Its port.
    pub port: u16,
    /// Its weight from the record (`None`: the configured one, `ignore-weight`).
    pub weight: Option<u32>,
    /// In MAINT (resolution).
    pub maint: bool,
    /// `resolve-opts ignore-weight`.
    ignore_weight: bool,
}

impl SrvOwner {
    /// A server without a record yet (MAINT (resolution)).
    pub fn new(backend: &str, server: Arc<str>, ignore_weight: bool) -> SrvOwner {
        SrvOwner {
            backend: backend.to_owned(),
            server,
            item: None,
            ip: IpAddr::from([0, 0, 0, 0]),
            port: 0,
            weight: None,
            maint: true,
            ignore_weight,
        }
    }
}

/// One SRV name, its records and its servers.
#[derive(Debug)]
pub struct SrvResolution {
    /// The SRV name.
    pub fqdn: String,
    /// Its servers, in configuration order.
    pub owners: Vec<SrvOwner>,
    /// Servers without a record, in the order they take one.
    free: VecDeque<usize>,
    /// Records seen and when last.
    items: Vec<((String, u16), Instant)>,
    last_valid: Instant,
}

impl SrvResolution {
    /// A name with its servers, all free.
    pub fn new(fqdn: String, owners: Vec<SrvOwner>, now: Instant) -> Self {
        SrvResolution {
            fqdn,
            free: (0..owners.len()).collect(),
            owners,
            items: Vec::new(),
            last_valid: now,
        }
    }

    /// Adds a server, free.
    pub fn add(&mut self, owner: SrvOwner) {
        self.free.push_back(self.owners.len());
        self.owners.push(owner);
    }

    /// Takes a valid answer; returns the servers whose address, port, weight or state changed.
    pub fn answer(&mut self, answer: &[SrvItem], hold: &Hold, now: Instant) -> Vec<SrvOwner> {
        self.last_valid = now;
        let before = self.owners.clone();
        for a in answer {
            let key = (a.target.clone(), a.port);
            match self.items.iter_mut().find(|(k, _)| *k == key) {
                Some((_, seen)) => *seen = now,
                None => self.items.push((key, now)),
            }
        }
        let gone: Vec<(String, u16)> = self
            .items
            .iter()
            .filter(|(k, seen)| {
                !answer.iter().any(|a| (&a.target, a.port) == (&k.0, k.1))
                    && now.saturating_duration_since(*seen) >= hold.obsolete
            })
            .map(|(k, _)| k.clone())
            .collect();
        self.items.retain(|(k, _)| !gone.contains(k));
        for i in 0..self.owners.len() {
            if self.owners[i]
                .item
                .as_ref()
                .is_some_and(|k| gone.contains(k))
            {
                self.release(i);
            }
        }
        for a in answer {
            let key = (a.target.clone(), a.port);
            let i = match self
                .owners
                .iter()
                .position(|o| o.item.as_ref() == Some(&key))
            {
                Some(i) => i,
                None => match self.free.pop_front() {
                    Some(i) => i,
                    None => continue,
                },
            };
            let o = &mut self.owners[i];
            o.item = Some(key);
            o.port = a.port;
            if !o.ignore_weight {
                o.weight = Some(u32::from(a.weight).div_ceil(256));
            }
            match a.ip {
                Some(ip) => {
                    o.ip = ip;
                    o.maint = false;
                }
                // A target that does not resolve: its last address stands, or none.
                None => o.maint = o.ip.is_unspecified(),
            }
        }
        self.changed(&before)
    }

    /// Takes a failed resolution: past the `hold` of the failure since the last valid
    /// answer, every server loses its record.
    pub fn failed(&mut self, failure: Failure, hold: &Hold, now: Instant) -> Vec<SrvOwner> {
        if now.saturating_duration_since(self.last_valid) < failure.hold(hold) {
            return Vec::new();
        }
        let before = self.owners.clone();
        self.items.clear();
        for i in 0..self.owners.len() {
            if self.owners[i].item.is_some() {
                self.release(i);
            }
        }
        self.changed(&before)
    }

    /// Frees server `i`: no record, no address, MAINT (resolution), last in the free list.
    fn release(&mut self, i: usize) {
        let o = &mut self.owners[i];
        o.item = None;
        o.ip = IpAddr::from([0, 0, 0, 0]);
        o.port = 0;
        o.maint = true;
        self.free.push_back(i);
    }

    fn changed(&self, before: &[SrvOwner]) -> Vec<SrvOwner> {
        self.owners
            .iter()
            .zip(before)
            .filter(|(now, was)| {
                (now.ip, now.port, now.weight, now.maint)
                    != (was.ip, was.port, was.weight, was.maint)
            })
            .map(|(now, _)| now.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn item(target: &str, port: u16, weight: u16, last: u8) -> SrvItem {
        SrvItem {
            target: target.into(),
            port,
            weight,
            ip: Some(IpAddr::from([127, 0, 0, last])),
        }
    }

    fn state(r: &SrvResolution) -> Vec<Option<(IpAddr, u16, Option<u32>)>> {
        r.owners
            .iter()
            .map(|o| (!o.maint).then_some((o.ip, o.port, o.weight)))
            .collect()
    }

    fn owners(n: usize) -> Vec<SrvOwner> {
        (1..=n)
            .map(|i| SrvOwner::new("be", format!("s{i}").into(), false))
            .collect()
    }

    #[test]
    fn records_fill_free_servers_in_order_and_keep_them() {
        let t0 = Instant::now();
        let hold = Hold::default();
        let mut r = SrvResolution::new("_db._tcp.x".into(), owners(3), t0);
        let ip = |l| IpAddr::from([127, 0, 0, l]);
        r.answer(
            &[item("a", 5432, 512, 2), item("b", 6432, 1024, 3)],
            &hold,
            t0,
        );
        assert_eq!(
            state(&r),
            [
                Some((ip(2), 5432, Some(2))),
                Some((ip(3), 6432, Some(4))),
                None
            ]
        );
        // Another order: nobody moves. A record goes: its server is freed and goes last.
        r.answer(
            &[item("b", 6432, 1024, 3)],
            &hold,
            t0 + Duration::from_secs(1),
        );
        assert_eq!(state(&r), [None, Some((ip(3), 6432, Some(4))), None]);
        r.answer(
            &[
                item("b", 6432, 1024, 3),
                item("c", 1, 0, 4),
                item("d", 2, 1, 5),
            ],
            &hold,
            t0 + Duration::from_secs(2),
        );
        assert_eq!(
            state(&r),
            [
                Some((ip(5), 2, Some(1))),
                Some((ip(3), 6432, Some(4))),
                Some((ip(4), 1, Some(0)))
            ]
        );
    }

    #[test]
    fn failures_free_every_server_after_their_hold() {
        let t0 = Instant::now();
        let hold = Hold {
            nx: Duration::from_secs(5),
            ..Hold::default()
        };
        let mut r = SrvResolution::new("_db._tcp.x".into(), owners(1), t0);
        r.answer(&[item("a", 1, 0, 2)], &hold, t0);
        assert!(
            r.failed(Failure::Nx, &hold, t0 + Duration::from_secs(4))
                .is_empty()
        );
        assert_eq!(
            r.failed(Failure::Nx, &hold, t0 + Duration::from_secs(6))
                .len(),
            1
        );
        assert_eq!(state(&r), [None]);
    }
}
