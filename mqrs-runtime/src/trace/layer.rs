//! Bridges the `tracing` crate into mqrs spans: this file owns the `tracing_subscriber` layer
//! that turns `tracing` spans opened inside a handler into INTERNAL child spans of its RPC span
//! and `tracing` events (`info!`, `warn!`, ...) into events on that span, and the context value
//! that marks "a handler of this module is running" (attached by `rpc::dispatch` while it polls
//! a traced handler, once the layer is installed). Outside a traced handler the layer records
//! nothing.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer};
use opentelemetry::{Context, ContextGuard, Key, KeyValue, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context as LayerCx, Layer};
use tracing_subscriber::registry::{LookupSpan, SpanRef};

use super::ServiceTracer;

/// Put into the OpenTelemetry context while a traced handler runs: the tracer of its module,
/// which opens the spans of `tracing` spans made inside it (so they carry its service name).
pub(crate) struct InHandler(pub(crate) ServiceTracer);

/// The values of the context a traced handler of `tracer`'s module is polled in; made once per
/// route, so a call only clones it (its SERVER span is added by `spans::server`).
pub(crate) fn handler_values(tracer: &ServiceTracer) -> Context {
    Context::new().with_value(InHandler(tracer.clone()))
}

/// The layer that records `tracing` spans and events made inside handlers under their RPC span.
///
/// Install it beside any other layers:
/// `tracing_subscriber::registry().with(fmt_layer).with(mqrs_runtime::trace::layer())`.
#[derive(Debug, Default, Clone, Copy)]
pub struct HandlerLayer {
    _private: (),
}

/// The layer that puts handlers' `tracing` spans and events into their RPC spans.
pub fn layer() -> HandlerLayer {
    HandlerLayer::default()
}

/// Set when a subscriber with [`HandlerLayer`] is built; until then dispatch attaches nothing.
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// True once [`HandlerLayer`] is part of a subscriber: only then is a traced handler polled
/// with its span as the current context (attaching costs on every poll).
pub(crate) fn installed() -> bool {
    INSTALLED.load(Ordering::Relaxed)
}

/// Extension of a `tracing` span that has an mqrs span: the context holding it.
struct OtelSpan(Context);

thread_local! {
    /// Contexts attached by `on_enter`, by span id, detached by the matching `on_exit`.
    static ENTERED: RefCell<Vec<(Id, ContextGuard)>> = const { RefCell::new(Vec::new()) };
}

/// The OpenTelemetry SDK logs through `tracing` itself; its events must never feed back in.
fn is_own(target: &str) -> bool {
    target.starts_with("opentelemetry")
}

/// The context of the innermost traced handler running on this thread, if any.
fn current_handler() -> Option<Context> {
    Context::map_current(|cx| {
        (cx.get::<InHandler>().is_some() && cx.span().is_recording()).then(|| cx.clone())
    })
}

