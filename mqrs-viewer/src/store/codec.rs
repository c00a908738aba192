//! The store's compact form of a span: its fields written one after the other into the byte
//! buffer of its trace. A trace is then one allocation, however many spans, tags and events it
//! has, so evicting it is one free instead of dozens of small ones in memory no thread has
//! touched for a while, which is what made eviction the largest cost of tracing under load.
//! Spans are decoded back into [`StoredSpan`] only when read.
//!
//! Layout, little-endian: the span's length in bytes (4 bytes, so a reader can step over
//! what it does not need), span id, parent id (0 for none), start µs, duration µs (8 bytes
//! each); kind (1 byte); name, service; error flag (1 byte) and text; tags; events. A string
//! is a 4-byte length and its bytes; a list a 4-byte count and its items. A tag is its key and
//! a typed value; an event its name, time, dropped-attribute count and tags.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use opentelemetry::{Array, KeyValue, StringValue, Value};

use super::{StoredEvent, StoredSpan, Tag};

/// Bytes a span costs beyond its encoded form (its share of the trace's bookkeeping).
pub(super) const SPAN_OVERHEAD: usize = 16;

impl StoredSpan {
    /// What the span costs the store's byte cap: its compact form and its bookkeeping.
    pub fn stored_bytes(&self) -> usize {
        let mut out = Vec::new();
        encode(self, &mut out);
        out.len() + SPAN_OVERHEAD
    }
}

const KINDS: [&str; 6] = [
    "server",
    "client",
    "internal",
    "producer",
    "consumer",
    "unspecified",
];

/// Flags of the optional tail of a span (written only when the span has one of its parts).
const HAS_RESOURCE: u8 = 1;
const HAS_SCOPE: u8 = 2;
const HAS_SCOPE_VERSION: u8 = 4;
const HAS_LINKS: u8 = 8;

/// Appends `span` (all but its trace id, which its trace holds) to `out`.
pub(super) fn encode(span: &StoredSpan, out: &mut Vec<u8>) {
    // The span's length first, so a reader that wants only its head steps over the rest.
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&span.span_id.to_le_bytes());
    out.extend_from_slice(&span.parent_span_id.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&span.start_us.to_le_bytes());
    out.extend_from_slice(&span.duration_us.to_le_bytes());
    out.push(KINDS.iter().position(|k| *k == span.kind).unwrap_or(2) as u8);
    put_str(out, &span.name);
    put_str(out, &span.service);
    match &span.error {
        Some(e) => {
            out.push(1);
            put_str(out, e);
        }
        None => out.push(if span.status_ok { 2 } else { 0 }),
    }
    put_tags(out, &span.tags);
    put_len(out, span.events.len());
    for e in &span.events {
        put_str(out, &e.name);
        out.extend_from_slice(&super::micros(e.timestamp).to_le_bytes());
        out.extend_from_slice(&e.dropped_attributes_count.to_le_bytes());
        put_tags(out, &e.attributes);
    }
    // The optional tail: only what the span has.
    let flags = [
        (!span.resource.is_empty(), HAS_RESOURCE),
        (!span.scope.0.is_empty(), HAS_SCOPE),
        (!span.scope.1.is_empty(), HAS_SCOPE_VERSION),
        (!span.links.is_empty(), HAS_LINKS),
    ]
    .iter()
    .filter(|(has, _)| *has)
    .fold(0u8, |f, (_, bit)| f | bit);
    if flags != 0 {
        out.push(flags);
        if flags & HAS_RESOURCE != 0 {
            put_tags(out, &span.resource);
        }
        if flags & HAS_SCOPE != 0 {
            put_str(out, &span.scope.0);
        }
        if flags & HAS_SCOPE_VERSION != 0 {
            put_str(out, &span.scope.1);
        }
        if flags & HAS_LINKS != 0 {
            put_len(out, span.links.len());
            for l in &span.links {
                out.extend_from_slice(&l.trace_id.to_le_bytes());
                out.extend_from_slice(&l.span_id.to_le_bytes());
                put_tags(out, &l.attributes);
            }
        }
    }
    let len = u32::try_from(out.len() - at - 4).unwrap_or(u32::MAX);
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

