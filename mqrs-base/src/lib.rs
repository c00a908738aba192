//! Primitives the mqrs runtime and the mqrs viewer share, so each limit and each hash has one
//! home: text cut to a size at a character boundary ([`text`]), a fast keyed hash for maps
//! whose keys come from outside ([`hash`]), and locks taken past a panicked holder ([`sync`]).
//!
//! ```
//! use mqrs_base::text::cut;
//! assert_eq!(cut("héllo", 2), "h…");
//! ```

#![warn(missing_docs)]

pub mod hash;
pub mod sync;
pub mod text;
