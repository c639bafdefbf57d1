//! `rolelb-manpages DIR`: writes `rolelb.1` and `rolelb-agent.1` into DIR, made by
//! `clap_mangen` from the same command-line definitions the programs parse (so the pages
//! list exactly their options, with the text of `--help`). `scripts/package.sh` runs it
//! before `cargo deb`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::CommandFactory;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: rolelb-manpages DIR");
        return ExitCode::from(2);
    };
    let pages = [
        ("rolelb.1", rolelb::cli::Cli::command()),
        ("rolelb-agent.1", rolelb_agent::cli::Cli::command()),
    ];
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("rolelb-manpages: creating {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    for (file, command) in pages {
        let path = dir.join(file);
        let mut page = Vec::new();
        let written = clap_mangen::Man::new(command)
            .render(&mut page)
            .and_then(|()| std::fs::write(&path, &page));
        if let Err(e) = written {
            eprintln!("rolelb-manpages: writing {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("{}", path.display());
    }
    ExitCode::SUCCESS
}
