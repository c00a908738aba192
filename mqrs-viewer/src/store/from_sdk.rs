//! The SDK's finished span in the store's form.

use std::sync::Arc;

use opentelemetry::trace::{SpanKind, Status};
use opentelemetry_sdk::trace::SpanData;

use super::{micros, StoredLink, StoredSpan};

impl StoredSpan {
    /// The SDK's finished span `s` of `service` in the store's form; moves, never copies, its strings.
    pub fn from_sdk(s: SpanData, service: Arc<str>) -> StoredSpan {
        let parent = u64::from_be_bytes(s.parent_span_id.to_bytes());
        let start_us = micros(s.start_time);
        StoredSpan {
            trace_id: u128::from_be_bytes(s.span_context.trace_id().to_bytes()),
            span_id: u64::from_be_bytes(s.span_context.span_id().to_bytes()),
            parent_span_id: (parent != 0).then_some(parent),
            name: s.name,
            service,
            kind: match s.span_kind {
                SpanKind::Server => "server",
                SpanKind::Client => "client",
                SpanKind::Producer => "producer",
                SpanKind::Consumer => "consumer",
                SpanKind::Internal => "internal",
            },
            start_us,
            duration_us: micros(s.end_time).saturating_sub(start_us),
            tags: s.attributes,
            events: s.events.events,
            status_ok: matches!(s.status, Status::Ok),
            error: match s.status {
                Status::Error { description } => Some(description),
                _ => None,
            },
            resource: Default::default(),
            scope: (
                match s.instrumentation_scope.name() {
                    "mqrs" => std::borrow::Cow::Borrowed("mqrs"),
                    other => std::borrow::Cow::Owned(other.to_string()),
                },
                s.instrumentation_scope
                    .version()
                    .map(|v| std::borrow::Cow::Owned(v.to_string()))
                    .unwrap_or_default(),
            ),
            links: s
                .links
                .links
                .into_iter()
                .map(|l| StoredLink {
                    trace_id: u128::from_be_bytes(l.span_context.trace_id().to_bytes()),
                    span_id: u64::from_be_bytes(l.span_context.span_id().to_bytes()),
                    attributes: l.attributes,
                })
                .collect(),
        }
    }
}
