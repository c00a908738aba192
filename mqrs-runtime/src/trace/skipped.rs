//! Spans of traces the sampler skipped, followed only as far as keeping them needs: their ids,
//! name, start, where their attributes come from, and their error if they fail. No SDK span
//! exists for them (the context they travel in is non-recording, flags `00`); when the trace
//! is kept (`trace::sampling::Keep`) a span is built here as it ends, tagged `mqrs.kept`, and
//! delivered to the store and the exporter. Otherwise it is forgotten.
//!
//! What a kept span of a skipped trace does not have: tags a handler set with
//! `session.span()`, and its events (handler logs, the gate's `reply queued`).

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use super::attrs::{gate_attributes, rpc_attributes};
use super::clock;
use super::ids::new_span_id;
use super::sampling::{Keep, KeepReason, KEPT_ATTRIBUTE};
use super::tracer::Policy;
use crate::identity::Facts;

/// Where a kept span's attributes come from.
pub(crate) enum Attrs {
    /// The gate's root: the connection's facts and the request's own.
    Gate(Arc<Facts>, [KeyValue; 2]),
    /// A CLIENT or SERVER span of an RPC.
    Rpc(Arc<Facts>),
    /// A root started outside the gate.
    Internal,
}

/// One span of a skipped trace.
pub(crate) struct Shadow {
    pub(crate) keep: Arc<Keep>,
    start_time: SystemTime,
    span_context: SpanContext,
    parent: SpanId,
    kind: SpanKind,
    name: Cow<'static, str>,
    attrs: Attrs,
    error: OnceLock<(&'static str, String)>,
    policy: Arc<Policy>,
}

/// The non-recording context of a skipped span: it carries the trace id (for logs and the
/// `traceparent` sent on) and flags `00`.
pub(crate) fn span_context(trace_id: TraceId, state: TraceState) -> SpanContext {
    SpanContext::new(trace_id, new_span_id(), TraceFlags::default(), false, state)
}

impl Shadow {
    /// Follows a span of `kind` named `name` under `parent` (invalid for a root), in the trace
    /// marked by `keep`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        policy: &Arc<Policy>,
        keep: Arc<Keep>,
        span_context: SpanContext,
        parent: SpanId,
        kind: SpanKind,
        name: Cow<'static, str>,
        attrs: Attrs,
    ) -> Shadow {
        Shadow {
            keep,
            start_time: clock::now(),
            span_context,
            parent,
            kind,
            name,
            attrs,
            error: OnceLock::new(),
            policy: policy.clone(),
        }
    }

    /// The span failed with `kind` (`error.type`) and `text`: marks the trace when failures
    /// are kept; the first failure recorded is the one the span shows if it is kept.
    pub(crate) fn fail(&self, kind: &'static str, text: impl FnOnce() -> String) {
        if self.policy.sampling.keep_failed {
            self.keep.mark(KeepReason::Error);
        }
        if self.error.get().is_none() {
            let _ = self.error.set((kind, text()));
        }
    }

    /// Marks the trace as slow once this span has run past the threshold by `now`. (Wall
    /// time, read once per end: a clock step can misjudge one span, never break anything.)
    pub(crate) fn check_slow(&self, now: SystemTime) {
        let ran = now
            .duration_since(self.start_time)
            .unwrap_or(Duration::ZERO);
        if self.policy.sampling.keep_slow.is_some_and(|t| ran >= t) {
            self.keep.mark(KeepReason::Slow);
        }
    }

    /// The span ends: delivered if the trace is kept, forgotten otherwise.
    pub(crate) fn finish(self) {
        let end_time = clock::now().max(self.start_time);
        self.check_slow(end_time);
        let Some(reason) = self.keep.reason() else {
            return;
        };
        let mut attributes = match &self.attrs {
            Attrs::Gate(data, extra) => gate_attributes(data, extra.clone()),
            Attrs::Rpc(data) => rpc_attributes(self.name.clone(), data.span_attrs()),
            Attrs::Internal => Vec::with_capacity(2),
        };
        let status = match self.error.into_inner() {
            Some((kind, text)) => {
                attributes.push(KeyValue::new("error.type", kind));
                Status::error(text)
            }
            None => Status::Unset,
        };
        attributes.push(KeyValue::new(KEPT_ATTRIBUTE, reason.as_str()));
        self.policy.deliver(SpanData {
            span_context: self.span_context,
            parent_span_id: self.parent,
            parent_span_is_remote: false,
            span_kind: self.kind,
            name: self.name,
            start_time: self.start_time,
            end_time,
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: InstrumentationScope::builder("mqrs").build(),
        });
    }
}
