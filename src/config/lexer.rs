//! HAProxy's line syntax: text in, one [`Line`] of words per non-empty line out.
//!
//! Behaves like HAProxy's own line parser: `#` starts a comment outside quotes, words are
//! split on spaces and tabs, single quotes take everything literally, double quotes allow
//! backslash escapes and `$VAR` / `${VAR}` / `${VAR-default}` environment expansion, and
//! outside quotes `\ `, `\#`, `\\`, `\'`, `\"`, `\xHH`, `\r`, `\n`, `\t` are escapes.
//! The conditional blocks `.if` / `.elif` / `.else` / `.endif` and the `.diag`, `.notice`,
//! `.warning`, `.alert` directives are handled here too, so later stages only see the
//! lines that apply.

use std::sync::Arc;

use super::model::{Diagnostic, Loc};

/// One word of a line, escapes and quotes removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    /// The decoded bytes (`\xHH` may produce bytes that are not UTF-8).
    pub bytes: Vec<u8>,
    /// The same bytes as text (invalid UTF-8 replaced), for keywords and names.
    pub text: String,
}

impl Word {
    /// Builds a word from decoded bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Word { bytes, text }
    }

    /// The word as text.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// The words of one configuration line and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// `FILE:LINE`.
    pub loc: Loc,
    /// The words, never empty.
    pub words: Vec<Word>,
}

/// What the lexer found besides lines: errors and warnings, each with its location.
#[derive(Debug, Default)]
pub struct LexOutput {
    /// Non-empty lines, in order.
    pub lines: Vec<Line>,
    /// Fatal findings (unterminated quote, bad escape, `.alert`...).
    pub errors: Vec<Diagnostic>,
    /// Non-fatal findings (`.warning`).
    pub warnings: Vec<Diagnostic>,
}

/// Splits `text` (the content of `file`) into lines of words; `env` looks up variables.
pub fn lex(file: &Arc<str>, text: &str, env: &dyn Fn(&str) -> Option<String>) -> LexOutput {
    let mut out = LexOutput::default();
    let mut cond = CondStack::default();
    for (i, raw) in text.split('\n').enumerate() {
        let loc = Loc {
            file: file.clone(),
            line: i + 1,
        };
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let words = match split_line(raw, env) {
            Ok(words) => words,
            Err(message) => {
                // An unparseable line inside a skipped block is still an error in HAProxy.
                out.errors.push(Diagnostic { loc, message });
                continue;
            }
        };
        let Some(first) = words.first() else {
            continue;
        };
        if first.text.starts_with('.') {
            directive(&mut cond, &mut out, loc, &words, env);
            continue;
        }
        if cond.active() {
            out.lines.push(Line { loc, words });
        }
    }
    if let Some(open) = cond.frames.last() {
        out.errors.push(Diagnostic {
            loc: open.loc.clone(),
            message: "'.if' block is not closed by '.endif' before the end of the file".into(),
        });
    }
    out
}

/// One open `.if` block.
#[derive(Debug)]
struct CondFrame {
    loc: Loc,
    /// Lines of the block's current branch are kept.
    taking: bool,
    /// A branch of this block was already taken (later `.elif`/`.else` are skipped).
    taken: bool,
    /// The enclosing block was active when this one opened.
    parent_active: bool,
    /// `.else` was seen.
    in_else: bool,
}

#[derive(Debug, Default)]
struct CondStack {
    frames: Vec<CondFrame>,
}

impl CondStack {
    fn active(&self) -> bool {
        self.frames
            .last()
            .is_none_or(|f| f.parent_active && f.taking)
    }
}

