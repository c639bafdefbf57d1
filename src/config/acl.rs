//! ACLs and the conditions built from them, as typed values: the tests (`src`, `dst`,
//! `src_port`, `dst_port`, `nbsrv(B)`, `srv_is_up(B/S)`, `always_true`/`always_false`, and on a
//! stats page `http_auth(L)`), `!`, `||`, `if|unless`; and the rules of a TCP frontend that
//! take them (`tcp-request connection|content accept|reject`, `use_backend ... if|unless`).
//! Parsed by `keywords::acl` and `keywords::tcp_request`; evaluated through [`Sample`], which
//! the data path (`proxy::session`) and the stats page (`admin::stats_auth`) each provide.

use std::net::IpAddr;

use super::model::Loc;

/// An IP network of a `src`/`dst` test: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    /// The network address.
    pub addr: IpAddr,
    /// Leading bits that must match.
    pub prefix: u8,
}

impl Net {
    /// Whether `ip` is in the network (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// An integer pattern: `N`, a range `A:B` (either side may be left open), or `OP N` with
/// `eq|lt|le|gt|ge`; all bounds inclusive, as HAProxy's `-m int`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntRange {
    /// Lowest matching value.
    pub min: i64,
    /// Highest matching value.
    pub max: i64,
}

impl IntRange {
    /// Whether `v` is in the range.
    pub fn contains(&self, v: i64) -> bool {
        self.min <= v && v <= self.max
    }
}

/// The patterns of a test and how the sample is compared with them (`-m`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Patterns {
    /// `-m ip`: the sample address is in one of the networks.
    Ip(Vec<Net>),
    /// `-m int`: the sample integer is in one of the ranges.
    Int(Vec<IntRange>),
    /// `-m str`: the sample, as text, equals one of the strings (`-i`: ignoring case).
    Str {
        /// The strings.
        values: Vec<String>,
        /// `-i`.
        ignore_case: bool,
    },
    /// `-m bool` (the implicit matcher of `srv_is_up`, `always_*`): the sample is true /
    /// non-zero.
    Bool,
}

/// What a test fetches (HAProxy's sample fetch functions of layer 4 and of the backend).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetch {
    /// `src`: the client's address (after `accept-proxy`, the PROXY header's, except in
    /// `tcp-request connection` rules, which run before the header is read).
    Src,
    /// `dst`: the address the client connected to.
    Dst,
    /// `src_port`.
    SrcPort,
    /// `dst_port`.
    DstPort,
    /// `nbsrv(BACKEND)`: how many servers the backend would use now.
    Nbsrv(String),
    /// `srv_is_up(BACKEND/SERVER)`: the server is neither in maintenance nor down.
    SrvIsUp(String, String),
    /// `always_true`.
    AlwaysTrue,
    /// `always_false`.
    AlwaysFalse,
}

impl Fetch {
    /// The fetch's name as the config spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Fetch::Src => "src",
            Fetch::Dst => "dst",
            Fetch::SrcPort => "src_port",
            Fetch::DstPort => "dst_port",
            Fetch::Nbsrv(_) => "nbsrv",
            Fetch::SrvIsUp(..) => "srv_is_up",
            Fetch::AlwaysTrue => "always_true",
            Fetch::AlwaysFalse => "always_false",
        }
    }
}

/// One test of a condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Test {
    /// `TRUE` / `always_true`.
    True,
    /// `FALSE` / `always_false`.
    False,
    /// A fetch compared with patterns (`{ dst_port 5432 }`, `{ nbsrv(b) eq 0 }`).
    Match {
        /// The fetch.
        fetch: Fetch,
        /// Its patterns.
        patterns: Patterns,
    },
    /// A named ACL (`acl NAME ...` lines of the proxy): any of its tests.
    Acl {
        /// Its name.
        name: String,
        /// The tests of its lines, in order.
        tests: Vec<Test>,
    },
    /// `{ http_auth(LIST) }`, or with groups `{ http_auth_group(LIST) G1 G2 }`: the request's
    /// Basic credentials are a user of LIST (in one of the groups, when given).
    HttpAuth {
        /// The userlist's name.
        list: String,
        /// Groups, for `http_auth_group`.
        groups: Option<Vec<String>>,
        /// Where the test is written.
        loc: Loc,
    },
}

