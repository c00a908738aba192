//! Figures computed over the spans a store holds: latency per operation (nearest-rank
//! percentiles) and calls between services in a time window.

use std::collections::HashMap;

use super::{codec, TraceStore};

/// Latency figures of one operation over the spans held, in microseconds.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OpLatency {
    /// Service that recorded the spans.
    pub service: String,
    /// Operation name.
    pub operation: String,
    /// Span kind.
    pub kind: &'static str,
    /// Spans counted.
    pub count: usize,
    /// Spans that ended with an error.
    pub errors: usize,
    /// Mean duration.
    pub avg_us: u64,
    /// Median duration (nearest-rank, like every percentile here).
    pub p50_us: u64,
    /// 95th percentile, nearest-rank: the smallest duration with at least 95 % of spans at or
    /// below it.
    pub p95_us: u64,
    /// 99th percentile, nearest-rank.
    pub p99_us: u64,
    /// Longest duration.
    pub max_us: u64,
}

impl TraceStore {
    /// Per-operation latency over the spans held that started at or after `since_us`, slowest
    /// p95 first.
    pub fn latency(&self, since_us: u64) -> Vec<OpLatency> {
        // (service, operation, kind) -> (durations, error count)
        type Key<'a> = (&'a str, &'a str, &'static str);
        let mut groups: HashMap<Key<'_>, (Vec<u64>, usize)> = HashMap::new();
        let g = self.lock();
        for s in g.traces.values().flat_map(|t| codec::heads(&t.data)) {
            if s.start_us >= since_us {
                let e = groups.entry((s.service, s.name, s.kind)).or_default();
                e.0.push(s.duration_us);
                e.1 += usize::from(s.failed);
            }
        }
        let pct = |v: &[u64], p: u64| v[nearest_rank(v.len(), p) - 1];
        let mut out: Vec<OpLatency> = groups
            .into_iter()
            .map(|((service, op, kind), (mut d, errors))| {
                d.sort_unstable();
                OpLatency {
                    service: service.to_string(),
                    operation: op.to_string(),
                    kind,
                    count: d.len(),
                    errors,
                    avg_us: d.iter().sum::<u64>() / d.len() as u64,
                    p50_us: pct(&d, 50),
                    p95_us: pct(&d, 95),
                    p99_us: pct(&d, 99),
                    max_us: d[d.len() - 1],
                }
            })
            .collect();
        out.sort_by(|a, b| b.p95_us.cmp(&a.p95_us).then(a.operation.cmp(&b.operation)));
        out
    }

    /// Calls between services over the spans held: one [`Dependency`] per (caller, callee)
    /// pair, from every span that started within `from_us..=to_us` and whose parent was
    /// recorded by another service; sorted by caller, then callee.
    pub fn dependencies(&self, from_us: u64, to_us: u64) -> Vec<Dependency> {
        let mut calls: HashMap<(&str, &str), (u64, Vec<u64>)> = HashMap::new();
        let g = self.lock();
        for t in g.traces.values() {
            if t.end_us < from_us || t.start_us > to_us {
                continue;
            }
            let heads: Vec<codec::Head<'_>> = codec::heads(&t.data).collect();
            let service_of: HashMap<u64, &str> =
                heads.iter().map(|s| (s.span_id, s.service)).collect();
            for s in heads
                .iter()
                .filter(|s| (from_us..=to_us).contains(&s.start_us))
            {
                let parent = s.parent_span_id.and_then(|p| service_of.get(&p));
                if let Some(&p) = parent.filter(|p| **p != s.service) {
                    let e = calls.entry((p, s.service)).or_default();
                    e.0 += u64::from(s.failed);
                    e.1.push(s.duration_us);
                }
            }
        }
        let mut deps: Vec<Dependency> = calls
            .into_iter()
            .map(|((p, c), (errors, mut d))| {
                d.sort_unstable();
                Dependency {
                    parent: p.to_string(),
                    child: c.to_string(),
                    calls: d.len() as u64,
                    errors,
                    p95_us: d[nearest_rank(d.len(), 95) - 1],
                }
            })
            .collect();
        deps.sort_by(|a, b| (&a.parent, &a.child).cmp(&(&b.parent, &b.child)));
        deps
    }
}

/// Calls from one service to another over a window: an edge of the service graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    /// The calling service.
    pub parent: String,
    /// The called service.
    pub child: String,
    /// Calls: spans of `child` whose parent span is `parent`'s.
    pub calls: u64,
    /// Those calls whose span in `child` ended with an error.
    pub errors: u64,
    /// 95th percentile (nearest-rank) of those spans' durations, µs.
    pub p95_us: u64,
}

/// The 1-based nearest rank of percentile `p` (0..=100) among `n` sorted values:
/// `ceil(p / 100 * n)`, at least 1. The p50 of 1..=100 is the 50th value, 50.
pub fn nearest_rank(n: usize, p: u64) -> usize {
    let rank = (p as usize * n).div_ceil(100);
    rank.clamp(1, n.max(1))
}