/// The context of `span` if it has an mqrs span.
fn span_cx<S>(span: &SpanRef<'_, S>) -> Option<Context>
where
    S: for<'a> LookupSpan<'a>,
{
    span.extensions().get::<OtelSpan>().map(|o| o.0.clone())
}

impl<S> Layer<S> for HandlerLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_layer(&mut self, _subscriber: &mut S) {
        INSTALLED.store(true, Ordering::Relaxed);
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: LayerCx<'_, S>) {
        let meta = attrs.metadata();
        if is_own(meta.target()) {
            return;
        }
        let tracing_parent = match attrs.parent() {
            Some(p) => ctx.span(p),
            None if attrs.is_contextual() => ctx.lookup_current(),
            None => None,
        };
        let parent = tracing_parent
            .as_ref()
            .and_then(span_cx)
            .or_else(current_handler);
        let Some(parent) = parent else { return };
        let Some(InHandler(tracer)) = parent.get::<InHandler>() else {
            return;
        };
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let t = &tracer.tracer;
        let otel = t
            .span_builder(meta.name())
            .with_kind(SpanKind::Internal)
            .with_attributes(fields.into_attrs())
            .with_start_time(super::clock::now())
            .start_with_context(t, &parent);
        let cx = parent.with_span(otel);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(OtelSpan(cx));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: LayerCx<'_, S>) {
        let Some(cx) = ctx.span(id).as_ref().and_then(span_cx) else {
            return;
        };
        let mut fields = Fields::default();
        values.record(&mut fields);
        let span = cx.span();
        for kv in fields.into_attrs() {
            span.set_attribute(kv);
        }
    }

    fn on_enter(&self, id: &Id, ctx: LayerCx<'_, S>) {
        let Some(cx) = ctx.span(id).as_ref().and_then(span_cx) else {
            return;
        };
        let guard = cx.attach();
        // During thread teardown the stack is gone; dropping the guard detaches again.
        let _ = ENTERED.try_with(|e| e.borrow_mut().push((id.clone(), guard)));
    }

    fn on_exit(&self, id: &Id, _ctx: LayerCx<'_, S>) {
        let guard = ENTERED
            .try_with(|e| {
                let mut e = e.borrow_mut();
                let at = e.iter().rposition(|(i, _)| i == id)?;
                Some(e.remove(at).1)
            })
            .ok()
            .flatten();
        // Dropped here, outside the borrow: detaching may end a span, which may log.
        drop(guard);
    }

    fn on_event(&self, event: &Event<'_>, ctx: LayerCx<'_, S>) {
        let meta = event.metadata();
        if is_own(meta.target()) {
            return;
        }
        let cx = ctx
            .event_span(event)
            .as_ref()
            .and_then(span_cx)
            .or_else(current_handler);
        let Some(cx) = cx else { return };
        let mut fields = Fields::default();
        fields
            .attrs
            .push(KeyValue::new("level", meta.level().as_str()));
        fields.attrs.push(KeyValue::new("target", meta.target()));
        event.record(&mut fields);
        let name = fields.message.take().unwrap_or(Cow::Borrowed(meta.name()));
        cx.span()
            .add_event_with_timestamp(name, super::clock::now(), fields.attrs);
    }

    fn on_close(&self, id: Id, ctx: LayerCx<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let otel = span.extensions_mut().remove::<OtelSpan>();
        if let Some(OtelSpan(cx)) = otel {
            cx.span().end_with_timestamp(super::clock::now());
        }
    }
}

/// A span's or event's fields as attributes; an event's `message` is kept apart as its name.
#[derive(Default)]
struct Fields {
    attrs: Vec<KeyValue>,
    message: Option<Cow<'static, str>>,
}

impl Fields {
    /// All fields as attributes, `message` included (a span has no other place for it).
    fn into_attrs(mut self) -> Vec<KeyValue> {
        if let Some(m) = self.message.take() {
            self.attrs.push(KeyValue::new("message", m));
        }
        self.attrs
    }

