//! The conditional blocks `.if` / `.elif` / `.else` / `.endif` and the `.diag`, `.notice`,
//! `.warning`, `.alert` directives of HAProxy's configuration language: which lines apply.

use super::{LexOutput, Word};
use crate::config::model::{Diagnostic, Loc};

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
pub(super) struct CondStack {
    frames: Vec<CondFrame>,
}

impl CondStack {
    /// Where the innermost block still open at the end of a file began.
    pub(super) fn unclosed(&self) -> Option<&Loc> {
        self.frames.last().map(|f| &f.loc)
    }

    pub(super) fn active(&self) -> bool {
        self.frames
            .last()
            .is_none_or(|f| f.parent_active && f.taking)
    }
}

pub(super) fn directive(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::lexer::lex;
    use std::sync::Arc;

    fn no_env(_: &str) -> Option<String> {
        None
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
