//! The `bind` option table: what may follow `bind ADDR:PORT`. `name`, `id`, `maxconn`,
//! `accept-proxy`,
//! `defer-accept`, `tfo` and the socket options (`transparent`, `v4v6`, `v6only`,
//! `interface`, `backlog`, `mss`, `tcp-ut`) mean something to rolelb; `process`, `thread`
//! (which thread accepts) and `nice` (HAProxy's task priority) are accepted with a warning.

use super::{Ctx, did_you_mean};
use crate::config::lexer::Word;
use crate::config::model::BindSocket;
use crate::config::units::{MAX_COUNT, TimeUnit, parse_duration, parse_int};

/// What the options of one `bind` line set.
#[derive(Debug, Default)]
pub struct BindOptions {
    /// `name N`.
    pub name: Option<String>,
    /// `id N`.
    pub id: Option<u32>,
    /// `maxconn N` (0: none of its own).
    pub maxconn: Option<u32>,
    /// `accept-proxy`: each connection starts with a PROXY protocol header (v1 or v2).
    pub accept_proxy: bool,
    /// `defer-accept`.
    pub defer_accept: bool,
    /// `tfo`.
    pub tfo: bool,
    /// The socket options.
    pub socket: BindSocket,
    /// `v4v6` was given (`v6only` wins over it, as in HAProxy).
    v4v6: bool,
}

/// Parser of one bind option; gets its argument when the option takes one.
pub type BindParser = fn(&mut BindOptions, Option<&str>, &mut Ctx) -> Result<(), String>;

/// One entry of the bind option table.
pub struct BindKeyword {
    /// The option.
    pub name: &'static str,
    /// Whether it takes one argument.
    pub takes_arg: bool,
    /// Its parser.
    pub parse: BindParser,
}

const fn kw(name: &'static str, takes_arg: bool, parse: BindParser) -> BindKeyword {
    BindKeyword {
        name,
        takes_arg,
        parse,
    }
}

/// The bind options.
pub const BIND_KEYWORDS: &[BindKeyword] = &[
    kw("name", true, name),
    kw("accept-proxy", false, accept_proxy),
    kw("process", true, ignored),
    kw("thread", true, ignored),
    kw("defer-accept", false, |o, _, _| {
        o.defer_accept = true;
        Ok(())
    }),
    kw("tfo", false, |o, _, _| {
        o.tfo = true;
        Ok(())
    }),
    kw("id", true, id),
    kw("maxconn", true, |o, arg, _| {
        let n = parse_int(arg.unwrap_or_default(), "'maxconn'", 0, MAX_COUNT)?;
        o.maxconn = u32::try_from(n).ok().filter(|&n| n > 0);
        Ok(())
    }),
    kw("nice", true, nice),
    kw("transparent", false, |o, _, _| {
        o.socket.transparent = true;
        Ok(())
    }),
    kw("v4v6", false, |o, _, _| {
        o.v4v6 = true;
        Ok(())
    }),
    kw("v6only", false, |o, _, _| {
        o.socket.v6only = Some(true);
        Ok(())
    }),
    kw("interface", true, |o, arg, _| {
        let name = arg.unwrap_or_default();
        // The kernel's IFNAMSIZ: 15 bytes and the terminating NUL.
        if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', '\0']) {
            return Err(format!(
                "'interface {name}': an interface name has 1 to 15 characters, no '/' nor space"
            ));
        }
        o.socket.interface = Some(name.to_string());
        Ok(())
    }),
    kw("backlog", true, |o, arg, _| {
        let n = parse_int(arg.unwrap_or_default(), "'backlog'", 0, MAX_COUNT)?;
        o.socket.backlog = u32::try_from(n).ok().filter(|&n| n > 0);
        Ok(())
    }),
    kw("mss", true, mss),
    kw("tcp-ut", true, |o, arg, _| {
        let text = arg.unwrap_or_default();
        let ut = parse_duration(text, TimeUnit::Millis).map_err(|e| format!("'tcp-ut': {e}"))?;
        o.socket.tcp_ut = Some(ut).filter(|d| !d.is_zero());
        Ok(())
    }),
];

