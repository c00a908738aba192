//! Calls from other processes, from their publish to their reply: refused when they ask for
//! a reply where replies do not belong, admitted within the limits of calls and bytes served
//! at once (or answered "unavailable" at once), run on a task of their own until their
//! deadline, and answered on their response topic.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use rumqttc::v5::mqttbytes::v5::PublishProperties;

use super::outbox::Sender;
use super::shared::Shared;
use super::wire;
use crate::deadline::Deadline;
use crate::error::RpcError;
use crate::server::dispatch::dispatch_held;
use crate::server::Registry;
use crate::trace::sampling::KeepReason;

/// A request as it arrived on `mqrs/call/{module}/{method}`.
pub(super) struct Call<'a> {
    /// Module named by the topic.
    pub(super) module: &'a str,
    /// Handler named by the topic.
    pub(super) method: &'a str,
    /// The publish's properties.
    pub(super) props: PublishProperties,
    /// The publish's payload.
    pub(super) payload: bytes::Bytes,
}

/// Serves `call` with the handlers of `registry` on a task of its own, or refuses it (see the
/// module doc); never waits. A call that carries no deadline gets `default_timeout`.
pub(super) fn admit(
    shared: &Arc<Shared>,
    registry: &Arc<Registry>,
    default_timeout: std::time::Duration,
    client: &Sender,
    call: Call<'_>,
) {
    let Call {
        module,
        method,
        mut props,
        payload,
    } = call;
    // The properties are taken apart: the call keeps their strings without copying them.
    // A reply goes only where a reply belongs, and carries back only a small correlation: a
    // request that asks otherwise is refused unserved (its reply could be sent elsewhere, or
    // be too large for the broker, which would cost this process its connection).
    let reply_ok = props
        .response_topic
        .as_deref()
        .is_none_or(wire::valid_reply_topic)
        && props
            .correlation_data
            .as_ref()
            .is_none_or(|c| c.len() <= wire::MAX_CORRELATION);
    if !reply_ok {
        shared.counters.malformed.fetch_add(1, Ordering::Relaxed);
        let why = "request refused unserved: its response topic is not under mqrs/reply/ (or is over 256 bytes), or its correlation data is over 64 bytes";
        if shared
            .refusal_warning
            .due(std::time::Duration::from_secs(10))
        {
            tracing::warn!(module, method, "{why} (said once in 10 s)");
        } else {
            tracing::debug!(module, method, "{why}");
        }
        return;
    }
    let deadline = wire::request_deadline(Some(&props), default_timeout);
    let mut user = |key: &str| {
        props
            .user_properties
            .iter_mut()
            .find(|(k, _)| k == key)
            .map(|(_, v)| std::mem::take(v))
    };
    let call = Incoming {
        traceparent: user("traceparent"),
        tracestate: user("tracestate"),
        name: format!("{module}/{method}"),
        module_len: module.len(),
        deadline,
        reply_to: props
            .response_topic
            .take()
            .map(|t| (t, props.correlation_data.take())),
        payload,
    };
    let (shared, client, registry) = (shared.clone(), client.clone(), registry.clone());
    // What the call holds while it is served: its payload, the arguments decoded from it, and
    // its trace properties.
    let held = 2 * call.payload.len()
        + call.traceparent.as_ref().map_or(0, String::len)
        + call.tracestate.as_ref().map_or(0, String::len);
    match shared.serving.take(held) {
        Ok(permits) => {
            tokio::spawn(async move {
                let _permits = permits;
                serve(&shared, &client, &registry, call).await;
            });
        }
        Err(limit) => {
            // Too many calls, or bytes of calls, being served: answer at once, without a task
            // or an await, so a flood costs neither memory nor time here; a full send queue
            // drops the answer.
            let busy = Err(RpcError::Unavailable(format!(
                "`{}`: this process is serving too many {limit}",
                call.name
            )));
            count_refused(&registry, call.module(), call.method(), "unavailable");
            if let Some((topic, correlation)) = call.reply_to {
                let props = wire::reply_properties(correlation, None);
                let payload = wire::encode_reply(&busy);
                if let Err(e) = client.try_publish(topic, shared.qos(), false, payload, Some(props))
                {
                    tracing::debug!(error = %e, "busy answer dropped: the send queue is full");
                }
            }
        }
    }
}

