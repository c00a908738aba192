//! The serving side of a call: the one place that opens a SERVER span, runs the handler with a
//! session that carries that span, contains panics, and records the outcome.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};

use super::registry::Route;
use crate::error::RpcError;
use crate::session::Session;

/// Attribute values shared by client and server spans of an RPC.
pub(crate) fn rpc_attributes(method: &str, session: &Session) -> Vec<KeyValue> {
    let mut attrs = Vec::with_capacity(4);
    attrs.push(KeyValue::new("rpc.system.name", "mqrs"));
    attrs.push(KeyValue::new("rpc.method", method.to_string()));
    if !session.userid().is_empty() {
        attrs.push(KeyValue::new("user.id", session.userid().to_string()));
    }
    if !session.sessionid().is_empty() {
        attrs.push(KeyValue::new("session.id", session.sessionid().to_string()));
    }
    attrs
}

/// Marks the span in `cx` as failed with the error's text and kind.
pub(crate) fn record_error(cx: &Context, e: &RpcError) {
    let span = cx.span();
    span.set_attribute(KeyValue::new("error.type", e.kind()));
    span.set_status(Status::error(e.to_string()));
}

/// Ends the span in a context when dropped, so a cancelled call still finishes its span.
pub(crate) struct EndOnDrop(pub(crate) Context);

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        self.0.span().end();
    }
}

/// Marks a SERVER span as cancelled if the handler is dropped before it finishes (the caller
/// timed out or went away); disarmed when the handler completes.
struct CancelMark<'a>(&'a Context, bool);

impl Drop for CancelMark<'_> {
    fn drop(&mut self) {
        if self.1 {
            let span = self.0.span();
            span.set_attribute(KeyValue::new("error.type", "cancelled"));
            span.set_status(Status::error("cancelled: the caller stopped waiting"));
        }
    }
}

/// Runs `route` for one call, inside a SERVER span when the session is traced.
pub async fn dispatch(
    route: Arc<Route>,
    session: Session,
    args: Vec<u8>,
) -> Result<Vec<u8>, RpcError> {
    let Some(parent) = session.trace_cx() else {
        return run(&route, session, args).await;
    };
    let tracer = &route.tracer.tracer;
    let span = tracer
        .span_builder(route.name.to_string())
        .with_kind(SpanKind::Server)
        .with_attributes(rpc_attributes(&route.name, &session))
        .start_with_context(tracer, &parent.cx);
    let guard = EndOnDrop(parent.cx.with_span(span));
    let mut cancel = CancelMark(&guard.0, true);
    let inner = session.with_trace(guard.0.clone(), route.tracer.clone());
    let result = run(&route, inner, args).await;
    cancel.1 = false;
    drop(cancel);
    if let Err(e) = &result {
        record_error(&guard.0, e);
    }
    drop(guard);
    result
}

async fn run(route: &Route, session: Session, args: Vec<u8>) -> Result<Vec<u8>, RpcError> {
    match AssertUnwindSafe((route.handler)(session, args))
        .catch_unwind()
        .await
    {
        Ok(r) => r,
        Err(_) => {
            tracing::error!(method = %route.name, "handler panicked");
            Err(RpcError::Panicked(route.name.to_string()))
        }
    }
}
