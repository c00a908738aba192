//! Primitives the mqrs runtime and the mqrs viewer share, so each limit and each hash has one
//! home: text cut to a size at a character boundary ([`text`]), a fast keyed hash for maps
//! whose keys come from outside ([`hash`]), locks taken past a panicked holder ([`sync`]),
//! the budget every count or byte limit is kept in ([`budget`]), and counters read as one
//! snapshot ([`counters!`]).
//!
//! ```
//! use mqrs_base::text::cut;
//! assert_eq!(cut("héllo", 2), "h…");
//! ```

#![warn(missing_docs)]

pub mod budget;
pub mod counters;
pub mod hash;
pub mod history;
pub mod red;
pub mod sync;
pub mod text;