/// One call from another process.
struct Incoming {
    /// The W3C trace context of the call's user properties (the trace-context-mqtt draft);
    /// when present it wins over the one in the session, and carries `tracestate` too.
    traceparent: Option<String>,
    tracestate: Option<String>,
    /// `Module/method`; the module is its first `module_len` bytes.
    name: String,
    module_len: usize,
    deadline: Deadline,
    reply_to: Option<(String, Option<bytes::Bytes>)>,
    payload: bytes::Bytes,
}

impl Incoming {
    fn module(&self) -> &str {
        &self.name[..self.module_len]
    }

    fn method(&self) -> &str {
        &self.name[self.module_len + 1..]
    }
}

async fn serve(shared: &Shared, client: &Sender, registry: &Registry, call: Incoming) {
    let mut keep = None;
    // The SERVER span, ended with the handler and delivered after the reply is sent.
    let mut span = None;
    let decoded = wire::decode_request_in(
        &call.payload,
        call.traceparent.as_deref(),
        call.tracestate.as_deref(),
    );
    let result = match decoded {
        Err(reason) => {
            shared.counters.malformed.fetch_add(1, Ordering::Relaxed);
            count_refused(registry, call.module(), call.method(), "bad_args");
            Err(RpcError::BadArgs {
                method: call.name.clone(),
                reason: format!("malformed request from another process: {reason}"),
            })
        }
        Ok((session, args)) => match registry.resolve(call.module(), call.method()) {
            Ok(route) => {
                keep = session.keep_mark();
                let (result, ended) = run_until(
                    call.deadline,
                    &call.name,
                    dispatch_held(route, session, args, call.deadline),
                )
                .await;
                span = ended;
                result
            }
            Err(e) => Err(e),
        },
    };
    shared.counters.calls_served.fetch_add(1, Ordering::Relaxed);
    let kept = keep.and_then(|k| k.reason());
    reply(shared, client, call, result, kept).await;
    drop(span);
}

/// Counts a call to a route this process serves that was refused before it reached the
/// route (too busy, or arguments that do not decode) in the route's SERVER series, as
/// `dispatch` counts those it runs; a call to a route not served here is counted only by its
/// caller (the names come from another process: they must not grow the series).
fn count_refused(registry: &Registry, module: &str, method: &str, error_type: &str) {
    if let Ok(route) = registry.resolve(module, method) {
        route
            .series
            .record_at(mqrs_base::red::now_s(), 0, Some(error_type));
    }
}

/// Runs a served call until its deadline; past it the caller has given up, so the handler is
/// cancelled (its span says so) and its permit returns: a hung handler cannot starve others.
async fn run_until<S>(
    deadline: Deadline,
    name: &str,
    call: impl std::future::Future<Output = (Result<Vec<u8>, RpcError>, Option<S>)>,
) -> (Result<Vec<u8>, RpcError>, Option<S>) {
    deadline
        .bound(call)
        .await
        .unwrap_or_else(|| (Err(RpcError::DeadlineExceeded(name.to_string())), None))
}

