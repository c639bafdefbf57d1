//! The forwarding buffers, lent per thread while bytes are in flight.
//!
//! A session direction takes a buffer only once its source is readable and gives it back as
//! soon as what it read is written, as HAProxy takes its channel buffers from a pool: an idle
//! session holds none. Each runtime thread keeps a short free list ([`POOL_MAX`] buffers), so
//! a busy thread reuses buffers without going to the allocator; a buffer given back on a
//! thread whose list is full, or of a size no longer in force (`tune.bufsize` changed by a
//! reload), is freed.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// Free buffers kept per thread: 64 × 16 KiB = 1 MiB at the default `tune.bufsize`.
const POOL_MAX: usize = 64;

thread_local! {
    static FREE: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

#[cfg(test)]
thread_local! {
    /// Buffers of this thread lent and not given back yet.
    static LENT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Buffers taken on this thread and not dropped yet.
#[cfg(test)]
pub(super) fn lent() -> usize {
    LENT.with(|l| l.get())
}

/// A buffer lent from this thread's pool; given back when dropped.
pub struct Buf(Box<[u8]>);

impl Buf {
    /// A buffer of exactly `size` bytes (at least one), from the pool when it has one.
    pub fn take(size: usize) -> Buf {
        let size = size.max(1);
        #[cfg(test)]
        LENT.with(|l| l.set(l.get() + 1));
        let pooled = FREE
            .try_with(|free| free.borrow_mut().pop())
            .ok()
            .flatten()
            .filter(|b| b.len() == size);
        Buf(pooled.unwrap_or_else(|| vec![0u8; size].into_boxed_slice()))
    }
}

impl Deref for Buf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.0);
        #[cfg(test)]
        let _ = LENT.try_with(|l| l.set(l.get().saturating_sub(1)));
        // On a thread being torn down the list is gone: the buffer is simply freed.
        let _ = FREE.try_with(|free| {
            let mut free = free.borrow_mut();
            if free.len() < POOL_MAX {
                free.push(buf);
            }
        });
    }
}

/// Free buffers in this thread's pool.
#[cfg(test)]
fn pooled() -> usize {
    FREE.with(|free| free.borrow().len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_given_back_is_lent_again_and_the_pool_is_bounded() {
        let first = Buf::take(1024);
        let addr = first.as_ptr();
        drop(first);
        assert_eq!(pooled(), 1);
        let again = Buf::take(1024);
        assert_eq!(again.as_ptr(), addr, "reused from the pool");
        assert_eq!(pooled(), 0);
        drop(again);
        let many: Vec<Buf> = (0..POOL_MAX + 10).map(|_| Buf::take(64)).collect();
        drop(many);
        assert_eq!(pooled(), POOL_MAX);
    }

    #[test]
    fn a_buffer_of_another_size_is_not_lent() {
        drop(Buf::take(2048));
        let b = Buf::take(4096);
        assert_eq!(b.len(), 4096);
    }
}
