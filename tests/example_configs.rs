//! The example configs in `conf/` are valid for both rolelb and HAProxy, unchanged: that is
//! the drop-in promise the README makes. Files whose first line is `# rolelb-only` show
//! rolelb's extensions (`role`, `role-check`...), which HAProxy rejects: only rolelb checks them.

mod common;

use std::fs;
use std::path::PathBuf;

use common::{Haproxy, Rolelb};

/// Every `conf/*.cfg`, with its text.
fn example_configs() -> Vec<(PathBuf, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("conf");
    let mut configs: Vec<(PathBuf, String)> = fs::read_dir(&dir)
        .expect("listing conf/")
        .map(|entry| entry.expect("reading conf/").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "cfg"))
        .map(|path| {
            let text = fs::read_to_string(&path).expect("reading an example config");
            (path, text)
        })
        .collect();
    configs.sort();
    assert!(
        configs.len() >= 3,
        "conf/ should hold the example configs: {configs:?}"
    );
    configs
}

#[test]
fn every_example_config_passes_haproxy_check() {
    let compatible = example_configs()
        .into_iter()
        .filter(|(_, text)| !text.starts_with("# rolelb-only"));
    for (path, text) in compatible {
        let (valid, output) = Haproxy::check(&text);
        assert!(valid, "haproxy -c -f {}:\n{output}", path.display());
        assert!(
            !output.contains("[WARNING]"),
            "haproxy warns about {}:\n{output}",
            path.display()
        );
    }
}

#[test]
fn every_example_config_passes_rolelb_check() {
    for (path, text) in example_configs() {
        let (valid, output) = Rolelb::check(&text);
        assert!(valid, "rolelb -c -f {}:\n{output}", path.display());
        assert!(
            output.contains("Configuration file is valid"),
            "rolelb -c -f {}:\n{output}",
            path.display()
        );
    }
}
