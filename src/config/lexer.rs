//! HAProxy's line syntax: text in, one [`Line`] of words per non-empty line out.
//!
//! Behaves like HAProxy 2.6's `parse_line()`: `#` starts a comment outside quotes, words are
//! split on blanks, single quotes take everything literally, double quotes allow backslash
//! escapes and the only environment expansion of the line (`$VAR`, `${VAR}`,
//! `${VAR-default}`, `${VAR[*]}`, the pseudo-variables `.FILE`, `.LINE`, `.SECTION`), and
//! outside quotes `\ `, `\#`, `\\`, `\'`, `\"`, `\xHH`, `\r`, `\n`, `\t` are escapes. An empty
//! word ends the line, since HAProxy's words are C strings. Words read as addresses get
//! HAProxy's second expansion, unquoted `$VAR` included ([`Word::address`]).
//! The conditional blocks `.if` / `.elif` / `.else` / `.endif` and the `.diag`, `.notice`,
//! `.warning`, `.alert` directives are handled here too (`cond`), so later stages only see
//! the lines that apply; variables are expanded in `env`.

mod cond;
mod env;

use std::sync::Arc;

use super::keywords::unsupported;
use super::model::{Diagnostic, Loc};
use cond::{CondStack, directive};
use env::expand_var;
pub use env::{Here, expand_address};

/// One word of a line, escapes and quotes removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    /// The decoded bytes (`\xHH` may produce bytes that are not UTF-8).
    pub bytes: Vec<u8>,
    /// The same bytes as text (invalid UTF-8 replaced), for keywords and names.
    pub text: String,
    /// The text with `$NAME` / `${NAME}` expanded once more, for words read as addresses
    /// (see [`expand_address`]); `None` when the word has no `$`.
    address: Option<String>,
}

