//! Text cut to a size at a character boundary, as every limit on names and values cuts it.

use std::borrow::Cow;

/// Longest text attribute value (and text in an array value) kept.
pub const MAX_VALUE_BYTES: usize = 1024;

/// `s` cut to at most `max` bytes at a character boundary, marked with `…` when cut.
pub fn cut(s: &str, max: usize) -> Cow<'_, str> {
    let kept = clip(s, max);
    if kept.len() == s.len() {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(format!("{kept}…"))
    }
}

/// At most `max` bytes of `s`, cut at a character boundary (no mark).
pub fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
