//! The data path's threads for `nbthread N` (N > 1): N OS threads, each running its own
//! single-threaded runtime, as HAProxy runs one event loop per thread.
//!
//! Every listening address gets one accept loop per thread, all on the same socket (each with
//! its own duplicate of the descriptor, as HAProxy 2.6 shares one socket across its threads);
//! a session runs to its end on the thread whose loop accepted it, so nothing moves a session
//! between threads and no scheduler steals work on the data path. The control plane (the
//! control task, checks, etcd, DNS, the stats socket, signals) keeps the main thread's runtime.
//! With `nbthread 1` there are no such threads: the main thread's runtime is the data path's
//! one thread too, as before.

use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// Where accept loops run: the handles of the data path's runtimes, one per thread. Empty
/// means "the runtime of the caller" (`nbthread 1`, and unit tests).
#[derive(Debug, Clone, Default)]
pub struct DataThreads {
    handles: Arc<[Handle]>,
}

impl DataThreads {
    /// The runtimes an accept loop is started on, one per data thread: the caller's own
    /// runtime when no data threads were started.
    ///
    /// # Panics
    /// Without data threads, when called outside a runtime (as `tokio::spawn` would).
    pub fn handles(&self) -> Vec<Handle> {
        if self.handles.is_empty() {
            vec![Handle::current()]
        } else {
            self.handles.to_vec()
        }
    }

    /// How many accept loops each address gets.
    pub fn count(&self) -> usize {
        self.handles.len().max(1)
    }
}

/// The running data threads; [`Workers::stop`] ends them.
#[derive(Debug)]
pub struct Workers {
    threads: DataThreads,
    done: CancellationToken,
    joins: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts `n` data threads, each with its own single-threaded runtime (`n` ≤ 1: none,
    /// the caller's runtime serves).
    pub fn start(n: usize) -> std::io::Result<Workers> {
        let done = CancellationToken::new();
        let mut workers = Workers {
            threads: DataThreads::default(),
            done: done.clone(),
            joins: Vec::new(),
        };
        if n <= 1 {
            return Ok(workers);
        }
        let mut handles = Vec::with_capacity(n);
        for i in 0..n {
            let (tx, rx) = std::sync::mpsc::channel();
            let done = done.clone();
            let join = std::thread::Builder::new()
                .name(format!("rolelb-data-{i}"))
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build();
                    match runtime {
                        Ok(rt) => {
                            let _ = tx.send(Ok(rt.handle().clone()));
                            rt.block_on(done.cancelled());
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    }
                })?;
            workers.joins.push(join);
            let handle = rx.recv().map_err(|_| {
                std::io::Error::other(format!("data thread {i} ended before it started"))
            })??;
            handles.push(handle);
        }
        workers.threads = DataThreads {
            handles: handles.into(),
        };
        Ok(workers)
    }

    /// The threads' runtimes, for the accept loops.
    pub fn threads(&self) -> DataThreads {
        self.threads.clone()
    }

    /// Ends every data thread (what still runs on them is dropped) and waits for them.
    pub fn stop(mut self) {
        self.done.cancel();
        for join in std::mem::take(&mut self.joins) {
            let _ = join.join();
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.done.cancel();
    }
}
