//! mqrs's own recording span, for the spans it makes itself (the gate's root, CLIENT and SERVER
//! spans of RPCs, roots of background jobs). It implements OpenTelemetry's `Span`, so it can
//! live in an OpenTelemetry `Context` like any span: there `session.span()` tags it, `tracing`
//! spans nest under it, and its context travels as `traceparent` (a call's CLIENT span, which
//! nothing tags or nests under, is held on its own instead: see `trace::spans`). It skips
//! what the SDK does for every span and mqrs does not need (span builders, samplers and
//! processors per provider, a copy of the instrumentation scope per span): when it ends it
//! goes straight to the module's store and exporter (`Policy::deliver`). Spans that `tracing`
//! opens inside a handler are still the SDK's.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

use opentelemetry::trace::{Event, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use super::clock;
use super::ids::{new_span_id, new_trace_id};
use super::tracer::Policy;

/// Most attributes and events kept on one span (the SDK's defaults); more are counted as
/// dropped.
const MAX_ATTRIBUTES: usize = 128;
const MAX_EVENTS: usize = 128;
const MAX_EVENT_ATTRIBUTES: usize = 128;

/// A sampled span being recorded.
#[derive(Debug)]
pub(crate) struct Recorded {
    span_context: SpanContext,
    parent: SpanId,
    parent_is_remote: bool,
    kind: SpanKind,
    name: Cow<'static, str>,
    start_time: SystemTime,
    attributes: Vec<KeyValue>,
    dropped_attributes: u32,
    events: SpanEvents,
    status: Status,
    /// `None` once ended.
    policy: Option<Arc<Policy>>,
}

impl Recorded {
    /// Starts a span of `kind` named `name` as a child of the span `parent` names (a new trace
    /// when it is invalid), recorded for `policy`'s module.
    pub(crate) fn start(
        policy: &Arc<Policy>,
        parent: &SpanContext,
        kind: SpanKind,
        name: Cow<'static, str>,
        attributes: Vec<KeyValue>,
    ) -> Recorded {
        let psc = parent;
        let (trace_id, parent_id, remote, state) = if psc.is_valid() {
            (
                psc.trace_id(),
                psc.span_id(),
                psc.is_remote(),
                psc.trace_state().clone(),
            )
        } else {
            (
                new_trace_id(),
                SpanId::INVALID,
                false,
                TraceState::default(),
            )
        };
        let mut attributes = attributes;
        let dropped_attributes = attributes.len().saturating_sub(MAX_ATTRIBUTES) as u32;
        attributes.truncate(MAX_ATTRIBUTES);
        Recorded {
            span_context: SpanContext::new(
                trace_id,
                new_span_id(),
                TraceFlags::SAMPLED,
                false,
                state,
            ),
            parent: parent_id,
            parent_is_remote: remote,
            kind,
            name,
            start_time: clock::now(),
            attributes,
            dropped_attributes,
            events: SpanEvents::default(),
            status: Status::Unset,
            policy: Some(policy.clone()),
        }
    }
}

impl opentelemetry::trace::Span for Recorded {
    fn add_event_with_timestamp<T>(
        &mut self,
        name: T,
        timestamp: SystemTime,
        mut attributes: Vec<KeyValue>,
    ) where
        T: Into<Cow<'static, str>>,
    {
        if self.policy.is_none() {
            return;
        }
        if self.events.len() >= MAX_EVENTS {
            self.events.dropped_count += 1;
            return;
        }
        let dropped = attributes.len().saturating_sub(MAX_EVENT_ATTRIBUTES);
        attributes.truncate(MAX_EVENT_ATTRIBUTES);
        self.events
            .events
            .push(Event::new(name, timestamp, attributes, dropped as u32));
    }

    // `SpanRef::add_event` and `SpanRef::end` (how spans in a `Context` are reached) stamp
    // with the system clock before they reach this type; mqrs's own callers pass
    // `clock::now()` explicitly. These two cover a direct call.
    fn add_event<T>(&mut self, name: T, attributes: Vec<KeyValue>)
    where
        T: Into<Cow<'static, str>>,
    {
        self.add_event_with_timestamp(name, clock::now(), attributes);
    }

    fn span_context(&self) -> &SpanContext {
        &self.span_context
    }

    fn is_recording(&self) -> bool {
        self.policy.is_some()
    }

    fn set_attribute(&mut self, attribute: KeyValue) {
        if self.policy.is_none() {
            return;
        }
        if self.attributes.len() < MAX_ATTRIBUTES {
            self.attributes.push(attribute);
        } else {
            self.dropped_attributes += 1;
        }
    }

    fn set_status(&mut self, status: Status) {
        // Ok > Error > Unset, as the specification orders them.
        if self.policy.is_some() && status > self.status {
            self.status = status;
        }
    }

    fn update_name<T>(&mut self, new_name: T)
    where
        T: Into<Cow<'static, str>>,
    {
        if self.policy.is_some() {
            self.name = new_name.into();
        }
    }

    fn add_link(&mut self, _span_context: SpanContext, _attributes: Vec<KeyValue>) {
        // mqrs's own spans have no links; nothing calls this for them.
    }

    fn end(&mut self) {
        self.end_with_timestamp(clock::now());
    }

    fn end_with_timestamp(&mut self, end_time: SystemTime) {
        let Some(policy) = self.policy.take() else {
            return;
        };
        // Another thread's clock anchor may put the end a microsecond before the start.
        let end_time = end_time.max(self.start_time);
        policy.deliver(SpanData {
            span_context: self.span_context.clone(),
            parent_span_id: self.parent,
            parent_span_is_remote: self.parent_is_remote,
            span_kind: self.kind.clone(),
            name: std::mem::take(&mut self.name),
            start_time: self.start_time,
            end_time,
            attributes: std::mem::take(&mut self.attributes),
            dropped_attributes_count: self.dropped_attributes,
            events: std::mem::take(&mut self.events),
            links: SpanLinks::default(),
            status: std::mem::replace(&mut self.status, Status::Unset),
            instrumentation_scope: InstrumentationScope::builder("mqrs").build(),
        });
    }
}

impl Drop for Recorded {
    fn drop(&mut self) {
        // A span is recorded even when whoever held it forgot to end it.
        opentelemetry::trace::Span::end(self);
    }
}
