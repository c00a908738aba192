//! RED metrics (rate, errors, duration) counted at the source for every call, whatever the
//! sampler keeps: the [`Red`] registry of [`Series`], one per (side, service, method), each
//! split by outcome and kept in time slots (10 s for the last hour, 5 min for the last day)
//! with an exponential duration histogram per slot (OpenTelemetry scale 3, percentiles within
//! 4.4 %). Memory is bounded: past [`Red::with_limit`]'s bytes, slots and buckets stop growing
//! and calls are still counted, in the nearest slot and bucket there is.
//!
//! ```
//! use mqrs_base::red::{Kind, Red};
//!
//! let red = Red::default();
//! let series = red.table(Kind::Server, "Chat").series("Chat/HD_Say", || "Chat/HD_Say".into());
//! series.record_at(1_000, 2_000_000, None);
//! series.record_at(1_001, 4_000_000, Some("timeout"));
//! let read = series.read(0, 2_000);
//! assert_eq!(read.iter().map(|o| o.tally.count).sum::<u64>(), 2);
//! assert_eq!(read[1].error.as_deref(), Some("timeout"));
//! ```

mod cache;
pub mod histogram;
mod read;
mod series;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

pub use read::{Edge, Point, Row};
pub use series::{
    OutcomeRead, Series, Tally, Totals, MAX_OUTCOMES, OLDER_SLOT_S, OLDER_SPAN_S, OTHER_ERROR,
    RECENT_SLOT_S, RECENT_SPAN_S,
};

use crate::hash::KeyedHash;
use crate::sync::RwLocked;

/// Which side of a call a series counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// The side that serves it: `rpc.server.call.duration`.
    Server,
    /// The side that makes it: `rpc.client.call.duration`.
    Client,
}

impl Kind {
    /// The OpenTelemetry span kind name: `server` or `client`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Server => "server",
            Kind::Client => "client",
        }
    }
}

/// What a series counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// Server or client side.
    pub kind: Kind,
    /// The service on that side (`service.name`): the serving module, or the caller.
    pub service: Arc<str>,
    /// `Module/method` (`rpc.method`); for a client series its module is the callee.
    pub method: Arc<str>,
    /// The name this operation's spans have, so the figures and the traces meet.
    pub operation: Arc<str>,
}

impl Key {
    /// The called module of a client series: `method` up to its `/`.
    pub fn callee(&self) -> &str {
        self.method.split('/').next().unwrap_or(&self.method)
    }
}

/// Most series one registry holds; calls of methods past it are counted as [`OTHER_METHOD`].
pub const MAX_SERIES: usize = 2048;
/// The method that stands for every method past [`MAX_SERIES`].
pub const OTHER_METHOD: &str = "_OTHER";
/// The default memory bound of a registry's slots and buckets, bytes.
pub const DEFAULT_LIMIT: usize = 64 << 20;

/// Bytes held by a registry's series, against its limit.
#[derive(Debug)]
pub struct Memory {
    used: AtomicUsize,
    limit: usize,
    squeezed: AtomicU64,
    /// False: nothing is counted.
    enabled: bool,
}

impl Memory {
    fn has_room(&self) -> bool {
        self.used.load(Relaxed) < self.limit
    }

    fn charge(&self, n: usize) {
        if n > 0 {
            self.used.fetch_add(n, Relaxed);
        }
    }

    fn release(&self, n: usize) {
        if n > 0 {
            let _ = self
                .used
                .fetch_update(Relaxed, Relaxed, |u| Some(u.saturating_sub(n)));
        }
    }
}

/// The series of one (side, service): looked up once by whoever records for that service.
#[derive(Debug)]
pub struct Table {
    kind: Kind,
    service: Arc<str>,
    methods: RwLock<HashMap<Box<str>, Arc<Series>, KeyedHash>>,
    red: Arc<Shared>,
}

impl Table {
    /// The series of `method`, made on first use with the span name `operation()`.
    pub fn series(&self, method: &str, operation: impl FnOnce() -> String) -> Arc<Series> {
        if let Some(s) = self.methods.read_locked().get(method) {
            return s.clone();
        }
        let mut g = self.methods.write_locked();
        if let Some(s) = g.get(method) {
            return s.clone();
        }
        let (method, operation) = if self.red.count.load(Relaxed) < MAX_SERIES {
            (method, operation())
        } else {
            (OTHER_METHOD, OTHER_METHOD.to_string())
        };
        if let Some(s) = g.get(method) {
            return s.clone();
        }
        self.red.count.fetch_add(1, Relaxed);
        let mut by_id = self.red.by_id.write_locked();
        let series = Arc::new(Series::new(
            Key {
                kind: self.kind,
                service: self.service.clone(),
                method: Arc::from(method),
                operation: Arc::from(operation),
            },
            by_id.len() as u32,
            self.red.mem.clone(),
        ));
        by_id.push(series.clone());
        g.insert(method.into(), series.clone());
        series
    }

