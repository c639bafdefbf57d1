//! `balance first`: the first usable server in declaration order.
//!
//! The caller's [`Live::usable`] already says when a server has reached its `maxconn`, so
//! servers fill up one after the other, as with HAProxy's `balance first`.

use std::net::IpAddr;

use super::{Candidate, Live, Selector};

/// The `first` selector.
#[derive(Debug)]
pub struct First {
    candidates: usize,
}

impl First {
    /// A `first` selector over `candidates`.
    pub fn new(candidates: &[Candidate]) -> Self {
        First {
            candidates: candidates.len(),
        }
    }
}

impl Selector for First {
    fn pick(&self, live: &dyn Live, _client: Option<IpAddr>) -> Option<usize> {
        (0..self.candidates).find(|&i| live.usable(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing::{FakeLive, weighted};

    #[test]
    fn fills_servers_in_declaration_order() {
        let selector = First::new(&weighted(&[1, 5, 1]));
        let live = FakeLive::all_usable(3);
        // Server a takes everything until it is full, then b, then c.
        assert_eq!(selector.pick(&live, None), Some(0));
        assert_eq!(selector.pick(&live, None), Some(0));
        live.set_usable(0, false);
        assert_eq!(selector.pick(&live, None), Some(1));
        live.set_usable(1, false);
        assert_eq!(selector.pick(&live, None), Some(2));
        live.set_usable(2, false);
        assert_eq!(selector.pick(&live, None), None);
        // A slot frees up on a: it is first again.
        live.set_usable(0, true);
        assert_eq!(selector.pick(&live, None), Some(0));
    }
}
