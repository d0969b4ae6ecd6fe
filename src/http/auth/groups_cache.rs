//! The per-token cache of userinfo groups (integrations.md §2.3).
//!
//! Keyed by the SHA-256 of the token, so the cache never holds a token. Entries live for the
//! configured TTL (0 disables the cache); at most [`MAX_ENTRIES`] are kept, the oldest fetch
//! evicted first: reads `peek`, so only an insert moves an entry to the front of the LRU.
//! Only successful lookups are inserted.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use lru::LruCache;

use super::{Groups, TokenKey};

/// The cache bound of integrations.md §2.3.
pub(crate) const MAX_ENTRIES: usize = 10_000;

/// A marker taken before a userinfo call; the result is cached only if no entry was forgotten
/// in the meantime, so a lookup that raced a membership change cannot bring old groups back.
#[derive(Clone, Copy)]
pub(crate) struct Ticket(u64);

pub(crate) struct GroupsCache {
    ttl: Duration,
    inner: Mutex<Inner>,
}

struct Inner {
    entries: LruCache<TokenKey, (Arc<Groups>, Instant)>,
    /// How many entries were forgotten so far; a [`Ticket`] remembers it.
    forgets: u64,
}

impl GroupsCache {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self::with_capacity(ttl, MAX_ENTRIES)
    }

    pub(crate) fn with_capacity(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            inner: Mutex::new(Inner {
                entries: LruCache::new(NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN)),
                forgets: 0,
            }),
        }
    }

    fn enabled(&self) -> bool {
        !self.ttl.is_zero()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The critical sections cannot leave the map inconsistent, so a poisoned lock is usable.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The cached groups of `key`, if fetched less than the TTL ago.
    pub(crate) fn get(&self, key: &TokenKey) -> Option<Arc<Groups>> {
        if !self.enabled() {
            return None;
        }
        let mut inner = self.lock();
        let (groups, fetched_at) = inner.entries.peek(key)?;
        if fetched_at.elapsed() < self.ttl {
            return Some(Arc::clone(groups));
        }
        inner.entries.pop(key);
        None
    }

    pub(crate) fn ticket(&self) -> Ticket {
        Ticket(self.lock().forgets)
    }

    /// Caches `groups` for `key` unless the cache is disabled or an entry was forgotten since
    /// `ticket` was taken. At capacity the oldest entry makes room.
    pub(crate) fn insert(&self, key: TokenKey, groups: Arc<Groups>, ticket: Ticket) {
        if !self.enabled() {
            return;
        }
        let mut inner = self.lock();
        if inner.forgets != ticket.0 {
            return;
        }
        inner.entries.put(key, (groups, Instant::now()));
    }

    pub(crate) fn remove(&self, key: &TokenKey) {
        let mut inner = self.lock();
        inner.forgets = inner.forgets.wrapping_add(1);
        inner.entries.pop(key);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(marker: &str) -> Arc<Groups> {
        let path = format!("/vlab/{marker}/admin");
        Arc::new(Groups::parse(&[path], "/sa"))
    }

    const A: &str = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d";
    const B: &str = "0b7e5a8e-6f55-4c1e-9d0f-3c0b8a1d2e4f";

    #[test]
    fn entries_expire_after_the_ttl() {
        let cache = GroupsCache::new(Duration::from_millis(300));
        let key = TokenKey::of("t");
        cache.insert(key, groups(A), cache.ticket());
        assert_eq!(cache.get(&key), Some(groups(A)));
        std::thread::sleep(Duration::from_millis(350));
        assert_eq!(cache.get(&key), None);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn a_zero_ttl_disables_the_cache() {
        let cache = GroupsCache::new(Duration::ZERO);
        let key = TokenKey::of("t");
        cache.insert(key, groups(A), cache.ticket());
        assert_eq!(cache.get(&key), None);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn the_oldest_entry_is_evicted_at_capacity() {
        let cache = GroupsCache::with_capacity(Duration::from_secs(60), 2);
        let (k1, k2, k3) = (TokenKey::of("1"), TokenKey::of("2"), TokenKey::of("3"));
        cache.insert(k1, groups(A), cache.ticket());
        cache.insert(k2, groups(A), cache.ticket());
        // Re-inserting k1 makes it the newest.
        cache.insert(k1, groups(B), cache.ticket());
        cache.insert(k3, groups(A), cache.ticket());
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&k2), None);
        assert_eq!(cache.get(&k1), Some(groups(B)));
        assert!(cache.get(&k3).is_some());
    }

    #[test]
    fn re_inserting_one_key_keeps_one_entry() {
        let cache = GroupsCache::with_capacity(Duration::from_secs(60), 3);
        let key = TokenKey::of("same");
        for _ in 0..100 {
            cache.insert(key, groups(A), cache.ticket());
        }
        assert!(cache.lock().entries.cap().get() <= 3);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_result_fetched_across_a_forget_is_not_cached() {
        let cache = GroupsCache::new(Duration::from_secs(60));
        let key = TokenKey::of("t");
        let ticket = cache.ticket();
        cache.remove(&key);
        cache.insert(key, groups(A), ticket);
        assert_eq!(cache.get(&key), None);
        cache.insert(key, groups(A), cache.ticket());
        assert!(cache.get(&key).is_some());
        cache.remove(&key);
        assert_eq!(cache.get(&key), None);
    }
}
