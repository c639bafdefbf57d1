//! The data path's threads for `nbthread N` (N > 1): N OS threads, each running its own
//! single-threaded runtime, as HAProxy runs one event loop per thread.
//!
//! Every listening address gets one accept loop per thread, all on the same socket (each with
//! its own duplicate of the descriptor, as HAProxy 2.6 shares one socket across its threads;
//! one socket per thread was measured and not kept: see `control/sockets.rs`). As HAProxy's
//! accept queues do, the loop that accepted a connection hands it to the thread that carries
//! fewer sessions ([`DataThreads::pick`]: itself on a tie, so an even load costs no
//! cross-thread wake-up); the session then runs to its end on that thread, so nothing moves a
//! running session between threads and no scheduler steals work on the data path. The
//! control plane (the control task, checks, etcd, DNS, the stats socket, signals) keeps the
//! main thread's runtime.
//! With `nbthread 1` there are no such threads: the main thread's runtime is the data path's
//! one thread too, as before.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// Where accept loops run: the handles of the data path's runtimes, one per thread. Empty
/// means "the runtime of the caller" (`nbthread 1`, and unit tests).
#[derive(Debug, Clone, Default)]
pub struct DataThreads {
    handles: Arc<[Handle]>,
    /// Sessions on each thread, those handed to it and not started yet included.
    load: Arc<[AtomicU32]>,
    /// Which other thread the next [`DataThreads::pick`] compares with.
    turn: Arc<AtomicUsize>,
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

    /// The thread a connection accepted on thread `me` should run on: `me` unless the next
    /// other thread in turn carries fewer sessions (two choices, as HAProxy compares two
    /// threads' loads); the pick counts as one session there until its [`Placed`] is
    /// dropped. `None` without data threads (the caller's runtime serves everything).
    pub fn pick(&self, me: usize) -> Option<Placed> {
        let n = self.handles.len();
        if n == 0 || me >= n {
            return None;
        }
        let mut thread = me;
        if n > 1 {
            let step = 1 + self.turn.fetch_add(1, Ordering::Relaxed) % (n - 1);
            let other = (me + step) % n;
            if self.load[other].load(Ordering::Relaxed) < self.load[me].load(Ordering::Relaxed) {
                thread = other;
            }
        }
        self.load[thread].fetch_add(1, Ordering::Relaxed);
        Some(Placed {
            load: self.load.clone(),
            thread,
        })
    }

    /// The runtime of data thread `i`.
    pub fn handle(&self, i: usize) -> Option<&Handle> {
        self.handles.get(i)
    }

    /// Sessions each data thread carries now (for tests and diagnostics).
    pub fn loads(&self) -> Vec<u32> {
        self.load
            .iter()
            .map(|l| l.load(Ordering::Relaxed))
            .collect()
    }
}

/// One session counted on a data thread while it lives (see [`DataThreads::pick`]).
#[derive(Debug)]
pub struct Placed {
    load: Arc<[AtomicU32]>,
    thread: usize,
}

impl Placed {
    /// The data thread the session runs on.
    pub fn thread(&self) -> usize {
        self.thread
    }
}

impl Drop for Placed {
    fn drop(&mut self) {
        self.load[self.thread].fetch_sub(1, Ordering::Relaxed);
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
            load: handles.iter().map(|_| AtomicU32::new(0)).collect(),
            handles: handles.into(),
            turn: Arc::default(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_goes_to_the_thread_with_fewer_sessions_and_stays_home_on_a_tie() {
        let workers = Workers::start(2).expect("two data threads");
        let threads = workers.threads();
        let pick = |me| threads.pick(me).expect("data threads run");
        // Even: the accepting thread keeps it (no cross-thread wake-up).
        let a = pick(0);
        assert_eq!(a.thread(), 0);
        // Thread 0 carries one more: the next goes to thread 1, whoever accepted it.
        let b = pick(0);
        assert_eq!(b.thread(), 1);
        let c = pick(1);
        assert_eq!(c.thread(), 1);
        let d = pick(1);
        assert_eq!(d.thread(), 0);
        assert_eq!(threads.loads(), [2, 2]);
        // A session that ends frees its place on its thread.
        drop(a);
        drop(d);
        assert_eq!(threads.loads(), [0, 2]);
        assert_eq!(
            pick(1).thread(),
            0,
            "the thread left with none takes the next"
        );
        workers.stop();
    }

    #[test]
    fn without_data_threads_the_caller_serves() {
        assert!(DataThreads::default().pick(0).is_none());
    }
}
