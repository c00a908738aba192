//! The one place spans are made: the gate's root, the caller's CLIENT span, the callee's SERVER
//! span, a root started outside the gate, and how failures and cancellation are recorded on
//! them. Everything that opens or closes a span goes through here, so samplers and exporters
//! change in one file.
//!
//! Sampling is decided here, at the root (`trace::sampling`); a child follows its parent's
//! flags. A sampled span is a [`Recorded`] span. A span of a skipped trace is, when keeping is on, a
//! [`Shadow`] that becomes a span only if the trace is kept (it fails or is slow), and
//! otherwise nothing but a non-recording context carrying the trace id.

use std::borrow::Cow;
use std::sync::Arc;

use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceState};
use opentelemetry::{Context, KeyValue};

use super::attrs::{gate_attributes, rpc_attributes};
use super::recorded::Recorded;
use super::sampling::Keep;
use super::skipped::{self, Attrs, Shadow};
use super::tracer::{Policy, ServiceTracer};
use super::{ids, names};
use crate::error::RpcError;
use crate::identity::Facts;

/// What a span is, by the sampling decision of its trace.
#[allow(clippy::large_enum_variant)]
enum State {
    /// A recording span held in the context, ended on drop.
    Recorded,
    /// A recording span held here instead of in a context (a call's CLIENT span: nothing
    /// attaches it or tags it through a session, so it needs neither the box nor the shared
    /// cell a context costs per span); ended on drop.
    Own(Recorded),
    /// A span of a skipped trace, kept only if the trace is. Held inline: the span lives in
    /// its request's future, so a box would only add an allocation per span.
    Skipped(Shadow),
    /// A skipped trace that is not followed (keeping is off): nothing to end.
    Quiet,
}

/// Ends the span when dropped (so a cancelled call still finishes its span), at the time
/// [`EndOnDrop::stamp_end`] took if it was called.
pub(crate) struct EndOnDrop {
    cx: Context,
    state: State,
    /// When the span ended, if [`EndOnDrop::stamp_end`] said so before the drop.
    ended: Option<std::time::SystemTime>,
}

impl EndOnDrop {
    /// The context holding the span (empty for a recorded CLIENT span, which is held on its
    /// own: see [`EndOnDrop::context`]).
    pub(crate) fn cx(&self) -> &Context {
        &self.cx
    }

    /// The context holding the span; `None` for a span held on its own.
    pub(crate) fn context(&self) -> Option<&Context> {
        (!matches!(self.state, State::Own(_))).then_some(&self.cx)
    }

    /// The span's own span context.
    pub(crate) fn span_context(&self) -> SpanContext {
        match &self.state {
            State::Own(r) => opentelemetry::trace::Span::span_context(r).clone(),
            _ => self.cx.span().span_context().clone(),
        }
    }

    /// True for a recording span (a sampled trace): tags, events and `tracing` spans are recorded.
    pub(crate) fn is_recording(&self) -> bool {
        matches!(self.state, State::Recorded | State::Own(_))
    }

    /// The keep mark of the trace, when the sampler skipped it (shared with the spans under
    /// this one in this process).
    pub(crate) fn keep(&self) -> Option<&Arc<Keep>> {
        match &self.state {
            State::Skipped(s) => Some(&s.keep),
            _ => None,
        }
    }

    /// Ends the span now as far as its times go, to be delivered (stored and exported) only
    /// when dropped: a served call's owner drops it once the reply is on its way, so that
    /// work does not add to the call's latency. A span of a skipped trace is finished at once
    /// (whether it was slow goes into the reply). Tags set in between (by a task the handler
    /// left running) are still kept.
    pub(crate) fn stamp_end(&mut self) {
        match &self.state {
            State::Recorded | State::Own(_) => self.ended = Some(super::clock::now()),
            State::Skipped(_) => {
                if let State::Skipped(s) = std::mem::replace(&mut self.state, State::Quiet) {
                    s.finish();
                }
            }
            State::Quiet => {}
        }
    }

