//! `Session`: who is calling (user, connection, gate) and which trace the call belongs to.
//!
//! A session is cheap to clone (two reference counts). Inside a process its trace context
//! travels in binary form; only when it is serialized does it become a W3C `traceparent`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::{SpanRef, TraceContextExt};
use opentelemetry::{Context, Key, KeyValue, Value};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::deadline::Deadline;
use crate::identity::Facts;
pub use crate::identity::SessionData;
use crate::trace::context::{format_traceparent, parse_traceparent};
use crate::trace::sampling::Keep;
use crate::trace::spans::{EndOnDrop, SpanSource};
use crate::trace::ServiceTracer;

/// The trace a call belongs to: the current span and the tracer of the module running it.
#[derive(Clone)]
pub(crate) struct TraceCx {
    /// The context of the current span when it was opened in this process; `None` when the
    /// parent is a span in another process (its span context is all there is of it here), or
    /// a call's CLIENT span (held outside any context: nothing tags it through a session).
    pub(crate) cx: Option<Context>,
    /// The current span's span context (for a span of this process, a copy of its own).
    pub(crate) sc: opentelemetry::trace::SpanContext,
    /// `None` when the context arrived from another process and no module has taken it up yet.
    pub(crate) tracer: Option<ServiceTracer>,
    /// The keep mark of a trace the sampler skipped, shared by its spans in this process.
    pub(crate) keep: Option<Arc<Keep>>,
}

impl TraceCx {
    /// The context of a span in another process; a skipped trace (flags `00`) gets a keep
    /// mark of its own here, which the reply carries back.
    fn remote(sc: opentelemetry::trace::SpanContext) -> TraceCx {
        let keep = (!sc.is_sampled()).then(Arc::default);
        TraceCx {
            cx: None,
            sc,
            tracer: None,
            keep,
        }
    }
}

/// What a handler knows about its caller; passed as the first argument of every `#[rpc]` handler.
#[derive(Clone, Default)]
pub struct Session {
    data: Arc<Facts>,
    trace: Option<TraceCx>,
    /// When the call this session arrived with must be answered; calls made with it get at
    /// most the time left.
    deadline: Option<Deadline>,
    /// The service of this process serving the call (its module, or the gate): calls made
    /// with this session are counted as that service's; `None` outside any handler.
    serving: Option<&'static str>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("data", self.data.data())
            .field("traceparent", &self.traceparent())
            .field("remaining", &self.remaining())
            .finish()
    }
}

impl Session {
    /// A session with the given facts and no trace.
    pub fn new(data: SessionData) -> Self {
        Session {
            data: Arc::new(Facts::new(data)),
            trace: None,
            deadline: None,
            serving: None,
        }
    }

    /// All facts of the session.
    pub fn data(&self) -> &SessionData {
        self.data.data()
    }

    /// The facts to change, on this copy only; the cached span values are made again.
    pub(crate) fn data_mut(&mut self) -> &mut SessionData {
        Arc::make_mut(&mut self.data).data_mut()
    }

    /// The session's facts, with their cached span values.
    pub(crate) fn facts(&self) -> &Arc<Facts> {
        &self.data
    }

