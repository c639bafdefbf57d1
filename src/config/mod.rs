//! Configuration: HAProxy-syntax text in, a validated [`Config`] out.
//!
//! `lexer` turns lines into words (quoting, escapes), `units` parses durations and sizes,
//! `keywords` holds one table per section mapping each keyword to its parser, and `build`
//! applies inheritance and cross-references. Every error carries `FILE:LINE`. This module
//! imports nothing of the runtime.

pub mod acl;
pub mod address;
pub mod build;
mod build_rules;
pub mod draft;
pub mod keywords;
pub mod lexer;
pub mod log_format;
pub mod model;
mod model_dns;
mod model_etcd;
mod model_log;
mod model_splice;
mod model_tls;
pub mod parse;
pub mod stats_access;
pub mod stick;
#[cfg(test)]
mod testing;
pub mod units;

pub use log_format::{LogFlags, LogFormat, LogNode, LogVar};
pub use model::*;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// Every error found in a configuration, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<Diagnostic>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Reads and validates the given files, merged in order as HAProxy does with several `-f`.
pub fn load<P: AsRef<Path>>(paths: &[P]) -> Result<Config, ConfigErrors> {
    let mut names = Vec::new();
    let mut texts = Vec::new();
    let mut read_errors = Vec::new();
    for path in paths {
        let name = path.as_ref().display().to_string();
        match std::fs::read(path.as_ref()) {
            Ok(bytes) => texts.push(String::from_utf8_lossy(&bytes).into_owned()),
            Err(e) => {
                read_errors.push(Diagnostic {
                    loc: Loc {
                        file: Arc::from(name.as_str()),
                        line: 0,
                    },
                    message: format!("cannot read configuration file: {e}"),
                });
                texts.push(String::new());
            }
        }
        names.push(name);
    }
    let sources: Vec<(&str, &str)> = names
        .iter()
        .map(String::as_str)
        .zip(texts.iter().map(String::as_str))
        .collect();
    let result = parse_with_env(&sources, &|name| std::env::var(name).ok());
    match (result, read_errors.is_empty()) {
        (result, true) => result,
        (Ok(_), false) => Err(ConfigErrors(read_errors)),
        (Err(ConfigErrors(mut rest)), false) => {
            read_errors.append(&mut rest);
            Err(ConfigErrors(read_errors))
        }
    }
}

/// Parses in-memory sources `(file name, text)`, merged in order; for tests and reloads.
/// `"$VAR"` references expand from the process environment.
pub fn parse_sources(sources: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
    parse_with_env(sources, &|name| std::env::var(name).ok())
}

