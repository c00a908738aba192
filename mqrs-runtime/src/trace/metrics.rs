//! Counting every call into the RED registry (`mqrs_base::red`), traced or not: the call's
//! time read off the span clock at its start and end, and its error as `error.type`.

use mqrs_base::red::Series;

use super::clock;
use crate::error::RpcError;

/// When a call started, ns since the Unix epoch; `None` when nothing is counted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Started(Option<u64>);

/// Marks a call's start, when calls are counted (`enabled`).
pub(crate) fn start(enabled: bool) -> Started {
    Started(enabled.then(clock::now_ns))
}

impl Started {
    /// Counts the call in `series` as ended now, failed with `error` if any.
    pub(crate) fn record(self, series: &Series, error: Option<&RpcError>) {
        let _ = self.record_kind(series, error.map(RpcError::kind));
    }

    /// [`Started::record`] with the error given by its `error.type`; returns how long the
    /// call took, ns (0 when not counted).
    pub(crate) fn record_kind(self, series: &Series, error_type: Option<&str>) -> u64 {
        let Some(start) = self.0 else { return 0 };
        let end = clock::now_ns();
        let took = end.saturating_sub(start);
        series.record_at(end / 1_000_000_000, took, error_type);
        took
    }

    /// When the call started, ns since the Unix epoch (0 when not counted).
    pub(crate) fn at_ns(&self) -> u64 {
        self.0.unwrap_or(0)
    }

    /// True when the call is counted.
    pub(crate) fn counted(&self) -> bool {
        self.0.is_some()
    }
}
