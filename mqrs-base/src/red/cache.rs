//! Finding a series by name without a lock: each thread keeps the series it has counted into,
//! by a hash of (registry, side, service, `module/method`), and checks the names on a hit; a
//! miss goes to the registry's tables once.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use super::{Kind, Red, Series};

/// Most series one thread keeps; past it the cache starts over.
const MAX_CACHED: usize = 4096;

/// One cached series and the names it was found by.
struct Entry {
    red: u64,
    kind: Kind,
    service: Box<str>,
    module: Box<str>,
    method: Box<str>,
    series: Arc<Series>,
}

impl Entry {
    fn is(&self, red: u64, kind: Kind, service: &str, module: &str, method: &str) -> bool {
        self.red == red
            && self.kind == kind
            && *self.service == *service
            && *self.module == *module
            && *self.method == *method
    }
}

/// The hash is already one: the map does not hash it again.
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {}
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Cache = HashMap<u64, Vec<Entry>, BuildHasherDefault<Identity>>;

thread_local! {
    static CACHE: RefCell<Cache> = const {
        RefCell::new(HashMap::with_hasher(BuildHasherDefault::new()))
    };
}

/// A fast hash of the names: each name's length and its first and last 8 bytes (the names
/// are the app's own: no one chooses them to collide, and a collision costs only a comparison).
fn hash(red: u64, kind: Kind, parts: [&str; 3]) -> u64 {
    const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
    let word = |bytes: &[u8]| -> u64 {
        let mut w = 0u64;
        for (i, &b) in bytes.iter().take(8).enumerate() {
            w |= u64::from(b) << (8 * i);
        }
        w
    };
    let mut h = red.wrapping_mul(K) ^ kind as u64;
    for p in parts {
        let b = p.as_bytes();
        let tail = &b[b.len().saturating_sub(8)..];
        h = (h.rotate_left(5) ^ word(b) ^ (b.len() as u64).rotate_left(56)).wrapping_mul(K);
        h = (h.rotate_left(5) ^ word(tail)).wrapping_mul(K);
    }
    h
}

impl Red {
    /// Runs `f` on the series of `module/method` on side `kind` of `service`, made on first use
    /// with the span name `{prefix}module/method`.
    pub fn with_series<R>(
        &self,
        kind: Kind,
        service: &str,
        (module, method): (&str, &str),
        prefix: &str,
        mut f: impl FnMut(&Series) -> R,
    ) -> R {
        self.with_series_arc(kind, service, (module, method), prefix, |s| f(s))
    }

    /// The series [`Red::with_series`] finds, for a holder that keeps it (one reference count
    /// more, on the series' own line).
    pub fn series(
        &self,
        kind: Kind,
        service: &str,
        (module, method): (&str, &str),
        prefix: &str,
    ) -> Arc<Series> {
        self.with_series_arc(kind, service, (module, method), prefix, Arc::clone)
    }

    fn with_series_arc<R>(
        &self,
        kind: Kind,
        service: &str,
        (module, method): (&str, &str),
        prefix: &str,
        mut f: impl FnMut(&Arc<Series>) -> R,
    ) -> R {
        let h = hash(self.id, kind, [service, module, method]);
        // On a hit, `f` runs on the cached series in place: no reference count is touched, so
        // nothing another core reads is written.
        let hit = CACHE.with(|c| {
            let c = c.borrow();
            let e = c
                .get(&h)?
                .iter()
                .find(|e| e.is(self.id, kind, service, module, method))?;
            Some(f(&e.series))
        });
        if let Some(r) = hit {
            return r;
        }
        let name = format!("{module}/{method}");
        let series = self
            .table(kind, service)
            .series(&name, || format!("{prefix}{name}"));
        CACHE.with(|c| {
            let mut c = c.borrow_mut();
            if c.len() >= MAX_CACHED {
                c.clear();
            }
            c.entry(h).or_default().push(Entry {
                red: self.id,
                kind,
                service: service.into(),
                module: module.into(),
                method: method.into(),
                series: series.clone(),
            });
        });
        f(&series)
    }
}