    fn push(&mut self, field: &Field, value: Value) {
        self.attrs
            .push(KeyValue::new(Key::from_static_str(field.name()), value));
    }
}

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field, Value::F64(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, Value::I64(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        match i64::try_from(value) {
            Ok(v) => self.push(field, Value::I64(v)),
            Err(_) => self.push(field, Value::from(value.to_string())),
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, Value::Bool(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(Cow::Owned(value.to_string()));
        } else {
            self.push(field, Value::from(value.to_string()));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.push(field, Value::from(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = Some(Cow::Owned(text));
        } else {
            self.push(field, Value::from(text));
        }
    }
}

// These tests read what was recorded from the embedded store.
#[cfg(all(test, feature = "viewer"))]
pub(crate) mod tests {
    use std::sync::Arc;

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;
    use crate::session::Session;
    use crate::trace::spans;
    use crate::trace::{StoreLimits, StoredSpan, Tag, TraceStore, Tracing};
    use opentelemetry::Value;

    pub(crate) fn subscriber() -> impl Subscriber {
        tracing_subscriber::registry().with(layer())
    }

    pub(crate) fn trace_id(cx: &Context) -> u128 {
        u128::from_be_bytes(cx.span().span_context().trace_id().to_bytes())
    }

    pub(crate) fn tag<'a>(tags: &'a [Tag], key: &str) -> Option<&'a Value> {
        tags.iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| &kv.value)
    }

    pub(crate) fn named<'a>(all: &'a [StoredSpan], name: &str) -> &'a StoredSpan {
        let found: Vec<_> = all.iter().filter(|s| s.name == name).collect();
        assert_eq!(found.len(), 1, "one `{name}` expected: {all:#?}");
        found[0]
    }

    #[test]
    fn spans_and_events_inside_a_handler_nest_under_its_span() {
        let store = Arc::new(TraceStore::new(StoreLimits::default()));
        let tracing = Tracing::new(Some(store.clone()));
        let (caller, callee) = (tracing.tracer("Caller"), tracing.tracer("M"));
        let root = spans::internal_root(&caller, "root".into());
        let values = handler_values(&callee);
        let parent = root.span_context();
        let server = spans::server(
            &callee,
            &parent,
            &values,
            "M/f",
            Session::default().span_source(),
        );
        let id = trace_id(root.cx());
        tracing::subscriber::with_default(subscriber(), || {
            // Outside a handler: nothing is recorded anywhere.
            tracing::info!(n = 1, "before");
            let outside = tracing::info_span!("outside");
            let _o = outside.enter();
            {
                let _h = server.cx().clone().attach();
                tracing::info!(user = "alice", n = 3, big = u64::MAX, ok = true, "hello");
                let load = tracing::info_span!("load", key = "k", found = tracing::field::Empty);
                {
                    let _e = load.enter();
                    tracing::warn!(x = 1.5, "inside");
                    tracing::info_span!("inner").in_scope(|| tracing::debug!("deep"));
                }
                load.record("found", 2);
                // An explicit parent wins over the current span.
                tracing::info!(parent: &load, "late");
            }
            tracing::info!("after");
            assert!(Context::map_current(|cx| cx.get::<InHandler>().is_none()));
        });
        drop(server);
        drop(root);
        let all = store.trace(id).expect("stored").spans;
        assert_eq!(all.len(), 4, "{all:#?}");
        let rpc = named(&all, "M/f");
        assert_eq!(rpc.events.len(), 1, "{:#?}", rpc.events);
        let hello = &rpc.events[0];
        assert_eq!(hello.name, "hello");
        assert_eq!(tag(&hello.attributes, "level"), Some(&Value::from("INFO")));
        assert_eq!(
            tag(&hello.attributes, "target"),
            Some(&Value::from(module_path!()))
        );
        assert_eq!(tag(&hello.attributes, "user"), Some(&Value::from("alice")));
        assert_eq!(tag(&hello.attributes, "n"), Some(&Value::I64(3)));
        assert_eq!(
            tag(&hello.attributes, "big"),
            Some(&Value::from(u64::MAX.to_string()))
        );
        assert_eq!(tag(&hello.attributes, "ok"), Some(&Value::Bool(true)));
        assert!(tag(&hello.attributes, "message").is_none());

        let load = named(&all, "load");
        assert_eq!((load.kind, &*load.service), ("internal", "M"));
        assert_eq!(load.parent_span_id, Some(rpc.span_id));
        assert_eq!(tag(&load.tags, "key"), Some(&Value::from("k")));
        assert_eq!(tag(&load.tags, "found"), Some(&Value::I64(2)));
        let names: Vec<_> = load.events.iter().map(|e| &*e.name).collect();
        assert_eq!(names, ["inside", "late"]);
        assert_eq!(tag(&load.events[0].attributes, "x"), Some(&Value::F64(1.5)));
        assert_eq!(
            tag(&load.events[0].attributes, "level"),
            Some(&Value::from("WARN"))
        );
        let inner = named(&all, "inner");
        assert_eq!(inner.parent_span_id, Some(load.span_id));
        assert_eq!(inner.events.len(), 1);
        assert_eq!(inner.events[0].name, "deep");
        assert!(all.iter().all(|s| s.name != "outside"));
    }
}
