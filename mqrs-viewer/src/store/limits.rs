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

use mqrs_base::text::cut;

use super::{StoredEvent, StoredSpan, Tag};

/// Most attributes kept on a span.
pub const MAX_ATTRIBUTES: usize = 128;

/// Most events kept on a span.
pub const MAX_EVENTS: usize = 128;

/// Most attributes kept on one event, and on one link.
pub const MAX_EVENT_ATTRIBUTES: usize = 32;

/// Most links kept on a span.
pub const MAX_LINKS: usize = 128;

/// Longest attribute key kept.
pub const MAX_KEY_BYTES: usize = 256;

pub use mqrs_base::text::MAX_VALUE_BYTES;

/// Longest span, service or event name kept.
pub const MAX_NAME_BYTES: usize = 256;

/// Longest error (status) description kept.
pub const MAX_ERROR_BYTES: usize = 1024;

/// Most items of an array value kept.
pub const MAX_ARRAY_ITEMS: usize = 128;

/// Most bytes a span's attributes, resource attributes, links and events may take in the
/// store's compact form, in that order: what comes past it is dropped.
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

/// True when some key or value of `tags` is past its length limit.
fn values_over(tags: &[Tag]) -> bool {
    tags.iter().any(|kv| {
        kv.key.as_str().len() > MAX_KEY_BYTES
            || match &kv.value {
                Value::String(v) => v.as_str().len() > MAX_VALUE_BYTES,
                Value::Array(a) => array_over(a),
                _ => false,
            }
    })
}

/// A resource's attributes within the count and length limits, once for all the spans that
/// share them (the collector's spans of one resource share one copy); how many were dropped.
pub(crate) fn shared_tags(mut tags: Vec<Tag>) -> (Arc<[Tag]>, usize) {
    let dropped = tags.len().saturating_sub(MAX_ATTRIBUTES);
    tags.truncate(MAX_ATTRIBUTES);
    cap_values(&mut tags);
    (tags.into(), dropped)
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

/// What limits dropped from one span.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Dropped {
    attributes: usize,
    events: usize,
    links: usize,
}

impl std::ops::AddAssign for Dropped {
    fn add_assign(&mut self, o: Dropped) {
        self.attributes += o.attributes;
        self.events += o.events;
        self.links += o.links;
    }
}

impl Dropped {
    /// True when anything was dropped.
    pub(super) fn any(&self) -> bool {
        *self != Dropped::default()
    }

    /// Counts the loss on the span, as `otel.dropped_*_count` attributes (added to the ones it
    /// already has).
    pub(super) fn mark(self, span: &mut StoredSpan) {
        for (key, n) in [
            (DROPPED_KEYS[0], self.attributes),
            (DROPPED_KEYS[1], self.events),
            (DROPPED_KEYS[2], self.links),
        ] {
            if n == 0 {
                continue;
            }
            match span.tags.iter_mut().find(|t| t.key.as_str() == key) {
                Some(t) => {
                    let had = match t.value {
                        Value::I64(had) => had,
                        _ => 0,
                    };
                    t.value = Value::I64(had.saturating_add(n as i64));
                }
                None => span.tags.push(Tag::new(key, n as i64)),
            }
        }
    }

    /// Takes the `otel.dropped_*_count` attributes out of `tags` into a count, so that a span
    /// limited once (read back from a data directory, say) is not limited again by its own
    /// marks, and its marks are not lost to the attribute limit.
    fn take_marks(tags: &mut Vec<Tag>) -> Dropped {
        let mut d = Dropped::default();
        tags.retain(|t| {
            let slot = match t.key.as_str() {
                k if k == DROPPED_KEYS[0] => &mut d.attributes,
                k if k == DROPPED_KEYS[1] => &mut d.events,
                k if k == DROPPED_KEYS[2] => &mut d.links,
                _ => return true,
            };
            match t.value {
                Value::I64(n) => *slot = slot.saturating_add(usize::try_from(n).unwrap_or(0)),
                _ => return true,
            }
            false
        });
        d
    }
}

/// The attributes that count what limits dropped.
const DROPPED_KEYS: [&str; 3] = [
    "otel.dropped_attributes_count",
    "otel.dropped_events_count",
    "otel.dropped_links_count",
];

/// Applies every limit to `span` and marks the loss on it; true when it lost something (cut
/// texts do not count).
#[cfg(test)]
pub(super) fn apply(span: &mut StoredSpan) -> bool {
    let mut dropped = counts(span);
    dropped += budget(span);
    dropped.mark(span);
    dropped.any()
}

