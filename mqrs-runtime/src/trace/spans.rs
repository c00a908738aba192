//! The one place spans are made: the gate's root, the caller's CLIENT span, the callee's SERVER
//! span, a root started outside the gate, and how failures and cancellation are recorded on
//! them. Everything that opens or closes a span goes through here, so samplers and exporters
//! change in one file.

use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};

use std::borrow::Cow;

use super::{names, ServiceTracer};
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
/// Names are kept once and session values are shared: nothing here copies a string.
fn rpc_attributes(method: Cow<'static, str>, session: &Session) -> Vec<KeyValue> {
    let mut attrs = Vec::with_capacity(4);
    attrs.push(KeyValue::new("rpc.system.name", RPC_SYSTEM));
    attrs.push(KeyValue::new("rpc.method", method));
    let a = session.span_attrs();
    if let Some(u) = &a.user {
        attrs.push(KeyValue::new("user.id", u.clone()));
    }
    if let Some(s) = &a.session {
        attrs.push(KeyValue::new("session.id", s.clone()));
    }
    attrs
}

/// The gate's root span for one client request (`gate Module/HD_handler`, or a fixed name when
/// the topic is not a route): SERVER kind, a new trace, with the connection's facts and `extra`
/// attributes.
pub(crate) fn gate_root(
    tracer: &ServiceTracer,
    route: Option<(&str, &str)>,
    session: &Session,
    extra: [KeyValue; 2],
) -> EndOnDrop {
    let name = match route {
        Some((module, handler)) => names::intern_parts(&["gate ", module, "/", handler]),
        None => Cow::Borrowed("gate invalid-topic"),
    };
    let a = session.span_attrs();
    let mut attrs = Vec::with_capacity(8);
    attrs.push(KeyValue::new("network.protocol.name", "mqtt"));
    attrs.push(KeyValue::new("network.transport", a.network.clone()));
    attrs.push(KeyValue::new("client.address", a.ip.clone()));
    attrs.extend(extra);
    if let Some(s) = &a.session {
        attrs.push(KeyValue::new("session.id", s.clone()));
    }
    if let Some(u) = &a.user {
        attrs.push(KeyValue::new("user.id", u.clone()));
    }
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

/// The caller's CLIENT span of a call to `method` (`Module/method`, see [`names`]), child of
/// `parent`.
pub(crate) fn client(
    tracer: &ServiceTracer,
    parent: &Context,
    method: Cow<'static, str>,
    session: &Session,
) -> EndOnDrop {
    rpc_span(SpanKind::Client, tracer, parent, parent, method, session)
}

/// The callee's SERVER span of `method`, child of the caller's span in `parent`; its context
/// holds the values of `values` (the handler's, not the caller's: see `trace::layer`).
pub(crate) fn server(
    tracer: &ServiceTracer,
    parent: &Context,
    values: &Context,
    method: &str,
    session: &Session,
) -> EndOnDrop {
    rpc_span(
        SpanKind::Server,
        tracer,
        parent,
        values,
        names::intern(method),
        session,
    )
}

fn rpc_span(
    kind: SpanKind,
    tracer: &ServiceTracer,
    parent: &Context,
    values: &Context,
    name: Cow<'static, str>,
    session: &Session,
) -> EndOnDrop {
    let t = &tracer.tracer;
    let attrs = rpc_attributes(name.clone(), session);
    let span = t
        .span_builder(name)
        .with_kind(kind)
        .with_attributes(attrs)
        .start_with_context(t, parent);
    EndOnDrop(values.with_span(span))
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