    /// What an RPC span made for this session takes from it.
    pub(crate) fn span_source(&self) -> SpanSource<'_> {
        SpanSource {
            facts: &self.data,
            keep: self.trace.as_ref().and_then(|t| t.keep.as_ref()),
        }
    }

    /// The bound user id, empty while anonymous.
    pub fn userid(&self) -> &str {
        &self.data.userid
    }

    /// The connection's session id.
    pub fn sessionid(&self) -> &str {
        &self.data.sessionid
    }

    /// The client transport, `tcp` or `ws`.
    pub fn network(&self) -> &str {
        &self.data.network
    }

    /// The client address.
    pub fn ip(&self) -> &str {
        &self.data.ip
    }

    /// The id of the gate that holds the connection.
    pub fn serverid(&self) -> &str {
        &self.data.serverid
    }

    /// True when no user id is bound.
    pub fn is_guest(&self) -> bool {
        self.data.userid.is_empty()
    }

    /// One setting, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.data.settings.get(key).map(String::as_str)
    }

    /// Sets a setting on this copy of the session (not pushed to the gate).
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.data_mut().settings.insert(key.into(), value.into());
    }

    /// Removes a setting from this copy of the session.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        self.data_mut().settings.remove(key)
    }

    /// Sets the user id on this copy only; use [`App::bind`](crate::App::bind) to reach the gate too.
    pub fn set_userid(&mut self, userid: impl Into<String>) {
        self.data_mut().userid = userid.into();
    }

    /// The span of the handler now running, for adding tags; a no-op handle when untraced.
    ///
    /// ```
    /// # let session = mqrs_runtime::Session::default();
    /// session.span().set_attribute("room", "lobby");
    /// ```
    pub fn span(&self) -> SessionSpan<'_> {
        SessionSpan(
            self.trace
                .as_ref()
                .and_then(|t| t.cx.as_ref())
                .map(|cx| cx.span()),
        )
    }

    /// True when this call is part of a sampled trace.
    pub fn is_traced(&self) -> bool {
        self.trace.as_ref().is_some_and(|t| t.sc.is_sampled())
    }

    /// The 32-hex trace id when traced.
    pub fn trace_id(&self) -> Option<String> {
        let t = self.trace.as_ref()?;
        let sc = &t.sc;
        sc.is_valid()
            .then(|| crate::trace::context::trace_id_hex(sc.trace_id()))
    }

    /// The W3C `traceparent` of the current span, when traced.
    pub fn traceparent(&self) -> Option<String> {
        let t = self.trace.as_ref()?;
        format_traceparent(&t.sc)
    }

    /// The W3C `tracestate` of the current span, when traced and not empty.
    pub fn tracestate(&self) -> Option<String> {
        let t = self.trace.as_ref()?;
        let header = t.sc.trace_state().header();
        (!header.is_empty()).then_some(header)
    }

    /// The same session without any trace context.
    pub fn untraced(&self) -> Session {
        Session {
            data: self.data.clone(),
            trace: None,
            deadline: self.deadline,
            serving: self.serving,
        }
    }

    /// This session's facts (whose client it names) with `other`'s trace and deadline: calls
    /// about this session's client made while serving `other` (sending it a message, kicking
    /// it) join `other`'s trace.
    pub fn with_trace_of(&self, other: &Session) -> Session {
        Session {
            data: self.data.clone(),
            trace: other.trace.clone(),
            deadline: other.deadline,
            serving: other.serving,
        }
    }

    /// The same session as the child of a span in another process or system, named by its
    /// W3C `traceparent` (an HTTP request's header, say) and `tracestate`: calls made with it
    /// join that trace. `None` when `traceparent` is not valid (version 00, or the first four
    /// fields of a later version, as W3C asks).
    ///
    /// ```
    /// # use mqrs_runtime::Session;
    /// let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    /// let s = Session::default().continuing(tp, None).expect("valid");
    /// assert_eq!(s.trace_id().as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
    /// assert!(Session::default().continuing("00-zz", None).is_none());
    /// ```
    pub fn continuing(&self, traceparent: &str, tracestate: Option<&str>) -> Option<Session> {
        let sc = remote_context(traceparent, tracestate)?;
        Some(Session {
            data: self.data.clone(),
            trace: Some(TraceCx::remote(sc)),
            deadline: self.deadline,
            serving: self.serving,
        })
    }

    /// When the call that brought this session must be answered, if it has a deadline.
    pub fn deadline(&self) -> Option<Deadline> {
        self.deadline
    }

    /// Time left before the deadline (zero once it has passed); `None` without a deadline.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline.map(Deadline::left)
    }

    /// The same session with a deadline: calls made with it get at most the time left.
    pub fn with_deadline(&self, deadline: impl Into<Deadline>) -> Session {
        Session {
            data: self.data.clone(),
            trace: self.trace.clone(),
            deadline: Some(deadline.into()),
            serving: self.serving,
        }
    }

    /// The service serving the call this session came with, in this process.
    pub(crate) fn serving(&self) -> Option<&'static str> {
        self.serving
    }

    /// The same session, served by `service` in this process.
    pub(crate) fn served_by(mut self, service: Option<&'static str>) -> Session {
        self.serving = service;
        self
    }

    pub(crate) fn trace_cx(&self) -> Option<&TraceCx> {
        self.trace.as_ref()
    }

    /// The keep mark of this session's trace, when the sampler skipped it.
    pub(crate) fn keep_mark(&self) -> Option<Arc<Keep>> {
        self.trace.as_ref()?.keep.clone()
    }

    /// The same session inside `span`, recorded by `tracer`'s module.
    pub(crate) fn with_span(&self, span: &EndOnDrop, tracer: ServiceTracer) -> Session {
        self.inside(span, tracer, self.deadline)
    }

    /// [`Session::with_span`] and [`Session::with_deadline`] in one copy.
    pub(crate) fn with_span_until(
        &self,
        span: &EndOnDrop,
        tracer: ServiceTracer,
        deadline: Deadline,
    ) -> Session {
        self.inside(span, tracer, Some(deadline))
    }

    fn inside(
        &self,
        span: &EndOnDrop,
        tracer: ServiceTracer,
        deadline: Option<Deadline>,
    ) -> Session {
        Session {
            data: self.data.clone(),
            trace: Some(TraceCx {
                cx: span.context().cloned(),
                sc: span.span_context(),
                tracer: Some(tracer),
                keep: span.keep().cloned(),
            }),
            deadline,
            serving: self.serving,
        }
    }
}

