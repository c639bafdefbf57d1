//! `rolelb -c -f FILE` against the config corpus: every file in `tests/configs/good` (and
//! `conf/`) is valid, every file in `tests/configs/bad` fails with each `# expect: LINE: TEXT`
//! it announces, nothing panics, and real HAProxy agrees that the good corpus is valid
//! (except files whose first line is `# rolelb-only`: they use rolelb's extensions).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn corpus(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "cfg"))
        .collect();
    files.sort();
    files
}

fn check(file: &Path) -> (Output, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rolelb"))
        .arg("-c")
        .arg("-f")
        .arg(file)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

fn good_files() -> Vec<PathBuf> {
    let mut files = corpus("tests/configs/good");
    files.extend(corpus("conf"));
    files
}

#[test]
fn good_configs_are_valid() {
    let files = good_files();
    assert!(files.len() >= 8, "expected at least 8 good configs");
    let mut failures = Vec::new();
    for file in &files {
        let (out, text) = check(file);
        if out.status.code() != Some(0)
            || !text.contains("Configuration file is valid")
            || text.contains("panicked")
        {
            failures.push(format!("{}:\n{text}", file.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The `# expect: LINE: TEXT` lines at the top of a bad config.
fn expectations(file: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(file).unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("# expect: "))
        .map(|e| {
            let (line, msg) = e.split_once(": ").expect("# expect: LINE: TEXT");
            (line.parse().expect("line number"), msg.to_string())
        })
        .collect()
}

#[test]
fn bad_configs_report_every_expected_error() {
    let files = corpus("tests/configs/bad");
    assert!(files.len() >= 20, "expected at least 20 bad configs");
    let mut failures = Vec::new();
    for file in &files {
        let expected = expectations(file);
        assert!(
            !expected.is_empty(),
            "{} has no '# expect:' line",
            file.display()
        );
        let (out, text) = check(file);
        if out.status.code() != Some(1) || text.contains("panicked") {
            failures.push(format!(
                "{}: exit {:?}\n{text}",
                file.display(),
                out.status.code()
            ));
            continue;
        }
        for (line, msg) in expected {
            let prefix = format!("{}:{line}: ", file.display());
            let found = text
                .lines()
                .any(|l| l.starts_with(&prefix) && l.contains(&msg));
            if !found {
                failures.push(format!("{prefix}{msg}\n  not in:\n{text}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn errors_are_printed_in_file_order() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/configs/bad/defaults-from.cfg");
    let (_, text) = check(&file);
    let lines: Vec<usize> = text
        .lines()
        .filter_map(|l| l.split(':').nth(1)?.parse().ok())
        .collect();
    assert!(lines.len() > 3);
    assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{text}");
}

fn haproxy() -> PathBuf {
    let candidates = [
        PathBuf::from("/usr/sbin/haproxy"),
        PathBuf::from("/usr/local/sbin/haproxy"),
    ];
    candidates
        .into_iter()
        .find(|p| p.exists())
        .expect("haproxy not found: run scripts/deps.sh")
}

/// A file marked `# rolelb-only` on its first line uses rolelb's extensions (`role`,
/// `role-check`...), which HAProxy rejects.
fn rolelb_only(file: &Path) -> bool {
    std::fs::read_to_string(file).is_ok_and(|text| text.starts_with("# rolelb-only"))
}

#[test]
fn haproxy_accepts_every_good_config() {
    let haproxy = haproxy();
    let mut failures = Vec::new();
    for file in good_files().into_iter().filter(|f| !rolelb_only(f)) {
        let out = Command::new(&haproxy)
            .arg("-c")
            .arg("-q")
            .arg("-f")
            .arg(&file)
            .output()
            .unwrap();
        if !out.status.success() {
            failures.push(format!(
                "{}:\n{}",
                file.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
