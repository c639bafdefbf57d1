//! The `bind` option table: what may follow `bind ADDR:PORT`. `name`, `accept-proxy`,
//! `defer-accept` and `tfo` mean something to rolelb; `process` and `thread` (which thread
//! accepts) are accepted with a warning.

use super::{Ctx, did_you_mean};
use crate::config::lexer::Word;

/// What the options of one `bind` line set.
#[derive(Debug, Default)]
pub struct BindOptions {
    /// `name N`.
    pub name: Option<String>,
    /// `accept-proxy`: each connection starts with a PROXY protocol header (v1 or v2).
    pub accept_proxy: bool,
    /// `defer-accept`.
    pub defer_accept: bool,
    /// `tfo`.
    pub tfo: bool,
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
];

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
