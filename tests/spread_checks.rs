//! When checks run, side by side with HAProxy 2.6 on the same config, timed at the checked
//! server: the next check comes `inter` after the previous one ended (a slow answer delays
//! it); with `spread-checks 50` each interval is moved at random by up to half of `inter`
//! either way (without it, the checks keep their beat); and the first checks after a start
//! are spread over `inter` (one position per check in configuration order) or over at most
//! `max-spread-checks`.

mod common;
mod scripted;

use std::thread;
use std::time::{Duration, Instant};

use common::{Haproxy, Rolelb, free_port, wait_until};
use scripted::{Reply, Scripted, gaps_after};

/// Starts `proxy` ("rolelb" or "haproxy") on `cfg`; dropped to stop it.
fn start(proxy: &str, cfg: &str) -> Box<dyn std::any::Any> {
    match proxy {
        "haproxy" => Box::new(Haproxy::start(cfg)),
        _ => Box::new(Rolelb::start(cfg)),
    }
}

/// One `listen` checking `servers` with a tcp-check that reads the server's `OK` (a plain
/// connect check is reset before the server accepts it: it would not be seen).
fn config(global: &str, servers: &[&Scripted], server_opts: &str) -> String {
    let port = free_port();
    let mut cfg = format!(
        "global\n{global}\ndefaults\n    mode tcp\n    timeout connect 1s\n    timeout client 10s\n    \
         timeout server 10s\n\nlisten l\n    bind 127.0.0.1:{port}\n    option tcp-check\n    \
         tcp-check expect string OK\n"
    );
    for (i, s) in servers.iter().enumerate() {
        cfg.push_str(&format!(
            "    server s{i} {} check {server_opts}\n",
            s.addr()
        ));
    }
    cfg
}

/// The gaps between checks at one server checked every 200 ms by `proxy` with `global` lines,
/// over about 8 s (the first second left out), in milliseconds, sorted.
fn gaps(proxy: &str, global: &str) -> Vec<u128> {
    let server = Scripted::start(Reply::text("OK\n"), false);
    let _proxy = start(proxy, &config(global, &[&server], "inter 200ms"));
    let from = Instant::now() + Duration::from_secs(1);
    let enough = || server.arrivals().iter().filter(|t| **t >= from).count() >= 41;
    assert!(
        wait_until(Duration::from_secs(20), enough),
        "{proxy} '{global}': {} checks",
        server.arrivals().len()
    );
    let mut gaps: Vec<u128> = gaps_after(&server.arrivals(), from)
        .iter()
        .map(Duration::as_millis)
        .collect();
    gaps.sort_unstable();
    gaps
}

/// The value at fraction `q` of sorted `v`.
fn quantile(v: &[u128], q: f64) -> u128 {
    let last = v.len().saturating_sub(1);
    let i = (last as f64 * q).round() as usize;
    v.get(i.min(last)).copied().unwrap_or_default()
}

#[test]
fn spread_checks_scatters_check_intervals_as_haproxy_does() {
    let variants = [
        ("haproxy", ""),
        ("rolelb", ""),
        ("haproxy", "    spread-checks 50\n"),
        ("rolelb", "    spread-checks 50\n"),
    ];
    // All four at once: the same machine load for each.
    let measured: Vec<Vec<u128>> = thread::scope(|s| {
        let running: Vec<_> = variants
            .iter()
            .map(|(proxy, global)| s.spawn(move || gaps(proxy, global)))
            .collect();
        running
            .into_iter()
            .map(|t| t.join().expect("a measuring thread"))
            .collect()
    });
    for ((proxy, global), gaps) in variants.iter().zip(&measured) {
        let (q1, median, q3) = (
            quantile(gaps, 0.25),
            quantile(gaps, 0.5),
            quantile(gaps, 0.75),
        );
        let (min, max) = (gaps[0], gaps[gaps.len() - 1]);
        let seen = format!("{proxy} '{}': gaps (ms) {gaps:?}", global.trim());
        if global.is_empty() {
            assert!((170..=260).contains(&median), "median {median}: {seen}");
            // On the beat: half the gaps within 40 ms of each other.
            assert!(q3 - q1 <= 40, "{seen}");
        } else {
            // Spread over 100..300 ms: the median of 40 even draws is 200 ± 16 ms (one
            // standard deviation), the middle half covers ~100 ms, and the ends are reached
            // (40 even draws all above 150 ms: 1 chance in 100,000).
            assert!((140..=270).contains(&median), "median {median}: {seen}");
            assert!(q3 - q1 >= 50, "{seen}");
            assert!(min <= 150 && max >= 250, "{seen}");
            assert!(min >= 90, "never below inter - 50%: {seen}");
        }
    }
}

