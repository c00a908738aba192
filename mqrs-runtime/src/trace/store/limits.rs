//! Per-span limits, applied as a span enters the store whatever its source (this process's
//! SDK, the OTLP collector, a data directory read back), as OpenTelemetry's own span limits
//! do: so that one span, however it was made, costs the store and every answer built from it
//! a bounded amount.
//!
//! The counts are OpenTelemetry's defaults (128 attributes, events and links a span), with
//! fewer attributes an event (32: events are the cheap way to multiply attributes). Texts are
//! cut at a character boundary and end with `…`. What a limit drops is counted on the span, as
//! `otel.dropped_attributes_count` and `otel.dropped_events_count`, so a reader sees the span
//! is not whole.

use std::borrow::Cow;
use std::sync::Arc;

use opentelemetry::{Array, Key, Value};

use super::{cut, StoredEvent, StoredSpan, Tag};

/// Most attributes kept on a span.
pub const MAX_ATTRIBUTES: usize = 128;

/// Most events kept on a span.
pub const MAX_EVENTS: usize = 128;

/// Most attributes kept on one event.
pub const MAX_EVENT_ATTRIBUTES: usize = 32;

/// Longest attribute key kept.
pub const MAX_KEY_BYTES: usize = 256;

/// Longest text attribute value (and text in an array value) kept.
pub const MAX_VALUE_BYTES: usize = 1024;

/// Longest span, service or event name kept.
pub const MAX_NAME_BYTES: usize = 256;

/// Longest error (status) description kept.
pub const MAX_ERROR_BYTES: usize = 1024;

/// Most items of an array value kept.
pub const MAX_ARRAY_ITEMS: usize = 128;

/// Most bytes a span's attributes and events may take in the store's compact form; events past
/// it are dropped, last first.
pub const MAX_SPAN_BYTES: usize = 256 << 10;

/// Cuts over-long text values in place (rare: the common case touches nothing).
pub fn cap_values(tags: &mut [Tag]) {
    for kv in tags {
        if kv.key.as_str().len() > MAX_KEY_BYTES {
            kv.key = Key::from(cut(kv.key.as_str(), MAX_KEY_BYTES).into_owned());
        }
        match &kv.value {
            Value::String(v) if v.as_str().len() > MAX_VALUE_BYTES => {
                kv.value = Value::from(cut(v.as_str(), MAX_VALUE_BYTES).into_owned());
            }
            Value::Array(a) if array_over(a) => kv.value = Value::Array(capped_array(a)),
            _ => {}
        }
    }
}

fn array_over(a: &Array) -> bool {
    let n = match a {
        Array::Bool(x) => x.len(),
        Array::I64(x) => x.len(),
        Array::F64(x) => x.len(),
        Array::String(x) => {
            return x.len() > MAX_ARRAY_ITEMS
                || x.iter().any(|s| s.as_str().len() > MAX_VALUE_BYTES)
        }
        _ => 0,
    };
    n > MAX_ARRAY_ITEMS
}