/// Like [`parse_sources`], with `env` looking up `"$VAR"` references.
pub fn parse_with_env(
    sources: &[(&str, &str)],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let mut reader = parse::Reader::new();
    let mut lex_errors = Vec::new();
    let mut lex_warnings = Vec::new();
    for (name, text) in sources {
        let file: Arc<str> = Arc::from(*name);
        let mut lexed = lexer::lex(&file, text, env);
        lex_errors.append(&mut lexed.errors);
        lex_warnings.append(&mut lexed.warnings);
        reader.read_file(&lexed.lines);
    }
    let mut diags = reader.diags;
    diags.errors.append(&mut lex_errors);
    diags.warnings.append(&mut lex_warnings);
    let mut config = build::build(
        reader.global,
        reader.proxies,
        reader.etcd,
        reader.userlists,
        reader.cli_proxy_at,
        &mut diags,
    );
    keywords::resolvers::check_references(&config, &reader.resolvers, &mut diags);
    config.resolvers = reader.resolvers;
    let order = |d: &Diagnostic| {
        let file = sources
            .iter()
            .position(|(name, _)| *name == &*d.loc.file)
            .unwrap_or(usize::MAX);
        (file, d.loc.line)
    };
    let tidy = |list: &mut Vec<Diagnostic>| {
        list.sort_by_key(order);
        list.dedup();
    };
    tidy(&mut diags.errors);
    tidy(&mut diags.warnings);
    if !diags.errors.is_empty() {
        return Err(ConfigErrors(diags.errors));
    }
    config.warnings = diags.warnings;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn parse(text: &str) -> Config {
        match parse_with_env(&[("t.cfg", text)], &|_| None) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    fn errors(text: &str) -> Vec<String> {
        match parse_with_env(&[("t.cfg", text)], &|_| None) {
            Ok(_) => panic!("expected errors"),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    const TIMEOUTS: &str = "timeout connect 1s\ntimeout client 1s\ntimeout server 1s\n";

    #[test]
    fn defaults_apply_until_the_next_defaults() {
        let c = parse(&format!(
            "defaults\n{TIMEOUTS}retries 7\nbalance leastconn\noption redispatch\n\
             backend a\nserver s 127.0.0.1:1\n\
             defaults\n{TIMEOUTS}\
             backend b\nserver s 127.0.0.1:1\n"
        ));
        let (a, b) = (&c.backends[0], &c.backends[1]);
        assert_eq!(
            (a.retries, a.balance, a.redispatch),
            (7, Balance::LeastConn, true)
        );
        assert_eq!(
            (b.retries, b.balance, b.redispatch),
            (3, Balance::RoundRobin, false)
        );
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn default_server_from_defaults_and_section_stack() {
        let c = parse(&format!(
            "defaults\n{TIMEOUTS}default-server inter 3s fall 5\n\
             backend b\ndefault-server rise 4 check\n\
             server s1 127.0.0.1:1\nserver s2 127.0.0.1:2 inter 1s no-check\n"
        ));
        let s = &c.backends[0].servers;
        assert_eq!(
            (s[0].inter, s[0].fall, s[0].rise, s[0].check),
            (Duration::from_secs(3), 5, 4, true)
        );
        assert_eq!(
            (s[1].inter, s[1].fall, s[1].check),
            (Duration::from_secs(1), 5, false)
        );
    }

    #[test]
    fn named_defaults_and_from() {
        let c = parse(&format!(
            "defaults base\n{TIMEOUTS}retries 9\ndefaults other\n{TIMEOUTS}\
             backend a from base\nbackend b\n"
        ));
        assert_eq!(c.backends[0].retries, 9);
        assert_eq!(c.backends[1].retries, 3);
    }

    #[test]
    fn listen_is_a_frontend_and_a_backend() {
        let c = parse(&format!(
            "defaults\n{TIMEOUTS}listen pg\nbind :5000,:5001 name pg\nmaxconn 50\n\
             option tcplog\nserver s 127.0.0.1:5432\n"
        ));
        assert_eq!(c.frontends.len(), 1);
        assert_eq!(c.backends.len(), 1);
        let f = &c.frontends[0];
        assert_eq!(
            (f.name.as_str(), f.backend.as_str(), f.maxconn),
            ("pg", "pg", Some(50))
        );
        assert_eq!(f.binds.len(), 2);
        assert_eq!(f.binds[1].name.as_deref(), Some("pg"));
        assert!(f.tcplog);
        assert_eq!(
            c.backends[0].servers[0].addr,
            "127.0.0.1:5432".parse().unwrap()
        );
    }

    #[test]
    fn first_use_backend_wins_over_default_backend() {
        let c = parse(&format!(
            "defaults\n{TIMEOUTS}frontend f\nbind :1\ndefault_backend a\nuse_backend b\n\
             use_backend a\nbackend a\nbackend b\n"
        ));
        assert_eq!(c.frontends[0].backend, "b");
        assert!(c.warnings.iter().any(|w| w.message.contains("never used")));
    }

    #[test]
    fn stats_listener_and_http_defaults_overridden() {
        let c = parse(
            "defaults\nmode http\noption httplog\ntimeout connect 1s\ntimeout client 1s\n\
             timeout server 1s\nlisten stats\nbind :7000\nstats enable\nstats refresh 10\n\
             listen pg\nmode tcp\nbind :5000\nserver s 127.0.0.1:1\n",
        );
        assert_eq!(c.stats.len(), 1);
        assert_eq!(c.stats[0].uri, "/");
        assert_eq!(c.stats[0].refresh, Some(Duration::from_secs(10)));
        assert_eq!(c.frontends.len(), 1);
        assert!(c.frontends[0].tcplog);
        assert!(
            c.warnings
                .iter()
                .any(|w| w.message.contains("falling back to 'option tcplog'"))
        );
    }

    #[test]
    fn stats_keywords_other_than_enable_turn_the_page_on() {
        for line in [
            "stats uri /haproxy",
            "stats auth admin:pw",
            "stats refresh 30s",
        ] {
            let c = parse(&format!(
                "defaults\n{TIMEOUTS}listen admin_stats\nmode http\nbind :7000\n{line}\n"
            ));
            assert_eq!(c.stats.len(), 1, "{line}");
        }
    }

    #[test]
    fn check_methods() {
        let c = parse(&format!(
            "defaults\n{TIMEOUTS}option httpchk\n\
             backend http\nserver s 127.0.0.1:1\n\
             backend patroni\noption httpchk OPTIONS /master\nhttp-check expect ! status 500-599\n\
             backend tcp\noption tcp-check\ntcp-check connect port 8008\ntcp-check send PING\\r\\n\n\
             tcp-check expect ! rstring ^-ERR\n\
             backend pg\noption pgsql-check user u\n\
             backend my\noption mysql-check user u post-41\n"
        ));
        let m: Vec<&CheckMethod> = c.backends.iter().map(|b| &b.check).collect();
        assert_eq!(
            m[0],
            &CheckMethod::Http(HttpCheck {
                method: "OPTIONS".into(),
                uri: "/".into(),
                version: "HTTP/1.0".into(),
                headers: Vec::new(),
                body: String::new(),
                expect: HttpExpect::Status2xx3xx,
                disable_on_404: false,
            })
        );
        let CheckMethod::Http(h) = m[1] else { panic!() };
        assert_eq!(h.uri, "/master");
        assert_eq!(
            h.expect,
            HttpExpect::Status {
                codes: vec![(500, 599)],
                negate: true
            }
        );
        assert_eq!(
            m[2],
            &CheckMethod::TcpCheck(vec![
                TcpCheckRule::Connect { port: Some(8008) },
                TcpCheckRule::Send(b"PING\r\n".to_vec()),
                TcpCheckRule::ExpectRegex {
                    pattern: "^-ERR".into(),
                    negate: true
                },
            ])
        );
        assert_eq!(m[3], &CheckMethod::Pgsql { user: "u".into() });
        assert_eq!(
            m[4],
            &CheckMethod::Mysql {
                user: Some("u".into()),
                post_41: true
            }
        );
    }

    #[test]
    fn tcp_check_rules_replace_inherited_ones() {
        let c = parse(&format!(
            "defaults\n{TIMEOUTS}option tcp-check\ntcp-check send a\n\
             backend inherits\nbackend own\ntcp-check send b\n"
        ));
        assert_eq!(
            c.backends[0].check,
            CheckMethod::TcpCheck(vec![TcpCheckRule::Send(b"a".to_vec())])
        );
        assert_eq!(
            c.backends[1].check,
            CheckMethod::TcpCheck(vec![TcpCheckRule::Send(b"b".to_vec())])
        );
    }

    #[test]
    fn global_section() {
        let c = parse(
            "global\nmaxconn 100\nnbthread 4\nhard-stop-after 1m\ngrace 2s\nuser nobody\ngroup nogroup\n\
             pidfile /run/x.pid\ndaemon\nlog stderr local0\n\
             stats socket /run/s.sock mode 600 level admin\n",
        );
        let g = &c.global;
        assert_eq!((g.maxconn, g.nbthread), (Some(100), Some(4)));
        assert_eq!(g.hard_stop_after, Some(Duration::from_secs(60)));
        assert_eq!(g.grace, Some(Duration::from_secs(2)));
        assert_eq!(
            (g.user.clone(), g.group.clone()),
            (
                Some(Account::Name("nobody".into())),
                Some(Account::Name("nogroup".into()))
            )
        );
        assert!(g.daemon);
        assert_eq!(g.logs[0].dest, LogDest::Stderr);
        let s = &g.stats_sockets[0];
        assert_eq!((s.mode, s.level), (Some(0o600), StatsLevel::Admin));
        assert!(c.warnings.iter().any(|w| w.message.contains("foreground")));
    }

    #[test]
    fn timeouts_missing_and_on_the_wrong_side_warn() {
        let c = parse("backend b\ntimeout client 5s\n");
        let msgs: Vec<&str> = c.warnings.iter().map(|w| w.message.as_str()).collect();
        assert!(
            msgs.iter().any(|m| m.contains("no frontend capability")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter().any(|m| m.contains("missing timeouts")),
            "{msgs:?}"
        );
    }

    #[test]
    fn errors_continue_and_come_in_file_order() {
        let e = errors(
            "backend b\nbogus\nserver s 127.0.0.1\nfrontend f\nbind :1\ndefault_backend x\n",
        );
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e[0].starts_with("t.cfg:2: unknown keyword 'bogus'"));
        assert!(e[1].starts_with("t.cfg:3: missing port"));
        assert!(e[2].starts_with("t.cfg:6: frontend 'f' uses backend 'x'"));
    }

    #[test]
    fn several_files_merge_in_order() {
        let c = parse_with_env(
            &[("a.cfg", "defaults\nretries 5\n"), ("b.cfg", "backend b\n")],
            &|_| None,
        )
        .unwrap();
        assert_eq!(c.backends[0].retries, 5);
        let e = parse_with_env(
            &[
                ("a.cfg", "backend b\n"),
                ("b.cfg", "server s 127.0.0.1:1\n"),
            ],
            &|_| None,
        )
        .unwrap_err();
        assert!(
            e.0[0]
                .to_string()
                .starts_with("b.cfg:1: 'server' is outside any section")
        );
    }

    #[test]
    fn environment_variables_expand() {
        let env = |n: &str| (n == "PG_PORT").then(|| "6432".to_string());
        let c = parse_with_env(
            &[("t.cfg", "backend b\nserver s \"127.0.0.1:${PG_PORT}\"\n")],
            &env,
        )
        .unwrap();
        assert_eq!(c.backends[0].servers[0].addr.port(), 6432);
    }

    #[test]
    fn load_reports_unreadable_files() {
        let e = load(&["/nonexistent/rolelb.cfg"]).unwrap_err();
        assert!(e.0[0].message.contains("cannot read"));
    }
}