/// When the first check reached each of four servers checked every 4 s by `proxy` with
/// `global` lines, after the first server's, in milliseconds.
fn first_offsets(proxy: &str, global: &str) -> Vec<i128> {
    let servers: Vec<Scripted> = (0..4)
        .map(|_| Scripted::start(Reply::text("OK\n"), false))
        .collect();
    let refs: Vec<&Scripted> = servers.iter().collect();
    let _proxy = start(proxy, &config(global, &refs, "inter 4s"));
    let all_checked = || servers.iter().all(|s| !s.arrivals().is_empty());
    assert!(
        wait_until(Duration::from_secs(10), all_checked),
        "{proxy} '{global}': not every server was checked"
    );
    let firsts: Vec<Instant> = servers.iter().map(|s| s.arrivals()[0]).collect();
    firsts
        .iter()
        .map(|t| {
            let ms = |d: Duration| i128::try_from(d.as_millis()).unwrap_or(i128::MAX);
            if *t >= firsts[0] {
                ms(*t - firsts[0])
            } else {
                -ms(firsts[0] - *t)
            }
        })
        .collect()
}

#[test]
fn first_checks_are_spread_over_inter_or_max_spread_checks_as_haproxy_does() {
    let variants = [
        ("haproxy", "", [0, 1000, 2000, 3000]),
        ("rolelb", "", [0, 1000, 2000, 3000]),
        ("haproxy", "    max-spread-checks 400\n", [0, 100, 200, 300]),
        ("rolelb", "    max-spread-checks 400\n", [0, 100, 200, 300]),
    ];
    let measured: Vec<Vec<i128>> = thread::scope(|s| {
        let running: Vec<_> = variants
            .iter()
            .map(|(proxy, global, _)| s.spawn(move || first_offsets(proxy, global)))
            .collect();
        running
            .into_iter()
            .map(|t| t.join().expect("a measuring thread"))
            .collect()
    });
    for ((proxy, global, want), got) in variants.iter().zip(&measured) {
        // A loaded machine runs a check late by tens of milliseconds; the two spreads differ
        // by 900 ms per position.
        let off = got.iter().zip(want).all(|(g, w)| (g - w).abs() <= 150);
        assert!(
            off,
            "{proxy} '{}': first checks at {got:?} ms after the first, want {want:?} (±150)",
            global.trim()
        );
    }
}

/// The gaps between the first checks at a server that answers 300 ms late, checked every 1 s
/// by `proxy`, in milliseconds.
fn slow_server_gaps(proxy: &str) -> Vec<u128> {
    let server = Scripted::start(
        Reply::Late(Duration::from_millis(300), b"OK\n".to_vec()),
        false,
    );
    let _proxy = start(proxy, &config("", &[&server], "inter 1s rise 1 fall 1"));
    let enough = || server.arrivals().len() >= 5;
    assert!(
        wait_until(Duration::from_secs(15), enough),
        "{proxy}: {} checks",
        server.arrivals().len()
    );
    let arrivals = server.arrivals();
    arrivals
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect()
}

#[test]
fn the_next_check_comes_inter_after_the_previous_one_ended_as_in_haproxy() {
    let measured: Vec<Vec<u128>> = thread::scope(|s| {
        let running: Vec<_> = ["haproxy", "rolelb"]
            .iter()
            .map(|proxy| s.spawn(move || slow_server_gaps(proxy)))
            .collect();
        running
            .into_iter()
            .map(|t| t.join().expect("a measuring thread"))
            .collect()
    });
    for (proxy, gaps) in ["haproxy", "rolelb"].iter().zip(&measured) {
        // 1 s of inter after a check of 300 ms: 1.3 s apart (1 s if timed from the start).
        assert!(
            gaps.iter().all(|g| (1250..1500).contains(g)),
            "{proxy}: gaps between checks {gaps:?} ms, want about 1300"
        );
    }
}
