//! The file descriptors a configuration needs and the process limit (`RLIMIT_NOFILE`) that
//! fits them, settled once at startup before anything is bound, as HAProxy does.
//!
//! Every proxied connection holds two descriptors (client and server side). On top of those
//! rolelb keeps a fixed part: listeners, the admin API's and stats sockets' own connections
//! (which `maxconn` does not count), one per health, agent and role check, etcd connections,
//! log sockets and the runtime's pollers. With `maxconn` set, the soft limit is raised to fit
//! it (beyond the hard limit only when privileged), and rolelb refuses to start when it cannot
//! be; without it, `maxconn` is derived from the hard limit. `ulimit-n` in `global` sets the
//! limit itself: `maxconn` must fit in it, or is derived from it when not set (HAProxy 2.6
//! derives it from the limit found at startup even then, and may exceed `ulimit-n`). Servers that etcd adds later are not counted
//! (HAProxy does not count dynamic servers either): give `ulimit-n` room for them.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

use crate::config::{Config, Role};

/// Descriptors per proxied connection: the client's and the server's.
pub const PER_CONNECTION: u64 = 2;
/// Kept for standard streams, the pidfile, config reads and the like (HAProxy keeps 10).
const RESERVED: u64 = 10;
/// Descriptors of one runtime thread: its share of the poller and its wake-up.
const PER_THREAD: u64 = 3;
/// Connections one etcd endpoint may hold (the watch and a request, with a reconnect).
const PER_ETCD_ENDPOINT: u64 = 2;
/// The `maxconn` HAProxy falls back to when the limit leaves less room.
const MIN_DERIVED_MAXCONN: u32 = 100;

/// How `maxconn` and the file descriptor limit were settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdPlan {
    /// The process-wide `maxconn` in force.
    pub maxconn: u32,
    /// True when `maxconn` was derived from the limit (the config sets none).
    pub derived: bool,
    /// Descriptors needed beside the connections.
    pub fixed: u64,
    /// Descriptors `maxconn` needs in all: `fixed + 2 * maxconn`.
    pub need: u64,
    /// The soft limit to set.
    pub soft: u64,
    /// The hard limit to set.
    pub hard: u64,
}

/// Why rolelb cannot start with this configuration and limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FdLimitError {
    /// `maxconn` needs more descriptors than the hard limit allows.
    #[error(
        "maxconn {maxconn} needs {need} file descriptors ({PER_CONNECTION} per connection + \
         {fixed} for listeners, admin and stats connections, checks and the runtime), but the \
         file descriptor limit is {limit} and cannot be raised: raise the hard limit \
         (ulimit -Hn, systemd LimitNOFILE=) or lower maxconn"
    )]
    HardLimit {
        /// The `maxconn` asked for.
        maxconn: u32,
        /// Descriptors beside the connections.
        fixed: u64,
        /// Descriptors needed in all.
        need: u64,
        /// The hard limit.
        limit: u64,
    },
    /// `ulimit-n` is below what `maxconn` needs.
    #[error(
        "'ulimit-n {ulimit_n}' is too low for maxconn {maxconn}, which needs {need} file \
         descriptors ({PER_CONNECTION} per connection + {fixed} for listeners, admin and stats \
         connections, checks and the runtime): raise 'ulimit-n' to {need} or lower maxconn"
    )]
    UlimitN {
        /// `ulimit-n`.
        ulimit_n: u64,
        /// The `maxconn` asked for.
        maxconn: u32,
        /// Descriptors beside the connections.
        fixed: u64,
        /// Descriptors needed in all.
        need: u64,
    },
    /// The limit could not be read or set.
    #[error("{what} the file descriptor limit: {source}")]
    System {
        /// `reading` or `setting`.
        what: &'static str,
        /// The system's error.
        source: nix::Error,
    },
}

/// Descriptors `config` needs beside its connections, with `threads` runtime threads and
/// `admin_conns` connections per admin or stats HTTP listener (the stats sockets' sessions
/// are `stats maxconn` over all of them).
pub fn fixed_need(config: &Config, threads: usize, admin_conns: usize) -> u64 {
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    let listeners: usize = config
        .frontends
        .iter()
        .filter(|f| !f.disabled)
        .map(|f| f.binds.len())
        .sum();
    let http_listeners = config.stats.iter().map(|s| s.binds.len()).sum::<usize>()
        + usize::from(config.global.admin.is_some());
    let checks: usize = config
        .backends
        .iter()
        .flat_map(|b| b.servers.iter().map(move |s| (b, s)))
        .map(|(b, s)| {
            let role = b.role_check.is_some() && b.role != Role::Any;
            usize::from(s.check) * (1 + usize::from(role)) + usize::from(s.agent.is_some())
        })
        .sum();
    let etcd: usize = config.etcd.iter().map(|e| e.endpoints.len()).sum();
    RESERVED
        + count(config.global.logs.len())
        + count(listeners)
        + count(http_listeners) * (1 + count(admin_conns))
        + count(config.global.stats_sockets.len())
        + if config.global.stats_sockets.is_empty() {
            0
        } else {
            count(config.global.stats_maxconn())
        }
        + count(checks)
        + count(etcd) * PER_ETCD_ENDPOINT
        // The data path's threads, plus the thread that serves HTTP.
        + (count(threads) + 1) * PER_THREAD
}

