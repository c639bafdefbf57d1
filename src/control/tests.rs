//! Unit tests of the control task through its [`ControlHandle`]: rebuild requests coalesce,
//! waiters get a table built after they asked, a bad reload keeps the table in force, a soft
//! stop freezes the table, and a gone task answers every request at once.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Control, ControlError, ControlHandle, ReloadError};
use crate::config;
use crate::proxy::listener::{Limits, Shared};
use crate::table::Table;

/// Longer than any request to a live or gone task may take on a loaded machine.
const PROMPT: Duration = Duration::from_secs(5);

/// A port free a moment ago on 127.0.0.1 (`bind` refuses port 0).
fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a probe");
    probe.local_addr().expect("probe address").port()
}

fn config_text(port: u16) -> String {
    format!(
        "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 5s\n    timeout server 5s\n\n\
         listen db\n    bind 127.0.0.1:{port}\n    server a 127.0.0.1:1\n"
    )
}

fn shared() -> Shared {
    Shared {
        table: Arc::new(ArcSwap::from_pointee(Table::empty())),
        limits: Arc::new(Limits::default()),
        sessions: TaskTracker::new(),
        hard_stop: Arc::new(crate::live::KillSwitch::new()),
        default_maxconn: 100,
        fd_reserved: 0,
        stopping: CancellationToken::new(),
        threads: Default::default(),
    }
}

/// A control task serving `file`, running; its handle and the task.
fn start(file: &Path) -> (ControlHandle, JoinHandle<()>) {
    let files = vec![file.to_path_buf()];
    let config = config::load(&files).expect("the test configuration is valid");
    let control = Control::start(files, config, shared()).expect("control starts");
    let handle = control.handle();
    (handle, tokio::spawn(control.run()))
}

/// A temporary directory holding `rolelb.cfg` with a good configuration on `port`.
fn config_file(port: u16) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("rolelb.cfg");
    std::fs::write(&path, config_text(port)).expect("write the config");
    (dir, path)
}

fn generation(handle: &ControlHandle) -> u64 {
    handle.table().load().generation
}

#[tokio::test]
async fn queued_rebuild_requests_make_one_table() {
    let (_dir, path) = config_file(free_port());
    let (handle, task) = start(&path);
    let before = generation(&handle);
    for _ in 0..50 {
        handle.rebuild().expect("the task runs");
    }
    let after = tokio::time::timeout(PROMPT, handle.rebuild_and_wait())
        .await
        .expect("answered")
        .expect("rebuilt");
    assert!(after > before, "a new table: {before} -> {after}");
    assert!(
        after - before <= 2,
        "51 requests queued together built {} tables",
        after - before
    );
    assert_eq!(
        generation(&handle),
        after,
        "the answer is the table in force"
    );
    task.abort();
}

#[tokio::test]
async fn waiters_on_one_build_all_get_its_generation() {
    let (_dir, path) = config_file(free_port());
    let (handle, task) = start(&path);
    let before = generation(&handle);
    let mut waiters = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let handle = handle.clone();
        waiters.spawn(async move { handle.rebuild_and_wait().await });
    }
    let mut answers = Vec::new();
    while let Some(answer) = tokio::time::timeout(PROMPT, waiters.join_next())
        .await
        .expect("every waiter is answered")
    {
        answers.push(answer.expect("waiter task").expect("rebuilt"));
    }
    assert_eq!(answers.len(), 20);
    let newest = *answers.iter().max().expect("answers");
    assert!(
        answers.iter().all(|g| *g > before),
        "each got a table built after it asked: {before} -> {answers:?}"
    );
    assert!(
        newest - before <= 2,
        "20 waiters queued together built {} tables",
        newest - before
    );
    task.abort();
}

#[tokio::test]
async fn rebuild_and_wait_answers_a_table_newer_than_the_one_in_force() {
    let (_dir, path) = config_file(free_port());
    let (handle, task) = start(&path);
    for _ in 0..3 {
        let in_force = generation(&handle);
        let answer = tokio::time::timeout(PROMPT, handle.rebuild_and_wait())
            .await
            .expect("answered")
            .expect("rebuilt");
        assert!(
            answer > in_force,
            "{in_force} was in force when asked, answered {answer}"
        );
        assert!(generation(&handle) >= answer);
    }
    // A reload is a new table too; a rebuild after it is newer still.
    let reloaded = handle
        .reload()
        .await
        .expect("the file is unchanged and valid");
    let rebuilt = handle.rebuild_and_wait().await.expect("rebuilt");
    assert!(rebuilt > reloaded, "{reloaded} then {rebuilt}");
    task.abort();
}