/// A test, maybe negated with `!`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    /// `!`.
    pub negate: bool,
    /// The test.
    pub test: Test,
}

/// `if|unless` followed by terms: the terms of a group must all match, and one group of
/// several separated by `||` (or `or`) must.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cond {
    /// `unless`.
    pub unless: bool,
    /// The `||`-separated groups of terms.
    pub any_of: Vec<Vec<Term>>,
}

/// What a condition reads when it is evaluated: the connection's addresses and the state
/// of the backends. A fetch that has no value (`None`) makes its test not match.
pub trait Sample {
    /// The client's address.
    fn src(&self) -> Option<std::net::SocketAddr>;
    /// The address the client connected to.
    fn dst(&self) -> Option<std::net::SocketAddr>;
    /// `nbsrv(backend)`.
    fn nbsrv(&self, backend: &str) -> Option<i64>;
    /// `srv_is_up(backend/server)`.
    fn srv_is_up(&self, backend: &str, server: &str) -> Option<bool>;
    /// `http_auth(list)` / `http_auth_group(list) groups` (only on a stats page).
    fn http_auth(&self, _list: &str, _groups: Option<&[String]>) -> bool {
        false
    }
}

/// A fetched value.
enum Value {
    Ip(IpAddr),
    Int(i64),
    Bool(bool),
}

fn fetch(f: &Fetch, s: &impl Sample) -> Option<Value> {
    Some(match f {
        Fetch::Src => Value::Ip(s.src()?.ip()),
        Fetch::Dst => Value::Ip(s.dst()?.ip()),
        Fetch::SrcPort => Value::Int(i64::from(s.src()?.port())),
        Fetch::DstPort => Value::Int(i64::from(s.dst()?.port())),
        Fetch::Nbsrv(b) => Value::Int(s.nbsrv(b)?),
        Fetch::SrvIsUp(b, srv) => Value::Bool(s.srv_is_up(b, srv)?),
        Fetch::AlwaysTrue => Value::Bool(true),
        Fetch::AlwaysFalse => Value::Bool(false),
    })
}

fn matches_patterns(value: &Value, patterns: &Patterns) -> bool {
    match (patterns, value) {
        (Patterns::Ip(nets), Value::Ip(ip)) => nets.iter().any(|n| n.contains(*ip)),
        (Patterns::Int(ranges), Value::Int(v)) => ranges.iter().any(|r| r.contains(*v)),
        (Patterns::Int(ranges), Value::Bool(b)) => ranges.iter().any(|r| r.contains(i64::from(*b))),
        (Patterns::Bool, Value::Bool(b)) => *b,
        (Patterns::Bool, Value::Int(v)) => *v != 0,
        (
            Patterns::Str {
                values,
                ignore_case,
            },
            v,
        ) => {
            let text = match v {
                Value::Ip(ip) => ip.to_string(),
                Value::Int(i) => i.to_string(),
                Value::Bool(b) => u8::from(*b).to_string(),
            };
            values.iter().any(|p| {
                if *ignore_case {
                    p.eq_ignore_ascii_case(&text)
                } else {
                    *p == text
                }
            })
        }
        _ => false,
    }
}

impl Test {
    /// Whether the test matches `sample`.
    pub fn matches(&self, sample: &impl Sample) -> bool {
        match self {
            Test::True => true,
            Test::False => false,
            Test::Match { fetch: f, patterns } => {
                fetch(f, sample).is_some_and(|v| matches_patterns(&v, patterns))
            }
            Test::Acl { tests, .. } => tests.iter().any(|t| t.matches(sample)),
            Test::HttpAuth { list, groups, .. } => sample.http_auth(list, groups.as_deref()),
        }
    }