    /// Marks a skipped trace as slow if this span has already run past the threshold (the
    /// gate asks before it replies, so the reply can name a trace that will be kept).
    pub(crate) fn check_slow(&self) {
        if let State::Skipped(s) = &self.state {
            s.check_slow(super::clock::now());
        }
    }

    fn recorded(cx: Context) -> EndOnDrop {
        EndOnDrop {
            cx,
            state: State::Recorded,
            ended: None,
        }
    }

    /// A span of a trace the sampler skipped, in the non-recording context `sc`: followed as a
    /// shadow (its trace's keep mark and its attributes' source from `follow`) when keeping is
    /// on, else quiet.
    fn skipped(
        policy: &Arc<Policy>,
        sc: SpanContext,
        parent: SpanId,
        kind: SpanKind,
        name: Cow<'static, str>,
        follow: impl FnOnce() -> (Arc<Keep>, Attrs),
    ) -> EndOnDrop {
        let cx = Context::new().with_remote_span_context(sc.clone());
        if !policy.keeps() {
            return EndOnDrop {
                cx,
                state: State::Quiet,
                ended: None,
            };
        }
        let (keep, attrs) = follow();
        let shadow = Shadow::new(policy, keep, sc, parent, kind, name, attrs);
        EndOnDrop {
            cx,
            state: State::Skipped(shadow),
            ended: None,
        }
    }
}

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        let end = self.ended.unwrap_or_else(super::clock::now);
        match std::mem::replace(&mut self.state, State::Quiet) {
            State::Recorded => self.cx.span().end_with_timestamp(end),
            State::Own(mut r) => opentelemetry::trace::Span::end_with_timestamp(&mut r, end),
            State::Skipped(s) => s.finish(),
            State::Quiet => {}
        }
    }
}

/// What an RPC span takes from the session it is made for.
#[derive(Clone, Copy)]
pub(crate) struct SpanSource<'a> {
    /// The caller's facts, whose span values the span takes.
    pub(crate) facts: &'a Arc<Facts>,
    /// The keep mark of a trace the sampler skipped.
    pub(crate) keep: Option<&'a Arc<Keep>>,
}

/// What starts a new trace.
enum RootOf<'a> {
    /// A client request at the gate, with the request's own attributes.
    Gate(&'a Arc<Facts>, [KeyValue; 2]),
    /// A timer or background job.
    Job,
}

/// A new trace's root: sampled, followed as a shadow, or quiet.
fn root(tracer: &ServiceTracer, name: Cow<'static, str>, of: RootOf<'_>) -> EndOnDrop {
    let policy = &tracer.policy;
    let kind = match of {
        RootOf::Gate(..) => SpanKind::Server,
        RootOf::Job => SpanKind::Internal,
    };
    if policy.sampler.sample_root(&name) {
        let attrs = match of {
            RootOf::Gate(facts, extra) => gate_attributes(facts, extra),
            RootOf::Job => Vec::new(),
        };
        let span = Recorded::start(policy, &SpanContext::empty_context(), kind, name, attrs);
        return EndOnDrop::recorded(Context::new().with_span(span));
    }
    let sc = skipped::span_context(ids::new_trace_id(), TraceState::default());
    EndOnDrop::skipped(policy, sc, SpanId::INVALID, kind, name, || {
        let attrs = match of {
            RootOf::Gate(facts, extra) => Attrs::Gate(facts.clone(), extra),
            RootOf::Job => Attrs::Internal,
        };
        (Arc::default(), attrs)
    })
}

/// The gate's root span for one client request (`gate Module/HD_handler`, or the fixed name
/// `gate unknown-route` when the topic is not a route the app serves): SERVER kind, a new trace, with the connection's facts and `extra`
/// attributes.
pub(crate) fn gate_root(
    tracer: &ServiceTracer,
    route: Option<(&str, &str)>,
    facts: &Arc<Facts>,
    extra: [KeyValue; 2],
) -> EndOnDrop {
    let name = match route {
        Some((module, handler)) => names::intern_parts(&["gate ", module, "/", handler]),
        None => Cow::Borrowed("gate unknown-route"),
    };
    root(tracer, name, RootOf::Gate(facts, extra))
}

