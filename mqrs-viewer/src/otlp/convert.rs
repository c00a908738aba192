//! OTLP's types into the store's, keeping what the sender meant: the resource's attributes
//! (beside `service.name`), the instrumentation scope, links, an OK status, an unspecified kind,
//! and attribute values of every OTLP type (homogeneous arrays as arrays; nested arrays and
//! key-value lists as JSON text; bytes as base64), within the store's per-span limits.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use opentelemetry::{Array, StringValue, Value};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::Link;

use crate::store::{shared_tags, StoredEvent, StoredLink, StoredSpan, Tag, MAX_NAME_BYTES};

/// Most spans taken from one request (32 times an SDK's default batch of 512); the rest are
/// refused in its partial success.
pub const MAX_SPANS_PER_REQUEST: usize = 16_384;

/// Most traces one request may bring spans of, for a store of `max_traces`: an eighth of it,
/// and at least an SDK's default batch (512), so one request cannot replace the whole store.
pub(super) fn traces_per_request(max_traces: usize) -> usize {
    (max_traces / 8).max(512)
}

/// Spans of one request refused, by reason.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Rejected {
    /// A trace id not of 16 bytes or all zero, or a span id not of 8 bytes or all zero.
    pub(super) bad_ids: usize,
    /// Starting or ending past the allowed clock skew.
    pub(super) future: usize,
    /// Past [`MAX_SPANS_PER_REQUEST`].
    pub(super) over_cap: usize,
    /// Of traces past the most one request may bring.
    pub(super) over_traces: usize,
}

impl Rejected {
    pub(super) fn total(&self) -> usize {
        self.bad_ids + self.future + self.over_cap + self.over_traces
    }

    /// The partial success's message: each reason that refused spans.
    pub(super) fn describe(&self, max_skew_us: u64, max_traces: usize) -> String {
        let mut parts = Vec::new();
        if self.bad_ids > 0 {
            parts.push(format!(
                "{} spans had an invalid trace id (16 bytes, not all zero) or span id (8 bytes, not all zero)",
                self.bad_ids
            ));
        }
        if self.future > 0 {
            parts.push(format!(
                "{} spans started or ended more than {} s in the future ([trace] collector_max_skew_s)",
                self.future,
                max_skew_us / 1_000_000
            ));
        }
        if self.over_cap > 0 {
            parts.push(format!(
                "{} spans were past the {MAX_SPANS_PER_REQUEST} taken from one request",
                self.over_cap
            ));
        }
        if self.over_traces > 0 {
            parts.push(format!(
                "{} spans were of traces past the {max_traces} taken from one request",
                self.over_traces
            ));
        }
        parts.join("; ")
    }
}

/// Converts a request into stored spans; returns them and what was refused. A span starting
/// or ending after `latest_us` is refused, and so is one of a trace past the first
/// `max_traces` of the request.
pub(super) fn to_stored(
    req: ExportTraceServiceRequest,
    latest_us: u64,
    max_traces: usize,
) -> (Vec<StoredSpan>, Rejected) {
    let mut out = Vec::new();
    let mut traces = std::collections::HashSet::new();
    let mut rejected = Rejected::default();
    for rs in req.resource_spans {
        let mut service: Option<Arc<str>> = None;
        let mut resource = Vec::new();
        for kv in rs.resource.map(|r| r.attributes).unwrap_or_default() {
            match (&*kv.key, &kv.value) {
                (
                    "service.name",
                    Some(AnyValue {
                        value: Some(any_value::Value::StringValue(s)),
                    }),
                ) if service.is_none() => {
                    service = Some(Arc::from(s.as_str()));
                }
                _ => resource.push(tag(kv)),
            }
        }
        let service = service.unwrap_or_else(|| Arc::from("unknown_service"));
        // Cut once here and shared by the resource's spans, not copied into each of them.
        let (resource, resource_dropped) = shared_tags(resource);
        for ss in rs.scope_spans {
            let scope = scope_of(ss.scope);
            for span in ss.spans {
                let ids = (
                    <[u8; 16]>::try_from(span.trace_id.as_slice()).map(u128::from_be_bytes),
                    <[u8; 8]>::try_from(span.span_id.as_slice()).map(u64::from_be_bytes),
                );
                let (Ok(trace_id), Ok(span_id)) = ids else {
                    rejected.bad_ids += 1;
                    continue;
                };
                if trace_id == 0 || span_id == 0 {
                    rejected.bad_ids += 1;
                    continue;
                }
                let start_us = span.start_time_unix_nano / 1000;
                let end_us = (span.end_time_unix_nano / 1000).max(start_us);
                if end_us > latest_us {
                    rejected.future += 1;
                    continue;
                }
                if out.len() >= MAX_SPANS_PER_REQUEST {
                    rejected.over_cap += 1;
                    continue;
                }
                if !traces.contains(&trace_id) {
                    if traces.len() >= max_traces {
                        rejected.over_traces += 1;
                        continue;
                    }
                    traces.insert(trace_id);
                }
                let parent = <[u8; 8]>::try_from(span.parent_span_id.as_slice())
                    .map(u64::from_be_bytes)
                    .ok()
                    .filter(|p| *p != 0);
                let (error, status_ok) = match &span.status {
                    Some(s) if s.code == 2 => (Some(Cow::Owned(s.message.clone())), false),
                    Some(s) if s.code == 1 => (None, true),
                    _ => (None, false),
                };
                let mut attributes = tags(span.attributes);
                if resource_dropped > 0 {
                    attributes.push(Tag::new(
                        "otel.dropped_attributes_count",
                        resource_dropped as i64,
                    ));
                }
                out.push(StoredSpan {
                    trace_id,
                    span_id,
                    parent_span_id: parent,
                    name: Cow::Owned(span.name),
                    service: service.clone(),
                    kind: match span.kind {
                        1 => "internal",
                        2 => "server",
                        3 => "client",
                        4 => "producer",
                        5 => "consumer",
                        _ => "unspecified",
                    },
                    start_us,
                    duration_us: end_us - start_us,
                    tags: attributes,
                    events: span
                        .events
                        .into_iter()
                        .map(|e| {
                            StoredEvent::new(
                                e.name,
                                UNIX_EPOCH + Duration::from_nanos(e.time_unix_nano),
                                tags(e.attributes),
                                e.dropped_attributes_count,
                            )
                        })
                        .collect(),
                    error,
                    status_ok,
                    resource: resource.clone(),
                    scope: scope.clone(),
                    links: span.links.into_iter().filter_map(link).collect(),
                });
            }
        }
    }
    (out, rejected)
}

