//! What the `prometheus` crate would cost `/metrics` at scale: renders the same samples for
//! 1,000 servers (10 backends of 100) two ways and prints the time per scrape of each.
//!
//! * `hand`: rolelb's hand-written text encoder itself (`rolelb::admin::metrics::Out`:
//!   `# HELP`/`# TYPE`, then `name{labels} value` lines straight into one `String`).
//! * `crate`: a custom `prometheus::core::Collector` that reads the same atomics at scrape time
//!   into `MetricFamily` values, encoded by `prometheus::TextEncoder`; once by calling
//!   `collect()` directly (the cheapest use) and once through a `Registry`'s `gather()` (the
//!   usual one, which also checks and sorts).
//!
//! Both produce the server families' shape: 60 one-value families per server, the 5-sample
//! `status`, the 16-sample `check_status` and the 3-sample `rolelb_server_role`, every value
//! loaded from an atomic. It checks that both outputs hold the same number of samples.
//!
//!     cargo run --release -p rolelb-bench --bin metrics-encode [-- SERVERS ROUNDS]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Encoder, Registry, TextEncoder};
use rolelb::admin::metrics::{Out, V};

/// One-value families per server.
const SIMPLE: usize = 60;
const STATES: [&str; 5] = ["DOWN", "UP", "MAINT", "DRAIN", "NOLB"];
const CHECK_STATES: [&str; 16] = [
    "HANA", "SOCKERR", "L4OK", "L4TOUT", "L4CON", "L6OK", "L6TOUT", "L6RSP", "L7TOUT", "L7RSP",
    "L7OK", "L7OKC", "L7STS", "PROCERR", "PROCTOUT", "PROCOK",
];
const ROLES: [&str; 3] = ["primary", "replica", "unknown"];

/// A family with one sample per state: name, the states, which one is current.
type Multi = (
    &'static str,
    &'static [&'static str],
    fn(&Server) -> &AtomicU64,
);

const MULTI: [Multi; 3] = [
    ("haproxy_server_status", &STATES, |s| &s.state),
    ("haproxy_server_check_status", &CHECK_STATES, |s| &s.check),
    ("rolelb_server_role", &ROLES, |s| &s.role),
];

struct Server {
    proxy: String,
    name: String,
    counters: Vec<AtomicU64>,
    state: AtomicU64,
    check: AtomicU64,
    role: AtomicU64,
}

struct World {
    servers: Vec<Server>,
    simple_names: Vec<String>,
}

fn world(n: usize) -> World {
    let servers = (0..n)
        .map(|i| Server {
            proxy: format!("be{}", i / 100),
            name: format!("srv{i}"),
            counters: (0..SIMPLE)
                .map(|j| AtomicU64::new((i * j) as u64))
                .collect(),
            state: AtomicU64::new((i % 5) as u64),
            check: AtomicU64::new((i % 16) as u64),
            role: AtomicU64::new((i % 3) as u64),
        })
        .collect();
    let simple_names = (0..SIMPLE)
        .map(|j| format!("haproxy_server_family_{j}_total"))
        .collect();
    World {
        servers,
        simple_names,
    }
}

// --- the hand-written encoder: rolelb's own (`rolelb::admin::metrics::Out`) -----------------

fn hand(w: &World) -> String {
    let mut out = Out::new(64 * 1024);
    for (j, name) in w.simple_names.iter().enumerate() {
        out.family(name, "counter", "A counter of every server.");
        for s in &w.servers {
            let v = s.counters[j].load(Ordering::Relaxed);
            out.sample(name, &[("proxy", &s.proxy), ("server", &s.name)], V::N(v));
        }
    }
    for (name, states, read) in MULTI {
        out.family(name, "gauge", "One sample per state label value.");
        for s in &w.servers {
            let cur = read(s).load(Ordering::Relaxed);
            for (i, st) in states.iter().enumerate() {
                let labels = [
                    ("proxy", s.proxy.as_str()),
                    ("server", &s.name),
                    ("state", st),
                ];
                out.sample(name, &labels, V::N(u64::from(cur == i as u64)));
            }
        }
    }
    out.into_text()
}

// --- the same through the prometheus crate ----------------------------------------------------

struct Live {
    world: Arc<World>,
    descs: Vec<Desc>,
}

fn pair(name: &str, value: &str) -> LabelPair {
    let mut l = LabelPair::default();
    l.set_name(name.to_owned());
    l.set_value(value.to_owned());
    l
}

