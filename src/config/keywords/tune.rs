//! The `global` section's `tune.*` keywords: those rolelb acts on (`tune.bufsize`,
//! `tune.maxaccept`, `tune.pipesize`, the socket buffer sizes `tune.rcvbuf.client`,
//! `tune.rcvbuf.server`, `tune.sndbuf.client`, `tune.sndbuf.server`), read as HAProxy 2.6
//! reads them, and the list of HAProxy's other ones, accepted with a warning.

use super::Ctx;
use crate::config::model::{Global, MaxAccept};

/// HAProxy 2.6's other `tune.*` keywords (those Debian's build knows): they size or pace
/// things a TCP balancer without HTTP, TLS, Lua, compression, splicing or stick tables does not
/// have, so rolelb accepts them with a warning naming them.
pub const TUNE_IGNORED: &[&str] = &[
    "tune.buffers.limit",
    "tune.buffers.reserve",
    "tune.comp.maxlevel",
    "tune.fail-alloc",
    "tune.h2.header-table-size",
    "tune.h2.initial-window-size",
    "tune.h2.max-concurrent-streams",
    "tune.h2.max-frame-size",
    "tune.http.cookielen",
    "tune.http.logurilen",
    "tune.http.maxhdr",
    "tune.idle-pool.shared",
    "tune.idletimer",
    "tune.listener.multi-queue",
    "tune.lua.forced-yield",
    "tune.lua.maxmem",
    "tune.lua.service-timeout",
    "tune.lua.session-timeout",
    "tune.lua.task-timeout",
    "tune.maxpollevents",
    "tune.maxrewrite",
    "tune.pattern.cache-size",
    "tune.pool-high-fd-ratio",
    "tune.pool-low-fd-ratio",
    "tune.recv_enough",
    "tune.runqueue-depth",
    "tune.sched.low-latency",
    "tune.ssl.cachesize",
    "tune.ssl.capture-buffer-size",
    "tune.ssl.capture-cipherlist-size",
    "tune.ssl.default-dh-param",
    "tune.ssl.force-private-cache",
    "tune.ssl.hard-maxrecord",
    "tune.ssl.keylog",
    "tune.ssl.lifetime",
    "tune.ssl.maxrecord",
    "tune.ssl.ssl-ctx-cache-size",
    "tune.vars.check-max-size",
    "tune.vars.global-max-size",
    "tune.vars.proc-max-size",
    "tune.vars.reqres-max-size",
    "tune.vars.sess-max-size",
    "tune.vars.txn-max-size",
];

pub(super) fn tune_ignored(_: &mut Global, ctx: &mut Ctx) -> Result<(), String> {
    let kw = ctx.keyword.to_string();
    ctx.arg(0, "a value")?;
    ctx.warn(format!(
        "'{kw}' is accepted and ignored: it tunes a part of HAProxy (HTTP, TLS, Lua, splicing, \
         pools, polling...) that rolelb does not have; only tune.bufsize, tune.maxaccept, \
         tune.pipesize and the socket buffer sizes (tune.rcvbuf.*, tune.sndbuf.*) act"
    ));
    Ok(())
}

/// HAProxy reads `tune.*` numbers with `atol()`, so `16k` would be 16 there: rolelb takes
/// plain decimal integers only, and says why when it sees anything else.
fn tune_integer(ctx: &Ctx, text: &str) -> Result<i64, String> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "'{}' expects a plain integer, got '{text}' (HAProxy reads only its leading digits, \
             so size units or suffixes would silently change the value)",
            ctx.keyword
        ));
    }
    text.parse::<i64>()
        .map_err(|_| format!("'{}': '{text}' is out of range", ctx.keyword))
}

/// The smallest `tune.bufsize` HAProxy 2.6 starts with: below it, its built-in HTTP error
/// messages (which every proxy carries, even in TCP mode) no longer fit in a buffer and it
/// refuses the configuration (or crashes, under 48 bytes).
const MIN_BUFSIZE: i64 = 352;

/// `tune.bufsize N`: the bytes rolelb holds per direction of a session (HAProxy's buffer
/// size), rounded up to a multiple of 16 as HAProxy does on 64-bit machines.
pub(super) fn tune_bufsize(g: &mut Global, ctx: &mut Ctx) -> Result<(), String> {
    ctx.at_most(1)?;
    let n = tune_integer(ctx, ctx.arg(0, "an integer argument (bytes)")?)?;
    let rounded = n
        .checked_add(15)
        .map(|n| n & !15)
        .filter(|n| *n > 0 && *n <= i64::from(i32::MAX))
        .ok_or_else(|| {
            format!(
                "'tune.bufsize' expects a positive integer argument up to {}, got '{n}'",
                i32::MAX & !15
            )
        })?;
    if rounded < MIN_BUFSIZE {
        return Err(format!(
            "'tune.bufsize {n}' is too small: HAProxy 2.6 refuses buffers under {MIN_BUFSIZE} \
             bytes (its built-in error messages must fit in one)"
        ));
    }
    g.tune_bufsize = Some(usize::try_from(rounded).map_err(|_| "tune.bufsize is too large")?);
    Ok(())
}