/// The scope's name and version, empty when not given; cut here, as every span of the scope
/// gets a copy.
fn scope_of(scope: Option<InstrumentationScope>) -> (Cow<'static, str>, Cow<'static, str>) {
    let cut = |s: String| match crate::store::cut(&s, MAX_NAME_BYTES) {
        Cow::Borrowed(_) => Cow::Owned(s),
        Cow::Owned(c) => Cow::Owned(c),
    };
    scope.map_or_else(Default::default, |s| (cut(s.name), cut(s.version)))
}

/// A link with valid ids (a link with another is dropped: it points nowhere).
fn link(l: Link) -> Option<StoredLink> {
    let trace_id = u128::from_be_bytes(l.trace_id.as_slice().try_into().ok()?);
    let span_id = u64::from_be_bytes(l.span_id.as_slice().try_into().ok()?);
    (trace_id != 0 && span_id != 0).then(|| StoredLink {
        trace_id,
        span_id,
        attributes: tags(l.attributes),
    })
}

fn tags(kvs: Vec<KeyValue>) -> Vec<Tag> {
    kvs.into_iter().map(tag).collect()
}

fn tag(kv: KeyValue) -> Tag {
    Tag::new(kv.key, kv.value.map_or(Value::from(""), tag_value))
}

/// An OTLP value as the store keeps it: scalars as they are, an array of one scalar type as
/// an array, anything nested (a key-value list, an array of mixed or nested values) as JSON
/// text, bytes as base64.
fn tag_value(v: AnyValue) -> Value {
    use any_value::Value as A;
    match v.value {
        Some(A::StringValue(s)) => Value::from(s),
        Some(A::BoolValue(b)) => Value::Bool(b),
        Some(A::IntValue(i)) => Value::I64(i),
        Some(A::DoubleValue(f)) => Value::F64(f),
        Some(A::BytesValue(b)) => Value::from(base64(&b)),
        Some(A::ArrayValue(a)) => homogeneous(&a.values).unwrap_or_else(|| {
            let json = serde_json::Value::Array(a.values.iter().map(to_json).collect());
            Value::from(json.to_string())
        }),
        Some(A::KvlistValue(l)) => Value::from(kvlist_json(&l.values).to_string()),
        // An index into a string table, which only the profiles signal has: its number.
        Some(A::StringValueStrindex(i)) => Value::I64(i64::from(i)),
        None => Value::from(""),
    }
}

