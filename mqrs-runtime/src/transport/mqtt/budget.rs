//! What calls from other processes may hold while they are served here: a count and bytes,
//! each a [`Budget`].

use mqrs_base::budget::{Budget, Share};

use crate::config::BrokerSection;

/// What calls from other processes may hold here at once: how many (`[broker] max_pending`)
/// and how many bytes (`[broker] max_serving_bytes`).
pub(super) struct Serving {
    /// One unit per call being served.
    pub(super) calls: Budget,
    /// One unit per byte held by calls being served.
    bytes: Budget,
}

/// What one admitted call holds of [`Serving`] until it is served.
pub(super) type Held = (Share, Share);

impl Serving {
    /// The budgets `settings` allow.
    pub(super) fn new(settings: &BrokerSection) -> Self {
        Serving {
            calls: Budget::new(settings.max_pending),
            bytes: Budget::new(settings.max_serving_bytes),
        }
    }

    /// Room for one more call holding `bytes` bytes, or which limit refuses it. A call larger
    /// than the whole byte budget takes all of it: served alone, not refused forever.
    pub(super) fn take(&self, bytes: usize) -> Result<Held, &'static str> {
        match (self.calls.try_take(1), self.bytes.try_take(bytes)) {
            (Some(call), Some(bytes)) => Ok((call, bytes)),
            (None, _) => Err("calls ([broker] max_pending)"),
            (Some(_), None) => Err("bytes of calls ([broker] max_serving_bytes)"),
        }
    }
}
