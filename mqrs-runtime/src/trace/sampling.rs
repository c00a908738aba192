//! Which traces are recorded. Head sampling decides once, at the root: a ratio, per-operation
//! ratios, and a cap on new traces per second. The decision travels in the trace flags
//! (`traceparent`'s `01`/`00`), so every span of a request, in every process, follows it.
//!
//! A trace the sampler skipped is still followed, cheaply, when keeping is on (`trace::skipped`
//! holds its spans' few facts): if one of its spans fails or is slow, `Keep` marks the trace,
//! each span on the way back to the root is tagged `mqrs.kept` as it ends, and those spans are
//! stored and exported like sampled ones. The rest of a skipped trace is forgotten.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mqrs_base::sync::Locked;

use crate::config::TraceSection;

/// Attribute set on the spans of a trace kept although the sampler skipped it: `error` or
/// `slow`.
pub const KEPT_ATTRIBUTE: &str = "mqrs.kept";

/// The sampling settings of `[trace]`, checked.
#[derive(Debug, Clone)]
pub struct Sampling {
    ratio: f64,
    per_operation: HashMap<String, f64>,
    max_per_second: u32,
    /// Keep skipped traces in which a span fails.
    pub keep_failed: bool,
    /// Keep skipped traces in which a span takes at least this long.
    pub keep_slow: Option<Duration>,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling::from_config(&TraceSection::default()).unwrap_or(Sampling {
            ratio: 1.0,
            per_operation: HashMap::new(),
            max_per_second: 0,
            keep_failed: true,
            keep_slow: None,
        })
    }
}

fn check_ratio(what: &str, r: f64) -> Result<f64, String> {
    if (0.0..=1.0).contains(&r) {
        Ok(r)
    } else {
        Err(format!("{what} = {r}: a ratio is between 0.0 and 1.0"))
    }
}

impl Sampling {
    /// The settings of `[trace]`; the error names the setting that is out of range.
    pub fn from_config(t: &TraceSection) -> Result<Sampling, String> {
        let ratio = check_ratio("[trace] sample_ratio", t.sample_ratio)?;
        let mut per_operation = HashMap::new();
        for (op, r) in &t.sample_operations {
            let r = check_ratio(&format!("[trace.sample_operations] \"{op}\""), *r)?;
            per_operation.insert(op.clone(), r);
        }
        Ok(Sampling {
            ratio,
            per_operation,
            max_per_second: t.max_traces_per_second,
            keep_failed: t.keep_failed,
            keep_slow: (t.keep_slow_ms > 0).then(|| Duration::from_millis(t.keep_slow_ms)),
        })
    }

    /// True when skipped traces are recorded in memory until they end (to keep the failed or
    /// slow ones); false when they are not recorded at all.
    pub fn keeps(&self) -> bool {
        self.keep_failed || self.keep_slow.is_some()
    }

    /// The root decision for these settings; one per process, shared by every module's
    /// tracer (the rate limit counts the process's new traces).
    pub(crate) fn sampler(&self) -> Sampler {
        let threshold = |r: f64| -> u64 {
            if r >= 1.0 {
                u64::MAX
            } else {
                (r * u64::MAX as f64) as u64
            }
        };
        Sampler(Arc::new(SamplerInner {
            threshold: threshold(self.ratio),
            always: self.ratio >= 1.0,
            per_operation: self
                .per_operation
                .iter()
                .map(|(op, r)| (op.clone(), (threshold(*r), *r >= 1.0)))
                .collect(),
            limiter: (self.max_per_second > 0).then(|| {
                Mutex::new(Bucket {
                    tokens: f64::from(self.max_per_second),
                    last: Instant::now(),
                })
            }),
            rate: f64::from(self.max_per_second),
        }))
    }
}

/// The root decision: ratio (per operation if set), then the rate limit.
#[derive(Debug, Clone)]
pub(crate) struct Sampler(Arc<SamplerInner>);

