//! The attributes of mqrs's spans (OpenTelemetry RPC conventions), made from a caller's facts
//! without copying a string, in lists reused per thread: an RPC span's list is taken here when
//! it starts and given back once the store has encoded the span, so a traced call does not
//! allocate and free one per span. Each thread keeps a few lists of a small, fixed range of
//! capacities.

use std::borrow::Cow;
use std::cell::RefCell;

use opentelemetry::KeyValue;

use crate::identity::{Facts, SpanAttrs};

/// Value of `rpc.system.name` on every RPC span.
pub const RPC_SYSTEM: &str = "mqrs";

/// Attributes shared by CLIENT and SERVER spans of an RPC (OpenTelemetry RPC conventions).
/// Names are kept once and session values are shared: nothing here copies a string.
pub(crate) fn rpc_attributes(method: Cow<'static, str>, a: &SpanAttrs) -> Vec<KeyValue> {
    let mut attrs = take();
    attrs.push(KeyValue::new("rpc.system.name", RPC_SYSTEM));
    attrs.push(KeyValue::new("rpc.method", method));
    if let Some(u) = &a.user {
        attrs.push(KeyValue::new("user.id", u.clone()));
    }
    if let Some(s) = &a.session {
        attrs.push(KeyValue::new("session.id", s.clone()));
    }
    attrs
}

/// Attributes of the gate's root span: the connection's facts and the request's `extra`.
pub(crate) fn gate_attributes(facts: &Facts, extra: [KeyValue; 2]) -> Vec<KeyValue> {
    let (a, conn) = (facts.span_attrs(), facts.conn_attrs());
    let mut attrs = take();
    attrs.push(KeyValue::new("network.protocol.name", "mqtt"));
    // Both of the gate's doors (MQTT and MQTT over WebSocket) run over TCP; the scheme says
    // which door.
    attrs.push(KeyValue::new("network.transport", "tcp"));
    attrs.push(KeyValue::new("url.scheme", conn.scheme.clone()));
    attrs.push(KeyValue::new("client.address", conn.ip.clone()));
    attrs.extend(extra);
    if let Some(s) = &a.session {
        attrs.push(KeyValue::new("session.id", s.clone()));
    }
    if let Some(u) = &a.user {
        attrs.push(KeyValue::new("user.id", u.clone()));
    }
    attrs
}

/// Lists each thread keeps.
const KEPT: usize = 32;
/// Capacity a list is made with; lists outside `MIN..=MAX` are not kept.
const MIN: usize = 8;
const MAX: usize = 32;

thread_local! {
    static FREE: RefCell<Vec<Vec<KeyValue>>> = const { RefCell::new(Vec::new()) };
}

/// An empty list with room for at least [`MIN`] attributes.
pub(crate) fn take() -> Vec<KeyValue> {
    FREE.try_with(|f| f.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_else(|| Vec::with_capacity(MIN))
}

/// Gives `list` back for reuse (emptied here); a list of another size is freed.
pub(crate) fn give(mut list: Vec<KeyValue>) {
    if !(MIN..=MAX).contains(&list.capacity()) {
        return;
    }
    list.clear();
    let _ = FREE.try_with(|f| {
        let mut f = f.borrow_mut();
        if f.len() < KEPT {
            f.push(list);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_given_back_is_taken_again_empty_and_odd_sizes_are_not_kept() {
        let mut a = take();
        a.push(KeyValue::new("k", "v"));
        let ptr = a.as_ptr();
        give(a);
        let b = take();
        assert!(b.is_empty());
        assert_eq!(b.as_ptr(), ptr, "the same list comes back");
        give(Vec::with_capacity(1000));
        let c = take();
        assert!(c.capacity() <= MAX);
    }
}
