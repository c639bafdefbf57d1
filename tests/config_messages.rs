//! Every message `rolelb -c` prints is safe to print and easy to route: one line per finding,
//! starting with `FILE:LINE:` (warnings with `[WARNING] FILE:LINE:`), control characters escaped
//! and overlong tokens shortened with their length shown — whatever the configuration holds.

use std::process::Command;

use proptest::prelude::*;
use rolelb::config;

/// Tokens that break naive printing: control characters, escape sequences, long words.
fn hostile_token() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "a\rb".to_string(),
            "x\x1b[2J\x1b[Hy".to_string(),
            "nul\0byte".to_string(),
            "tab\there".to_string(),
            "bell\x07".to_string(),
            "del\x7f".to_string(),
            "c1\u{9b}31m".to_string(),
            "rtl\u{202e}gnp.exe".to_string(),
            "\"quoted\rvalue\"".to_string(),
            "'single\x1bquote'".to_string(),
            "back\\\r".to_string(),
            "\\x1b[31m".to_string(),
            "\\0".to_string(),
            "$HOME\x01".to_string(),
            "\"${NOPE}\r\"".to_string(),
        ]),
        (1usize..2000).prop_map(|n| "w".repeat(n)),
        "[a-z0-9:.\\x00-\\x1f\\x7f]{1,40}",
    ]
}

/// Lines of real keywords with hostile arguments, and some hostile keywords.
fn hostile_line() -> impl Strategy<Value = String> {
    let keyword = prop::sample::select(vec![
        "global",
        "defaults",
        "frontend fe",
        "backend be",
        "listen ls",
        "bind",
        "server s1",
        "default-server",
        "mode",
        "balance",
        "timeout",
        "timeout client",
        "option",
        "tcp-check",
        "stats",
        "log",
        "use_backend",
        "default_backend",
        "maxconn",
        "retries",
        "acl",
        "role",
        "role-check pgsql user",
        "max-lag",
        "etcd e",
        "endpoints",
        "discover etcd e path",
        "admin bind",
        ".if",
        ".endif",
    ]);
    prop_oneof![
        (keyword, prop::collection::vec(hostile_token(), 0..4))
            .prop_map(|(k, args)| format!("{k} {}", args.join(" "))),
        hostile_token(),
    ]
}

/// What a printed finding must look like: `FILE:LINE: text`, printable, no overlong word.
fn check_line(file: &str, line: &str) -> Result<(), String> {
    let rest = line
        .strip_prefix("[WARNING] ")
        .unwrap_or(line)
        .strip_prefix(file)
        .and_then(|r| r.strip_prefix(':'))
        .ok_or_else(|| format!("does not start with '{file}:': {line:?}"))?;
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    if digits == 0 || !rest[digits..].starts_with(": ") {
        return Err(format!("no 'LINE: ' after the file name: {line:?}"));
    }
    if let Some(c) = line.chars().find(|c| c.is_control() || *c == '\u{202e}') {
        return Err(format!("unescaped {c:?} in {line:?}"));
    }
    if let Some(w) = line.split(' ').find(|w| w.chars().count() > 220) {
        return Err(format!(
            "a {}-character word in {line:?}",
            w.chars().count()
        ));
    }
    Ok(())
}

/// Parses `text` as one file and checks every error and warning as `-c` prints them.
fn check_config(text: &str) -> Result<(), String> {
    let file = "fuzz.cfg";
    let findings = match config::parse_sources(&[(file, text)]) {
        Ok(c) => c
            .warnings
            .iter()
            .map(|w| format!("[WARNING] {w}"))
            .collect(),
        Err(errors) => errors
            .to_string()
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>(),
    };
    for f in &findings {
        check_line(file, f)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    /// Random configs of hostile lines: every finding is one safe `FILE:LINE:` line.
    #[test]
    fn every_finding_is_one_printable_file_line_line(lines in prop::collection::vec(hostile_line(), 1..12)) {
        let mut text = String::from("global\n");
        for l in &lines {
            text.push_str(l);
            text.push('\n');
        }
        if let Err(why) = check_config(&text) {
            return Err(TestCaseError::fail(format!("{why}\nconfig:\n{text:?}")));
        }
    }
}

/// The binary, as a user runs it: a config with an escape sequence, a CR and a 5000-character
/// token prints each finding as one escaped line, and the token's length.
#[test]
fn check_mode_prints_hostile_tokens_escaped_on_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("hostile.cfg");
    let long = "y".repeat(5000);
    let text = format!(
        "global\n    frobnicate \x1b[2J\x1b[31mred\r\nlisten ls\n    balance \"\x1b[2J\x1b[31mred\"\n    bind 127.0.0.1:1\n    mode {long}\n    balance rr\u{202e}\0x\n"
    );
    std::fs::write(&path, text).expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_rolelb"))
        .arg("-c")
        .arg("-f")
        .arg(&path)
        .output()
        .expect("run rolelb -c");
    assert_eq!(out.status.code(), Some(1), "rolelb -c must fail");
    let stderr = String::from_utf8(out.stderr).expect("utf-8 stderr");
    let file = path.display().to_string();
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines.len() >= 3, "one line per error expected:\n{stderr}");
    for l in &lines {
        if let Err(why) = check_line(&file, l) {
            panic!("{why}\nwhole output:\n{stderr}");
        }
    }
    assert!(
        stderr.contains(":2: unknown keyword 'frobnicate'"),
        "{stderr}"
    );
    assert!(stderr.contains("\\x1b[2J\\x1b[31mred"), "{stderr}");
    assert!(stderr.contains("…(5000 chars)"), "{stderr}");
    assert!(stderr.contains("\\u{202e}"), "{stderr}");
}