/// The gate's root span for a CONNECT its connect hook decides on (`gate CONNECT`): SERVER
/// kind, a new trace, with the connection's facts and `extra` attributes.
pub(crate) fn gate_connect(
    tracer: &ServiceTracer,
    facts: &Arc<Facts>,
    extra: [KeyValue; 2],
) -> EndOnDrop {
    root(
        tracer,
        Cow::Borrowed("gate CONNECT"),
        RootOf::Gate(facts, extra),
    )
}

/// A root span started outside the gate (a timer, a background job): INTERNAL kind.
pub(crate) fn internal_root(tracer: &ServiceTracer, name: String) -> EndOnDrop {
    root(tracer, Cow::Owned(name), RootOf::Job)
}

/// The caller's CLIENT span of a call to `method` (`Module/method`, see [`names`]), child of
/// `parent`; a recording one is held on its own, outside any context.
pub(crate) fn client(
    tracer: &ServiceTracer,
    parent: &SpanContext,
    method: Cow<'static, str>,
    of: SpanSource<'_>,
) -> EndOnDrop {
    rpc_span(SpanKind::Client, tracer, parent, None, method, of)
}

/// The callee's SERVER span of `method`, child of the caller's span in `parent`; its context
/// holds the values of `values` (the handler's, not the caller's: see `trace::layer`).
pub(crate) fn server(
    tracer: &ServiceTracer,
    parent: &SpanContext,
    values: &Context,
    method: &str,
    of: SpanSource<'_>,
) -> EndOnDrop {
    rpc_span(
        SpanKind::Server,
        tracer,
        parent,
        Some(values),
        names::intern(method),
        of,
    )
}

fn rpc_span(
    kind: SpanKind,
    tracer: &ServiceTracer,
    psc: &SpanContext,
    values: Option<&Context>,
    name: Cow<'static, str>,
    of: SpanSource<'_>,
) -> EndOnDrop {
    if psc.is_valid() && !psc.is_sampled() {
        // The root skipped this trace: follow the decision.
        let sc = skipped::span_context(psc.trace_id(), psc.trace_state().clone());
        return EndOnDrop::skipped(&tracer.policy, sc, psc.span_id(), kind, name, || {
            let keep = of.keep.cloned().unwrap_or_default();
            (keep, Attrs::Rpc(of.facts.clone()))
        });
    }
    let attrs = rpc_attributes(name.clone(), of.facts.span_attrs());
    let span = Recorded::start(&tracer.policy, psc, kind, name, attrs);
    match values {
        Some(values) => EndOnDrop::recorded(values.with_span(span)),
        None => EndOnDrop {
            cx: Context::new(),
            state: State::Own(span),
            ended: None,
        },
    }
}

/// Marks the span as failed with the error's text and kind (`error.type`); in a skipped trace,
/// marks the trace to be kept. A recorded CLIENT span is held on its own and needs
/// [`record_error_mut`].
pub(crate) fn record_error(span: &EndOnDrop, e: &RpcError) {
    fail(span, e.kind(), || e.to_string());
}

/// [`record_error`] for a span held on its own (a call's CLIENT span) as well.
pub(crate) fn record_error_mut(span: &mut EndOnDrop, e: &RpcError) {
    if let State::Own(r) = &mut span.state {
        use opentelemetry::trace::Span;
        r.set_attribute(KeyValue::new("error.type", e.kind()));
        r.set_status(Status::error(e.to_string()));
        return;
    }
    record_error(span, e);
}

/// Adds a tag to a recorded span, a call's CLIENT span included; spans of skipped traces
/// keep only the tags they were made with.
pub(crate) fn tag_mut(span: &mut EndOnDrop, tag: KeyValue) {
    match &mut span.state {
        State::Own(r) => opentelemetry::trace::Span::set_attribute(r, tag),
        State::Recorded => span.cx.span().set_attribute(tag),
        State::Skipped(_) | State::Quiet => {}
    }
}