/// `id N`: 1 to 2^31-1, as HAProxy (which says "custom id has to be > 0").
fn id(opts: &mut BindOptions, arg: Option<&str>, _: &mut Ctx) -> Result<(), String> {
    let text = arg.unwrap_or_default();
    let n = parse_int(text, "'id'", 1, MAX_COUNT)
        .map_err(|e| format!("{e} (a listener id is an integer above 0)"))?;
    opts.id = u32::try_from(n).ok();
    Ok(())
}

/// `mss N`: an absolute value of 1 to 65535, negative to lower each connection's MSS.
fn mss(opts: &mut BindOptions, arg: Option<&str>, _: &mut Ctx) -> Result<(), String> {
    let text = arg.unwrap_or_default();
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let n = parse_int(digits, "'mss'", 1, 65535).map_err(|_| {
        format!("'mss {text}': expects an MSS with an absolute value between 1 and 65535")
    })?;
    let n = i32::try_from(n).map_err(|_| format!("'mss {text}' is out of range"))?;
    opts.socket.mss = Some(if negative { -n } else { n });
    Ok(())
}

/// `nice N`: HAProxy's priority of the listener's tasks; rolelb has no such priorities.
fn nice(_: &mut BindOptions, arg: Option<&str>, ctx: &mut Ctx) -> Result<(), String> {
    let text = arg.unwrap_or_default();
    let digits = text.strip_prefix('-').unwrap_or(text);
    parse_int(digits, "'nice'", 0, 1024)
        .map_err(|_| format!("'nice {text}': the allowed range is -1024..1024"))?;
    ctx.warn(
        "bind option 'nice' is accepted for compatibility and ignored by rolelb: it has no \
         task priorities, every connection is served in turn",
    );
    Ok(())
}

fn name(opts: &mut BindOptions, arg: Option<&str>, _: &mut Ctx) -> Result<(), String> {
    opts.name = arg.map(str::to_string);
    Ok(())
}

fn accept_proxy(opts: &mut BindOptions, _: Option<&str>, _: &mut Ctx) -> Result<(), String> {
    opts.accept_proxy = true;
    Ok(())
}

fn ignored(_: &mut BindOptions, _: Option<&str>, ctx: &mut Ctx) -> Result<(), String> {
    let kw = ctx.keyword.to_string();
    ctx.warn(format!(
        "bind option '{kw}' is accepted for compatibility and ignored by rolelb"
    ));
    Ok(())
}

/// Parses the options after a bind address.
pub fn parse_options(args: &[Word], ctx: &mut Ctx) -> Result<BindOptions, String> {
    let mut opts = BindOptions::default();
    let mut i = 0;
    while let Some(word) = args.get(i) {
        let opt = word.as_str();
        let Some(entry) = BIND_KEYWORDS.iter().find(|k| k.name == opt) else {
            return Err(unknown(opt));
        };
        let arg = if entry.takes_arg {
            let Some(value) = args.get(i + 1) else {
                return Err(format!("bind option '{opt}' expects an argument"));
            };
            i += 1;
            Some(value.as_str())
        } else {
            None
        };
        let mut sub = Ctx {
            keyword: entry.name,
            args: &[],
            loc: ctx.loc,
            diags: ctx.diags,
        };
        (entry.parse)(&mut opts, arg, &mut sub)?;
        i += 1;
    }
    if opts.v4v6 && opts.socket.v6only.is_none() {
        opts.socket.v6only = Some(false);
    }
    Ok(opts)
}

fn unknown(opt: &str) -> String {
    match opt {
        "ssl" | "crt" | "crt-list" | "ca-file" | "alpn" | "verify" => format!(
            "bind option '{opt}' is not supported: rolelb does not terminate TLS; pass TLS through to the servers"
        ),
        "accept-netscaler-cip" => format!(
            "bind option '{opt}' is not supported: rolelb reads PROXY protocol headers only ('accept-proxy')"
        ),
        _ => format!(
            "bind option '{opt}' is not supported by rolelb (known: {}){}",
            BIND_KEYWORDS
                .iter()
                .map(|k| k.name)
                .collect::<Vec<_>>()
                .join(", "),
            did_you_mean(opt, BIND_KEYWORDS.iter().map(|k| k.name))
        ),
    }
}