fn put_len(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Names and values are capped long before 4 GiB; cut rather than mis-frame regardless.
    let s = mqrs_base::text::clip(s, u32::MAX as usize);
    put_len(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

fn put_tags(out: &mut Vec<u8>, tags: &[Tag]) {
    put_len(out, tags.len());
    for kv in tags {
        put_str(out, kv.key.as_str());
        put_value(out, &kv.value);
    }
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Bool(b) => out.extend_from_slice(&[0, u8::from(*b)]),
        Value::I64(i) => {
            out.push(1);
            out.extend_from_slice(&i.to_le_bytes());
        }
        Value::F64(f) => {
            out.push(2);
            out.extend_from_slice(&f.to_le_bytes());
        }
        Value::String(s) => {
            out.push(3);
            put_str(out, s.as_str());
        }
        Value::Array(Array::Bool(a)) => {
            out.push(4);
            put_len(out, a.len());
            out.extend(a.iter().map(|b| u8::from(*b)));
        }
        Value::Array(Array::I64(a)) => {
            out.push(5);
            put_len(out, a.len());
            a.iter()
                .for_each(|i| out.extend_from_slice(&i.to_le_bytes()));
        }
        Value::Array(Array::F64(a)) => {
            out.push(6);
            put_len(out, a.len());
            a.iter()
                .for_each(|f| out.extend_from_slice(&f.to_le_bytes()));
        }
        Value::Array(Array::String(a)) => {
            out.push(7);
            put_len(out, a.len());
            a.iter().for_each(|s| put_str(out, s.as_str()));
        }
        // Kinds added to the SDK later: kept as their text.
        other => {
            out.push(3);
            put_str(out, &other.to_string());
        }
    }
}

/// The spans of trace `trace_id` encoded in `data`, in the order they were encoded.
pub(super) fn spans(data: &[u8], trace_id: u128) -> impl Iterator<Item = StoredSpan> + '_ {
    read_all(data, move |r| r.span(trace_id))
}

/// The one span encoded in `data` (as a log record holds it), if it reads whole.
pub(super) fn decode_one(data: &[u8], trace_id: u128) -> Option<StoredSpan> {
    let mut r = Reader(data);
    let span = r.span(trace_id)?;
    r.0.is_empty().then_some(span)
}

/// True when a span of `data` has the id `span_id` (read from each span's fixed head only).
pub(super) fn holds_span(data: &[u8], span_id: u64) -> bool {
    let mut rest = data;
    while let (Some(len), Some(id)) = (rest.get(..4), rest.get(4..12)) {
        if id == span_id.to_le_bytes() {
            return true;
        }
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        rest = rest.get(4 + len..).unwrap_or(&[]);
    }
    false
}

/// How many bytes of `data` its first whole spans take while they cost at most `budget` in
/// the store's measure (each span its encoded length plus `overhead`), at least one span; and
/// how many spans that is.
pub(super) fn prefix_within(data: &[u8], budget: usize, overhead: usize) -> (usize, usize) {
    let (mut at, mut cost, mut spans) = (0usize, 0usize, 0usize);
    while let Some(len) = data.get(at..at + 4) {
        let whole = 4 + u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if at + whole > data.len() || (spans > 0 && cost + whole + overhead > budget) {
            break;
        }
        at += whole;
        cost += whole + overhead;
        spans += 1;
    }
    (at, spans)
}

/// Reads `data` span after span with `read`. The buffer holds only what `encode` wrote; a
/// short read would be a bug here, and ends the list rather than panicking.
fn read_all<'a, T: 'a>(
    data: &'a [u8],
    mut read: impl FnMut(&mut Reader<'a>) -> Option<T> + 'a,
) -> impl Iterator<Item = T> + 'a {
    let mut r = Reader(data);
    std::iter::from_fn(move || {
        if r.0.is_empty() {
            return None;
        }
        let item = read(&mut r);
        if item.is_none() {
            r.0 = &[];
        }
        item
    })
}

/// A span's ids, times, kind, names and whether it failed: what listings and latency need,
/// read without allocating and without its tags and events.
pub(super) struct Head<'a> {
    pub(super) span_id: u64,
    pub(super) parent_span_id: Option<u64>,
    pub(super) start_us: u64,
    pub(super) duration_us: u64,
    pub(super) kind: &'static str,
    pub(super) name: &'a str,
    pub(super) service: &'a str,
    pub(super) failed: bool,
    /// True when the span's status was set to OK.
    pub(super) status_ok: bool,
}

/// The heads of the spans encoded in `data`, in order.
pub(super) fn heads(data: &[u8]) -> impl Iterator<Item = Head<'_>> {
    read_all(data, Reader::head)
}

/// A span read in place: its head, and its tags and events left encoded until asked for.
/// What a search tests, without allocating.
pub(super) struct View<'a> {
    pub(super) head: Head<'a>,
    /// The span's tags, then its events, still encoded.
    rest: &'a [u8],
}

/// A tag value read in place.
pub(super) enum ValueRef<'a> {
    Bool(bool),
    I64(i64),
    F64(f64),
    Str(&'a str),
    /// A list, decoded (rare in tags).
    List(Value),
}

