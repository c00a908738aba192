//! Reading the store: one trace, a search, the services and operations it holds. Traces are
//! decoded from their compact form only when read; listings read the spans' heads only.

use std::collections::BTreeSet;

use super::players::Key;
use super::{codec, StoredTrace, TraceQuery, TraceStore};

impl TraceStore {
    /// Services that have recorded spans, sorted.
    ///
    /// Read off the spans held (no index is kept up to date on every insert and eviction:
    /// the list is asked for far less often than spans come and go).
    pub fn services(&self) -> Vec<String> {
        let g = self.lock();
        let mut names: BTreeSet<&str> = BTreeSet::new();
        for t in g.traces.values() {
            let mut last = "";
            for h in codec::heads(&t.data) {
                // Spans of one trace mostly share a service: skip the set for repeats.
                if h.service != last {
                    last = h.service;
                    names.insert(h.service);
                }
            }
        }
        names.into_iter().map(str::to_string).collect()
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
        let g = self.lock();
        let set: BTreeSet<(&str, &str, &'static str)> = g
            .traces
            .values()
            .flat_map(|t| codec::heads(&t.data))
            .filter(|h| service.is_none_or(|s| h.service == s))
            .map(|h| (h.service, h.name, h.kind))
            .collect();
        set.into_iter()
            .map(|(s, n, k)| (s.to_string(), n.to_string(), k))
            .collect()
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
            let (len, spans) = codec::prefix_within(&held.data, max_bytes, super::SPAN_OVERHEAD);
            let bytes = if spans == held.spans {
                held.bytes
            } else {
                len + spans * super::SPAN_OVERHEAD
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
        let g = self.lock();
        // A search for a user or a session reads only the traces listed under it.
        let player = q.tags.iter().find_map(|(k, v)| match k.as_str() {
            "user.id" => Some(Key::User(self.player_hash(v))),
            "session.id" => Some(Key::Session(self.player_hash(v))),
            _ => None,
        });
        // Newest first, decoded one at a time until `limit` match.
        let mut newest: Vec<(u64, u128, &super::Held)> = match player {
            Some(key) => g
                .players
                .traces(key)
                .filter_map(|id| g.traces.get(&id).map(|t| (t.start_us, id, t)))
                .collect(),
            None => g
                .traces
                .iter()
                .map(|(id, t)| (t.start_us, *id, t))
                .collect(),
        };
        newest.sort_unstable_by_key(|&(start, id, _)| std::cmp::Reverse((start, id)));
        let budget = if q.max_bytes == 0 {
            usize::MAX
        } else {
            q.max_bytes
        };
        // Matches are copied out under the lock and decoded after it is released.
        let (mut found, mut bytes, mut cut) = (Vec::new(), 0usize, false);
        for (_, id, held) in newest {
            if found.len() >= q.limit {
                break;
            }
            // Tested in place; only a match is copied.
            if !codec::views(&held.data).any(|v| view_matches(&v, q)) {
                continue;
            }
            if !found.is_empty() && bytes + held.bytes > budget {
                cut = true;
                break;
            }
            bytes += held.bytes;
            found.push((
                id,
                held.data.clone(),
                held.bytes,
                held.start_us,
                held.end_us,
            ));
        }
        drop(g);
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
            || (k == "span.kind" && want.eq_ignore_ascii_case(h.kind))
            || v.event_tags().any(is)
    })
}
