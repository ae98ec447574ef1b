//! Schema ids the registry recently answered 404 for, remembered for a few
//! seconds: a record framed with an unknown id is retried (a registry replica
//! may not have the id yet), and hostile records with made-up ids must not
//! cost one registry request per attempt. Bounded in size.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most ids remembered at once; past it, expired ones are dropped first and
/// then nothing new is remembered until some expire (memory stays bounded).
const CAPACITY: usize = 4096;

/// The negative cache of schema ids.
#[derive(Debug)]
pub(crate) struct UnknownIds {
    ttl: Duration,
    seen: Mutex<HashMap<u32, Instant>>,
}

impl UnknownIds {
    /// Ids are remembered for `ttl` (zero: never).
    pub(crate) fn new(ttl: Duration) -> Self {
        Self { ttl, seen: Mutex::new(HashMap::new()) }
    }

    /// True when the registry answered 404 for `id` less than the TTL ago.
    pub(crate) fn recently_unknown(&self, id: u32) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(&id).is_some_and(|at| at.elapsed() < self.ttl)
    }

    /// Remembers that the registry does not know `id` now.
    pub(crate) fn remember(&self, id: u32) {
        if self.ttl.is_zero() {
            return;
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= CAPACITY && !seen.contains_key(&id) {
            let ttl = self.ttl;
            seen.retain(|_, at| at.elapsed() < ttl);
            if seen.len() >= CAPACITY {
                return;
            }
        }
        seen.insert(id, Instant::now());
    }

    /// Forgets `id` (the registry knows it now).
    pub(crate) fn forget(&self, id: u32) {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_for_the_ttl_only_and_stays_bounded() {
        let ids = UnknownIds::new(Duration::from_secs(60));
        assert!(!ids.recently_unknown(7));
        ids.remember(7);
        assert!(ids.recently_unknown(7));
        ids.forget(7);
        assert!(!ids.recently_unknown(7));

        for id in 0..(CAPACITY as u32 + 100) {
            ids.remember(id);
        }
        assert_eq!(ids.seen.lock().unwrap().len(), CAPACITY);

        let never = UnknownIds::new(Duration::ZERO);
        never.remember(7);
        assert!(!never.recently_unknown(7));
    }
}