impl ValueRef<'_> {
    /// True when the value reads as `text`, as `Value::as_str` renders it.
    pub(super) fn reads_as(&self, text: &str) -> bool {
        match self {
            ValueRef::Str(s) => *s == text,
            ValueRef::Bool(b) => text == if *b { "true" } else { "false" },
            ValueRef::I64(i) => i.to_string() == text,
            ValueRef::F64(f) => f.to_string() == text,
            ValueRef::List(v) => v.as_str() == text,
        }
    }
}

impl<'a> View<'a> {
    /// The span's tags, in order.
    pub(super) fn tags(&self) -> TagRefs<'a> {
        TagRefs::new(self.rest)
    }

    /// The tags of each of the span's events, one event after the other.
    pub(super) fn event_tags(&self) -> impl Iterator<Item = (&'a str, ValueRef<'a>)> + 'a {
        let mut r = Reader(self.rest);
        let mut left = match r.skip_tags() {
            Some(()) => r.len().unwrap_or(0),
            None => 0,
        };
        let mut current: Option<TagRefs<'a>> = None;
        std::iter::from_fn(move || loop {
            if let Some(t) = current.as_mut().and_then(Iterator::next) {
                return Some(t);
            }
            if left == 0 {
                return None;
            }
            left -= 1;
            r.skip_str()?;
            r.take(12)?;
            let start = r.0;
            r.skip_tags()?;
            current = Some(TagRefs::new(&start[..start.len() - r.0.len()]));
        })
    }
}

impl<'a> View<'a> {
    /// The resource's attributes and the scope's name, from the span's optional tail (none
    /// and empty when it has none).
    pub(super) fn tail(&self) -> (TagRefs<'a>, &'a str) {
        let mut r = Reader(self.rest);
        let flags = (|| {
            r.skip_tags()?;
            for _ in 0..r.len()? {
                r.skip_str()?;
                r.take(12)?;
                r.skip_tags()?;
            }
            r.u8()
        })()
        .unwrap_or(0);
        let resource = if flags & HAS_RESOURCE != 0 {
            let start = r.0;
            if r.skip_tags().is_none() {
                return (TagRefs::new(&[]), "");
            }
            TagRefs::new(&start[..start.len() - r.0.len()])
        } else {
            TagRefs::new(&[])
        };
        let scope = if flags & HAS_SCOPE != 0 {
            r.str().unwrap_or("")
        } else {
            ""
        };
        (resource, scope)
    }
}

/// Tags encoded by `put_tags` (a count, then each tag), read in place.
pub(super) struct TagRefs<'a> {
    r: Reader<'a>,
    left: usize,
}

impl<'a> TagRefs<'a> {
    fn new(data: &'a [u8]) -> TagRefs<'a> {
        let mut r = Reader(data);
        let left = r.len().unwrap_or(0);
        TagRefs { r, left }
    }
}

impl<'a> Iterator for TagRefs<'a> {
    type Item = (&'a str, ValueRef<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let r = &mut self.r;
        let key = r.str()?;
        let value = match r.u8()? {
            0 => ValueRef::Bool(r.u8()? != 0),
            1 => ValueRef::I64(r.u64()? as i64),
            2 => ValueRef::F64(f64::from_bits(r.u64()?)),
            3 => ValueRef::Str(r.str()?),
            kind => ValueRef::List(r.list(kind)?),
        };
        Some((key, value))
    }
}

/// The spans encoded in `data`, read in place.
pub(super) fn views(data: &[u8]) -> impl Iterator<Item = View<'_>> {
    read_all(data, Reader::view)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn len(&mut self) -> Option<usize> {
        self.u32().map(|n| n as usize)
    }