async fn reply(
    shared: &Shared,
    client: &Sender,
    call: Incoming,
    result: Result<Vec<u8>, RpcError>,
    kept: Option<KeepReason>,
) {
    let Some((topic, correlation)) = call.reply_to else {
        if let Err(e) = result {
            tracing::debug!(method = %call.name, error = %e, "call_nr from another process failed");
        }
        return;
    };
    if call.deadline.has_passed() {
        // The caller stopped waiting at this same deadline and reports its own timeout; a
        // reply now would only arrive late.
        tracing::debug!(method = %call.name, "deadline passed; no reply sent");
        return;
    }
    let mut payload = wire::encode_reply(&result);
    if let Some(why) = shared.too_big(payload.len(), &topic) {
        payload = wire::encode_reply(&Err(RpcError::BadReply {
            method: call.name.clone(),
            reason: format!("the reply cannot go through the broker: {why}"),
        }));
    }
    let props = wire::reply_properties(correlation, kept);
    let packet = super::outbox::publish(topic, shared.qos(), false, payload, Some(props));
    match client.send(&packet).await {
        Ok(()) => return,
        // The connection the call came on is gone (its broker node died, the broker
        // restarted): the caller may still be waiting, so the reply goes out on the next
        // connection if one is ready before the caller's deadline.
        Err(e @ super::outbox::SendError::Closed(_)) => {
            tracing::debug!(method = %call.name, error = %e, "cannot publish a reply; waiting for a connection");
        }
        Err(e) => {
            tracing::debug!(method = %call.name, error = %e, "cannot publish a reply");
            return;
        }
    }
    let Some(next) = shared.sender_by(call.deadline.instant()).await else {
        tracing::debug!(method = %call.name, "no connection before the caller's deadline; reply dropped");
        return;
    };
    if let Err(e) = next.send(&packet).await {
        tracing::debug!(method = %call.name, error = %e, "cannot publish a reply");
    }
}

// These tests read what was recorded from the embedded store.
#[cfg(all(test, feature = "viewer"))]
mod tests {
    use std::time::Duration;

    use rumqttc::v5::mqttbytes::QoS;

    use super::*;
    use crate::config::BrokerSection;
    use crate::trace::{StoreLimits, TraceStore, Tracing};
    use crate::transport::mqtt::outbox::Outbox;
    use crate::transport::mqtt::MqttTransport;
    use crate::Session;

    /// A served call's SERVER span reaches the store only once its reply is handed to the
    /// MQTT client, so storing it adds nothing to the call's latency.
    #[tokio::test]
    async fn the_server_span_is_stored_after_the_reply_is_sent() {
        let store = Arc::new(TraceStore::new(StoreLimits::default()));
        let tracing = Tracing::new(Some(store.clone()));
        let registry = Registry::default();
        registry.add(
            "M",
            "f",
            Box::new(|_, _| Box::pin(async { Ok(b"null".to_vec()) })),
            tracing.tracer("M"),
        );
        let shared = MqttTransport::new(BrokerSection::default(), "s1").shared;
        // A connection whose send buffer is already full: publishing the reply waits there
        // until the connection closes.
        let outbox = Arc::new(Outbox::new(1, 0, 10));
        let client = Sender(outbox.clone());
        client
            .try_publish("filler", QoS::AtMostOnce, false, vec![0u8; 8], None)
            .expect("the buffer takes one message");
        let payload = wire::encode_request(&Session::default(), None, b"[]").expect("encodes");
        let call = Incoming {
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            tracestate: None,
            name: "M/f".into(),
            module_len: 1,
            deadline: Deadline::after(Duration::from_secs(30)),
            reply_to: Some(("mqrs/reply/s0/x".into(), None)),
            payload: payload.into(),
        };
        let trace_id = 0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c_u128;
        let served = shared.clone();
        let serving = tokio::spawn(async move { serve(&served, &client, &registry, call).await });
        // On this single-threaded runtime the task runs until it waits: the handler has
        // returned and the reply's publish is waiting for room in the queue.
        while shared.counters.calls_served.load(Ordering::Relaxed) == 0 {
            tokio::task::yield_now().await;
        }
        tokio::task::yield_now().await;
        assert!(!serving.is_finished());
        assert!(
            store.trace(trace_id).is_none(),
            "the SERVER span was stored before the reply was sent"
        );
        outbox.close("the test closes it");
        serving.await.expect("serve ends");
        let t = store.trace(trace_id).expect("the SERVER span is stored");
        let span = t.spans.iter().find(|s| s.name == "M/f").expect("M/f");
        assert_eq!(span.kind, "server");
        assert_eq!(span.parent_span_id, Some(0xb7ad_6b71_6920_3331));
    }
}