/// `tune.maxaccept N`: connections one listener accepts in a row before letting other work
/// run; `-1` is no limit, `0` HAProxy's default (4).
pub(super) fn tune_maxaccept(g: &mut Global, ctx: &mut Ctx) -> Result<(), String> {
    ctx.at_most(1)?;
    let n = tune_integer(ctx, ctx.arg(0, "an integer argument")?)?;
    if g.tune_maxaccept.is_some() {
        // HAProxy alerts and keeps the first value.
        ctx.warn("'tune.maxaccept' already specified; the first value is kept");
        return Ok(());
    }
    g.tune_maxaccept = match n {
        -1 => Some(MaxAccept::Unlimited),
        0 => None,
        n => Some(MaxAccept::Batch(
            u32::try_from(n)
                .ok()
                .filter(|n| i32::try_from(*n).is_ok())
                .and_then(std::num::NonZeroU32::new)
                .ok_or_else(|| {
                    "'tune.maxaccept' expects -1 or an integer from 0 to 2147483647".to_string()
                })?,
        )),
    };
    Ok(())
}

/// `tune.pipesize N`: the size asked of the kernel for each pipe splicing makes
/// (`F_SETPIPE_SZ`, which rounds it up to a power of two pages); 0 keeps the kernel's
/// default, as in HAProxy. Above 2^31 the kernel refuses every size, so `-c` does.
pub(super) fn tune_pipesize(g: &mut Global, ctx: &mut Ctx) -> Result<(), String> {
    ctx.at_most(1)?;
    let n = tune_integer(ctx, ctx.arg(0, "an integer argument (bytes)")?)?;
    if !(0..=1 << 31).contains(&n) {
        return Err(format!(
            "'tune.pipesize' expects a size in bytes from 0 (the kernel's default) to {}, got '{n}'",
            1u64 << 31
        ));
    }
    g.tune_pipesize = usize::try_from(n).ok().filter(|&n| n > 0);
    Ok(())
}