    fn str(&mut self) -> Option<&'a str> {
        let n = self.len()?;
        std::str::from_utf8(self.take(n)?).ok()
    }

    /// Steps over a string without checking it (it was written from a `&str`).
    fn skip_str(&mut self) -> Option<()> {
        let n = self.len()?;
        self.take(n).map(drop)
    }

    fn head(&mut self) -> Option<Head<'a>> {
        self.view().map(|v| v.head)
    }

    fn view(&mut self) -> Option<View<'a>> {
        let n = self.len()?;
        let mut r = Reader(self.take(n)?);
        let span_id = r.u64()?;
        let parent = r.u64()?;
        let start_us = r.u64()?;
        let duration_us = r.u64()?;
        let kind = *KINDS.get(usize::from(r.u8()?))?;
        let name = r.str()?;
        let service = r.str()?;
        let status = r.u8()?;
        let failed = status == 1;
        if failed {
            r.skip_str()?;
        }
        Some(View {
            head: Head {
                span_id,
                parent_span_id: (parent != 0).then_some(parent),
                start_us,
                duration_us,
                kind,
                name,
                service,
                failed,
                status_ok: status == 2,
            },
            rest: r.0,
        })
    }

    fn skip_tags(&mut self) -> Option<()> {
        for _ in 0..self.len()? {
            self.skip_str()?;
            match self.u8()? {
                0 => {
                    self.take(1)?;
                }
                1 | 2 => {
                    self.take(8)?;
                }
                3 => {
                    self.skip_str()?;
                }
                4 => {
                    let n = self.len()?;
                    self.take(n)?;
                }
                5 | 6 => {
                    let n = self.len()?;
                    self.take(n.checked_mul(8)?)?;
                }
                7 => {
                    for _ in 0..self.len()? {
                        self.skip_str()?;
                    }
                }
                _ => return None,
            }
        }
        Some(())
    }

    fn span(&mut self, trace_id: u128) -> Option<StoredSpan> {
        let n = self.len()?;
        Reader(self.take(n)?).span_body(trace_id)
    }

    fn span_body(&mut self, trace_id: u128) -> Option<StoredSpan> {
        let span_id = self.u64()?;
        let parent = self.u64()?;
        let start_us = self.u64()?;
        let duration_us = self.u64()?;
        let kind = *KINDS.get(usize::from(self.u8()?))?;
        let name = Cow::Owned(self.str()?.to_string());
        let service = Arc::from(self.str()?);
        let (error, status_ok) = match self.u8()? {
            0 => (None, false),
            2 => (None, true),
            _ => (Some(Cow::Owned(self.str()?.to_string())), false),
        };
        let tags = self.tags()?;
        let n = self.len()?;
        let mut events = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            let name = self.str()?.to_string();
            let at = UNIX_EPOCH + Duration::from_micros(self.u64()?);
            let dropped = self.u32()?;
            let attributes = self.tags()?;
            events.push(StoredEvent::new(name, at, attributes, dropped));
        }
        let mut span = StoredSpan {
            trace_id,
            span_id,
            parent_span_id: (parent != 0).then_some(parent),
            name,
            service,
            kind,
            start_us,
            duration_us,
            tags,
            events,
            error,
            status_ok,
            ..Default::default()
        };
        if self.0.is_empty() {
            return Some(span);
        }
        let flags = self.u8()?;
        if flags & HAS_RESOURCE != 0 {
            span.resource = self.tags()?.into();
        }
        if flags & HAS_SCOPE != 0 {
            span.scope.0 = Cow::Owned(self.str()?.to_string());
        }
        if flags & HAS_SCOPE_VERSION != 0 {
            span.scope.1 = Cow::Owned(self.str()?.to_string());
        }
        if flags & HAS_LINKS != 0 {
            let n = self.len()?;
            let mut links = Vec::with_capacity(n.min(64));
            for _ in 0..n {
                let trace_id = u128::from_le_bytes(self.take(16)?.try_into().ok()?);
                let span_id = self.u64()?;
                let attributes = self.tags()?;
                links.push(super::StoredLink {
                    trace_id,
                    span_id,
                    attributes,
                });
            }
            span.links = links;
        }
        Some(span)
    }

    fn tags(&mut self) -> Option<Vec<Tag>> {
        let n = self.len()?;
        let mut tags = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            let key = self.str()?.to_string();
            tags.push(KeyValue::new(key, self.value()?));
        }
        Some(tags)
    }

    fn value(&mut self) -> Option<Value> {
        Some(match self.u8()? {
            0 => Value::Bool(self.u8()? != 0),
            1 => Value::I64(self.u64()? as i64),
            2 => Value::F64(f64::from_bits(self.u64()?)),
            3 => Value::from(self.str()?.to_string()),
            kind @ 4..=7 => self.list(kind)?,
            _ => return None,
        })
    }

    /// A list value of `kind` (4: bools, 5: integers, 6: floats, 7: strings).
    fn list(&mut self, kind: u8) -> Option<Value> {
        let n = self.len()?;
        let cap = n.min(1024);
        Some(match kind {
            4 => Value::Array(Array::Bool(
                (0..n)
                    .map(|_| self.u8().map(|b| b != 0))
                    .collect::<Option<_>>()?,
            )),
            5 => Value::Array(Array::I64(
                (0..n)
                    .map(|_| self.u64().map(|i| i as i64))
                    .collect::<Option<_>>()?,
            )),
            6 => Value::Array(Array::F64(
                (0..n)
                    .map(|_| self.u64().map(f64::from_bits))
                    .collect::<Option<_>>()?,
            )),
            7 => {
                let mut v: Vec<StringValue> = Vec::with_capacity(cap);
                for _ in 0..n {
                    v.push(self.str()?.to_string().into());
                }
                Value::Array(Array::String(v))
            }
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> StoredSpan {
        StoredSpan {
            trace_id: 7,
            span_id: 0x1122_3344_5566_7788,
            parent_span_id: Some(42),
            name: Cow::Borrowed("Login/track"),
            service: Arc::from("Login"),
            kind: "client",
            start_us: 1_700_000_000_000_001,
            duration_us: 1234,
            tags: vec![
                KeyValue::new("s", "text é"),
                KeyValue::new("i", -5i64),
                KeyValue::new("f", 2.5f64),
                KeyValue::new("b", true),
                KeyValue::new("ab", Value::Array(Array::Bool(vec![true, false]))),
                KeyValue::new("ai", Value::Array(Array::I64(vec![1, -2]))),
                KeyValue::new("af", Value::Array(Array::F64(vec![0.5]))),
                KeyValue::new(
                    "as",
                    Value::Array(Array::String(vec!["x".into(), "".into()])),
                ),
            ],
            events: vec![StoredEvent::new(
                "reply queued",
                UNIX_EPOCH + Duration::from_micros(1_700_000_000_000_500),
                vec![KeyValue::new("bytes", 12i64)],
                3,
            )],
            error: Some(Cow::Borrowed("boom")),
            status_ok: false,
            resource: vec![KeyValue::new("host.name", "h1")].into(),
            scope: (Cow::Borrowed("io.opentelemetry.x"), Cow::Borrowed("1.2")),
            links: vec![super::super::StoredLink {
                trace_id: 99,
                span_id: 5,
                attributes: vec![KeyValue::new("why", "batch")],
            }],
        }
    }

    #[test]
    fn spans_come_back_as_they_went_in() {
        let a = full();
        let mut b = full();
        b.span_id = 9;
        b.parent_span_id = None;
        b.error = None;
        b.tags.clear();
        b.events.clear();
        b.kind = "unspecified";
        b.status_ok = true;
        b.resource = Default::default();
        b.links.clear();
        b.scope = (Cow::Borrowed("mqrs"), Cow::Borrowed(""));
        let mut data = Vec::new();
        encode(&a, &mut data);
        encode(&b, &mut data);
        let back: Vec<StoredSpan> = spans(&data, 7).collect();
        assert_eq!(back, vec![a.clone(), b.clone()]);
        let heads: Vec<String> = heads(&data)
            .map(|h| {
                let parent = h.parent_span_id;
                format!(
                    "{} {parent:?} {} {} {} {}",
                    h.span_id, h.kind, h.name, h.service, h.failed
                )
            })
            .collect();
        let first = format!("{} Some(42) client Login/track Login true", a.span_id);
        assert_eq!(
            heads,
            [first.as_str(), "9 None unspecified Login/track Login false"]
        );
    }

    #[test]
    fn views_read_tags_and_event_tags_in_place_as_values_render() {
        let a = full();
        let mut data = Vec::new();
        encode(&a, &mut data);
        encode(&a, &mut data);
        let views: Vec<View<'_>> = views(&data).collect();
        assert_eq!(views.len(), 2);
        let v = &views[1];
        assert_eq!((v.head.name, v.head.failed), ("Login/track", true));
        let tags: Vec<(&str, bool)> = v
            .tags()
            .zip(&a.tags)
            .map(|((k, val), kv)| (k, val.reads_as(&kv.value.as_str())))
            .collect();
        assert_eq!(tags.len(), a.tags.len());
        assert!(tags.iter().all(|(_, same)| *same), "{tags:?}");
        assert!(v.tags().any(|(k, val)| k == "i" && val.reads_as("-5")));
        assert!(!v.tags().any(|(k, val)| k == "b" && val.reads_as("false")));
        let events: Vec<(&str, bool)> = v
            .event_tags()
            .map(|(k, val)| (k, val.reads_as("12")))
            .collect();
        assert_eq!(events, [("bytes", true)]);
    }

    #[test]
    fn a_cut_buffer_ends_the_list_without_panicking() {
        let mut data = Vec::new();
        encode(&full(), &mut data);
        encode(&full(), &mut data);
        let one = data.len() / 2;
        for cut in [1, one - 1, one + 5, data.len() - 1] {
            let n = spans(&data[..cut], 7).count();
            assert!(n <= 1, "cut at {cut}: {n}");
        }
    }
}
