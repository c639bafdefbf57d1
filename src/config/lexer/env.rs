//! Environment variables in configuration words, as HAProxy 2.6 expands them: the
//! first expansion, inside double quotes only, while a line is split into words
//! (`$NAME`, `${NAME}`, `${NAME-default}`, `${NAME[*]}`, `.FILE` / `.LINE` / `.SECTION`), and
//! the second one HAProxy applies to words read as addresses, whatever their quoting.

use super::Words;

/// Where a line is: what the pseudo-variables `.FILE`, `.LINE` and `.SECTION` expand to.
#[derive(Debug, Clone, Copy)]
pub struct Here<'a> {
    /// The file name, as given on the command line.
    pub file: &'a str,
    /// The line number, from 1.
    pub line: usize,
    /// The current section's name (its keyword for unnamed ones such as `global`), or an
    /// empty string before the first section.
    pub section: &'a str,
}

/// Expands, inside double quotes, `$NAME`, `${NAME}`, `${NAME-default}` (the default only
/// replaces an unset variable, not an empty one) and `${NAME[*]}` (the value's blank-separated
/// parts become separate words), starting at `line[i] == '$'`. A name starts with a letter
/// or `_` and goes on with letters, digits and `_`; `.FILE`, `.LINE` and `.SECTION` are
/// HAProxy's pseudo-variables. An unset variable without default expands to nothing.
pub(super) fn expand_var(
    line: &str,
    i: usize,
    here: &Here<'_>,
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut Words,
) -> Result<usize, String> {
    let bytes = line.as_bytes();
    let mut j = i + 1;
    let brace = bytes.get(j) == Some(&b'{');
    if brace {
        j += 1;
    }
    let first = bytes.get(j).copied().unwrap_or(0);
    if !(first.is_ascii_alphabetic() || first == b'_' || first == b'.') {
        return Err(format!(
            "forbidden first character in environment variable name at column {} (a name starts with a letter or '_'; write '\\$' inside double quotes, or use single quotes, for a literal '$')",
            j + 1
        ));
    }
    let name_start = j;
    if first == b'.' {
        j += 1;
    }
    while bytes
        .get(j)
        .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
    {
        j += 1;
    }
    let name = &line[name_start..j];
    let mut value = if let Some(pseudo) = name.strip_prefix('.') {
        match pseudo {
            "FILE" => Some(here.file.to_string()),
            "LINE" => Some(here.line.to_string()),
            "SECTION" => Some(here.section.to_string()),
            _ => {
                return Err(format!(
                    "unknown pseudo-variable '{name}' at column {} (known: .FILE, .LINE, .SECTION)",
                    name_start + 1
                ));
            }
        }
    } else {
        env(name)
    };
    let mut split_words = false;
    if brace && bytes.get(j) == Some(&b'[') {
        if bytes.get(j + 1..j + 3) != Some(b"*]".as_slice()) {
            return Err(format!(
                "truncated or invalid word expansion at column {} (write '${{{name}[*]}}')",
                j + 1
            ));
        }
        split_words = true;
        j += 3;
    }
    if brace {
        let unmatched = || {
            format!(
                "unmatched brace in environment variable name at column {} (write '${{NAME}}' or '${{NAME-default}}')",
                i + 2
            )
        };
        if bytes.get(j) == Some(&b'-') {
            let Some(close) = line[j..].find('}') else {
                return Err(unmatched());
            };
            if value.is_none() {
                value = Some(line[j + 1..j + close].to_string());
            }
            j += close;
        } else if bytes.get(j) != Some(&b'}') {
            return Err(unmatched());
        }
        j += 1;
    }
    let value = value.unwrap_or_default();
    let mut parts = value.as_bytes();
    while let Some((&b, rest)) = parts.split_first() {
        if split_words && (b.is_ascii_whitespace() || b == b'\x0b') {
            out.next_word();
            let skip = rest
                .iter()
                .position(|c| !(c.is_ascii_whitespace() || *c == b'\x0b'))
                .unwrap_or(rest.len());
            parts = &rest[skip..];
            continue;
        }
        out.cur.push(b);
        parts = rest;
    }
    Ok(j)
}

