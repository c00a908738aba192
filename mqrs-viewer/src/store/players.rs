//! Which traces each player took part in: trace ids by `user.id` and by `session.id` (hashed),
//! oldest first. It answers the session view and searches by user or session without reading
//! every trace, and it is where a session's share of the store is counted.
//!
//! A trace is listed under every user and session id any of its spans carries (a request that
//! logs a player in carries none at its root and the new user id further down). Lists are kept
//! exact on every removal. A hash can collide, so readers still check the spans.

use std::collections::{HashMap, VecDeque};

use mqrs_base::hash::KeyedHash;

/// A hashed `user.id` or `session.id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Key {
    /// A `user.id` value.
    User(u64),
    /// A `session.id` value.
    Session(u64),
}

/// Trace ids per player key (hashed with the store's fast keyed hash: this map is touched for
/// every trace stored and evicted).
#[derive(Default)]
pub(super) struct Players {
    lists: HashMap<Key, VecDeque<u128>, KeyedHash>,
}

impl Players {
    /// Lists trace `id` under `key` (newest last).
    pub(super) fn add(&mut self, key: Key, id: u128) {
        self.lists.entry(key).or_default().push_back(id);
    }

    /// Takes trace `id` off `key`'s list.
    pub(super) fn remove(&mut self, key: Key, id: u128) {
        let Some(ids) = self.lists.get_mut(&key) else {
            return;
        };
        // Eviction takes the oldest, which is the front in the common case.
        if ids.front() == Some(&id) {
            ids.pop_front();
        } else {
            ids.retain(|x| *x != id);
        }
        if ids.is_empty() {
            self.lists.remove(&key);
        }
    }

    /// The traces listed under `key`, oldest first.
    pub(super) fn traces(&self, key: Key) -> impl Iterator<Item = u128> + '_ {
        self.lists.get(&key).into_iter().flatten().copied()
    }

    /// How many traces `key` has.
    pub(super) fn count(&self, key: Key) -> usize {
        self.lists.get(&key).map_or(0, VecDeque::len)
    }

    /// The oldest trace of `key`.
    pub(super) fn oldest(&self, key: Key) -> Option<u128> {
        self.lists.get(&key).and_then(|ids| ids.front().copied())
    }

    /// Forgets `key` entirely.
    pub(super) fn forget(&mut self, key: Key) {
        self.lists.remove(&key);
    }
}