#[tokio::test]
async fn a_reload_of_a_bad_file_changes_nothing_and_says_where() {
    let port = free_port();
    let (_dir, path) = config_file(port);
    let (handle, task) = start(&path);
    let before = generation(&handle);
    std::fs::write(
        &path,
        format!("{}    balance nosuchalgo\n", config_text(port)),
    )
    .expect("write the bad config");
    let err = tokio::time::timeout(PROMPT, handle.reload())
        .await
        .expect("answered")
        .expect_err("the file has an error");
    let ReloadError::Config(errors) = &err else {
        panic!("a configuration error, got {err}");
    };
    let text = errors.to_string();
    assert!(text.contains("rolelb.cfg:10"), "names FILE:LINE: {text}");
    assert!(text.contains("nosuchalgo"), "names the word: {text}");
    assert_eq!(generation(&handle), before, "the table in force stays");
    // Fixed, the same file reloads.
    std::fs::write(&path, config_text(port)).expect("write the config");
    let reloaded = handle.reload().await.expect("valid again");
    assert!(reloaded > before);
    assert_eq!(generation(&handle), reloaded);
    task.abort();
}

// Several workers: the accept loop and this test resume on different threads, as in rolelb.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_answers_once_the_listeners_it_removed_are_closed() {
    let (kept, removed) = (free_port(), free_port());
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("rolelb.cfg");
    let two = format!(
        "{}\nlisten extra\n    bind 127.0.0.1:{removed}\n    server b 127.0.0.1:1\n",
        config_text(kept)
    );
    std::fs::write(&path, &two).expect("write the config");
    let (handle, task) = start(&path);
    let removed_addr = SocketAddr::from(([127, 0, 0, 1], removed));
    for _ in 0..50 {
        TcpStream::connect_timeout(&removed_addr, Duration::from_secs(1))
            .expect("listening on both at first");
        std::fs::write(&path, config_text(kept)).expect("write the config");
        prompt(handle.reload()).await.expect("reloaded");
        // No yield in between: the answer itself must come after the socket closed.
        assert!(
            TcpStream::connect_timeout(&removed_addr, Duration::from_secs(1)).is_err(),
            "{removed_addr} still accepts after the reload that removed it answered"
        );
        std::fs::write(&path, &two).expect("write the config");
        prompt(handle.reload()).await.expect("reloaded");
    }
    task.abort();
}

#[tokio::test]
async fn after_a_soft_stop_the_table_is_frozen_and_nothing_listens_again() {
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let (_dir, path) = config_file(port);
    let (handle, task) = start(&path);
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).expect("listening at first");
    tokio::time::timeout(PROMPT, handle.stop_accepting())
        .await
        .expect("answered")
        .expect("stopped accepting");
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "{addr} still accepts after stop_accepting answered"
    );
    let frozen = generation(&handle);
    handle
        .rebuild()
        .expect("the task still runs: sessions drain");
    assert_eq!(
        handle.rebuild_and_wait().await,
        Err(ControlError::Stopped),
        "no table after a soft stop began"
    );
    assert!(matches!(handle.reload().await, Err(ReloadError::Stopped)));
    assert_eq!(generation(&handle), frozen);
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "a rebuild or reload after the stop listened again on {addr}"
    );
    task.abort();
}

#[tokio::test]
async fn a_gone_task_answers_every_request_at_once() {
    let (_dir, path) = config_file(free_port());
    let files = vec![path.clone()];
    let config = config::load(&files).expect("valid");
    let control = Control::start(files, config, shared()).expect("control starts");
    let handle = control.handle();
    // Queued before the task ever ran: answered when it is dropped.
    let waiting = tokio::spawn({
        let handle = handle.clone();
        async move { handle.rebuild_and_wait().await }
    });
    tokio::task::yield_now().await;
    drop(control);
    let answer = prompt(waiting).await.expect("waiter task");
    assert_eq!(answer, Err(ControlError::Stopped));

    // A task that ran and was stopped.
    let (_dir, path) = config_file(free_port());
    let (handle, task) = start(&path);
    handle.rebuild_and_wait().await.expect("running");
    task.abort();
    assert!(task.await.expect_err("aborted").is_cancelled());
    assert_eq!(handle.rebuild(), Err(ControlError::Stopped));
    assert_eq!(
        prompt(handle.rebuild_and_wait()).await,
        Err(ControlError::Stopped)
    );
    assert!(matches!(
        prompt(handle.reload()).await,
        Err(ReloadError::Stopped)
    ));
    assert_eq!(
        prompt(handle.stop_accepting()).await,
        Err(ControlError::Stopped)
    );
}

/// `answer`'s output, which must come within [`PROMPT`].
async fn prompt<T>(answer: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PROMPT, answer)
        .await
        .expect("answered promptly, not left hanging")
}