    /// False when its registry counts nothing.
    pub fn enabled(&self) -> bool {
        self.red.mem.enabled
    }

    /// The service this table counts for.
    pub fn service(&self) -> &Arc<str> {
        &self.service
    }
}

#[derive(Debug)]
struct Shared {
    mem: Arc<Memory>,
    count: AtomicUsize,
    /// Every series, by [`Series::id`].
    by_id: RwLock<Vec<Arc<Series>>>,
}

/// The tables of a registry, by side and service.
type Tables = HashMap<(Kind, Box<str>), Arc<Table>, KeyedHash>;

/// A process's RED metrics; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Red {
    tables: RwLock<Tables>,
    shared: Arc<Shared>,
    /// Tells this registry from every other in the process (for the threads' caches).
    id: u64,
    /// Names this registry among every process's (OpenTelemetry's `service.instance.id`), so
    /// a collector never merges its own process's export back in.
    instance: Box<str>,
}

impl Default for Red {
    fn default() -> Self {
        Red::with_limit(DEFAULT_LIMIT)
    }
}

/// How much a registry holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RedStats {
    /// Series held.
    pub series: usize,
    /// Bytes their slots and buckets take.
    pub bytes: usize,
    /// The bound on `bytes`.
    pub limit: usize,
    /// Calls counted in a neighbouring slot because the bound was reached.
    pub squeezed: u64,
}

impl Red {
    /// A registry that counts nothing: what a process with metrics turned off records into.
    pub fn disabled() -> Red {
        Red::with_limit(0)
    }

    /// False for a [`Red::disabled`] registry.
    pub fn enabled(&self) -> bool {
        self.shared.mem.enabled
    }

    /// A registry whose slots and buckets take at most about `limit` bytes (0: counts
    /// nothing, as [`Red::disabled`]).
    pub fn with_limit(limit: usize) -> Red {
        Red {
            tables: RwLock::default(),
            shared: Arc::new(Shared {
                mem: Arc::new(Memory {
                    used: AtomicUsize::new(0),
                    limit,
                    squeezed: AtomicU64::new(0),
                    enabled: limit > 0,
                }),
                count: AtomicUsize::new(0),
                by_id: RwLock::default(),
            }),
            id: {
                static NEXT: AtomicU64 = AtomicU64::new(1);
                NEXT.fetch_add(1, Relaxed)
            },
            instance: format!("{:016x}", rand::random::<u64>()).into(),
        }
    }

    /// This registry's instance id: random, one per registry.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The table of `service`'s series on side `kind`, made on first use.
    pub fn table(&self, kind: Kind, service: &str) -> Arc<Table> {
        if let Some(t) = self.tables.read_locked().get(&(kind, service.into())) {
            return t.clone();
        }
        self.tables
            .write_locked()
            .entry((kind, service.into()))
            .or_insert_with(|| {
                Arc::new(Table {
                    kind,
                    service: Arc::from(service),
                    methods: RwLock::default(),
                    red: self.shared.clone(),
                })
            })
            .clone()
    }

    /// Every series, sorted by key (side, service, method).
    pub fn all(&self) -> Vec<Arc<Series>> {
        let tables: Vec<Arc<Table>> = self.tables.read_locked().values().cloned().collect();
        let mut out: Vec<Arc<Series>> = tables
            .iter()
            .flat_map(|t| {
                t.methods
                    .read_locked()
                    .values()
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect();
        out.sort_by(|a, b| {
            let (a, b) = (a.key(), b.key());
            (a.kind, &a.service, &a.method).cmp(&(b.kind, &b.service, &b.method))
        });
        out
    }

    /// The series numbered `id` ([`Series::id`]).
    pub fn series_by_id(&self, id: u32) -> Option<Arc<Series>> {
        self.shared.by_id.read_locked().get(id as usize).cloned()
    }

    /// Ages every series as of `now_s` (see [`Series::age`]).
    pub fn age(&self, now_s: u64) {
        for s in self.all() {
            s.age(now_s);
        }
    }

    /// How much it holds.
    pub fn stats(&self) -> RedStats {
        let m = &self.shared.mem;
        RedStats {
            series: self.shared.count.load(Relaxed),
            bytes: m.used.load(Relaxed),
            limit: m.limit,
            squeezed: m.squeezed.load(Relaxed),
        }
    }
}

/// Now, in whole Unix seconds.
pub fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
