//! What decoding an OTLP body would cost in memory, found by a walk over its bytes that
//! allocates nothing, before it is decoded.
//!
//! Both encodings let a tiny element become a large struct: an empty span is 2 bytes of
//! protobuf (`{}` and a comma in JSON) and about 260 bytes decoded, so a 4 MiB body of them
//! would take over half a GiB. The walk adds up the decoded size of every message the body
//! holds (protobuf: by OTLP's schema; JSON: every object at a span's size) and stops as soon
//! as the sum passes the budget.

use std::mem::size_of;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1 as metrics;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};

/// Most bytes one request may take decoded: 16 times the body limit, and at least 64 MiB.
pub(super) fn decode_budget(max_body: usize) -> usize {
    max_body.saturating_mul(16).max(64 << 20)
}

/// The messages of `ExportTraceServiceRequest` the walk goes into.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Msg {
    Request,
    ResourceSpans,
    Resource,
    ScopeSpans,
    Scope,
    Span,
    Event,
    Link,
    Status,
    KeyValue,
    AnyValue,
    ArrayValue,
    KvList,
    // `ExportMetricsServiceRequest`.
    MetricsRequest,
    ResourceMetrics,
    ScopeMetrics,
    Metric,
    /// Gauge and Sum, Histogram, ExponentialHistogram, Summary: each a list of its points.
    NumberPoints,
    HistogramPoints,
    ExpHistogramPoints,
    SummaryPoints,
    NumberPoint,
    HistogramPoint,
    ExpHistogramPoint,
    ExpBuckets,
    SummaryPoint,
    Quantile,
    Exemplar,
    /// Packed varints: one byte each in the body, eight decoded.
    PackedVarints,
}

impl Msg {
    /// Bytes the message takes decoded, beside its texts and bytes (those take no more than
    /// they do in the body).
    fn weight(self) -> usize {
        match self {
            Msg::Request | Msg::Resource | Msg::Scope | Msg::ArrayValue | Msg::KvList => 48,
            Msg::ResourceSpans => size_of::<ResourceSpans>(),
            Msg::ScopeSpans => size_of::<ScopeSpans>(),
            Msg::Span => size_of::<Span>(),
            Msg::Event => size_of::<span::Event>(),
            Msg::Link => size_of::<span::Link>(),
            Msg::Status => size_of::<Status>(),
            Msg::KeyValue => size_of::<KeyValue>(),
            Msg::AnyValue => size_of::<AnyValue>(),
            Msg::MetricsRequest
            | Msg::NumberPoints
            | Msg::HistogramPoints
            | Msg::ExpHistogramPoints
            | Msg::SummaryPoints
            | Msg::ExpBuckets
            | Msg::Quantile => 48,
            Msg::ResourceMetrics => size_of::<metrics::ResourceMetrics>(),
            Msg::ScopeMetrics => size_of::<metrics::ScopeMetrics>(),
            Msg::Metric => size_of::<metrics::Metric>(),
            Msg::NumberPoint => size_of::<metrics::NumberDataPoint>(),
            Msg::HistogramPoint => size_of::<metrics::HistogramDataPoint>(),
            Msg::ExpHistogramPoint => size_of::<metrics::ExponentialHistogramDataPoint>(),
            Msg::SummaryPoint => size_of::<metrics::SummaryDataPoint>(),
            Msg::Exemplar => size_of::<metrics::Exemplar>(),
            Msg::PackedVarints => 0,
        }
    }

