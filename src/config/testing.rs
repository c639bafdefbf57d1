//! Helpers for the config module's unit tests: parse a one-file config named `t.cfg` with no
//! environment variables, and collect its errors as `t.cfg:LINE: message` strings; split a
//! line into words, and read one `server` line's options.

use super::draft::{Diags, ServerDraft};
use super::keywords::Ctx;
use super::lexer::Word;
use super::model::Loc;
use super::{Config, parse_with_env};

/// The words of `line`, split at spaces (no quotes, no variables).
pub fn words(line: &str) -> Vec<Word> {
    line.split_whitespace()
        .map(|w| Word::new(w.as_bytes().to_vec()))
        .collect()
}

/// `t:1`, where the one-line tests say their text is.
pub fn loc() -> Loc {
    Loc {
        file: "t".into(),
        line: 1,
    }
}

/// The options of a `server s ...` line (`line` is what follows the address): the draft,
/// the verdict and the diagnostics.
pub fn server_options(line: &str) -> (ServerDraft, Result<(), String>, Diags) {
    let loc = loc();
    let mut diags = Diags::default();
    let mut srv = ServerDraft::new("s".into(), loc.clone());
    let mut ctx = Ctx {
        keyword: "server",
        args: &[],
        loc: &loc,
        diags: &mut diags,
    };
    let r = super::keywords::server::parse_options(&mut srv, &words(line), &mut ctx);
    (srv, r, diags)
}

/// Parses `text` as `t.cfg`; errors as strings.
pub fn parse(text: &str) -> Result<Config, Vec<String>> {
    parse_with_env(&[("t.cfg", text)], &|_| None)
        .map_err(|e| e.0.iter().map(ToString::to_string).collect())
}

/// The errors of `text`, each checked not to leak the test password `s3cret`.
pub fn errors(text: &str) -> Vec<String> {
    let errors = parse(text).expect_err("expected errors");
    for e in &errors {
        assert!(!e.contains("s3cret"), "password leaked: {e}");
    }
    errors
}

/// The configuration of one `global` line.
pub fn global_line(line: &str) -> Config {
    parse(&format!("global\n    {line}\n")).unwrap_or_else(|e| panic!("{line}: {e:?}"))
}

/// The error of one `global` line, checked to name its line (`t.cfg:2: `).
pub fn global_error(line: &str) -> String {
    let e = errors(&format!("global\n    {line}\n"));
    assert!(e[0].starts_with("t.cfg:2: "), "{e:?}");
    e[0].clone()
}
