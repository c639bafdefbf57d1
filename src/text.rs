//! Outside text made safe to print: every message that quotes something rolelb did not write
//! itself (a config token, an etcd key or value, a request's path or command, an agent's reply)
//! passes it through here before it reaches a terminal, a log line or an API answer.
//!
//! - **Control characters** (CR, LF, NUL, ESC and the rest of C0/C1, DEL) and the bidirectional
//!   overrides that can reorder what a terminal shows are escaped (`\n`, `\r`, `\t`, `\0`,
//!   `\x1b`, `\u{202e}`), so one message stays one line and cannot move the cursor, recolour
//!   the screen or forge a second log line.
//! - **Long tokens** (over [`MAX_TOKEN`] characters) are cut to their start, with their length
//!   shown: `aaaa…(4096 chars)`.
//! - **Form-encoded text** (a query string, a posted form) is decoded in one place,
//!   [`form_decode`], for the admin API and the stats page.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Longest token quoted whole; longer ones are shortened.
pub const MAX_TOKEN: usize = 200;
/// How much of a shortened token is kept.
const KEPT: usize = 60;

/// Whether `c` must be escaped before printing.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Appends `c` to `out`, escaped when it is not safe to print.
fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\0' => out.push_str("\\0"),
        c if (c as u32) < 0x100 && unsafe_char(c) => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if unsafe_char(c) => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

/// `s` with its control characters escaped; borrowed when nothing needed escaping.
pub fn escaped(s: &str) -> Cow<'_, str> {
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        push_escaped(&mut out, c);
    }
    Cow::Owned(out)
}

/// One token from outside, ready to quote in a message: escaped, and shortened with its length
/// shown when it is longer than [`MAX_TOKEN`] characters.
pub fn token(s: &str) -> Cow<'_, str> {
    let len = s.chars().count();
    if len <= MAX_TOKEN {
        return escaped(s);
    }
    let start: String = s.chars().take(KEPT).collect();
    Cow::Owned(format!("{}…({len} chars)", escaped(&start)))
}

/// A whole message made safe: control characters escaped and every word (a run without
/// spaces) longer than [`MAX_TOKEN`] shortened. For messages that already quote outside text
/// without passing it through [`token`].
pub fn message(s: &str) -> Cow<'_, str> {
    let needs = s.chars().any(unsafe_char) || s.split(' ').any(|w| w.chars().count() > MAX_TOKEN);
    if !needs {
        return Cow::Borrowed(s);
    }
    let words: Vec<String> = s.split(' ').map(word).collect();
    Cow::Owned(words.join(" "))
}

/// One word of a message: its quotes and punctuation kept around the escaped, maybe shortened,
/// token inside (so the length shown is the token's own).
fn word(w: &str) -> String {
    const AROUND: &[char] = &['\'', '"', '(', ')', ',', ':', ';', '[', ']'];
    let core = w.trim_start_matches(AROUND);
    let head = &w[..w.len() - core.len()];
    let core = core.trim_end_matches(AROUND);
    let tail = &w[head.len() + core.len()..];
    format!("{head}{}{tail}", token(core))
}

/// Decodes an `application/x-www-form-urlencoded` text (a query string's or a form's parts):
/// `+` is a space and `%XX` a byte, as HAProxy's `url_decode`; `None` when an escape is not
/// two hex digits.
pub fn form_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    Some(out)
}

/// The OS error text as HAProxy prints it (`Connection refused`), without Rust's
/// ` (os error 111)` suffix.
pub fn os_error(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => text[..at].to_string(),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        assert!(matches!(
            escaped("server s1 10.0.0.1:5432"),
            Cow::Borrowed(_)
        ));
        assert!(matches!(
            message("unknown keyword 'frob'"),
            Cow::Borrowed(_)
        ));
        assert_eq!(token("ünïcødé ok"), "ünïcødé ok");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escaped("a\r\nb\0c\td"), "a\\r\\nb\\0c\\td");
        assert_eq!(escaped("\x1b[31mred"), "\\x1b[31mred");
        assert_eq!(escaped("del\x7f"), "del\\x7f");
        assert_eq!(escaped("c1\u{9b}"), "c1\\x9b");
        assert_eq!(escaped("rtl\u{202e}txt"), "rtl\\u{202e}txt");
    }

    #[test]
    fn long_tokens_are_shortened_with_their_length() {
        let long = "x".repeat(5000);
        let t = token(&long);
        assert!(t.starts_with(&"x".repeat(KEPT)));
        assert!(t.ends_with("…(5000 chars)"), "{t}");
        assert!(t.chars().count() < MAX_TOKEN);
        assert_eq!(token(&"y".repeat(MAX_TOKEN)), "y".repeat(MAX_TOKEN));
    }

    #[test]
    fn a_message_stays_one_line_and_short() {
        let m = format!("bad value '{}' then '\nforged line'", "z".repeat(300));
        let out = message(&m);
        assert!(!out.contains('\n'));
        assert!(out.contains("…(300 chars)' then"), "{out}");
        assert!(out.contains("\\nforged line"));
    }
}
