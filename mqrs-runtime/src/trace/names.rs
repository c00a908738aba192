//! Span names that repeat (`Login/track`, `gate Chat/HD_JoinChat`), kept once for the life of
//! the process, so a span names its operation without allocating and the store holds one copy.
//!
//! The table is bounded: only names up to [`MAX_LEN`] bytes are kept, at most [`MAX_NAMES`] of
//! them (a few hundred KiB at worst); any other name is allocated per span like before, so
//! client input can never grow it without limit.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::{OnceLock, RwLock};

use mqrs_base::hash::KeyedHash;
use mqrs_base::sync::RwLocked;

/// Longest name kept in the table.
pub const MAX_LEN: usize = 128;
/// Most names kept in the table.
pub const MAX_NAMES: usize = 4096;

type Table = HashSet<&'static str, KeyedHash>;

fn table() -> &'static RwLock<Table> {
    static TABLE: OnceLock<RwLock<Table>> = OnceLock::new();
    TABLE.get_or_init(|| RwLock::new(HashSet::default()))
}

/// `name` as a `'static` string when it is (or can become) one of the kept names, else a copy.
///
/// Each thread first looks in its own copy of the names it has used, so the common case takes
/// no lock and touches no memory another core writes.
pub(crate) fn intern(name: &str) -> Cow<'static, str> {
    thread_local! {
        static SEEN: RefCell<Table> = RefCell::new(HashSet::default());
    }
    if name.len() > MAX_LEN {
        return Cow::Owned(name.to_string());
    }
    if let Some(s) = SEEN.with(|seen| seen.borrow().get(name).copied()) {
        return Cow::Borrowed(s);
    }
    let kept = intern_shared(name);
    if let Cow::Borrowed(s) = kept {
        // Bounded like the shared table: it only ever holds names from it.
        SEEN.with(|seen| seen.borrow_mut().insert(s));
    }
    kept
}

/// [`intern`] through the table all threads share.
fn intern_shared(name: &str) -> Cow<'static, str> {
    if let Some(s) = table().read_locked().get(name) {
        return Cow::Borrowed(s);
    }
    let mut t = table().write_locked();
    if let Some(s) = t.get(name) {
        return Cow::Borrowed(s);
    }
    if t.len() >= MAX_NAMES {
        return Cow::Owned(name.to_string());
    }
    // Leaked on purpose: bounded by MAX_NAMES * MAX_LEN, and alive as long as the process.
    let kept: &'static str = Box::leak(name.into());
    t.insert(kept);
    Cow::Borrowed(kept)
}

/// The name made of `parts` joined, interned; built in a reused buffer, so a kept name costs
/// no allocation.
pub(crate) fn intern_parts(parts: &[&str]) -> Cow<'static, str> {
    thread_local! {
        static BUF: RefCell<String> = const { RefCell::new(String::new()) };
    }
    BUF.with(|b| {
        let mut b = b.borrow_mut();
        b.clear();
        for p in parts {
            b.push_str(p);
        }
        intern(&b)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_kept_once_long_ones_are_copied() {
        let a = intern_parts(&["Login", "/", "track"]);
        let b = intern("Login/track");
        match (&a, &b) {
            (Cow::Borrowed(x), Cow::Borrowed(y)) => assert!(std::ptr::eq(*x, *y)),
            _ => panic!("a short name should be kept: {a:?} {b:?}"),
        }
        let long = "x".repeat(MAX_LEN + 1);
        assert!(matches!(intern(&long), Cow::Owned(s) if s == long));
    }
}
