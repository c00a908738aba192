//! Reading the store: one trace, a search, the services and operations it holds. Traces are
//! decoded from their compact form only when read; listings read the spans' heads only.

use std::collections::{BTreeMap, BTreeSet};

use super::players::Key;
use super::{codec, StoredTrace, TraceQuery, TraceStore};

/// Traces read under one hold of the store's lock by a pass over all of them.
const SCAN_CHUNK: usize = 256;

/// The value under `key`, made if missing (looked up by `&str`, allocated only when new).
fn slot<'m, V: Default>(map: &'m mut BTreeMap<String, V>, key: &str) -> &'m mut V {
    if !map.contains_key(key) {
        map.insert(key.to_string(), V::default());
    }
    map.get_mut(key).expect("inserted above")
}

impl TraceStore {
    /// Services that have recorded spans, sorted.
    ///
    /// Read off the spans held (no index is kept up to date on every insert and eviction:
    /// the list is asked for far less often than spans come and go).
    pub fn services(&self) -> Vec<String> {
        let mut names: BTreeSet<String> = BTreeSet::new();
        self.scan(|t| {
            let mut last = "";
            for h in codec::heads(&t.data) {
                // Spans of one trace mostly share a service: skip the set for repeats.
                if h.service != last {
                    last = h.service;
                    if !names.contains(h.service) {
                        names.insert(h.service.to_string());
                    }
                }
            }
        });
        names.into_iter().collect()
    }

    /// Operations of one service with their span kinds, sorted.
    pub fn operations(&self, service: &str) -> Vec<(String, &'static str)> {
        self.operations_of(Some(service))
            .into_iter()
            .map(|(_, n, k)| (n, k))
            .collect()
    }

    /// Operations of every service, as `(service, operation, span kind)`, sorted; read in one
    /// pass over the spans held.
    pub fn all_operations(&self) -> Vec<(String, String, &'static str)> {
        self.operations_of(None)
    }

    fn operations_of(&self, service: Option<&str>) -> Vec<(String, String, &'static str)> {
        type Kinds = BTreeSet<&'static str>;
        let mut ops: BTreeMap<String, BTreeMap<String, Kinds>> = BTreeMap::new();
        self.scan(|t| {
            for h in codec::heads(&t.data) {
                if service.is_none_or(|s| h.service == s) {
                    slot(slot(&mut ops, h.service), h.name).insert(h.kind);
                }
            }
        });
        ops.into_iter()
            .flat_map(|(s, names)| {
                names.into_iter().flat_map(move |(n, kinds)| {
                    let s = s.clone();
                    kinds.into_iter().map(move |k| (s.clone(), n.clone(), k))
                })
            })
            .collect()
    }

    /// Calls `f` with every trace held, taking the store's lock again every [`SCAN_CHUNK`]
    /// traces, so a pass over a full store never holds up the threads placing new spans for
    /// long. A trace evicted meanwhile is skipped; one placed meanwhile may be missed.
    fn scan(&self, mut f: impl FnMut(&super::traces::Held)) {
        let ids: Vec<u128> = self.lock().traces.keys().copied().collect();
        for chunk in ids.chunks(SCAN_CHUNK) {
            let g = self.lock_inner();
            for id in chunk {
                if let Some(t) = g.traces.get(id) {
                    f(t);
                }
            }
        }
    }

    /// One trace by id.
    pub fn trace(&self, id: u128) -> Option<StoredTrace> {
        self.trace_within(id, usize::MAX).map(|(t, _)| t)
    }

    /// One trace by id, read only as far as its first spans cost at most `max_bytes` in the
    /// store's measure (at least one span), and how many spans it holds in all. The store's
    /// lock is held only to copy those bytes; they are decoded after.
    pub fn trace_within(&self, id: u128, max_bytes: usize) -> Option<(StoredTrace, usize)> {
        let (data, total, start_us, end_us, bytes) = {
            let g = self.lock();
            let held = g.traces.get(&id)?;
            let (len, spans) =
                codec::prefix_within(&held.data, max_bytes, super::codec::SPAN_OVERHEAD);
            let bytes = if spans == held.spans {
                held.bytes
            } else {
                len + spans * super::codec::SPAN_OVERHEAD
            };
            (
                held.data[..len].to_vec(),
                held.spans,
                held.start_us,
                held.end_us,
                bytes,
            )
        };
        let trace = StoredTrace {
            spans: codec::spans(&data, id).collect(),
            bytes,
            start_us,
            end_us,
        };
        Some((trace, total))
    }

