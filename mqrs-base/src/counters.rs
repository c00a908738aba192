//! Counters read as a snapshot: [`counters!`](crate::counters) declares a set of atomic
//! counters beside the plain stats struct they are read into, so every set of counters in mqrs
//! (the gate's, the broker link's, the exporter's, the embedded broker's, the viewer's HTTP
//! bounds) is declared, counted and read one way.
//!
//! ```
//! use std::sync::atomic::Ordering::Relaxed;
//!
//! /// What a worker did.
//! #[derive(Debug, Default, PartialEq)]
//! pub struct WorkStats {
//!     /// Jobs done.
//!     pub done: u64,
//!     /// Jobs that failed.
//!     pub failed: u64,
//!     /// Not a counter: filled by whoever reads.
//!     pub queued: u64,
//! }
//!
//! mqrs_base::counters! {
//!     /// The counters behind [`WorkStats`].
//!     pub struct WorkCounters => WorkStats { done, failed }
//! }
//!
//! let c = WorkCounters::default();
//! c.done.fetch_add(2, Relaxed);
//! assert_eq!(c.snapshot(), WorkStats { done: 2, failed: 0, queued: 0 });
//! let read = c.snapshot_onto(WorkStats { queued: 7, ..Default::default() });
//! assert_eq!((read.done, read.queued), (2, 7));
//! ```

/// Declares `struct $Counters` with one `AtomicU64` per named field, and its `snapshot()` /
/// `snapshot_onto(base)` that read every one (relaxed, each on its own) into the same-named
/// `u64` field of `$Stats`; `snapshot_onto` keeps `base`'s other fields (gauges the reader
/// fills in), `snapshot` leaves them at their default.
#[macro_export]
macro_rules! counters {
    (
        $(#[$meta:meta])*
        $vis:vis struct $Counters:ident => $Stats:ident {
            $( $(#[$fmeta:meta])* $field:ident ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Default)]
        $vis struct $Counters {
            $(
                $(#[$fmeta])*
                #[doc = concat!("Read into `", stringify!($Stats), "::", stringify!($field), "`.")]
                $vis $field: ::std::sync::atomic::AtomicU64,
            )*
        }

        #[allow(dead_code, clippy::needless_update)]
        impl $Counters {
            /// `base` with every counter copied in.
            $vis fn snapshot_onto(&self, base: $Stats) -> $Stats {
                $Stats {
                    $( $field: self.$field.load(::std::sync::atomic::Ordering::Relaxed), )*
                    ..base
                }
            }

            /// Every counter, the stats' other fields at their default.
            $vis fn snapshot(&self) -> $Stats {
                self.snapshot_onto(::std::default::Default::default())
            }
        }
    };
}