fn directive(
    cond: &mut CondStack,
    out: &mut LexOutput,
    loc: Loc,
    words: &[Word],
    env: &dyn Fn(&str) -> Option<String>,
) {
    let name = words[0].text.as_str();
    let rest: Vec<&str> = words[1..].iter().map(|w| w.as_str()).collect();
    let err = |out: &mut LexOutput, loc: Loc, message: String| {
        out.errors.push(Diagnostic { loc, message });
    };
    match name {
        ".if" => {
            let parent_active = cond.active();
            let value = if parent_active {
                match eval_condition(&rest, env) {
                    Ok(v) => v,
                    Err(m) => {
                        err(out, loc.clone(), m);
                        false
                    }
                }
            } else {
                false
            };
            cond.frames.push(CondFrame {
                loc,
                taking: value,
                taken: value,
                parent_active,
                in_else: false,
            });
        }
        ".elif" | ".else" => {
            let Some(frame) = cond.frames.last_mut() else {
                return err(out, loc, format!("'{name}' without a matching '.if'"));
            };
            if frame.in_else {
                return err(out, loc, format!("'{name}' after '.else'"));
            }
            if name == ".else" {
                frame.in_else = true;
                frame.taking = !frame.taken;
                frame.taken = true;
                return;
            }
            if frame.taken || !frame.parent_active {
                frame.taking = false;
                return;
            }
            let value = match eval_condition(&rest, env) {
                Ok(v) => v,
                Err(m) => {
                    err(out, loc, m);
                    false
                }
            };
            frame.taking = value;
            frame.taken = value;
        }
        ".endif" => {
            let closed = cond.frames.pop();
            if closed.is_none() {
                err(out, loc, "'.endif' without a matching '.if'".into());
            }
        }
        ".diag" | ".notice" | ".warning" | ".alert" => {
            if !cond.active() {
                return;
            }
            let text = rest.join(" ");
            match name {
                ".alert" => err(out, loc, text),
                ".warning" => out.warnings.push(Diagnostic { loc, message: text }),
                _ => {}
            }
        }
        _ if cond.active() => err(
            out,
            loc,
            format!(
                "unknown directive '{name}' (known: .if .elif .else .endif .diag .notice .warning .alert)"
            ),
        ),
        _ => {}
    }
}

/// Evaluates a `.if` condition: terms joined by `&&` / `||` (left to right), each term a
/// number, `!term`, `defined(VAR)`, `streq(A,B)`, `strneq(A,B)` or `feature(NAME)`.
fn eval_condition(words: &[&str], env: &dyn Fn(&str) -> Option<String>) -> Result<bool, String> {
    let expr = words.join(" ");
    if expr.trim().is_empty() {
        return Err("'.if' needs a condition".into());
    }
    let mut result: Option<bool> = None;
    let mut pending_op: Option<&str> = None;
    for token in tokenize_condition(&expr) {
        if token == "&&" || token == "||" {
            if result.is_none() || pending_op.is_some() {
                return Err(format!("misplaced '{token}' in condition '{expr}'"));
            }
            pending_op = Some(if token == "&&" { "&&" } else { "||" });
            continue;
        }
        let value = eval_term(&token, env)?;
        result = Some(match (result, pending_op.take()) {
            (None, _) => value,
            (Some(acc), Some("&&")) => acc && value,
            (Some(acc), Some(_)) => acc || value,
            (Some(_), None) => return Err(format!("missing '&&' or '||' in condition '{expr}'")),
        });
    }
    if pending_op.is_some() {
        return Err(format!("condition '{expr}' ends with an operator"));
    }
    result.ok_or_else(|| format!("empty condition '{expr}'"))
}

fn tokenize_condition(expr: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut cur = String::new();
    let mut depth = 0usize;
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if depth == 0 && (c == '&' && next == Some('&') || c == '|' && next == Some('|')) {
            if !cur.trim().is_empty() {
                tokens.push(cur.trim().to_string());
            }
            cur.clear();
            tokens.push(format!("{c}{c}"));
            i += 2;
            continue;
        }
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        cur.push(c);
        i += 1;
    }
    if !cur.trim().is_empty() {
        tokens.push(cur.trim().to_string());
    }
    tokens
}

