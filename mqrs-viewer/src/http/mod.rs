//! What the viewer and the collector share over HTTP: the serving loop and its bounds on
//! connections, time and bytes (`limits.rs`), and the answer's shape, errors included
//! (`answer.rs`).

pub(crate) mod answer;
pub(crate) mod limits;