/// An array whose items are all strings, all booleans, all integers or all doubles.
fn homogeneous(items: &[AnyValue]) -> Option<Value> {
    use any_value::Value as A;
    let all = |f: fn(&A) -> bool| items.iter().all(|v| v.value.as_ref().is_some_and(f));
    let array = match items.first().and_then(|v| v.value.as_ref()) {
        None => Array::String(Vec::new()),
        Some(A::StringValue(_)) if all(|v| matches!(v, A::StringValue(_))) => Array::String(
            items
                .iter()
                .filter_map(|v| match &v.value {
                    Some(A::StringValue(s)) => Some(StringValue::from(s.clone())),
                    _ => None,
                })
                .collect(),
        ),
        Some(A::BoolValue(_)) if all(|v| matches!(v, A::BoolValue(_))) => Array::Bool(
            items
                .iter()
                .filter_map(|v| match v.value {
                    Some(A::BoolValue(b)) => Some(b),
                    _ => None,
                })
                .collect(),
        ),
        Some(A::IntValue(_)) if all(|v| matches!(v, A::IntValue(_))) => Array::I64(
            items
                .iter()
                .filter_map(|v| match v.value {
                    Some(A::IntValue(i)) => Some(i),
                    _ => None,
                })
                .collect(),
        ),
        Some(A::DoubleValue(_)) if all(|v| matches!(v, A::DoubleValue(_))) => Array::F64(
            items
                .iter()
                .filter_map(|v| match v.value {
                    Some(A::DoubleValue(f)) => Some(f),
                    _ => None,
                })
                .collect(),
        ),
        _ => return None,
    };
    Some(Value::Array(array))
}

/// An OTLP value as JSON, for nested values.
fn to_json(v: &AnyValue) -> serde_json::Value {
    use any_value::Value as A;
    use serde_json::Value as J;
    match &v.value {
        Some(A::StringValue(s)) => J::from(s.as_str()),
        Some(A::BoolValue(b)) => J::from(*b),
        Some(A::IntValue(i)) => J::from(*i),
        Some(A::DoubleValue(f)) => {
            serde_json::Number::from_f64(*f).map_or_else(|| J::from(f.to_string()), J::Number)
        }
        Some(A::BytesValue(b)) => J::from(base64(b)),
        Some(A::ArrayValue(a)) => J::Array(a.values.iter().map(to_json).collect()),
        Some(A::KvlistValue(l)) => kvlist_json(&l.values),
        Some(A::StringValueStrindex(i)) => J::from(*i),
        None => J::Null,
    }
}

fn kvlist_json(kvs: &[KeyValue]) -> serde_json::Value {
    serde_json::Value::Object(
        kvs.iter()
            .map(|kv| {
                (
                    kv.key.clone(),
                    kv.value.as_ref().map_or(serde_json::Value::Null, to_json),
                )
            })
            .collect(),
    )
}

/// Standard base64 with padding, as OTLP/JSON writes bytes.
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};

    fn any(v: any_value::Value) -> AnyValue {
        AnyValue { value: Some(v) }
    }

    #[test]
    fn values_keep_their_otlp_meaning() {
        use any_value::Value as A;
        let ints = any(A::ArrayValue(ArrayValue {
            values: vec![any(A::IntValue(1)), any(A::IntValue(2))],
        }));
        assert_eq!(tag_value(ints), Value::Array(Array::I64(vec![1, 2])));
        let mixed = any(A::ArrayValue(ArrayValue {
            values: vec![any(A::StringValue("x".into())), any(A::IntValue(1))],
        }));
        assert_eq!(tag_value(mixed), Value::from(r#"["x",1]"#));
        let kv = any(A::KvlistValue(KeyValueList {
            values: vec![KeyValue {
                key: "a".into(),
                value: Some(any(A::BoolValue(true))),
                ..Default::default()
            }],
        }));
        assert_eq!(tag_value(kv), Value::from(r#"{"a":true}"#));
        assert_eq!(
            tag_value(any(A::BytesValue(b"hi!?".to_vec()))),
            Value::from("aGkhPw==")
        );
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
    }

    #[test]
    fn the_spans_of_one_resource_share_one_copy_of_it_cut_once() {
        use opentelemetry_proto::tonic::resource::v1::Resource;
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
        let attributes = (0..200)
            .map(|i| KeyValue {
                key: format!("r{i}"),
                value: Some(any(any_value::Value::StringValue("v".repeat(2000)))),
                ..Default::default()
            })
            .collect();
        let spans = (1..=1000u64)
            .map(|i| Span {
                trace_id: vec![1; 16],
                span_id: i.to_be_bytes().to_vec(),
                ..Default::default()
            })
            .collect();
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes,
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "s".repeat(100_000),
                        ..Default::default()
                    }),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let (out, rejected) = to_stored(req, u64::MAX, 512);
        assert_eq!((out.len(), rejected.total()), (1000, 0));
        let first = &out[0].resource;
        assert_eq!(first.len(), 128);
        assert!(first
            .iter()
            .all(|t| t.value.as_str().len() <= crate::store::MAX_VALUE_BYTES + 3));
        assert!(out.iter().all(|s| Arc::ptr_eq(&s.resource, first)));
        assert!(out.iter().all(|s| s.scope.0.len() <= MAX_NAME_BYTES + 3));
        assert_eq!(
            out[0].tag("otel.dropped_attributes_count").cloned(),
            Some(Value::I64(72))
        );
    }
}
