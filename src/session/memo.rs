//! What another layer derives from an opened session once and reuses while the session is
//! cached (the policy decision's principal): a call then pays for a look-up, not for the
//! derivation. Never sealed, never copied: a changed copy of a session derives its own.

use std::any::Any;
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct SessionMemo(Mutex<Option<Arc<dyn Any + Send + Sync>>>);

impl SessionMemo {
    /// The kept value of type `T` while `current` holds for it; otherwise `make`'s, kept.
    pub fn get_or_make<T: Any + Send + Sync>(
        &self,
        current: impl FnOnce(&T) -> bool,
        make: impl FnOnce() -> T,
    ) -> Arc<T> {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(kept) = slot.clone().and_then(|kept| kept.downcast::<T>().ok()) {
            if current(&kept) {
                return kept;
            }
        }
        let made = Arc::new(make());
        *slot = Some(made.clone());
        made
    }
}

impl Clone for SessionMemo {
    fn clone(&self) -> Self {
        Self::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_made_once_while_current_and_again_when_not() {
        let memo = SessionMemo::default();
        let first = memo.get_or_make(|_: &u32| true, || 1u32);
        let kept = memo.get_or_make(|_: &u32| true, || 2u32);
        assert_eq!((*first, *kept), (1, 1));
        let remade = memo.get_or_make(|value: &u32| *value == 2, || 2u32);
        assert_eq!(*remade, 2);
        // Another type in the slot is not mistaken for this one.
        assert_eq!(*memo.get_or_make(|_: &String| true, || "x".to_owned()), "x");
        assert_eq!(*memo.clone().get_or_make(|_: &u32| true, || 3u32), 3);
    }
}