fn capped_array(a: &Array) -> Array {
    fn first<T: Clone>(x: &[T]) -> Vec<T> {
        x[..x.len().min(MAX_ARRAY_ITEMS)].to_vec()
    }
    match a {
        Array::Bool(x) => Array::Bool(first(x)),
        Array::I64(x) => Array::I64(first(x)),
        Array::F64(x) => Array::F64(first(x)),
        Array::String(x) => Array::String(
            x.iter()
                .take(MAX_ARRAY_ITEMS)
                .map(|s| cut(s.as_str(), MAX_VALUE_BYTES).into_owned().into())
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Applies every limit to `span` in place; true when it lost something (a count limit or the
/// byte limit dropped attributes or events; cut texts do not count).
pub(super) fn apply(span: &mut StoredSpan) -> bool {
    if span.name.len() > MAX_NAME_BYTES {
        span.name = Cow::Owned(cut(&span.name, MAX_NAME_BYTES).into_owned());
    }
    if span.service.len() > MAX_NAME_BYTES {
        span.service = Arc::from(cut(&span.service, MAX_NAME_BYTES).as_ref());
    }
    if let Some(e) = &span.error {
        if e.len() > MAX_ERROR_BYTES {
            span.error = Some(Cow::Owned(cut(e, MAX_ERROR_BYTES).into_owned()));
        }
    }
    let mut dropped_attributes = span.tags.len().saturating_sub(MAX_ATTRIBUTES);
    span.tags.truncate(MAX_ATTRIBUTES);
    cap_values(&mut span.tags);
    let mut dropped_events = span.events.len().saturating_sub(MAX_EVENTS);
    span.events.truncate(MAX_EVENTS);
    for e in &mut span.events {
        if e.name.len() > MAX_NAME_BYTES {
            e.name = Cow::Owned(cut(&e.name, MAX_NAME_BYTES).into_owned());
        }
        let over = e.attributes.len().saturating_sub(MAX_EVENT_ATTRIBUTES);
        if over > 0 {
            e.attributes.truncate(MAX_EVENT_ATTRIBUTES);
            e.dropped_attributes_count = e.dropped_attributes_count.saturating_add(over as u32);
            dropped_attributes += over;
        }
        cap_values(&mut e.attributes);
    }
    // The byte budget: attributes in order while they fit, then events.
    let mut used = 0usize;
    if let Some(keep) = span.tags.iter().position(|t| {
        used += tag_len(t);
        used > MAX_SPAN_BYTES
    }) {
        dropped_attributes += span.tags.len() - keep;
        span.tags.truncate(keep);
        used = MAX_SPAN_BYTES;
    }
    if let Some(keep) = span.events.iter().position(|e| {
        used += event_len(e);
        used > MAX_SPAN_BYTES
    }) {
        dropped_events += span.events.len() - keep;
        span.events.truncate(keep);
    }
    let lost = dropped_attributes > 0 || dropped_events > 0;
    for (key, n) in [
        ("otel.dropped_attributes_count", dropped_attributes),
        ("otel.dropped_events_count", dropped_events),
    ] {
        if n > 0 {
            span.tags.push(Tag::new(key, n as i64));
        }
    }
    lost
}

/// Bytes a tag takes in the compact form (see `codec`).
fn tag_len(kv: &Tag) -> usize {
    4 + kv.key.as_str().len() + value_len(&kv.value)
}

fn value_len(v: &Value) -> usize {
    match v {
        Value::Bool(_) => 2,
        Value::I64(_) | Value::F64(_) => 9,
        Value::String(s) => 5 + s.as_str().len(),
        Value::Array(Array::Bool(a)) => 5 + a.len(),
        Value::Array(Array::I64(a)) => 5 + 8 * a.len(),
        Value::Array(Array::F64(a)) => 5 + 8 * a.len(),
        Value::Array(Array::String(a)) => 5 + a.iter().map(|s| 4 + s.as_str().len()).sum::<usize>(),
        other => 5 + other.to_string().len(),
    }
}

/// Bytes an event takes in the compact form.
fn event_len(e: &StoredEvent) -> usize {
    4 + e.name.len() + 8 + 4 + 4 + e.attributes.iter().map(tag_len).sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn span() -> StoredSpan {
        StoredSpan {
            trace_id: 1,
            span_id: 2,
            parent_span_id: None,
            name: "op".into(),
            service: Arc::from("svc"),
            kind: "server",
            start_us: 1,
            duration_us: 1,
            tags: vec![],
            events: vec![],
            error: None,
        }
    }

    #[test]
    fn counts_keys_and_texts_are_bounded_and_the_loss_is_counted() {
        let mut s = span();
        s.tags = (0..200_000)
            .map(|i| Tag::new(format!("k{i}"), ""))
            .collect();
        s.tags[0] = Tag::new("k".repeat(10_000), "v".repeat(10_000));
        s.events = (0..1000)
            .map(|i| {
                StoredEvent::new(
                    "e".repeat(1000),
                    UNIX_EPOCH,
                    (0..100)
                        .map(|j| Tag::new(format!("a{i}-{j}"), "x"))
                        .collect(),
                    0,
                )
            })
            .collect();
        s.error = Some("m".repeat(100_000).into());
        assert!(apply(&mut s));
        assert_eq!(s.tags.len(), MAX_ATTRIBUTES + 2);
        assert!(s.tags[0].key.as_str().len() <= MAX_KEY_BYTES + 3);
        assert!(s.tags[0].value.as_str().len() <= MAX_VALUE_BYTES + 3);
        assert_eq!(s.events.len(), MAX_EVENTS);
        assert!(s.events.iter().all(|e| e.name.len() <= MAX_NAME_BYTES + 3
            && e.attributes.len() == MAX_EVENT_ATTRIBUTES
            && e.dropped_attributes_count == 68));
        assert!(s
            .error
            .as_ref()
            .is_some_and(|e| e.len() <= MAX_ERROR_BYTES + 3));
        let dropped = |k: &str| s.tag(k).cloned();
        assert_eq!(
            dropped("otel.dropped_attributes_count"),
            Some(Value::I64((200_000 - 128) + 128 * 68))
        );
        assert_eq!(
            dropped("otel.dropped_events_count"),
            Some(Value::I64(1000 - 128))
        );
        let mut encoded = Vec::new();
        super::super::codec::encode(&s, &mut encoded);
        assert!(encoded.len() < MAX_SPAN_BYTES + 4096, "{}", encoded.len());
    }

    #[test]
    fn events_past_the_byte_budget_are_dropped_last_first() {
        let mut s = span();
        s.events = (0..MAX_EVENTS)
            .map(|_| {
                StoredEvent::new(
                    "big",
                    UNIX_EPOCH,
                    (0..MAX_EVENT_ATTRIBUTES)
                        .map(|j| Tag::new(format!("a{j}"), "v".repeat(MAX_VALUE_BYTES)))
                        .collect(),
                    0,
                )
            })
            .collect();
        assert!(apply(&mut s));
        assert!(s.events.len() < MAX_EVENTS && !s.events.is_empty());
        let mut encoded = Vec::new();
        super::super::codec::encode(&s, &mut encoded);
        assert!(encoded.len() <= MAX_SPAN_BYTES + 1024, "{}", encoded.len());
    }

    #[test]
    fn attributes_past_the_byte_budget_are_dropped() {
        let mut s = span();
        let long: Vec<opentelemetry::StringValue> =
            (0..1000).map(|_| "v".repeat(5000).into()).collect();
        s.tags = (0..MAX_ATTRIBUTES)
            .map(|i| Tag::new(format!("a{i}"), Value::Array(Array::String(long.clone()))))
            .collect();
        assert!(apply(&mut s));
        let mut encoded = Vec::new();
        super::super::codec::encode(&s, &mut encoded);
        assert!(encoded.len() <= MAX_SPAN_BYTES + 1024, "{}", encoded.len());
        assert!(s.tag("otel.dropped_attributes_count").is_some());
    }

    #[test]
    fn a_span_within_every_limit_is_untouched() {
        let mut s = span();
        s.tags = vec![Tag::new("a", 1), Tag::new("b", "x")];
        let before = s.clone();
        assert!(!apply(&mut s));
        assert_eq!(s, before);
    }
}