    /// The message a length-delimited field of this one holds, if any.
    fn child(self, field: u64) -> Option<Msg> {
        Some(match (self, field) {
            (Msg::Request, 1) => Msg::ResourceSpans,
            (Msg::ResourceSpans, 1) => Msg::Resource,
            (Msg::ResourceSpans, 2) => Msg::ScopeSpans,
            (Msg::Resource, 1) => Msg::KeyValue,
            (Msg::ScopeSpans, 1) => Msg::Scope,
            (Msg::ScopeSpans, 2) => Msg::Span,
            (Msg::Scope, 3) => Msg::KeyValue,
            (Msg::Span, 9) => Msg::KeyValue,
            (Msg::Span, 11) => Msg::Event,
            (Msg::Span, 13) => Msg::Link,
            (Msg::Span, 15) => Msg::Status,
            (Msg::Event, 3) => Msg::KeyValue,
            (Msg::Link, 4) => Msg::KeyValue,
            (Msg::KeyValue, 2) => Msg::AnyValue,
            (Msg::AnyValue, 5) => Msg::ArrayValue,
            (Msg::AnyValue, 6) => Msg::KvList,
            (Msg::ArrayValue, 1) => Msg::AnyValue,
            (Msg::KvList, 1) => Msg::KeyValue,
            (Msg::MetricsRequest, 1) => Msg::ResourceMetrics,
            (Msg::ResourceMetrics, 1) => Msg::Resource,
            (Msg::ResourceMetrics, 2) => Msg::ScopeMetrics,
            (Msg::ScopeMetrics, 1) => Msg::Scope,
            (Msg::ScopeMetrics, 2) => Msg::Metric,
            (Msg::Metric, 5 | 7) => Msg::NumberPoints,
            (Msg::Metric, 9) => Msg::HistogramPoints,
            (Msg::Metric, 10) => Msg::ExpHistogramPoints,
            (Msg::Metric, 11) => Msg::SummaryPoints,
            (Msg::Metric, 12) => Msg::KeyValue,
            (Msg::NumberPoints, 1) => Msg::NumberPoint,
            (Msg::HistogramPoints, 1) => Msg::HistogramPoint,
            (Msg::ExpHistogramPoints, 1) => Msg::ExpHistogramPoint,
            (Msg::SummaryPoints, 1) => Msg::SummaryPoint,
            (Msg::NumberPoint, 7) => Msg::KeyValue,
            (Msg::NumberPoint, 5) => Msg::Exemplar,
            (Msg::HistogramPoint, 9) => Msg::KeyValue,
            (Msg::HistogramPoint, 8) => Msg::Exemplar,
            (Msg::ExpHistogramPoint, 1) => Msg::KeyValue,
            (Msg::ExpHistogramPoint, 8 | 9) => Msg::ExpBuckets,
            (Msg::ExpHistogramPoint, 11) => Msg::Exemplar,
            (Msg::ExpBuckets, 2) => Msg::PackedVarints,
            (Msg::SummaryPoint, 7) => Msg::KeyValue,
            (Msg::SummaryPoint, 6) => Msg::Quantile,
            (Msg::Exemplar, 7) => Msg::KeyValue,
            _ => return None,
        })
    }
}

/// Deepest nesting walked (prost's own recursion limit); deeper is left to prost to refuse.
const MAX_DEPTH: u32 = 100;

/// True when decoding the protobuf `body` would take more than `budget` bytes. A body that is
/// not valid protobuf is counted up to where it breaks (prost then says what is wrong).
pub(super) fn protobuf_over(body: &[u8], budget: usize) -> bool {
    let mut cost = body.len();
    walk(body, Msg::Request, 0, &mut cost, budget).is_err() && cost > budget
}

/// [`protobuf_over`] for an `ExportMetricsServiceRequest`.
pub(super) fn metrics_protobuf_over(body: &[u8], budget: usize) -> bool {
    let mut cost = body.len();
    walk(body, Msg::MetricsRequest, 0, &mut cost, budget).is_err() && cost > budget
}

