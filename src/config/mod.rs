//! Configuration: HAProxy-syntax text in, a validated [`Config`] out.
//!
//! `lexer` turns lines into words (quoting, escapes), `units` parses durations and sizes,
//! `keywords` holds one table per section mapping each keyword to its parser, and `build`
//! applies inheritance and cross-references. Every error carries `FILE:LINE`. This module
//! imports nothing of the runtime.

pub mod address;
pub mod build;
pub mod draft;
pub mod keywords;
pub mod lexer;
pub mod model;
pub mod parse;
pub mod units;

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
    let mut config = build::build(reader.global, reader.proxies, &mut diags);
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
