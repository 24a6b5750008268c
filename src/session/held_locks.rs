//! The store locks this process holds right now (name → owner token). A lock is normally
//! released by the call that took it; a shutdown that cuts such a call off (its drain
//! timeout passed) releases the rest here, so that other instances need not wait for the
//! locks to lapse.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::Locks;

#[derive(Clone, Default)]
pub struct HeldLocks(Arc<Mutex<HashMap<String, String>>>);

impl HeldLocks {
    fn entries(&self) -> MutexGuard<'_, HashMap<String, String>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `owner` took `name`.
    pub fn taken(&self, name: &str, owner: &str) {
        self.entries().insert(name.to_owned(), owner.to_owned());
    }

    /// `owner` released `name` (or tried to: it lapses on its own anyway).
    pub fn released(&self, name: &str, owner: &str) {
        let mut entries = self.entries();
        if entries.get(name).is_some_and(|held| held == owner) {
            entries.remove(name);
        }
    }

    pub fn count(&self) -> usize {
        self.entries().len()
    }

    /// Releases every lock still held; returns how many were released.
    pub async fn release_all(&self, locks: &dyn Locks) -> usize {
        let held: Vec<(String, String)> = self.entries().drain().collect();
        let mut released = 0;
        for (name, owner) in held {
            match locks.unlock(&name, &owner).await {
                Ok(()) => released += 1,
                Err(error) => tracing::warn!(%error, "could not release a held lock at shutdown"),
            }
        }
        released
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::session::memory::MemoryStore;

    #[tokio::test]
    async fn locks_still_held_are_released_and_released_ones_are_left_alone() {
        let store = MemoryStore::new();
        let held = HeldLocks::default();
        let ttl = Duration::from_secs(60);
        for (name, owner) in [("cut-off", "a"), ("finished", "b")] {
            assert!(store.try_lock(name, owner, ttl, 0).await.expect("lock"));
            held.taken(name, owner);
        }
        // "finished" was released by its call; someone else took it since.
        store.unlock("finished", "b").await.expect("unlock");
        held.released("finished", "b");
        assert!(store.try_lock("finished", "c", ttl, 0).await.expect("lock"));
        assert_eq!(held.count(), 1);

        assert_eq!(held.release_all(&store).await, 1);
        assert_eq!(held.count(), 0);
        assert!(
            store.try_lock("cut-off", "d", ttl, 0).await.expect("lock"),
            "the cut-off call's lock is free at once, not after its TTL"
        );
        assert!(
            !store.try_lock("finished", "e", ttl, 0).await.expect("lock"),
            "another holder's lock is not touched"
        );
    }
}
