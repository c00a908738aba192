//! Primitives the mqrs runtime and the mqrs viewer share, so each limit and each hash has one
//! home: text cut to a size at a character boundary ([`text`]), and a fast keyed hash for maps
//! whose keys come from outside ([`hash`]).
//!
//! ```
//! use mqrs_base::text::cut;
//! assert_eq!(cut("héllo", 2), "h…");
//! ```

#![warn(missing_docs)]

pub mod hash;
pub mod text;
