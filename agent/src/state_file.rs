//! The persisted admin state: one word (`ready`, `drain` or `maint`) in `state_file`.
//!
//! `rolelb-agent state WORD` calls [`write`] (temporary file, fsync, rename, so a reader sees
//! the old word or the new one, never half a file). The running agent calls [`load_at_start`]
//! once and then [`watch`] re-reads the file every `inter`, so a change applies within one
//! `inter` and survives restarts. A missing file means `ready`.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::status::{AdminState, Status};

/// A state file that could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    /// Reading, writing or renaming failed.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The file holds something other than an admin state.
    #[error("{path}: {content:?} is not ready, drain or maint")]
    Invalid {
        /// The state file.
        path: PathBuf,
        /// What it holds (trimmed, truncated).
        content: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StateFileError + '_ {
    move |source| StateFileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads the admin state; a missing file is `ready`.
pub fn read(path: &Path) -> Result<AdminState, StateFileError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(AdminState::Ready),
        Err(e) => return Err(io_err(path)(e)),
    };
    let word = text.trim();
    AdminState::parse(word).ok_or_else(|| StateFileError::Invalid {
        path: path.to_path_buf(),
        content: word.chars().take(40).collect(),
    })
}

/// Writes the admin state atomically: a temporary file beside `path`, fsync, rename, and an
/// fsync of the directory so the rename itself survives a crash.
pub fn write(path: &Path, state: AdminState) -> Result<(), StateFileError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".into());
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
        writeln!(f, "{}", state.as_str()).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io_err(path))?;
        // Best effort: some filesystems refuse to fsync a directory.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The admin state at agent start. An unreadable or invalid file gives `maint`: when the
/// operator's intent cannot be read, keeping the node out of service is the safe guess.
pub fn load_at_start(path: &Path) -> AdminState {
    match read(path) {
        Ok(state) => state,
        Err(e) => {
            tracing::error!("state file: {e}; starting in maint until it is fixed");
            AdminState::Maint
        }
    }
}

/// Re-reads the state file every `inter` and stores changes in `status`. A file that becomes
/// unreadable or invalid keeps the last good state (and is logged once per change).
pub async fn watch(path: PathBuf, inter: Duration, status: Arc<Status>) {
    let mut tick = tokio::time::interval(inter);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_error: Option<String> = None;
    loop {
        tick.tick().await;
        let p = path.clone();
        let read = tokio::task::spawn_blocking(move || read(&p)).await;
        match read {
            Ok(Ok(state)) => {
                last_error = None;
                let old = status.admin();
                if old != state {
                    tracing::info!(from = %old, to = %state, "admin state changed");
                    status.set_admin(state);
                }
            }
            Ok(Err(e)) => {
                let msg = e.to_string();
                if last_error.as_deref() != Some(msg.as_str()) {
                    tracing::warn!("state file: {msg}; keeping {}", status.admin());
                    last_error = Some(msg);
                }
            }
            Err(e) => tracing::warn!("state file reader task failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing_is_ready() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        assert_eq!(read(&path).unwrap(), AdminState::Ready);
        for s in [AdminState::Drain, AdminState::Maint, AdminState::Ready] {
            write(&path, s).unwrap();
            assert_eq!(read(&path).unwrap(), s);
        }
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state")]);
    }

    #[test]
    fn invalid_content_is_an_error_and_maint_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        std::fs::write(&path, "sleepy\n").unwrap();
        assert!(matches!(read(&path), Err(StateFileError::Invalid { .. })));
        assert_eq!(load_at_start(&path), AdminState::Maint);
    }

    #[test]
    fn write_into_missing_directory_fails_cleanly() {
        let err = write(Path::new("/nonexistent-dir/state"), AdminState::Drain).unwrap_err();
        assert!(err.to_string().contains("/nonexistent-dir"), "{err}");
    }

    #[tokio::test]
    async fn watch_picks_up_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let status = Status::new(AdminState::Ready, Duration::from_secs(60));
        let task = tokio::spawn(watch(
            path.clone(),
            Duration::from_millis(20),
            Arc::clone(&status),
        ));
        write(&path, AdminState::Drain).unwrap();
        let mut seen = false;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if status.admin() == AdminState::Drain {
                seen = true;
                break;
            }
        }
        task.abort();
        assert!(seen, "drain not picked up");
    }
}