impl Word {
    /// Builds a word from decoded bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Word {
            bytes,
            text,
            address: None,
        }
    }

    /// Builds a word from decoded bytes, keeping its address expansion under `env`.
    fn with_env(bytes: Vec<u8>, env: &dyn Fn(&str) -> Option<String>) -> Self {
        let mut word = Word::new(bytes);
        if word.text.contains('$') {
            word.address = Some(expand_address(&word.text, env));
        }
        word
    }

    /// The word as text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The word read as an address: HAProxy expands `$NAME` and `${NAME}` in addresses
    /// whatever the quoting (`bind :$PORT`, `server pg ${DB_HOST}:5432`).
    pub fn address(&self) -> &str {
        self.address.as_deref().unwrap_or(&self.text)
    }

    /// The address's text, refused like HAProxy when variables made it empty.
    pub fn address_checked(&self) -> Result<&str, String> {
        match self.address.as_deref() {
            Some("") => Err(format!(
                "'{}' resolves to an empty address (environment variable missing?)",
                self.text
            )),
            _ => Ok(self.address()),
        }
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

impl Line {
    /// For an error about a word that still holds `$NAME` (left as text outside double
    /// quotes, where HAProxy expands only addresses), a hint to quote it.
    pub fn variable_hint(&self, message: &str) -> Option<String> {
        let word = self.words.iter().skip(1).find(|w| {
            message.contains(w.as_str())
                && w.text.split('$').skip(1).any(|after| {
                    after
                        .trim_start_matches('{')
                        .starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                })
        })?;
        Some(format!(
            " (HAProxy expands environment variables only inside double quotes here: if '{0}' \
             holds one, write \"{0}\")",
            word.text
        ))
    }
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

/// Section keywords, for `.SECTION` (HAProxy names a section by its first argument, or by
/// its keyword when it has none).
fn is_section(keyword: &str) -> bool {
    [
        "global", "defaults", "frontend", "backend", "listen", "etcd",
    ]
    .contains(&keyword)
        || unsupported::find(unsupported::SECTION_REFUSED, keyword).is_some()
}

/// rolelb's own keywords (HAProxy has none of them), which keep their empty words: an empty
/// value means something there (`password "$UNSET"` is no password). The lines of `etcd`
/// sections keep them too.
const OWN_KEYWORDS: [&str; 6] = [
    "role",
    "role-check",
    "role-source",
    "max-lag",
    "discover",
    "admin",
];

/// Splits `text` (the content of `file`) into lines of words; `env` looks up variables.
pub fn lex(file: &Arc<str>, text: &str, env: &dyn Fn(&str) -> Option<String>) -> LexOutput {
    let mut out = LexOutput::default();
    let mut cond = CondStack::default();
    let mut section = String::new();
    let mut in_etcd = false;
    for (i, raw) in text.split('\n').enumerate() {
        let loc = Loc {
            file: file.clone(),
            line: i + 1,
        };
        let here = Here {
            file,
            line: i + 1,
            section: &section,
        };
        let mut words = match split_line(raw, &here, env) {
            Ok(words) => words,
            Err(message) => {
                // An unparseable line inside a skipped block is still an error in HAProxy.
                out.errors.push(Diagnostic { loc, message });
                continue;
            }
        };
        // HAProxy's words are C strings: an empty first word makes the line empty.
        let Some(first) = words.first().filter(|w| !w.bytes.is_empty()) else {
            continue;
        };
        if first.text.starts_with('.') {
            directive(&mut cond, &mut out, loc, &words, env);
            continue;
        }
        if !cond.active() {
            continue;
        }
        // ... and an empty word ends the line for every HAProxy keyword.
        let own = in_etcd || OWN_KEYWORDS.contains(&words[0].as_str());
        if let Some(cut) = words
            .iter()
            .position(|w| w.bytes.is_empty())
            .filter(|_| !own)
        {
            let dropped: Vec<&str> = words[cut..]
                .iter()
                .filter(|w| !w.bytes.is_empty())
                .map(Word::as_str)
                .collect();
            if !dropped.is_empty() {
                out.warnings.push(Diagnostic {
                    loc: loc.clone(),
                    message: format!(
                        "word {} is empty (an empty quoted string, or a variable set to nothing): as HAProxy does, the words after it are ignored ('{}')",
                        cut + 1,
                        dropped.join(" ")
                    ),
                });
            }
            words.truncate(cut);
        }
        if is_section(&words[0].text) {
            section = words.get(1).unwrap_or(&words[0]).text.clone();
            in_etcd = words[0].as_str() == "etcd";
        }
        out.lines.push(Line { loc, words });
    }
    if let Some(open) = cond.unclosed() {
        out.errors.push(Diagnostic {
            loc: open.clone(),
            message: "'.if' block is not closed by '.endif' before the end of the file".into(),
        });
    }
    out
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Quote {
    None,
    Single,
    Double,
}

/// Splits one line into words as HAProxy's `parse_line()` does for configuration files.
///
/// Every word is returned, empty ones included (`""`, or a variable that expanded to
/// nothing); the caller decides what an empty word means. An error names the problem and its
/// column (the caller adds `FILE:LINE`).
pub fn split_line(
    line: &str,
    here: &Here<'_>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<Word>, String> {
    let bytes = line.as_bytes();
    // HAProxy skips leading blanks, then every run of blanks outside quotes starts a new word.
    let mut i = bytes
        .iter()
        .position(|b| !is_blank(*b))
        .unwrap_or(bytes.len());
    let mut out = Words::default();
    let mut quote = Quote::None;
    let mut quote_start = 0;
    let mut after_blank = false;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'\n' || c == b'\r' {
            break;
        }
        if c == b'#' && quote == Quote::None {
            break;
        }
        after_blank = false;
        match (c, quote) {
            (b'"', Quote::None) | (b'\'', Quote::None) => {
                quote = if c == b'"' {
                    Quote::Double
                } else {
                    Quote::Single
                };
                quote_start = i;
                i += 1;
            }
            (b'"', Quote::Double) | (b'\'', Quote::Single) => {
                quote = Quote::None;
                i += 1;
            }
            (b'\\', Quote::None | Quote::Double) => {
                i = escape(bytes, i, quote == Quote::Double, &mut out.cur)?;
            }
            (_, Quote::None) if is_blank(c) => {
                while i < bytes.len() && is_blank(bytes[i]) {
                    i += 1;
                }
                out.next_word();
                after_blank = true;
            }
            // Only inside double quotes: elsewhere `$` is an ordinary character.
            (b'$', Quote::Double) => i = expand_var(line, i, here, env, &mut out)?,
            _ => {
                out.cur.push(c);
                i += 1;
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
    // Trailing blanks leave an empty word behind in HAProxy; it means nothing.
    if !after_blank {
        out.next_word();
    }
    if out.done.len() == 1 && out.done[0].is_empty() {
        return Ok(Vec::new());
    }
    Ok(out
        .done
        .into_iter()
        .map(|b| Word::with_env(b, env))
        .collect())
}

/// Words being built: the finished ones and the current one.
#[derive(Default)]
struct Words {
    done: Vec<Vec<u8>>,
    cur: Vec<u8>,
}

impl Words {
    /// Ends the current word (even empty) and starts a new one.
    fn next_word(&mut self) {
        self.done.push(std::mem::take(&mut self.cur));
    }
}

/// HAProxy's separators (`isspace()` minus the line ends, which stop the line).
fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\x0b' | b'\x0c')
}

/// Decodes the escape starting at `bytes[i] == b'\\'` (outside single quotes); returns the
/// index after it. `\$` is an escape inside double quotes only, as in HAProxy.
fn escape(bytes: &[u8], i: usize, in_dquote: bool, cur: &mut Vec<u8>) -> Result<usize, String> {
    let Some(&next) = bytes.get(i + 1).filter(|b| **b != b'\n' && **b != b'\r') else {
        return Err("backslash at the end of the line (line continuation is not supported)".into());
    };
    let decoded = match next {
        b' ' | b'#' | b'\\' | b'\'' | b'"' => next,
        b'$' if in_dquote => next,
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
                return Err(format!(
                    "invalid '\\x' escape at column {}: expected two hex digits, e.g. '\\x0a'",
                    i + 1
                ));
            };
            cur.push(value);
            return Ok(i + 4);
        }
        // Like HAProxy: any other backslash is kept, and the next character is read as usual.
        _ => {
            cur.push(b'\\');
            return Ok(i + 1);
        }
    };
    cur.push(decoded);
    Ok(i + 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    const HERE: Here<'static> = Here {
        file: "t.cfg",
        line: 7,
        section: "pg",
    };

    fn split(line: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Vec<Word>, String> {
        split_line(line, &HERE, env)
    }

    fn words(line: &str) -> Vec<String> {
        split(line, &no_env)
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
        let w = split(r"send PING\r\n a\ b \\ \x41\x00", &no_env).unwrap();
        assert_eq!(w[1].bytes, b"PING\r\n");
        assert_eq!(w[2].text, "a b");
        assert_eq!(w[3].text, "\\");
        assert_eq!(w[4].bytes, b"A\0");
    }

    #[test]
    fn bad_escapes_and_quotes_are_errors() {
        assert!(split(r"x \xZZ", &no_env).unwrap_err().contains("hex"));
        assert!(split(r"x \x4", &no_env).is_err());
        assert!(
            split("x 'abc", &no_env)
                .unwrap_err()
                .contains("unterminated single quote")
        );
        assert!(
            split("x \"abc", &no_env)
                .unwrap_err()
                .contains("unterminated double quote")
        );
        assert!(
            split("x abc\\", &no_env)
                .unwrap_err()
                .contains("end of the line")
        );
        assert!(
            split(r#"x "^a$""#, &no_env)
                .unwrap_err()
                .contains("variable name")
        );
        assert_eq!(split(r#"x "a\$" 'b$'"#, &no_env).unwrap()[1].text, "a$");
    }

    #[test]
    fn variables_expand_in_double_quotes_only() {
        let env = |n: &str| (n == "PORT").then(|| "5000".to_string());
        let w: Vec<String> = split(r#"bind ":$PORT" "${PORT}" "${NOPE-7}" '$PORT' $PORT"#, &env)
            .unwrap()
            .into_iter()
            .map(|w| w.text)
            .collect();
        assert_eq!(w, ["bind", ":5000", "5000", "7", "$PORT", "$PORT"]);
    }

    #[test]
    fn errors_about_unexpanded_variables_get_a_hint() {
        let file: Arc<str> = Arc::from("t.cfg");
        let out = lex(&file, "maxconn $MAXC 'x'\n", &no_env);
        let line = &out.lines[0];
        let hint = line.variable_hint("maxconn expects a number, got '$MAXC'");
        assert!(hint.is_some_and(|h| h.contains("write \"$MAXC\"")));
        assert_eq!(
            line.variable_hint("maxconn takes one argument, got 'x'"),
            None
        );
        let out = lex(&file, "maxconn $1\n", &no_env);
        assert_eq!(out.lines[0].variable_hint("got '$1'"), None);
    }

    #[test]
    fn an_empty_word_ends_the_line_with_a_warning() {
        let file: Arc<str> = Arc::from("t.cfg");
        let env = |n: &str| (n == "E").then(String::new);
        let out = lex(&file, "a \"$E\" check\n\"\" b\nc \"\"\nd  \n", &env);
        let lines: Vec<Vec<&str>> = out
            .lines
            .iter()
            .map(|l| l.words.iter().map(Word::as_str).collect())
            .collect();
        assert_eq!(lines, [vec!["a"], vec!["c"], vec!["d"]]);
        assert_eq!(out.warnings.len(), 1);
        assert!(out.warnings[0].message.contains("'check'"));
        assert_eq!(out.warnings[0].loc.line, 1);
        let out = lex(&file, "role-check pgsql password \"$E\" user u\n", &env);
        assert_eq!(
            out.lines[0].words.len(),
            6,
            "rolelb's own keywords keep empty words"
        );
    }

    #[test]
    fn section_pseudo_variable_follows_section_headers() {
        let file: Arc<str> = Arc::from("t.cfg");
        let out = lex(
            &file,
            "x \"${.SECTION}\"\nglobal\nx \"${.SECTION}\"\nbackend pg\nx \"${.SECTION}\"\n",
            &no_env,
        );
        let got: Vec<String> = out
            .lines
            .iter()
            .filter(|l| l.words[0].as_str() == "x")
            .map(|l| l.words.get(1).map_or(String::new(), |w| w.text.clone()))
            .collect();
        assert_eq!(got, ["", "global", "pg"]);
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
}