/// A handle to the current span for adding tags; does nothing when the call is not traced.
pub struct SessionSpan<'a>(Option<SpanRef<'a>>);

impl SessionSpan<'_> {
    /// Adds a tag (mqant's `Span().SetTag`).
    pub fn set_attribute(&self, key: impl Into<Key>, value: impl Into<Value>) {
        if let Some(s) = &self.0 {
            s.set_attribute(KeyValue::new(key, value));
        }
    }

    /// Adds a timestamped event (a Jaeger "log") with attributes.
    pub fn add_event(&self, name: impl Into<String>, attributes: Vec<KeyValue>) {
        if let Some(s) = &self.0 {
            // Stamped by the clock the span's own times come from.
            s.add_event_with_timestamp(name.into(), crate::trace::clock::now(), attributes);
        }
    }

    /// True when tags set now will be recorded.
    pub fn is_recording(&self) -> bool {
        self.0.as_ref().is_some_and(|s| s.is_recording())
    }
}

/// The wire form: the facts of [`SessionData`] side by side with `traceparent`, spelled out
/// (not `#[serde(flatten)]`, which buffers every field on the way in), empty fields omitted.
#[derive(Serialize)]
struct WireOut<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    userid: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    sessionid: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    network: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    ip: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    serverid: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    settings: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    traceparent: Option<&'a str>,
}

#[derive(Deserialize)]
struct WireIn<'a> {
    #[serde(default)]
    userid: String,
    #[serde(default)]
    sessionid: String,
    #[serde(default)]
    network: String,
    #[serde(default)]
    ip: String,
    #[serde(default)]
    serverid: String,
    #[serde(default)]
    settings: BTreeMap<String, String>,
    /// Borrowed from the message when it has no escapes, as a valid one never has.
    #[serde(default, borrow)]
    traceparent: Option<Text<'a>>,
}

/// Text borrowed from the message when it can be (serde borrows a `Cow` only when it is a
/// field's whole type, not inside an `Option`).
#[derive(Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

