//! What calls from other processes may hold while they are served here: a count and bytes.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::BrokerSection;

/// What calls from other processes may hold here at once: how many (`[broker] max_pending`)
/// and how many bytes (`[broker] max_serving_bytes`).
pub(super) struct Budget {
    /// One permit per call being served.
    pub(super) calls: Arc<Semaphore>,
    /// Permits of `calls`, all of them.
    pub(super) max_calls: usize,
    /// One permit per byte held by calls being served.
    pub(super) bytes: Arc<Semaphore>,
    /// Permits of `bytes`, all of them.
    pub(super) max_bytes: usize,
}

/// What one admitted call holds of the [`Budget`] until it is served.
pub(super) type Held = (OwnedSemaphorePermit, OwnedSemaphorePermit);

impl Budget {
    /// The budget `settings` allow.
    pub(super) fn new(settings: &BrokerSection) -> Self {
        let max_calls = settings.max_pending.max(1);
        let max_bytes = settings.max_serving_bytes.clamp(1, Semaphore::MAX_PERMITS);
        Budget {
            calls: Arc::new(Semaphore::new(max_calls)),
            max_calls,
            bytes: Arc::new(Semaphore::new(max_bytes)),
            max_bytes,
        }
    }

    /// Room for one more call holding `bytes` bytes, or which limit refuses it. A call larger
    /// than the whole byte budget takes all of it: served alone, not refused forever.
    pub(super) fn take(&self, bytes: usize) -> Result<Held, &'static str> {
        let call = self.calls.clone().try_acquire_owned();
        let bytes = u32::try_from(bytes.min(self.max_bytes))
            .ok()
            .and_then(|n| self.bytes.clone().try_acquire_many_owned(n).ok());
        match (call, bytes) {
            (Ok(call), Some(bytes)) => Ok((call, bytes)),
            (Err(_), _) => Err("calls ([broker] max_pending)"),
            (Ok(_), None) => Err("bytes of calls ([broker] max_serving_bytes)"),
        }
    }
}
