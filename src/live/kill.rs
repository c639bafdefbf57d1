//! A one-shot signal that ends sessions: a server's `shutdown-sessions` (also a role loss or
//! `on-marked-down shutdown-sessions`) trips the server's switch, a hard stop trips the
//! process's; every session watching the switch wakes and closes.
//!
//! The data path watches a switch for the whole life of every session, and a session's task
//! is polled on every read and write, so watching has to cost nothing while nothing happens:
//! a watcher ([`Tripped`]) takes the switch's lock once to register its waker and once to
//! leave, and in between a poll is one atomic load (a `CancellationToken` locks a mutex
//! twice per poll, a mutex every session of every thread shares).

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

/// The signal; see the module note.
#[derive(Debug, Default)]
pub struct KillSwitch {
    tripped: AtomicBool,
    watchers: Mutex<Watchers>,
}

/// The wakers of the registered watchers, in slots a leaving watcher frees for the next.
#[derive(Debug, Default)]
struct Watchers {
    slots: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl Watchers {
    fn insert(&mut self, waker: Waker) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(waker);
                i
            }
            None => {
                self.slots.push(Some(waker));
                self.slots.len() - 1
            }
        }
    }

    fn remove(&mut self, i: usize) {
        if let Some(slot) = self.slots.get_mut(i)
            && slot.take().is_some()
        {
            self.free.push(i);
        }
    }
}

impl KillSwitch {
    pub fn new() -> Self {
        KillSwitch::default()
    }

    /// Trips the switch: every watcher wakes, now and from now on.
    pub fn trip(&self) {
        self.tripped.store(true, Ordering::Release);
        let wakers: Vec<Waker> = {
            let mut watchers = self.lock();
            watchers.free.clear();
            watchers.slots.drain(..).flatten().collect()
        };
        for waker in wakers {
            waker.wake();
        }
    }

    pub fn is_tripped(&self) -> bool {
        self.tripped.load(Ordering::Acquire)
    }

    /// Completes once the switch is tripped.
    pub fn tripped(&self) -> Tripped<'_> {
        Tripped {
            switch: self,
            slot: None,
            waker: None,
        }
    }

    /// The watchers' list; a poisoned lock is taken over (a waker list cannot be left
    /// half-changed by the code that holds it).
    fn lock(&self) -> std::sync::MutexGuard<'_, Watchers> {
        self.watchers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A watcher of a [`KillSwitch`]: ready once the switch is tripped.
#[derive(Debug)]
pub struct Tripped<'a> {
    switch: &'a KillSwitch,
    /// Its slot in the switch's list, once registered.
    slot: Option<usize>,
    /// The waker registered there, to see without the lock whether it is still the task's.
    waker: Option<Waker>,
}

impl Future for Tripped<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.switch.is_tripped() {
            return Poll::Ready(());
        }
        if this.slot.is_some() && this.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            return Poll::Pending;
        }
        let mut watchers = this.switch.lock();
        // Seen under the lock: a trip either happened before (its flag shows) or will find
        // this waker in the list.
        if this.switch.is_tripped() {
            return Poll::Ready(());
        }
        let waker = cx.waker().clone();
        match this.slot {
            Some(i) if watchers.slots.get(i).is_some_and(Option::is_some) => {
                watchers.slots[i] = Some(waker.clone());
            }
            _ => this.slot = Some(watchers.insert(waker.clone())),
        }
        drop(watchers);
        this.waker = Some(waker);
        Poll::Pending
    }
}

impl Drop for Tripped<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.slot
            && !self.switch.is_tripped()
        {
            self.switch.lock().remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn waker() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        (count.clone(), Waker::from(count))
    }

    /// Polls the watcher once with `waker`: whether it is ready.
    fn ready(watcher: &mut Pin<Box<Tripped<'_>>>, waker: &Waker) -> bool {
        watcher
            .as_mut()
            .poll(&mut Context::from_waker(waker))
            .is_ready()
    }

    /// How many times the waker of `count` was woken.
    fn woken(count: &Count) -> usize {
        count.0.load(Ordering::SeqCst)
    }

    #[test]
    fn a_trip_wakes_every_watcher_once_and_later_watchers_are_ready_at_once() {
        let switch = KillSwitch::new();
        let (a_count, a) = waker();
        let (b_count, b) = waker();
        let mut wa = Box::pin(switch.tripped());
        let mut wb = Box::pin(switch.tripped());
        assert!(!ready(&mut wa, &a));
        assert!(!ready(&mut wb, &b));
        // Polled again with the same waker: still pending, nothing re-registered.
        assert!(!ready(&mut wa, &a));
        assert_eq!(switch.lock().slots.len(), 2);
        switch.trip();
        assert_eq!(woken(&a_count), 1);
        assert_eq!(woken(&b_count), 1);
        assert!(ready(&mut wa, &a));
        let mut late = Box::pin(switch.tripped());
        assert!(ready(&mut late, &a));
        assert!(switch.lock().slots.is_empty());
    }

    #[test]
    fn a_watcher_that_leaves_frees_its_slot_and_is_not_woken() {
        let switch = KillSwitch::new();
        let (gone_count, gone) = waker();
        let mut w = Box::pin(switch.tripped());
        assert!(!ready(&mut w, &gone));
        drop(w);
        assert_eq!(switch.lock().free, vec![0]);
        let (count, stays) = waker();
        let mut w = Box::pin(switch.tripped());
        assert!(!ready(&mut w, &stays));
        assert_eq!(switch.lock().slots.len(), 1, "the freed slot is reused");
        switch.trip();
        assert_eq!(woken(&gone_count), 0);
        assert_eq!(woken(&count), 1);
    }

    #[test]
    fn a_new_waker_replaces_the_registered_one() {
        let switch = KillSwitch::new();
        let (old_count, old) = waker();
        let (new_count, new) = waker();
        let mut w = Box::pin(switch.tripped());
        assert!(!ready(&mut w, &old));
        assert!(!ready(&mut w, &new));
        switch.trip();
        assert_eq!(woken(&old_count), 0);
        assert_eq!(woken(&new_count), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sessions_on_other_threads_wake_on_a_trip() {
        let switch = Arc::new(KillSwitch::new());
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let s = switch.clone();
            tasks.push(tokio::spawn(async move { s.tripped().await }));
        }
        tokio::task::yield_now().await;
        switch.trip();
        for t in tasks {
            tokio::time::timeout(std::time::Duration::from_secs(5), t)
                .await
                .expect("every watcher woke")
                .expect("no panic");
        }
    }
}