/// Settles `maxconn` and the limit to set, from the config's `maxconn` and `ulimit-n`, the
/// descriptors needed beside connections, and the (soft, hard) limit found at startup.
pub fn plan(
    maxconn: Option<u32>,
    ulimit_n: Option<u64>,
    fixed: u64,
    (soft, hard): (u64, u64),
) -> Result<FdPlan, FdLimitError> {
    // An unlimited hard limit is read as the soft one, as HAProxy does.
    let hard = if hard == nix::libc::RLIM_INFINITY {
        soft
    } else {
        hard
    };
    let (maxconn, derived) = match maxconn {
        Some(m) => (m, false),
        // An explicit `ulimit-n` is a budget: maxconn is what fits in it. Otherwise the hard
        // limit is, with HAProxy's floor (a limit too low for it then refuses the start).
        None => match ulimit_n {
            Some(n) => {
                let room = n.saturating_sub(fixed) / PER_CONNECTION;
                (u32::try_from(room).unwrap_or(u32::MAX).max(1), true)
            }
            None => {
                let room = soft.max(hard).saturating_sub(fixed) / PER_CONNECTION;
                let m = u32::try_from(room).unwrap_or(u32::MAX);
                (m.max(MIN_DERIVED_MAXCONN), true)
            }
        },
    };
    let need = fixed + PER_CONNECTION * u64::from(maxconn);
    let soft = match ulimit_n {
        Some(n) if n < need => {
            return Err(FdLimitError::UlimitN {
                ulimit_n: n,
                maxconn,
                fixed,
                need,
            });
        }
        Some(n) => n,
        // Never lower what the service manager gave; raise it to what maxconn needs.
        None => need.max(soft.min(hard)),
    };
    Ok(FdPlan {
        maxconn,
        derived,
        fixed,
        need,
        soft,
        hard: hard.max(soft),
    })
}

/// Reads the limit, settles the plan and sets the limit; a hard limit that must be raised
/// and cannot (rolelb is not privileged) refuses the start.
pub fn apply(
    maxconn: Option<u32>,
    ulimit_n: Option<u64>,
    fixed: u64,
) -> Result<FdPlan, FdLimitError> {
    let boot = getrlimit(Resource::RLIMIT_NOFILE).map_err(|source| FdLimitError::System {
        what: "reading",
        source,
    })?;
    let plan = plan(maxconn, ulimit_n, fixed, boot)?;
    if let Err(source) = setrlimit(Resource::RLIMIT_NOFILE, plan.soft, plan.hard) {
        let hard = if boot.1 == nix::libc::RLIM_INFINITY {
            boot.0
        } else {
            boot.1
        };
        if plan.hard > hard && source == nix::Error::EPERM {
            return Err(FdLimitError::HardLimit {
                maxconn: plan.maxconn,
                fixed: plan.fixed,
                need: plan.soft,
                limit: hard,
            });
        }
        return Err(FdLimitError::System {
            what: "setting",
            source,
        });
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_maxconn_raises_the_soft_limit_to_fit() {
        let p = plan(Some(1000), None, 100, (256, 4096)).expect("fits the hard limit");
        assert_eq!((p.maxconn, p.derived, p.need), (1000, false, 2100));
        assert_eq!((p.soft, p.hard), (2100, 4096));
    }

    #[test]
    fn a_soft_limit_above_the_need_is_kept() {
        let p = plan(Some(10), None, 100, (1024, 4096)).expect("fits");
        assert_eq!((p.need, p.soft), (120, 1024));
    }

    #[test]
    fn derived_maxconn_fills_the_hard_limit() {
        let p = plan(None, None, 100, (256, 1100)).expect("fits");
        assert_eq!(
            (p.maxconn, p.derived, p.need, p.soft),
            (500, true, 1100, 1100)
        );
        // The floor applies even when the limit leaves less room; raising then decides.
        let tight = plan(None, None, 100, (150, 150)).expect("planned");
        assert_eq!((tight.maxconn, tight.need), (100, 300));
    }

    #[test]
    fn ulimit_n_is_honoured_and_must_fit_maxconn() {
        let p = plan(None, Some(500), 100, (1024, 4096)).expect("fits");
        assert_eq!((p.maxconn, p.soft, p.hard), (200, 500, 4096));
        // No floor under an explicit budget.
        let small = plan(None, Some(200), 100, (1024, 4096)).expect("fits");
        assert_eq!((small.maxconn, small.need, small.soft), (50, 200, 200));
        let err = plan(Some(300), Some(500), 100, (1024, 4096)).expect_err("too low");
        assert_eq!(
            err,
            FdLimitError::UlimitN {
                ulimit_n: 500,
                maxconn: 300,
                fixed: 100,
                need: 700
            }
        );
        assert!(err.to_string().contains("raise 'ulimit-n' to 700"));
    }

    #[test]
    fn an_unlimited_hard_limit_reads_as_the_soft_one() {
        let p = plan(None, None, 100, (1100, nix::libc::RLIM_INFINITY)).expect("fits");
        assert_eq!(p.maxconn, 500);
    }

    #[test]
    fn the_fixed_part_counts_listeners_admin_sockets_and_checks() {
        let config = crate::config::parse_with_env(
            &[(
                "t.cfg",
                "global\n stats socket /tmp/x.sock\n admin bind 9000\n\
             defaults\n mode tcp\n timeout connect 1s\n timeout client 1s\n timeout server 1s\n\
             listen pg\n bind 127.0.0.1:5000,127.0.0.1:5001\n server a 127.0.0.1:6000 check\n\
             server b 127.0.0.1:6001 check agent-check agent-port 7000\n server c 127.0.0.1:6002\n",
            )],
            &|_| None,
        )
        .expect("valid config");
        // 10 reserved + 2 binds + admin (1 + 64) + socket (1 + stats maxconn 10) + 3 checks
        // + 2 threads * 3.
        assert_eq!(fixed_need(&config, 1, 64), 10 + 2 + 65 + 11 + 3 + 6);
    }
}
