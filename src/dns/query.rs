//! The queries of one `resolvers` section, with `hickory-resolver`: exactly the section's
//! name servers over UDP, no system configuration, no hosts file, no search domains and no
//! cache (HAProxy ignores TTLs: every resolution asks the name servers). With an
//! `accepted_payload_size` of 1232 or more, queries announce 1232 bytes with EDNS and a
//! truncated answer is asked again over TCP, so answers up to the size HAProxy would accept
//! over UDP arrive whole; with 512 (the default) no EDNS is sent, as 512 is plain DNS's limit.
//! [`Querier::resolve`] asks for the preferred family's records and, when there are none,
//! for the other family's (HAProxy's A/AAAA fallback); a timeout is not followed by the
//! fallback, as in HAProxy.

use std::net::IpAddr;

use hickory_resolver::Resolver;
use hickory_resolver::config::{
    NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts, ServerOrderingStrategy,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{Name, ResolveError};

use super::resolution::Failure;
use super::srv::SrvItem;
use crate::config::{AddrFamily, Resolvers};

/// Queries the name servers of one section.
pub struct Querier {
    resolver: Resolver<TokioConnectionProvider>,
}

impl Querier {
    /// A querier for `section`: its name servers, `timeout retry` per query and
    /// `resolve_retries` queries.
    pub fn new(section: &Resolvers) -> Querier {
        let mut config = ResolverConfig::new();
        for addr in &section.nameservers {
            let mut ns = NameServerConfig::new(*addr, Protocol::Udp);
            ns.trust_negative_responses = true;
            config.add_name_server(ns);
            if section.accepted_payload_size > 512 {
                let mut ns = NameServerConfig::new(*addr, Protocol::Tcp);
                ns.trust_negative_responses = true;
                config.add_name_server(ns);
            }
        }
        let mut opts = ResolverOpts::default();
        opts.timeout = section.timeout_retry;
        opts.attempts = section.resolve_retries.saturating_sub(1) as usize;
        opts.cache_size = 0;
        opts.use_hosts_file = ResolveHosts::Never;
        opts.ndots = 0;
        opts.edns0 = section.accepted_payload_size > 512;
        opts.try_tcp_on_error = false;
        // UDP first; TCP only for a truncated answer.
        opts.server_ordering_strategy = ServerOrderingStrategy::UserProvidedOrder;
        opts.positive_max_ttl = Some(std::time::Duration::ZERO);
        opts.negative_max_ttl = Some(std::time::Duration::ZERO);
        let resolver = Resolver::builder_with_config(config, TokioConnectionProvider::default())
            .with_options(opts)
            .build();
        Querier { resolver }
    }

    /// The addresses of `fqdn`, of the preferred family when it has some, else of the other.
    pub async fn resolve(&self, name: &str, prefer: AddrFamily) -> Result<Vec<IpAddr>, Failure> {
        let name = fqdn(name)?;
        let order = match prefer {
            AddrFamily::Ipv4 => [RecordType::A, RecordType::AAAA],
            AddrFamily::Ipv6 => [RecordType::AAAA, RecordType::A],
        };
        let mut last = Failure::Other;
        for kind in order {
            match self.resolver.lookup(name.clone(), kind).await {
                Ok(found) => {
                    let ips: Vec<IpAddr> = found
                        .iter()
                        .filter_map(|r| match r {
                            RData::A(a) => Some(IpAddr::V4(a.0)),
                            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                            _ => None,
                        })
                        .collect();
                    if !ips.is_empty() {
                        return Ok(ips);
                    }
                    last = Failure::Other;
                }
                Err(e) => {
                    last = failure(&e);
                    if last == Failure::Timeout {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }
}

impl Querier {
    /// The SRV records of `name`, each target's address taken from the answer's additional
    /// records, else resolved (`prefer` first); a target that does not resolve has none.
    pub async fn srv(&self, name: &str, prefer: AddrFamily) -> Result<Vec<SrvItem>, Failure> {
        let name = fqdn(name)?;
        let found = self
            .resolver
            .lookup(name, RecordType::SRV)
            .await
            .map_err(|e| failure(&e))?;
        let mut items = Vec::new();
        for record in found.records() {
            let RData::SRV(srv) = record.data() else {
                continue;
            };
            let target = srv.target().to_ascii().to_ascii_lowercase();
            let target = target.trim_end_matches('.').to_owned();
            let additional: Vec<IpAddr> = found
                .records()
                .iter()
                .filter(|r| r.name() == srv.target())
                .filter_map(|r| match r.data() {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                    _ => None,
                })
                .collect();
            let ip = match pick(&additional, prefer) {
                Some(ip) => Some(ip),
                None => self
                    .resolve(&target, prefer)
                    .await
                    .ok()
                    .and_then(|ips| ips.first().copied()),
            };
            items.push(SrvItem {
                target,
                port: srv.port(),
                weight: srv.weight(),
                ip,
            });
        }
        if items.is_empty() {
            return Err(Failure::Other);
        }
        Ok(items)
    }
}

/// The first address of the preferred family, else the first one.
fn pick(ips: &[IpAddr], prefer: AddrFamily) -> Option<IpAddr> {
    let v6 = prefer == AddrFamily::Ipv6;
    ips.iter()
        .find(|ip| ip.is_ipv6() == v6)
        .or(ips.first())
        .copied()
}

/// `name` as a fully qualified name: no search domain is tried.
fn fqdn(name: &str) -> Result<Name, Failure> {
    let mut n = Name::from_ascii(name).map_err(|_| Failure::Other)?;
    n.set_fqdn(true);
    Ok(n)
}

/// What kind of failure an error is, as HAProxy tells them apart for `hold`.
fn failure(e: &ResolveError) -> Failure {
    let Some(proto) = e.proto() else {
        return Failure::Other;
    };
    match proto.kind() {
        ProtoErrorKind::NoRecordsFound { response_code, .. } => match *response_code {
            ResponseCode::NXDomain => Failure::Nx,
            ResponseCode::Refused => Failure::Refused,
            _ => Failure::Other,
        },
        // No answer: the server is down or too slow (an unreachable port included).
        ProtoErrorKind::Timeout | ProtoErrorKind::NoConnections | ProtoErrorKind::Io(_) => {
            Failure::Timeout
        }
        _ => Failure::Other,
    }
}