/// Marks a span (not a CLIENT one) as failed with `error.type` `kind` and the status text.
pub(crate) fn record_failure(span: &EndOnDrop, kind: &'static str, text: impl FnOnce() -> String) {
    fail(span, kind, text);
}

fn fail(span: &EndOnDrop, kind: &'static str, text: impl FnOnce() -> String) {
    match &span.state {
        State::Recorded => {
            let s = span.cx.span();
            s.set_attribute(KeyValue::new("error.type", kind));
            s.set_status(Status::error(text()));
        }
        State::Skipped(shadow) => shadow.fail(kind, text),
        State::Own(_) => {
            // Only a call's CLIENT span is held on its own, marked by `record_error_mut`.
            debug_assert!(false, "a CLIENT span is marked through record_error_mut");
        }
        State::Quiet => {}
    }
}

/// Marks a SERVER span as cancelled if the handler is dropped before it finishes (the caller
/// timed out or went away); disarmed with [`CancelMark::disarm`] when the handler completes.
pub(crate) struct CancelMark<'a>(&'a EndOnDrop, bool);

impl<'a> CancelMark<'a> {
    /// Armed for `span`.
    pub(crate) fn new(span: &'a EndOnDrop) -> Self {
        CancelMark(span, true)
    }

    /// The handler finished: nothing to mark.
    pub(crate) fn disarm(mut self) {
        self.1 = false;
    }
}

impl Drop for CancelMark<'_> {
    fn drop(&mut self) {
        if self.1 {
            fail(self.0, "cancelled", || {
                "cancelled: the caller stopped waiting".to_string()
            });
        }
    }
}

// These tests read what was recorded from the embedded store.
#[cfg(all(test, feature = "viewer"))]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::trace::{StoreLimits, TraceStore, Tracing};

    #[test]
    fn a_span_stamped_ended_keeps_that_end_and_is_delivered_only_when_dropped() {
        let store = Arc::new(TraceStore::new(StoreLimits::default()));
        let tracing = Tracing::new(Some(store.clone()));
        let tracer = tracing.tracer("M");
        let mut span = internal_root(&tracer, "job".into());
        let trace_id = u128::from_be_bytes(span.span_context().trace_id().to_bytes());
        span.stamp_end();
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            store.trace(trace_id).is_none(),
            "not delivered before the drop"
        );
        drop(span);
        let t = store.trace(trace_id).expect("delivered when dropped");
        assert_eq!(t.spans.len(), 1);
        assert!(
            t.spans[0].duration_us < 40_000,
            "ended when stamped, not when dropped: {} µs",
            t.spans[0].duration_us
        );
    }

    #[test]
    fn a_client_span_held_on_its_own_nests_and_keeps_its_error() {
        let store = Arc::new(TraceStore::new(StoreLimits::default()));
        let tracing = Tracing::new(Some(store.clone()));
        let tracer = tracing.tracer("M");
        let root = internal_root(&tracer, "job".into());
        let parent = root.span_context();
        let mut call = client(
            &tracer,
            &parent,
            "N/f".into(),
            SpanSource {
                facts: &Arc::default(),
                keep: None,
            },
        );
        assert!(call.context().is_none(), "held on its own");
        assert!(call.is_recording());
        assert_eq!(call.span_context().trace_id(), parent.trace_id());
        record_error_mut(&mut call, &RpcError::DeadlineExceeded("N/f".into()));
        drop(call);
        drop(root);
        let trace_id = u128::from_be_bytes(parent.trace_id().to_bytes());
        let t = store.trace(trace_id).expect("stored");
        let span = t
            .spans
            .iter()
            .find(|s| s.name == "N/f")
            .expect("CLIENT span");
        assert_eq!(span.kind, "client");
        assert_eq!(
            span.parent_span_id,
            Some(u64::from_be_bytes(parent.span_id().to_bytes()))
        );
        assert_eq!(
            span.tag("error.type").map(|v| v.as_str()),
            Some("deadline_exceeded".into())
        );
        assert!(span.error.is_some());
    }
}