fn gauge(labels: Vec<LabelPair>, v: f64) -> Metric {
    let mut g = Gauge::default();
    g.set_value(v);
    let mut m = Metric::from_gauge(g);
    m.set_label(labels);
    m
}

fn family(name: &str, help: &str, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_owned());
    f.set_help(help.to_owned());
    f.set_field_type(MetricType::GAUGE);
    f.set_metric(metrics);
    f
}

impl Collector for Live {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    #[allow(clippy::cast_precision_loss)]
    fn collect(&self) -> Vec<MetricFamily> {
        let w = &self.world;
        let mut out = Vec::with_capacity(SIMPLE + 3);
        for (j, name) in w.simple_names.iter().enumerate() {
            let metrics = w
                .servers
                .iter()
                .map(|s| {
                    let v = s.counters[j].load(Ordering::Relaxed) as f64;
                    gauge(vec![pair("proxy", &s.proxy), pair("server", &s.name)], v)
                })
                .collect();
            out.push(family(name, "A counter of every server.", metrics));
        }
        for (name, states, read) in MULTI {
            let mut metrics = Vec::with_capacity(w.servers.len() * states.len());
            for s in &w.servers {
                let cur = read(s).load(Ordering::Relaxed);
                for (i, st) in states.iter().enumerate() {
                    let labels = vec![
                        pair("proxy", &s.proxy),
                        pair("server", &s.name),
                        pair("state", st),
                    ];
                    metrics.push(gauge(labels, if cur == i as u64 { 1.0 } else { 0.0 }));
                }
            }
            out.push(family(name, "One sample per state label value.", metrics));
        }
        out
    }
}

fn live(world: Arc<World>) -> Live {
    let labels = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let mut descs = Vec::new();
    for name in &world.simple_names {
        let d = Desc::new(
            name.clone(),
            "A counter of every server.".into(),
            labels(&["proxy", "server"]),
            HashMap::new(),
        );
        descs.push(d.expect("valid descriptor"));
    }
    for name in [
        "haproxy_server_status",
        "haproxy_server_check_status",
        "rolelb_server_role",
    ] {
        let d = Desc::new(
            name.into(),
            "One sample per state label value.".into(),
            labels(&["proxy", "server", "state"]),
            HashMap::new(),
        );
        descs.push(d.expect("valid descriptor"));
    }
    Live { world, descs }
}

fn encode(families: &[MetricFamily]) -> String {
    let mut buf = Vec::with_capacity(64 * 1024);
    TextEncoder::new()
        .encode(families, &mut buf)
        .expect("text encoding");
    String::from_utf8(buf).expect("UTF-8")
}

fn samples(text: &str) -> usize {
    text.lines().filter(|l| !l.starts_with('#')).count()
}

/// The median time of `rounds` runs of `f`, after one warm-up.
fn time(rounds: usize, mut f: impl FnMut() -> String) -> (Duration, usize) {
    let bytes = f().len();
    let mut times: Vec<Duration> = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            black_box(f());
            t.elapsed()
        })
        .collect();
    times.sort();
    (times[times.len() / 2], bytes)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(21);
    let w = Arc::new(world(n));
    let collector = live(w.clone());
    let registry = Registry::new();
    registry
        .register(Box::new(live(w.clone())))
        .expect("register");

    let (a, b, c) = (
        hand(&w),
        encode(&collector.collect()),
        encode(&registry.gather()),
    );
    assert_eq!(samples(&a), samples(&b), "same samples");
    assert_eq!(samples(&a), samples(&c), "same samples");
    println!(
        "{n} servers, {} samples per scrape, median of {rounds}",
        samples(&a)
    );
    let (hand_t, hand_b) = time(rounds, || hand(&w));
    let (coll_t, coll_b) = time(rounds, || encode(&collector.collect()));
    let (reg_t, reg_b) = time(rounds, || encode(&registry.gather()));
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "hand-written encoder   {:8.2} ms  {hand_b} bytes",
        ms(hand_t)
    );
    println!(
        "crate, collect()       {:8.2} ms  {coll_b} bytes  ({:.2}x)",
        ms(coll_t),
        ms(coll_t) / ms(hand_t)
    );
    println!(
        "crate, Registry        {:8.2} ms  {reg_b} bytes  ({:.2}x)",
        ms(reg_t),
        ms(reg_t) / ms(hand_t)
    );
}