    /// This test and, for a named ACL, the tests of its lines, depth first.
    pub fn walk<'a>(&'a self, out: &mut Vec<&'a Test>) {
        out.push(self);
        if let Test::Acl { tests, .. } = self {
            for t in tests {
                t.walk(out);
            }
        }
    }
}

impl Cond {
    /// Whether the condition holds for `sample` (`unless` inverts it).
    pub fn matches(&self, sample: &impl Sample) -> bool {
        let any = self
            .any_of
            .iter()
            .any(|terms| terms.iter().all(|t| t.test.matches(sample) != t.negate));
        any != self.unless
    }

    /// Every test the condition uses, named ACLs opened.
    pub fn tests(&self) -> Vec<&Test> {
        let mut out = Vec::new();
        for t in self.any_of.iter().flatten() {
            t.test.walk(&mut out);
        }
        out
    }
}

/// Whether `cond` (or its absence: always) holds.
pub fn holds(cond: Option<&Cond>, sample: &impl Sample) -> bool {
    cond.is_none_or(|c| c.matches(sample))
}

/// What a `tcp-request connection|content` rule does when its condition holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpAction {
    /// `accept`: stop evaluating the rules and let the connection through.
    Accept,
    /// `reject`: close the connection.
    Reject,
}

/// A `tcp-request connection|content accept|reject [if|unless COND]` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpRule {
    /// What it does.
    pub action: TcpAction,
    /// When it applies (always, without a condition).
    pub cond: Option<Cond>,
    /// Where it is written.
    pub loc: Loc,
}

/// The verdict of a rule list: the first rule whose condition holds decides, and a
/// connection no rule matches is accepted (as HAProxy).
pub fn verdict(rules: &[TcpRule], sample: &impl Sample) -> TcpAction {
    rules
        .iter()
        .find(|r| holds(r.cond.as_ref(), sample))
        .map_or(TcpAction::Accept, |r| r.action)
}

/// A conditional `use_backend NAME if|unless COND` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UseBackend {
    /// The backend.
    pub backend: String,
    /// When it is used.
    pub cond: Cond,
    /// Where it is written.
    pub loc: Loc,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    struct S(SocketAddr, SocketAddr);
    impl Sample for S {
        fn src(&self) -> Option<SocketAddr> {
            Some(self.0)
        }
        fn dst(&self) -> Option<SocketAddr> {
            Some(self.1)
        }
        fn nbsrv(&self, b: &str) -> Option<i64> {
            (b == "b").then_some(0)
        }
        fn srv_is_up(&self, _: &str, s: &str) -> Option<bool> {
            Some(s == "up")
        }
    }

    #[test]
    fn fetches_compare_with_their_patterns() {
        let s = S(
            "10.1.2.3:4000".parse().unwrap(),
            "127.0.0.1:5432".parse().unwrap(),
        );
        let m = |fetch, patterns| Test::Match { fetch, patterns }.matches(&s);
        let r = |min, max| IntRange { min, max };
        assert!(m(Fetch::DstPort, Patterns::Int(vec![r(5432, 5432)])));
        assert!(!m(Fetch::DstPort, Patterns::Int(vec![r(0, 1023)])));
        assert!(m(Fetch::SrcPort, Patterns::Int(vec![r(4000, i64::MAX)])));
        assert!(m(Fetch::Nbsrv("b".into()), Patterns::Int(vec![r(0, 0)])));
        assert!(!m(Fetch::Nbsrv("x".into()), Patterns::Int(vec![r(0, 0)])));
        assert!(m(Fetch::SrvIsUp("b".into(), "up".into()), Patterns::Bool));
        assert!(!m(
            Fetch::SrvIsUp("b".into(), "down".into()),
            Patterns::Bool
        ));
        let str_pat = Patterns::Str {
            values: vec!["127.0.0.1".into()],
            ignore_case: false,
        };
        assert!(m(Fetch::Dst, str_pat));
        let net = Net {
            addr: "10.0.0.0".parse().unwrap(),
            prefix: 8,
        };
        assert!(m(Fetch::Src, Patterns::Ip(vec![net])));
        assert!(!m(Fetch::Dst, Patterns::Ip(vec![net])));
    }
}