#[derive(Debug)]
struct SamplerInner {
    threshold: u64,
    always: bool,
    per_operation: HashMap<String, (u64, bool)>,
    limiter: Option<Mutex<Bucket>>,
    rate: f64,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Sampler {
    /// True when a new trace whose root is named `name` (`gate Module/HD_x` or a job's name)
    /// is recorded.
    pub(crate) fn sample_root(&self, name: &str) -> bool {
        let s = &*self.0;
        let (threshold, always) = if s.per_operation.is_empty() {
            (s.threshold, s.always)
        } else {
            let op = name.strip_prefix("gate ").unwrap_or(name);
            s.per_operation
                .get(op)
                .copied()
                .unwrap_or((s.threshold, s.always))
        };
        if !(always || (threshold > 0 && super::ids::next_u64() < threshold)) {
            return false;
        }
        let Some(limiter) = &s.limiter else {
            return true;
        };
        let mut b = limiter.locked();
        let now = Instant::now();
        let refill = now.duration_since(b.last).as_secs_f64() * s.rate;
        b.tokens = (b.tokens + refill).min(s.rate);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Why a skipped trace is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepReason {
    /// A span took at least the `keep_slow_ms` threshold.
    Slow = 1,
    /// A span failed.
    Error = 2,
}

impl KeepReason {
    /// The value of [`KEPT_ATTRIBUTE`].
    pub fn as_str(self) -> &'static str {
        match self {
            KeepReason::Slow => "slow",
            KeepReason::Error => "error",
        }
    }

    /// From the value of [`KEPT_ATTRIBUTE`] (or of the reply property carrying it).
    pub fn parse(s: &str) -> Option<KeepReason> {
        match s {
            "slow" => Some(KeepReason::Slow),
            "error" => Some(KeepReason::Error),
            _ => None,
        }
    }
}

/// The keep mark of one skipped trace in this process, shared by its spans here (an error
/// outranks slowness).
#[derive(Debug, Default)]
pub(crate) struct Keep(AtomicU8);

impl Keep {
    /// Marks the trace as kept for `reason`.
    pub(crate) fn mark(&self, reason: KeepReason) {
        self.0.fetch_max(reason as u8, Ordering::Relaxed);
    }

    /// Why the trace is kept, if it is.
    pub(crate) fn reason(&self) -> Option<KeepReason> {
        match self.0.load(Ordering::Relaxed) {
            1 => Some(KeepReason::Slow),
            2 => Some(KeepReason::Error),
            _ => None,
        }
    }
}

/// True when a finished span goes to the store and the exporter: sampled, or tagged as kept.
pub(crate) fn wanted(span: &opentelemetry_sdk::trace::SpanData) -> bool {
    span.span_context.is_sampled()
        || span
            .attributes
            .iter()
            .rev()
            .any(|kv| kv.key.as_str() == KEPT_ATTRIBUTE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(ratio: f64, per_second: u32) -> Sampling {
        Sampling::from_config(&TraceSection {
            sample_ratio: ratio,
            max_traces_per_second: per_second,
            sample_operations: [("Chat/HD_Hot".to_string(), 0.0)].into(),
            ..TraceSection::default()
        })
        .expect("valid")
    }

    #[test]
    fn ratio_and_per_operation_overrides() {
        let s = settings(0.25, 0).sampler();
        let sampled = (0..4000)
            .filter(|_| s.sample_root("gate Chat/HD_X"))
            .count();
        assert!((800..1200).contains(&sampled), "25 % of 4000: {sampled}");
        assert!((0..1000).all(|_| !s.sample_root("gate Chat/HD_Hot")));
        let all = settings(1.0, 0).sampler();
        assert!((0..1000).all(|_| all.sample_root("job")));
        let none = settings(0.0, 0).sampler();
        assert!((0..1000).all(|_| !none.sample_root("job")));
    }

    #[test]
    fn rate_limit_caps_new_traces_per_second() {
        let s = settings(1.0, 5).sampler();
        let sampled = (0..50).filter(|_| s.sample_root("r")).count();
        assert_eq!(
            sampled, 5,
            "a full bucket of 5, then nothing within the same instant"
        );
    }

    #[test]
    fn out_of_range_ratios_are_refused_with_their_setting_named() {
        let bad = TraceSection {
            sample_ratio: 1.5,
            ..TraceSection::default()
        };
        let e = Sampling::from_config(&bad).expect_err("refused");
        assert!(e.contains("sample_ratio = 1.5"), "{e}");
        let bad = TraceSection {
            sample_operations: [("Chat/HD_X".to_string(), -0.1)].into(),
            ..TraceSection::default()
        };
        let e = Sampling::from_config(&bad).expect_err("refused");
        assert!(e.contains("Chat/HD_X"), "{e}");
    }

    #[test]
    fn an_error_outranks_slowness() {
        let k = Keep::default();
        assert_eq!(k.reason(), None);
        k.mark(KeepReason::Slow);
        assert_eq!(k.reason(), Some(KeepReason::Slow));
        k.mark(KeepReason::Error);
        k.mark(KeepReason::Slow);
        assert_eq!(k.reason(), Some(KeepReason::Error));
    }
}