/// Expands `$NAME` and `${NAME}` anywhere in `text`, as HAProxy does a second time on
/// addresses (`bind`, `server`, `log` targets, ...) whatever the quoting: a name is any run of
/// letters, digits and `_` (even empty: a lone `$` disappears), there is no default value,
/// and an unset variable expands to nothing.
pub fn expand_address(text: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let Some(dollar) = text[i..].find('$').map(|d| i + d) else {
            out.push_str(&text[i..]);
            break;
        };
        out.push_str(&text[i..dollar]);
        let mut start = dollar + 1;
        let brace = bytes.get(start) == Some(&b'{');
        if brace {
            start += 1;
        }
        let mut end = start;
        while bytes
            .get(end)
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
        {
            end += 1;
        }
        if let Some(value) = env(&text[start..end]) {
            out.push_str(&value);
        }
        i = end;
        if brace && bytes.get(end) == Some(&b'}') {
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::lexer::{Word, split_line};

    const HERE: Here<'static> = Here {
        file: "t.cfg",
        line: 7,
        section: "pg",
    };

    fn split(line: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Vec<Word>, String> {
        split_line(line, &HERE, env)
    }

    fn texts(line: &str, env: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
        split(line, env)
            .unwrap()
            .into_iter()
            .map(|w| w.text)
            .collect()
    }

    fn test_env(n: &str) -> Option<String> {
        match n {
            "PORT" => Some("5000".into()),
            "EMPTY" => Some(String::new()),
            "TWO" => Some("a  b\tc".into()),
            "_X1" => Some("x".into()),
            _ => None,
        }
    }

    #[test]
    fn defaults_replace_unset_variables_only() {
        assert_eq!(
            texts(
                r#"x "${EMPTY-d}" "${NOPE-d e}" "${NOPE-}" "${PORT-1}""#,
                &test_env
            ),
            ["x", "", "d e", "", "5000"]
        );
        // Unset without default: nothing, and the name stops at the first non-name character.
        assert_eq!(
            texts(
                r#"x "a${NOPE}b" "$NOPE-1" "$_X1.y" "$PORT$PORT""#,
                &test_env
            ),
            ["x", "ab", "-1", "x.y", "50005000"]
        );
    }

    #[test]
    fn word_expansion_splits_on_blanks() {
        assert_eq!(
            texts(r#"x "${TWO[*]}" y "${TWO}""#, &test_env),
            ["x", "a", "b", "c", "y", "a  b\tc"]
        );
        assert_eq!(
            texts(r#"x "p${TWO[*]}q""#, &test_env),
            ["x", "pa", "b", "cq"]
        );
    }

    #[test]
    fn pseudo_variables_name_the_place() {
        assert_eq!(
            texts(r#"x "${.FILE}:${.LINE}" "$.SECTION""#, &test_env),
            ["x", "t.cfg:7", "pg"]
        );
    }

    #[test]
    fn malformed_variables_are_errors_with_their_column() {
        for (line, needle) in [
            (r#"x "$1""#, "forbidden first character"),
            (r#"x "$$""#, "forbidden first character"),
            (r#"x "$""#, "forbidden first character"),
            (r#"x "${}""#, "forbidden first character"),
            (r#"x "${PORT""#, "unmatched brace"),
            (r#"x "${PORT-1""#, "unmatched brace"),
            (r#"x "${A.B}""#, "unmatched brace"),
            (r#"x "${TWO[*"#, "word expansion"),
            (r#"x "${.FOO}""#, "pseudo-variable"),
        ] {
            let e = split(line, &test_env).unwrap_err();
            assert!(e.contains(needle), "{line}: {e}");
            assert!(e.contains(" at column "), "{line}: {e}");
        }
        // Outside double quotes '$' is an ordinary character, and '\$' keeps its backslash.
        assert_eq!(
            texts(r#"x $1 $$ \$P "\$P""#, &test_env),
            ["x", "$1", "$$", "\\$P", "$P"]
        );
    }

    #[test]
    fn addresses_expand_variables_whatever_the_quoting() {
        let w = split(
            r#"bind :$PORT '${PORT}' ":\$PORT" $NOPE:1 $$ ${PORT-1} x"#,
            &test_env,
        )
        .unwrap();
        let addrs: Vec<&str> = w.iter().map(Word::address).collect();
        assert_eq!(
            addrs,
            ["bind", ":5000", "5000", ":5000", ":1", "", "5000-1}", "x"]
        );
        assert_eq!(w[1].as_str(), ":$PORT");
        assert!(
            w[5].address_checked()
                .unwrap_err()
                .contains("resolves to an empty address")
        );
        assert_eq!(w[1].address_checked(), Ok(":5000"));
    }
}
