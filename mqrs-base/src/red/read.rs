//! Reading a registry over a window: one [`Row`] per series (calls, errors by type, the merged
//! histogram), the service graph's [`Edge`]s from the client series, and a series of windows
//! ending at each step for charts.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Key, Kind, Red, Series, Tally};

/// One series over a window.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// What it counts.
    pub key: Key,
    /// Every call, failed or not.
    pub all: Tally,
    /// Calls that failed.
    pub errors: u64,
    /// Failed calls per `error.type`, most first.
    pub by_error: Vec<(Arc<str>, u64)>,
}

impl Row {
    fn of(series: &Series, from_s: u64, to_s: u64) -> Option<Row> {
        let outcomes = series.read(from_s, to_s);
        if outcomes.is_empty() {
            return None;
        }
        let mut row = Row {
            key: series.key().clone(),
            all: Tally::default(),
            errors: 0,
            by_error: Vec::new(),
        };
        for o in outcomes {
            row.all.merge(&o.tally, true);
            if let Some(e) = o.error {
                row.errors += o.tally.count;
                row.by_error.push((e, o.tally.count));
            }
        }
        row.by_error
            .sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        Some(row)
    }
}

/// Calls from one service to another over a window, as the caller counted them.
#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    /// The calling service.
    pub parent: Arc<str>,
    /// The called module.
    pub child: Arc<str>,
    /// Calls.
    pub calls: u64,
    /// Calls that failed, as the caller saw them (timeouts included).
    pub errors: u64,
    /// Their durations, merged.
    pub all: Tally,
}

/// Calls of one group of series in the window ending at one step.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// End of the window, Unix seconds.
    pub at_s: u64,
    /// Every call in it.
    pub all: Tally,
    /// Calls that failed.
    pub errors: u64,
}

impl Red {
    /// Every series with calls in `from_s..to_s`, sorted by key.
    pub fn rows(&self, from_s: u64, to_s: u64) -> Vec<Row> {
        self.all()
            .iter()
            .filter_map(|s| Row::of(s, from_s, to_s))
            .collect()
    }

    /// The service graph in `from_s..to_s`, from the client series: one edge per (caller,
    /// callee), sorted by them.
    pub fn edges(&self, from_s: u64, to_s: u64) -> Vec<Edge> {
        let mut edges: BTreeMap<(Arc<str>, Arc<str>), Edge> = BTreeMap::new();
        for row in self.rows(from_s, to_s) {
            if row.key.kind != Kind::Client {
                continue;
            }
            let child: Arc<str> = Arc::from(row.key.callee());
            let e = edges
                .entry((row.key.service.clone(), child.clone()))
                .or_insert_with(|| Edge {
                    parent: row.key.service.clone(),
                    child,
                    calls: 0,
                    errors: 0,
                    all: Tally::default(),
                });
            e.calls += row.all.count;
            e.errors += row.errors;
            e.all.merge(&row.all, true);
        }
        edges.into_values().collect()
    }

    /// For each group of the series `pick` chooses (by the group name it returns), the calls
    /// in the window of `window_s` seconds ending with (and including) each step of `step_s` seconds from
    /// `from_s` to `to_s` (both ends included when they fall on a step).
    pub fn steps(
        &self,
        pick: impl Fn(&Key) -> Option<String>,
        from_s: u64,
        to_s: u64,
        step_s: u64,
        window_s: u64,
    ) -> BTreeMap<String, Vec<Point>> {
        let step_s = step_s.max(1);
        let mut groups: BTreeMap<String, Vec<Arc<Series>>> = BTreeMap::new();
        for s in self.all() {
            if let Some(g) = pick(s.key()) {
                groups.entry(g).or_default().push(s);
            }
        }
        let mut out = BTreeMap::new();
        for (name, series) in groups {
            let mut points = Vec::new();
            let mut at = from_s;
            while at <= to_s {
                let mut p = Point {
                    at_s: at,
                    all: Tally::default(),
                    errors: 0,
                };
                for s in &series {
                    // The window ends with the step's second, included: a call in the second
                    // `at` (in a slot starting then) is in it.
                    if let Some(row) = Row::of(s, at.saturating_sub(window_s), at + 1) {
                        p.all.merge(&row.all, true);
                        p.errors += row.errors;
                    }
                }
                points.push(p);
                at += step_s;
            }
            out.insert(name, points);
        }
        out
    }
}