/// Adds `msg` and what it holds to `cost`; `Err` once past `budget` or where the bytes break.
fn walk(mut buf: &[u8], msg: Msg, depth: u32, cost: &mut usize, budget: usize) -> Result<(), ()> {
    *cost = cost.saturating_add(msg.weight());
    if *cost > budget || depth > MAX_DEPTH {
        return Err(());
    }
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                varint(&mut buf)?;
            }
            1 => buf = buf.get(8..).ok_or(())?,
            5 => buf = buf.get(4..).ok_or(())?,
            2 => {
                let len = usize::try_from(varint(&mut buf)?).map_err(|_| ())?;
                let inner = buf.get(..len).ok_or(())?;
                buf = &buf[len..];
                match msg.child(field) {
                    Some(Msg::PackedVarints) => {
                        *cost = cost.saturating_add(inner.len().saturating_mul(8));
                        if *cost > budget {
                            return Err(());
                        }
                    }
                    Some(child) => walk(inner, child, depth + 1, cost, budget)?,
                    None => {}
                }
            }
            _ => return Err(()),
        }
    }
    Ok(())
}

/// Reads a base-128 varint.
fn varint(buf: &mut &[u8]) -> Result<u64, ()> {
    let mut v = 0u64;
    for i in 0..10 {
        let (&b, rest) = buf.split_first().ok_or(())?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err(())
}

/// True when decoding the JSON `body` would take more than `budget` bytes, counting each
/// object and array outside strings at a span's decoded size (an upper bound for every OTLP
/// object).
pub(super) fn json_over(body: &[u8], budget: usize) -> bool {
    let per = size_of::<Span>();
    let mut cost = body.len();
    let (mut in_string, mut escaped) = (false, false);
    for &b in body {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                cost = cost.saturating_add(per);
                if cost > budget {
                    return true;
                }
            }
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value;
    use prost::Message;

    fn request(spans: usize, attributes: usize) -> ExportTraceServiceRequest {
        let span = Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            name: "op".into(),
            attributes: (0..attributes)
                .map(|i| KeyValue {
                    key: format!("k{i}"),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("v".into())),
                    }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![span; spans],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn an_ordinary_batch_is_within_the_budget() {
        // An SDK's default batch: 512 spans of 20 attributes each.
        let body = request(512, 20).encode_to_vec();
        assert!(!protobuf_over(&body, decode_budget(4 << 20)));
        let json = serde_json::to_vec(&request(512, 20)).expect("json");
        assert!(!json_over(&json, decode_budget(4 << 20)));
    }

    #[test]
    fn empty_spans_that_would_decode_to_far_more_than_the_body_are_over() {
        // 2 bytes a span on the wire: 2M of them in 4 MiB.
        let mut body = Vec::new();
        let mut spans = Vec::new();
        for _ in 0..2_000_000 {
            spans.extend_from_slice(&[0x12, 0x00]); // ScopeSpans.spans: an empty Span
        }
        let mut scope = Vec::new();
        scope.push(0x12); // ResourceSpans.scope_spans
        put_len(&mut scope, spans.len());
        scope.extend_from_slice(&spans);
        body.push(0x0a); // Request.resource_spans
        put_len(&mut body, scope.len());
        body.extend_from_slice(&scope);
        assert!(protobuf_over(&body, decode_budget(4 << 20)));
        // The same count of empty objects in JSON.
        let json = format!(
            "{{\"resourceSpans\":[{{\"scopeSpans\":[{{\"spans\":[{}{{}}]}}]}}]}}",
            "{},".repeat(1_400_000)
        );
        assert!(json_over(json.as_bytes(), decode_budget(4 << 20)));
    }

    #[test]
    fn braces_inside_strings_are_not_objects() {
        let json = format!(
            "{{\"k\":\"{}\\\"{}\"}}",
            "{".repeat(500_000),
            "[".repeat(500_000)
        );
        assert!(!json_over(json.as_bytes(), decode_budget(4 << 20)));
    }

    #[test]
    fn broken_protobuf_is_left_to_the_decoder() {
        assert!(!protobuf_over(&[0x0a, 0xff], decode_budget(4 << 20)));
        assert!(!protobuf_over(&[0x0b], decode_budget(4 << 20)));
    }

    fn put_len(out: &mut Vec<u8>, mut n: usize) {
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }
}