/// `tune.rcvbuf.client N`, `tune.rcvbuf.server N`, `tune.sndbuf.client N`,
/// `tune.sndbuf.server N`: the receive or send buffer size asked of the kernel (`SO_RCVBUF`,
/// `SO_SNDBUF`) for each connection rolelb accepts from a client, or opens to a server (before
/// it connects, so a receive buffer also sets the window scale offered; health checks too),
/// as HAProxy 2.6 sets them. The kernel doubles the value for its bookkeeping and caps it at
/// `net.core.rmem_max` / `wmem_max`; a buffer set this way is no longer autotuned. 0 is "not
/// set" (the kernel's default, autotuned); given twice, the first value is kept, as HAProxy
/// does (with an alert).
pub(super) fn tune_socket_buffer(g: &mut Global, ctx: &mut Ctx) -> Result<(), String> {
    ctx.at_most(1)?;
    let kw = ctx.keyword;
    let n = tune_integer(ctx, ctx.arg(0, "an integer argument (bytes)")?)?;
    let size = u32::try_from(n)
        .ok()
        .filter(|n| i32::try_from(*n).is_ok())
        .ok_or_else(|| {
            format!(
                "'{kw}' expects a size in bytes from 0 (the kernel's default) to {}, got '{n}'",
                i32::MAX
            )
        })?;
    let slot = match kw {
        "tune.rcvbuf.client" => &mut g.client_buffers.rcv,
        "tune.sndbuf.client" => &mut g.client_buffers.snd,
        "tune.rcvbuf.server" => &mut g.server_buffers.rcv,
        _ => &mut g.server_buffers.snd,
    };
    if *slot != 0 {
        ctx.warn(format!("'{kw}' already specified: the first value is kept"));
        return Ok(());
    }
    *slot = size;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use crate::config::testing::{global_error as error, global_line as global, parse};
    use crate::config::{BufferSizes, DEFAULT_BUFSIZE, MaxAccept};

    #[test]
    fn tune_bufsize_rounds_up_like_haproxy_and_refuses_what_it_refuses() {
        assert_eq!(global("maxconn 10").global.bufsize(), DEFAULT_BUFSIZE);
        assert_eq!(global("tune.bufsize 1024").global.bufsize(), 1024);
        assert_eq!(global("tune.bufsize 1000").global.bufsize(), 1008);
        assert_eq!(global("tune.bufsize 337").global.bufsize(), 352);
        assert!(error("tune.bufsize 336").contains("too small"));
        assert!(error("tune.bufsize 0").contains("positive integer"));
        assert!(error("tune.bufsize -16").contains("positive integer"));
        assert!(error("tune.bufsize 2147483647").contains("positive integer"));
        // HAProxy's atol() would read '16k' as 16: refused rather than guessed.
        assert!(error("tune.bufsize 16k").contains("plain integer"));
        assert!(error("tune.bufsize").contains("expects"));
    }

    #[test]
    fn tune_maxaccept_values() {
        let batch = |n| Some(MaxAccept::Batch(NonZeroU32::new(n).expect("non-zero")));
        assert_eq!(global("tune.maxaccept 64").global.tune_maxaccept, batch(64));
        assert_eq!(
            global("tune.maxaccept -1").global.tune_maxaccept,
            Some(MaxAccept::Unlimited)
        );
        // 0 is "not set": HAProxy's default of 4.
        assert_eq!(
            global("tune.maxaccept 0").global.maxaccept(),
            batch(4).unwrap()
        );
        assert!(error("tune.maxaccept 3000000000").contains("-1 or an integer"));
        assert!(error("tune.maxaccept -5").contains("-1 or an integer"));
        assert!(error("tune.maxaccept 1x").contains("plain integer"));
        // Given twice: HAProxy alerts and keeps the first.
        let c = parse("global\n    tune.maxaccept 8\n    tune.maxaccept 2\n").expect("valid");
        assert_eq!(c.global.tune_maxaccept, batch(8));
        assert!(c.warnings.iter().any(|w| w.message.contains("already")));
    }

    #[test]
    fn tune_pipesize_takes_bytes_and_0_is_the_kernels_default() {
        assert_eq!(
            global("tune.pipesize 262144").global.tune_pipesize,
            Some(262144)
        );
        assert_eq!(global("tune.pipesize 0").global.tune_pipesize, None);
        assert_eq!(global("maxconn 10").global.tune_pipesize, None);
        assert!(error("tune.pipesize 64k").contains("plain integer"));
        assert!(error("tune.pipesize -1").contains("from 0"));
        assert!(error("tune.pipesize 2147483649").contains("from 0"));
        assert!(error("tune.pipesize").contains("expects"));
    }

    #[test]
    fn other_tune_keywords_warn_by_name_unknown_ones_are_errors() {
        let c = global("tune.ssl.cachesize 1000");
        assert!(
            c.warnings
                .iter()
                .any(|w| w.message.contains("'tune.ssl.cachesize'")),
            "{:?}",
            c.warnings
        );
        assert!(error("tune.foo 1").contains("unknown keyword 'tune.foo'"));
        assert!(error("tune.maxpollevents").contains("expects a value"));
        assert!(error("tune.chksize 100").contains("tune.bufsize is used instead"));
    }

    #[test]
    fn socket_buffer_sizes_are_plain_bytes_per_side_and_0_is_the_kernels() {
        let c = parse(
            "global\n    tune.rcvbuf.client 65536\n    tune.sndbuf.client 32768\n    \
             tune.rcvbuf.server 0\n    tune.sndbuf.server 2147483647\n",
        )
        .expect("valid");
        assert_eq!(
            c.global.client_buffers,
            BufferSizes {
                snd: 32768,
                rcv: 65536
            }
        );
        assert_eq!(
            c.global.server_buffers,
            BufferSizes {
                snd: 2_147_483_647,
                rcv: 0
            }
        );
        assert_eq!(
            global("maxconn 1").global.server_buffers,
            BufferSizes::default()
        );
        // HAProxy's atol() would read '256k' as 256: refused rather than guessed.
        assert!(error("tune.rcvbuf.client 256k").contains("plain integer"));
        assert!(error("tune.sndbuf.server -1").contains("from 0"));
        assert!(error("tune.sndbuf.client 2147483648").contains("from 0"));
        assert!(error("tune.rcvbuf.server").contains("expects"));
        assert!(error("tune.rcvbuf.server 1 2").contains("tune.rcvbuf.server"));
        // Given twice: HAProxy alerts and keeps the first; after 0 ("not set") it takes the next.
        let c = parse(
            "global\n    tune.sndbuf.server 4096\n    tune.sndbuf.server 8192\n    \
             tune.rcvbuf.server 0\n    tune.rcvbuf.server 8192\n",
        )
        .expect("valid");
        assert_eq!(
            (c.global.server_buffers.snd, c.global.server_buffers.rcv),
            (4096, 8192)
        );
        assert!(
            c.warnings
                .iter()
                .any(|w| w.message.contains("already specified"))
        );
    }
}