    /// Traces matching the query, newest first.
    pub fn find(&self, q: &TraceQuery) -> Vec<StoredTrace> {
        self.find_within(q).0
    }

    /// Traces matching the query, newest first, and whether `max_bytes` cut the answer short of
    /// `limit`.
    pub fn find_within(&self, q: &TraceQuery) -> (Vec<StoredTrace>, bool) {
        // A search for a user or a session reads only the traces listed under it.
        let player = q.tags.iter().find_map(|(k, v)| match k.as_str() {
            "user.id" => Some(Key::User(self.player_hash(v))),
            "session.id" => Some(Key::Session(self.player_hash(v))),
            _ => None,
        });
        // Newest first, decoded one at a time until `limit` match.
        let mut newest: Vec<(u64, u128)> = {
            let g = self.lock();
            match player {
                Some(key) => g
                    .players
                    .traces(key)
                    .filter_map(|id| g.traces.get(&id).map(|t| (t.start_us, id)))
                    .collect(),
                None => g.traces.iter().map(|(id, t)| (t.start_us, *id)).collect(),
            }
        };
        newest.sort_unstable_by_key(|&(start, id)| std::cmp::Reverse((start, id)));
        let budget = if q.max_bytes == 0 {
            usize::MAX
        } else {
            q.max_bytes
        };
        // Matches are copied out under the lock and decoded after it is released. The lock is
        // taken again every `SCAN_CHUNK` traces (as in `scan`).
        let (mut found, mut bytes, mut cut) = (Vec::new(), 0usize, false);
        'scan: for chunk in newest.chunks(SCAN_CHUNK) {
            let g = self.lock_inner();
            for &(_, id) in chunk {
                if found.len() >= q.limit {
                    break 'scan;
                }
                let Some(held) = g.traces.get(&id) else {
                    continue;
                };
                // Tested in place; only a match is copied.
                if !codec::views(&held.data).any(|v| view_matches(&v, q)) {
                    continue;
                }
                if !found.is_empty() && bytes + held.bytes > budget {
                    cut = true;
                    break 'scan;
                }
                // A first match over the budget alone is cut to the spans that fit.
                let (len, spans) =
                    codec::prefix_within(&held.data, budget, super::codec::SPAN_OVERHEAD);
                let size = if spans == held.spans {
                    held.bytes
                } else {
                    cut = true;
                    len + spans * super::codec::SPAN_OVERHEAD
                };
                bytes += size;
                found.push((
                    id,
                    held.data[..len].to_vec(),
                    size,
                    held.start_us,
                    held.end_us,
                ));
            }
        }
        let out = found
            .into_iter()
            .map(|(id, data, bytes, start_us, end_us)| StoredTrace {
                spans: codec::spans(&data, id).collect(),
                bytes,
                start_us,
                end_us,
            })
            .collect();
        (out, cut)
    }
}

fn view_matches(v: &codec::View<'_>, q: &TraceQuery) -> bool {
    let h = &v.head;
    if q.service.as_deref().is_some_and(|s| s != h.service) {
        return false;
    }
    if q.operation.as_deref().is_some_and(|o| o != h.name) {
        return false;
    }
    if q.min_duration_us.is_some_and(|d| h.duration_us < d)
        || q.max_duration_us.is_some_and(|d| h.duration_us > d)
    {
        return false;
    }
    if q.start_us.is_some_and(|t| h.start_us < t) || q.end_us.is_some_and(|t| h.start_us > t) {
        return false;
    }
    q.tags.iter().all(|(k, want)| {
        let is = |(key, value): (&str, codec::ValueRef<'_>)| key == k && value.reads_as(want);
        // The status and kind as the Jaeger UI shows them, in any case.
        v.tags().any(is)
            || (k == "error" && want.eq_ignore_ascii_case("true") && h.failed)
            || (k == "otel.status_code" && want.eq_ignore_ascii_case("ERROR") && h.failed)
            || (k == "otel.status_code" && want.eq_ignore_ascii_case("OK") && h.status_ok)
            || (k == "span.kind" && want.eq_ignore_ascii_case(h.kind))
            || v.event_tags().any(is)
            || {
                // The process tags (the resource's attributes) and the scope, as the Jaeger
                // API shows them.
                let (mut resource, scope) = v.tail();
                resource.any(is) || (k == "otel.scope.name" && !scope.is_empty() && scope == want)
            }
    })
}
