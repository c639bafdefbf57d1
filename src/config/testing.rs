//! Helpers for the config module's unit tests: parse a one-file config named `t.cfg` with no
//! environment variables, and collect its errors as `t.cfg:LINE: message` strings.

use super::{Config, parse_with_env};

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
