//! The one place spans are made: the gate's root, the caller's CLIENT span, the callee's SERVER
//! span, a root started outside the gate, and how failures and cancellation are recorded on
//! them. Everything that opens or closes a span goes through here, so samplers and exporters
//! change in one file.

use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};

use super::ServiceTracer;
use crate::error::RpcError;
use crate::session::Session;

/// Value of `rpc.system.name` on every RPC span.
pub const RPC_SYSTEM: &str = "mqrs";

/// Ends the span in a context when dropped, so a cancelled call still finishes its span.
pub(crate) struct EndOnDrop(pub(crate) Context);

impl EndOnDrop {
    /// The context holding the span.
    pub(crate) fn cx(&self) -> &Context {
        &self.0
    }
}

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        self.0.span().end();
    }
}

/// Attribute values shared by CLIENT and SERVER spans of an RPC (OpenTelemetry RPC conventions).
fn rpc_attributes(method: &str, session: &Session) -> Vec<KeyValue> {
    let mut attrs = Vec::with_capacity(4);
    attrs.push(KeyValue::new("rpc.system.name", RPC_SYSTEM));
    attrs.push(KeyValue::new("rpc.method", method.to_string()));
    let d = session.data();
    if !d.userid.is_empty() {
        attrs.push(KeyValue::new("user.id", d.userid.clone()));
    }
    if !d.sessionid.is_empty() {
        attrs.push(KeyValue::new("session.id", d.sessionid.clone()));
    }
    attrs
}

/// The gate's root span for one client request: SERVER kind, a new trace.
pub(crate) fn gate_root(tracer: &ServiceTracer, name: String, attrs: Vec<KeyValue>) -> EndOnDrop {
    let t = &tracer.tracer;
    let span = t
        .span_builder(name)
        .with_kind(SpanKind::Server)
        .with_attributes(attrs)
        .start_with_context(t, &Context::new());
    EndOnDrop(Context::new().with_span(span))
}

/// A root span started outside the gate (a timer, a background job): INTERNAL kind.
pub(crate) fn internal_root(tracer: &ServiceTracer, name: String) -> EndOnDrop {
    let t = &tracer.tracer;
    let span = t.span_builder(name).start_with_context(t, &Context::new());
    EndOnDrop(Context::new().with_span(span))
}

/// The caller's CLIENT span of a call to `method` (`Module/method`), child of `parent`.
pub(crate) fn client(
    tracer: &ServiceTracer,
    parent: &Context,
    method: &str,
    session: &Session,
) -> EndOnDrop {
    rpc_span(SpanKind::Client, tracer, parent, method, session)
}

/// The callee's SERVER span of `method`, child of the caller's span in `parent`.
pub(crate) fn server(
    tracer: &ServiceTracer,
    parent: &Context,
    method: &str,
    session: &Session,
) -> EndOnDrop {
    rpc_span(SpanKind::Server, tracer, parent, method, session)
}

fn rpc_span(
    kind: SpanKind,
    tracer: &ServiceTracer,
    parent: &Context,
    method: &str,
    session: &Session,
) -> EndOnDrop {
    let t = &tracer.tracer;
    let span = t
        .span_builder(method.to_string())
        .with_kind(kind)
        .with_attributes(rpc_attributes(method, session))
        .start_with_context(t, parent);
    EndOnDrop(parent.with_span(span))
}

/// Marks the span in `cx` as failed with the error's text and kind (`error.type`).
pub(crate) fn record_error(cx: &Context, e: &RpcError) {
    let span = cx.span();
    span.set_attribute(KeyValue::new("error.type", e.kind()));
    span.set_status(Status::error(e.to_string()));
}

/// Marks a SERVER span as cancelled if the handler is dropped before it finishes (the caller
/// timed out or went away); disarmed with [`CancelMark::disarm`] when the handler completes.
pub(crate) struct CancelMark<'a>(&'a Context, bool);

impl<'a> CancelMark<'a> {
    /// Armed for the span in `cx`.
    pub(crate) fn new(cx: &'a Context) -> Self {
        CancelMark(cx, true)
    }

    /// The handler finished: nothing to mark.
    pub(crate) fn disarm(mut self) {
        self.1 = false;
    }
}

impl Drop for CancelMark<'_> {
    fn drop(&mut self) {
        if self.1 {
            let span = self.0.span();
            span.set_attribute(KeyValue::new("error.type", "cancelled"));
            span.set_status(Status::error("cancelled: the caller stopped waiting"));
        }
    }
}
