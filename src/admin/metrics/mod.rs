//! `/metrics`: the Prometheus text format, rendered at scrape time from the current table and
//! the live atomics (nothing here is updated by the data path, so a scrape never slows it).
//!
//! Every `haproxy_*` family carries the name, type and label names (`proxy`, `server`,
//! `state`) of HAProxy 2.6's built-in exporter for what HAProxy also has in TCP mode, so
//! existing dashboards and alerts work. Where HAProxy prints `NaN` (no `maxconn`, no check),
//! so does rolelb. Counters of features rolelb does not have (HTTP rules, TLS, compression,
//! connection reuse) are a true 0. A few process gauges rolelb cannot know (memory pools,
//! idle time, byte rate) are left out; `docs/metrics.md` lists them.
//!
//! The `rolelb_*` families add what role awareness makes visible: role per server,
//! replication lag, role conflicts, check durations, table swaps, and `rolelb_etcd_*` per
//! `discover` backend from the status board `control` publishes.
//!
//! Every value comes from `view` (the derivations `show stat` and the JSON API share); the
//! files here only format it, one family group per file: `process`, `frontend`, `backend`,
//! `server` (with `shared` for what the last two have in common) and `rolelb`. A scrape may
//! ask for some scopes only (`?scope=backend`, as HAProxy's exporter takes it; `scope`).
//!
//! Rendered by a hand-written encoder rather than through the `prometheus` crate. A custom
//! `prometheus::core::Collector` reading the same atomics, measured with
//! `bench/src/bin/metrics_encode.rs` on 1,000 servers (84,000 samples, 5.6 MB), costs
//! 1.4-2.0x this encoder when its `collect()` is encoded directly and 2.1-4.2x through a
//! `Registry` (which also sorts the families by name, where HAProxy's order is kept here);
//! the crate also carries every value as an `f64`, so counters above 2^53 would lose digits.
//! `docs/metrics.md` has the numbers.

mod backend;
mod frontend;
mod process;
mod rolelb;
mod scope;
mod server;
mod shared;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::Env;
use super::view;
pub use scope::Scrape;

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A sample's value.
#[derive(Debug, Clone, Copy)]
pub enum V {
    /// An integer.
    N(u64),
    /// A real number.
    F(f64),
    /// Not applicable (HAProxy prints `NaN` for empty fields).
    NaN,
}

impl From<u32> for V {
    fn from(n: u32) -> V {
        V::N(u64::from(n))
    }
}

impl From<u64> for V {
    fn from(n: u64) -> V {
        V::N(n)
    }
}

impl From<usize> for V {
    fn from(n: usize) -> V {
        V::N(u64::try_from(n).unwrap_or(u64::MAX))
    }
}

impl From<bool> for V {
    fn from(b: bool) -> V {
        V::N(u64::from(b))
    }
}

impl From<Option<u32>> for V {
    fn from(n: Option<u32>) -> V {
        n.map_or(V::NaN, V::from)
    }
}

fn secs(d: Duration) -> V {
    V::F(d.as_secs_f64())
}

fn ms(n: u64) -> V {
    #[allow(clippy::cast_precision_loss)]
    V::F(n as f64 / 1000.0)
}

/// The text format's encoder: families written one at a time into one `String` (public so
/// `bench/`'s encoder comparison measures this very code).
pub struct Out {
    text: String,
}

impl Out {
    /// An empty text with room for `capacity` bytes.
    pub fn new(capacity: usize) -> Out {
        Out {
            text: String::with_capacity(capacity),
        }
    }

    /// The text written so far.
    pub fn into_text(self) -> String {
        self.text
    }

    /// Starts a family: its `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    /// One sample: `name{labels} value`.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: V) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", escape(v));
            }
            self.text.push('}');
        }
        match value {
            V::N(n) => {
                let _ = writeln!(self.text, " {n}");
            }
            V::F(f) if f.is_finite() => {
                let _ = writeln!(self.text, " {f}");
            }
            V::F(_) | V::NaN => self.text.push_str(" NaN\n"),
        }
    }
}

/// Escapes a label value (backslash, quote, newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders the families `scrape` asks for, for the current table, in HAProxy's order (the
/// `rolelb_*` ones after them).
pub fn render(env: &Env, scrape: &Scrape) -> String {
    let table = env.table().load();
    let now = Instant::now();
    let proxies = view::proxies(&table);
    let mut out = Out::new(64 * 1024);
    if scrape.global {
        process::families(env, &table, &mut out);
    }
    if scrape.frontend {
        frontend::families(env, &table, &proxies, &mut out);
    }
    if scrape.backend {
        backend::families(&proxies, now, &mut out);
    }
    if scrape.server {
        server::families(&proxies, now, scrape.no_maint, &mut out);
        rolelb::server_families(&proxies, scrape.no_maint, &mut out);
    }
    if scrape.backend {
        rolelb::backend_families(&proxies, &mut out);
    }
    if scrape.global {
        rolelb::table_families(&table, &mut out);
    }
    if scrape.backend {
        rolelb::etcd_families(env, &mut out);
    }
    out.into_text()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_escape_labels_and_print_nan() {
        let mut out = Out {
            text: String::new(),
        };
        out.family("x_total", "counter", "X.");
        out.sample("x_total", &[("proxy", "a\"b\\c\nd")], V::N(3));
        out.sample("x_total", &[], V::NaN);
        out.sample("x_total", &[], V::F(0.25));
        assert_eq!(
            out.text,
            "# HELP x_total X.\n# TYPE x_total counter\nx_total{proxy=\"a\\\"b\\\\c\\nd\"} 3\nx_total NaN\nx_total 0.25\n"
        );
    }
}