/// The count and length limits (cheap: mostly a length checked per item).
pub(super) fn counts(span: &mut StoredSpan) -> Dropped {
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
    let marked = if span.tags.len() > MAX_ATTRIBUTES {
        Dropped::take_marks(&mut span.tags)
    } else {
        Dropped::default()
    };
    let mut dropped_attributes = span.tags.len().saturating_sub(MAX_ATTRIBUTES);
    span.tags.truncate(MAX_ATTRIBUTES);
    cap_values(&mut span.tags);
    let dropped_events = span.events.len().saturating_sub(MAX_EVENTS);
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
    let (scope, version) = &mut span.scope;
    for text in [scope, version] {
        if text.len() > MAX_NAME_BYTES {
            *text = Cow::Owned(cut(text, MAX_NAME_BYTES).into_owned());
        }
    }
    if span.resource.len() > MAX_ATTRIBUTES || values_over(&span.resource) {
        // Shared with other spans (see `shared_tags`): replaced, not changed in place.
        let (resource, over) = shared_tags(span.resource.to_vec());
        span.resource = resource;
        dropped_attributes += over;
    }
    let dropped_links = span.links.len().saturating_sub(MAX_LINKS);
    span.links.truncate(MAX_LINKS);
    for l in &mut span.links {
        let over = l.attributes.len().saturating_sub(MAX_EVENT_ATTRIBUTES);
        l.attributes.truncate(MAX_EVENT_ATTRIBUTES);
        dropped_attributes += over;
        cap_values(&mut l.attributes);
    }
    let mut dropped = Dropped {
        attributes: dropped_attributes,
        events: dropped_events,
        links: dropped_links,
    };
    dropped += marked;
    dropped
}

/// The byte budget, in order: attributes, resource attributes, links, events. Only needed
/// when the span's compact form is over [`MAX_SPAN_BYTES`].
pub(super) fn budget(span: &mut StoredSpan) -> Dropped {
    let mut used = 0usize;
    let mut attributes = fit(&mut span.tags, &mut used, tag_len);
    let mut resource = span.resource.to_vec();
    let over = fit(&mut resource, &mut used, tag_len);
    if over > 0 {
        attributes += over;
        span.resource = resource.into();
    }
    let links = fit(&mut span.links, &mut used, |l| {
        24 + 4 + l.attributes.iter().map(tag_len).sum::<usize>()
    });
    let events = fit(&mut span.events, &mut used, event_len);
    Dropped {
        attributes,
        events,
        links,
    }
}

/// Keeps the first of `items` while they fit in [`MAX_SPAN_BYTES`] after `used`; how many
/// were dropped. Once one does not fit, nothing after it does.
fn fit<T>(items: &mut Vec<T>, used: &mut usize, len: impl Fn(&T) -> usize) -> usize {
    let over = items.iter().position(|t| {
        *used = used.saturating_add(len(t));
        *used > MAX_SPAN_BYTES
    });
    match over {
        Some(keep) => {
            *used = MAX_SPAN_BYTES + 1;
            let dropped = items.len() - keep;
            items.truncate(keep);
            dropped
        }
        None => 0,
    }
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
            name: "op".into(),
            service: Arc::from("svc"),
            kind: "server",
            start_us: 1,
            duration_us: 1,
            ..Default::default()
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
    fn links_and_resource_attributes_are_bounded_too() {
        let mut s = span();
        s.resource = (0..500)
            .map(|i| Tag::new(format!("r{i}"), "v"))
            .collect::<Vec<_>>()
            .into();
        s.links = (0..300u64)
            .map(|i| super::super::StoredLink {
                trace_id: 9,
                span_id: i + 1,
                attributes: (0..40).map(|j| Tag::new(format!("l{j}"), "v")).collect(),
            })
            .collect();
        s.scope = ("s".repeat(1000).into(), "v".repeat(1000).into());
        assert!(apply(&mut s));
        assert_eq!(s.resource.len(), MAX_ATTRIBUTES);
        assert_eq!(s.links.len(), MAX_LINKS);
        assert!(s
            .links
            .iter()
            .all(|l| l.attributes.len() == MAX_EVENT_ATTRIBUTES));
        assert!(s.scope.0.len() <= MAX_NAME_BYTES + 3 && s.scope.1.len() <= MAX_NAME_BYTES + 3);
        assert_eq!(
            s.tag("otel.dropped_links_count").cloned(),
            Some(Value::I64(300 - 128))
        );
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