impl Session {
    /// Serializes with an already formatted `traceparent` (a caller that also puts it in a
    /// message property formats it once).
    pub(crate) fn serialize_with<S: Serializer>(
        &self,
        traceparent: Option<&str>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let d = &*self.data;
        WireOut {
            userid: &d.userid,
            sessionid: &d.sessionid,
            network: &d.network,
            ip: &d.ip,
            serverid: &d.serverid,
            settings: &d.settings,
            traceparent,
        }
        .serialize(s)
    }
}

impl Serialize for Session {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.serialize_with(self.traceparent().as_deref(), s)
    }
}

impl<'de> Deserialize<'de> for Session {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(SessionIn::deserialize(d)?.into_session(None, None))
    }
}

/// A session as it arrives from another process, before its trace context is chosen.
#[derive(Deserialize)]
#[serde(transparent)]
pub(crate) struct SessionIn<'a>(#[serde(borrow)] WireIn<'a>);

impl SessionIn<'_> {
    /// The session, as the child of the remote span given as W3C `traceparent` (and
    /// `tracestate`) text when there is a valid one (e.g. from MQTT user properties), else of
    /// the one its own `traceparent` names. Only the text used is parsed.
    pub(crate) fn into_session(
        self,
        traceparent: Option<&str>,
        tracestate: Option<&str>,
    ) -> Session {
        let w = self.0;
        let from_property = traceparent.and_then(|tp| remote_context(tp, tracestate));
        let trace = from_property
            .or_else(|| w.traceparent.as_ref().and_then(|t| parse_traceparent(&t.0)))
            .map(TraceCx::remote);
        // The deadline travels beside the session, in the call's envelope, as time remaining.
        let mut session = Session::new(SessionData {
            userid: w.userid,
            sessionid: w.sessionid,
            network: w.network,
            ip: w.ip,
            serverid: w.serverid,
            settings: w.settings,
        });
        session.trace = trace;
        session
    }
}

/// The remote span context named by `traceparent` and `tracestate` (a malformed `tracestate`
/// is dropped, as W3C asks); `None` when `traceparent` is not valid.
fn remote_context(
    traceparent: &str,
    tracestate: Option<&str>,
) -> Option<opentelemetry::trace::SpanContext> {
    use opentelemetry::trace::{SpanContext, TraceState};
    let sc = parse_traceparent(traceparent)?;
    let state = tracestate
        .and_then(|t| t.parse::<TraceState>().ok())
        .unwrap_or_default();
    Some(SpanContext::new(
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags(),
        true,
        state,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_is_read_with_or_without_json_escapes() {
        let plain = r#"{"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}"#;
        // The same text with its first character escaped: a JSON encoder may write that.
        let escaped =
            r#"{"traceparent":"\u00300-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}"#;
        assert!(escaped.contains("\\u0030"));
        // Unescaped, the text is read in place.
        let w: WireIn<'_> = serde_json::from_str(plain).expect("wire form");
        assert!(matches!(w.traceparent, Some(Text(Cow::Borrowed(_)))));
        let w: WireIn<'_> = serde_json::from_str(escaped).expect("wire form");
        assert!(matches!(w.traceparent, Some(Text(Cow::Owned(_)))));
        for json in [plain, escaped] {
            let s: Session = serde_json::from_str(json).expect("a session");
            assert_eq!(
                s.trace_id().as_deref(),
                Some("4bf92f3577b34da6a3ce929d0e0e4736"),
                "{json}"
            );
        }
    }

    #[test]
    fn span_values_of_a_huge_user_name_are_cut_and_made_again_after_a_change() {
        let mut s = Session::new(SessionData {
            userid: "u".repeat(100_000),
            ..Default::default()
        });
        let user = s.facts().span_attrs().user.clone().expect("user");
        assert!(user.as_str().len() <= mqrs_base::text::MAX_VALUE_BYTES + 3);
        s.set_userid("ann");
        assert_eq!(s.facts().span_attrs().user, Some(Value::from("ann")));
        assert_eq!(s.facts().span_attrs().session, None);
    }
}