fn eval_term(term: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<bool, String> {
    if let Some(inner) = term.strip_prefix('!') {
        return eval_term(inner.trim(), env).map(|v| !v);
    }
    if let Ok(n) = term.parse::<i64>() {
        return Ok(n != 0);
    }
    let (func, args) = match term.split_once('(') {
        Some((f, rest)) if rest.ends_with(')') => (f.trim(), &rest[..rest.len() - 1]),
        _ => return Err(format!("cannot evaluate condition term '{term}'")),
    };
    let args: Vec<&str> = args.split(',').map(str::trim).collect();
    match (func, args.as_slice()) {
        ("defined", [name]) => Ok(env(name).is_some()),
        ("streq", [a, b]) => Ok(a == b),
        ("strneq", [a, b]) => Ok(a != b),
        // rolelb has none of HAProxy's optional build features.
        ("feature", [_]) => Ok(false),
        _ => Err(format!(
            "unsupported condition '{term}' (rolelb knows defined(), streq(), strneq(), feature(), numbers)"
        )),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Quote {
    None,
    Single,
    Double,
}

/// Splits one line into words. An error names the problem (the caller adds `FILE:LINE`).
pub fn split_line(line: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Vec<Word>, String> {
    let bytes = line.as_bytes();
    let mut words = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    // A word exists once anything (even an empty quoted string) was seen.
    let mut in_word = false;
    let mut quote = Quote::None;
    let mut quote_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match quote {
            Quote::Single => {
                if c == b'\'' {
                    quote = Quote::None;
                } else {
                    cur.push(c);
                }
                i += 1;
            }
            Quote::Double | Quote::None => {
                if quote == Quote::None && (c == b' ' || c == b'\t') {
                    if in_word {
                        words.push(Word::new(std::mem::take(&mut cur)));
                        in_word = false;
                    }
                    i += 1;
                    continue;
                }
                if quote == Quote::None && c == b'#' {
                    break;
                }
                in_word = true;
                match c {
                    b'\\' => i = escape(bytes, i, &mut cur)?,
                    b'\'' if quote == Quote::None => {
                        quote = Quote::Single;
                        quote_start = i;
                        i += 1;
                    }
                    b'"' => {
                        if quote == Quote::None {
                            quote = Quote::Double;
                            quote_start = i;
                        } else {
                            quote = Quote::None;
                        }
                        i += 1;
                    }
                    b'$' if quote == Quote::Double => i = expand_var(line, i, env, &mut cur)?,
                    _ => {
                        cur.push(c);
                        i += 1;
                    }
                }
            }
        }
    }
    if quote != Quote::None {
        let kind = if quote == Quote::Single {
            "single"
        } else {
            "double"
        };
        return Err(format!(
            "unterminated {kind} quote starting at column {} (close it on the same line)",
            quote_start + 1
        ));
    }
    if in_word {
        words.push(Word::new(cur));
    }
    Ok(words)
}

/// Decodes the escape starting at `bytes[i] == b'\\'`; returns the index after it.
fn escape(bytes: &[u8], i: usize, cur: &mut Vec<u8>) -> Result<usize, String> {
    let Some(&next) = bytes.get(i + 1) else {
        return Err("backslash at the end of the line (line continuation is not supported)".into());
    };
    let decoded = match next {
        b' ' | b'#' | b'\\' | b'\'' | b'"' | b'$' => next,
        b'r' => b'\r',
        b'n' => b'\n',
        b't' => b'\t',
        b'x' => {
            let hex = bytes.get(i + 2..i + 4).unwrap_or_default();
            let value = std::str::from_utf8(hex)
                .ok()
                .filter(|h| h.len() == 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            let Some(value) = value else {
                return Err("invalid '\\x' escape: expected two hex digits, e.g. '\\x0a'".into());
            };
            cur.push(value);
            return Ok(i + 4);
        }
        // Like HAProxy: an unknown escape keeps the backslash and the character.
        other => {
            cur.push(b'\\');
            other
        }
    };
    cur.push(decoded);
    Ok(i + 2)
}

/// Expands `$NAME`, `${NAME}` or `${NAME-default}` starting at `line[i] == '$'`.
fn expand_var(
    line: &str,
    i: usize,
    env: &dyn Fn(&str) -> Option<String>,
    cur: &mut Vec<u8>,
) -> Result<usize, String> {
    let bytes = line.as_bytes();
    let is_name = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    if bytes.get(i + 1) == Some(&b'{') {
        let Some(close) = line[i + 2..].find('}') else {
            return Err("unterminated '${' in variable reference".into());
        };
        let inner = &line[i + 2..i + 2 + close];
        let (name, default) = match inner.split_once('-') {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        if name.is_empty() || !name.bytes().all(is_name) {
            return Err(format!("invalid variable name '{name}' in '${{{inner}}}'"));
        }
        let value = env(name).or_else(|| default.map(str::to_string));
        cur.extend_from_slice(value.unwrap_or_default().as_bytes());
        return Ok(i + 3 + close);
    }
    let starts_name = bytes
        .get(i + 1)
        .is_some_and(|&b| b.is_ascii_alphabetic() || b == b'_');
    if !starts_name {
        return Err(format!(
            "forbidden first character in environment variable name at column {} (write '\\$' or use single quotes for a literal '$')",
            i + 2
        ));
    }
    let len = bytes[i + 1..].iter().take_while(|&&b| is_name(b)).count();
    let name = &line[i + 1..i + 1 + len];
    cur.extend_from_slice(env(name).unwrap_or_default().as_bytes());
    Ok(i + 1 + len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn words(line: &str) -> Vec<String> {
        split_line(line, &no_env)
            .unwrap()
            .into_iter()
            .map(|w| w.text)
            .collect()
    }

    #[test]
    fn splits_on_spaces_and_tabs() {
        assert_eq!(
            words("  server\ts1   127.0.0.1:5432 "),
            ["server", "s1", "127.0.0.1:5432"]
        );
    }

    #[test]
    fn comments_end_the_line_outside_quotes_only() {
        assert_eq!(words("bind :5000 # writes"), ["bind", ":5000"]);
        assert_eq!(words("a '#x' \"#y\" \\#z"), ["a", "#x", "#y", "#z"]);
        assert!(words("   # only a comment").is_empty());
    }

    #[test]
    fn single_quotes_are_literal() {
        assert_eq!(words(r"send 'a\nb $X'"), ["send", r"a\nb $X"]);
    }

    #[test]
    fn double_quotes_decode_escapes_and_join_adjacent_text() {
        assert_eq!(words(r#"x "a b\"c"d"#), ["x", "a b\"cd"]);
        assert_eq!(words(r#"x """#), ["x", ""]);
    }

    #[test]
    fn backslash_escapes_outside_quotes() {
        let w = split_line(r"send PING\r\n a\ b \\ \x41\x00", &no_env).unwrap();
        assert_eq!(w[1].bytes, b"PING\r\n");
        assert_eq!(w[2].text, "a b");
        assert_eq!(w[3].text, "\\");
        assert_eq!(w[4].bytes, b"A\0");
    }

    #[test]
    fn bad_escapes_and_quotes_are_errors() {
        assert!(split_line(r"x \xZZ", &no_env).unwrap_err().contains("hex"));
        assert!(split_line(r"x \x4", &no_env).is_err());
        assert!(
            split_line("x 'abc", &no_env)
                .unwrap_err()
                .contains("unterminated single quote")
        );
        assert!(
            split_line("x \"abc", &no_env)
                .unwrap_err()
                .contains("unterminated double quote")
        );
        assert!(
            split_line("x abc\\", &no_env)
                .unwrap_err()
                .contains("end of the line")
        );
        assert!(
            split_line(r#"x "^a$""#, &no_env)
                .unwrap_err()
                .contains("variable name")
        );
        assert_eq!(
            split_line(r#"x "a\$" 'b$'"#, &no_env).unwrap()[1].text,
            "a$"
        );
    }

    #[test]
    fn variables_expand_in_double_quotes_only() {
        let env = |n: &str| (n == "PORT").then(|| "5000".to_string());
        let w: Vec<String> =
            split_line(r#"bind ":$PORT" "${PORT}" "${NOPE-7}" '$PORT' $PORT"#, &env)
                .unwrap()
                .into_iter()
                .map(|w| w.text)
                .collect();
        assert_eq!(w, ["bind", ":5000", "5000", "7", "$PORT", "$PORT"]);
    }

    #[test]
    fn lines_keep_their_numbers() {
        let file: Arc<str> = Arc::from("t.cfg");
        let out = lex(&file, "global\n\n  # c\n  maxconn 10\r\n", &no_env);
        assert!(out.errors.is_empty());
        let nums: Vec<usize> = out.lines.iter().map(|l| l.loc.line).collect();
        assert_eq!(nums, [1, 4]);
        assert_eq!(out.lines[1].words[1].text, "10");
    }

    #[test]
    fn conditional_blocks_select_lines() {
        let file: Arc<str> = Arc::from("t.cfg");
        let text =
            ".if 0\na\n.elif 1\nb\n.if 0\nc\n.else\nd\n.endif\n.else\ne\n.endif\n.warning hello\n";
        let out = lex(&file, text, &no_env);
        let kept: Vec<&str> = out.lines.iter().map(|l| l.words[0].as_str()).collect();
        assert_eq!(kept, ["b", "d"]);
        assert_eq!(out.warnings.len(), 1);
        assert!(out.errors.is_empty());
    }

    #[test]
    fn conditional_errors_are_reported() {
        let file: Arc<str> = Arc::from("t.cfg");
        let out = lex(&file, ".endif\n.if\n.alert stop\n.if 1\n", &no_env);
        let lines: Vec<usize> = out.errors.iter().map(|d| d.loc.line).collect();
        assert_eq!(lines, [1, 2, 4]);
    }

    #[test]
    fn condition_operators() {
        assert!(eval_condition(&["1", "&&", "!0"], &no_env).unwrap());
        assert!(!eval_condition(&["streq(a,b)", "||", "0"], &no_env).unwrap());
        assert!(eval_condition(&["strneq(a,b)"], &no_env).unwrap());
        assert!(eval_condition(&["&&"], &no_env).is_err());
        assert!(eval_condition(&["bogus(x)"], &no_env).is_err());
        let env = |n: &str| (n == "SET").then(String::new);
        assert!(eval_condition(&["defined(SET)", "&&", "!defined(UNSET)"], &env).unwrap());
    }
}
