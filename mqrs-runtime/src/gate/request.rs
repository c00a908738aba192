//! One client request: route by topic, apply the `HD_` rule, start the root span when
//! `on_request_tracing` says so, call the handler, reply on the request topic, end the span.

use opentelemetry::trace::TraceContextExt;
use opentelemetry::KeyValue;
use rumqttc::mqttbytes::v4::Publish;
use rumqttc::mqttbytes::QoS;

use mqrs_base::sync::RwLocked;

use super::hook::GateRequest;
use super::peer::Peer;
use super::state::{Gate, GATE_MODULE};
use super::topic::{body_to_args, encode_reply, parse_topic, wants_reply, ClientTopic};
use crate::error::RpcError;
use crate::red::{Kind, Series};
use crate::session::Session;
use crate::trace::metrics;
use crate::trace::spans::{self, EndOnDrop};
use mqrs_base::history::Entry;
use mqrs_base::text::clip;

/// Handles one PUBLISH from a client.
pub(crate) async fn handle(gate: &Gate, conn: &Peer, publish: Publish) {
    // Counted whatever `on_request_tracing` and the sampler decide.
    let started = metrics::start(gate.red.enabled());
    let session = conn.session().served_by(Some(GATE_MODULE));
    let topic = parse_topic(&publish.topic);
    // Only a route the app serves names a span; anything else a client sends is one fixed
    // name, so client input never grows the operation list.
    let too_long = topic
        .as_ref()
        .is_ok_and(|t| t.module.len() + t.handler.len() >= MAX_ROUTE);
    let known = topic
        .as_ref()
        .ok()
        .filter(|t| !too_long && gate.caller.reaches(t.target, t.handler));
    let hook = gate.hook.read_locked().clone();
    let view = GateRequest {
        topic: &publish.topic,
        payload: &publish.payload,
        qos: publish.qos as u8,
    };
    let traced = hook(&session, &view);
    let (session, root) = if traced {
        let (s, guard) = start_root(gate, session, &publish, known);
        (s, Some(guard))
    } else {
        (session, None)
    };
    let result = match &topic {
        Ok(_) if too_long => Err(RpcError::BadArgs {
            method: clip(&publish.topic, 64).to_string(),
            reason: format!("a route is at most {MAX_ROUTE} bytes"),
        }),
        // The precise error (unknown module or method), from an untraced call that records
        // nothing.
        Ok(t) if known.is_none() => call(gate, &session.untraced(), t, &publish.payload).await,
        Ok(t) => call(gate, &session, t, &publish.payload).await,
        Err(reason) => Err(RpcError::BadArgs {
            method: clip(&publish.topic, 128).to_string(),
            reason: reason.clone(),
        }),
    };
    if let Err(e) = &result {
        if let Some(root) = &root {
            spans::record_error(root, e);
        }
        // Sampled or not, the trace id lets this line be matched to the trace if it is kept.
        let trace_id = session.trace_id();
        let trace_id = trace_id.as_deref().unwrap_or("-");
        tracing::debug!(topic = %publish.topic, error = %e, trace_id, "gate: request failed");
    }
    let mut failed = result.as_ref().err().map(RpcError::kind);
    // The error's words for the connection's history (only when it keeps one).
    let mut failed_text = conn
        .history
        .as_ref()
        .and(result.as_ref().err())
        .map(|e| clip(&e.to_string(), MAX_ERROR_TEXT).to_string());
    let mut reply_bytes = 0;
    if wants_reply(&publish.topic) {
        // The reply names the trace when it will be found: sampled, or kept so far (failed, or
        // slow already).
        let trace_id = root.as_ref().and_then(|r| {
            r.check_slow();
            let sampled = r.cx().span().span_context().is_sampled();
            let kept = r.keep().is_some_and(|k| k.reason().is_some());
            (sampled || kept).then(|| session.trace_id()).flatten()
        });
        let mut payload = encode_reply(result, trace_id.as_deref());
        // PUBLISH header: fixed header (up to 5 bytes), topic length and topic, packet id.
        let packet = payload.len() + publish.topic.len() + 9;
        if packet > gate.max_outgoing() {
            let e = RpcError::BadReply {
                method: clip(&publish.topic, 128).to_string(),
                reason: format!(
                    "the reply is {packet} bytes, over the gate's packet limit of {} bytes",
                    gate.max_outgoing()
                ),
            };
            tracing::warn!(topic = %publish.topic, error = %e, "gate: reply too large; the client gets an error instead");
            if let Some(root) = &root {
                spans::record_error(root, &e);
            }
            failed = Some(e.kind());
            failed_text = Some(clip(&e.to_string(), MAX_ERROR_TEXT).to_string());
            payload = encode_reply(Err(e), trace_id.as_deref());
        }
        let size = payload.len() as i64;
        reply_bytes = payload.len();
        let qos = match publish.qos {
            QoS::AtMostOnce => QoS::AtMostOnce,
            _ => QoS::AtLeastOnce,
        };
        let queued = conn.publish(publish.topic.clone(), qos, payload).await;
        if let Some(root) = &root {
            // Recorded once the reply is with the connection, so the root span covers it.
            let event = if queued {
                "reply queued"
            } else {
                "reply dropped: client gone"
            };
            root.cx().span().add_event_with_timestamp(
                event,
                crate::trace::clock::now(),
                vec![KeyValue::new("messaging.message.body.size", size)],
            );
        }
    }
    if started.counted() {
        let record = |s: &Series| (s.id(), started.record_kind(s, failed));
        let (series, took_ns) = match known {
            Some(t) => conn.route_series(&gate.red, GATE_MODULE, (t.module, t.handler), record),
            None => record(
                &gate
                    .red
                    .table(Kind::Server, GATE_MODULE)
                    .series(UNKNOWN_ROUTE, || format!("gate {UNKNOWN_ROUTE}")),
            ),
        };
        if let Some(log) = &conn.history {
            log.push(Entry {
                at_ms: started.at_ns() / 1_000_000,
                dur_us: u32::try_from(took_ns / 1000).unwrap_or(u32::MAX),
                reply_bytes: u32::try_from(reply_bytes).unwrap_or(u32::MAX),
                series,
                trace_id: kept_trace_id(root.as_ref()).to_be_bytes(),
                error: failed
                    .zip(failed_text)
                    .map(|(k, t)| Box::new((k.into(), t.into_boxed_str()))),
            });
        }
    }
    // The root span ends here, after the reply has been handed to the connection.
    drop(root);
}

/// The trace id (big-endian) when the root's trace is kept so far: sampled, or kept for being
/// failed or slow; 0 when not.
fn kept_trace_id(root: Option<&EndOnDrop>) -> u128 {
    let Some(r) = root else { return 0 };
    r.check_slow();
    let sc = r.cx().span().span_context().clone();
    let kept = r.keep().is_some_and(|k| k.reason().is_some());
    if sc.is_sampled() || kept {
        u128::from_be_bytes(sc.trace_id().to_bytes())
    } else {
        0
    }
}

/// Longest error message kept in a connection's history.
const MAX_ERROR_TEXT: usize = 200;

/// The method every request for a route the app does not serve is counted as.
const UNKNOWN_ROUTE: &str = "unknown-route";

async fn call(
    gate: &Gate,
    session: &Session,
    topic: &ClientTopic<'_>,
    body: &[u8],
) -> Result<Vec<u8>, RpcError> {
    let name = format!("{}/{}", topic.module, topic.handler);
    if !topic.handler.starts_with("HD_") {
        return Err(RpcError::NotClientReachable(name));
    }
    let args = body_to_args(&name, body)?;
    gate.caller
        .call_raw(topic.target, topic.handler, session, args)
        .await
}

/// Longest `Module/HD_handler` (with the slash) a client may call.
const MAX_ROUTE: usize = 128;

/// Longest topic kept on the root span (`mqrs.topic`); longer ones are cut.
const MAX_TOPIC_ATTRIBUTE: usize = 256;

fn start_root(
    gate: &Gate,
    session: Session,
    publish: &Publish,
    topic: Option<&ClientTopic<'_>>,
) -> (Session, EndOnDrop) {
    let root = spans::gate_root(
        &gate.tracer,
        topic.map(|t| (t.module, t.handler)),
        session.facts(),
        [
            KeyValue::new(
                "mqrs.topic",
                clip(&publish.topic, MAX_TOPIC_ATTRIBUTE).to_string(),
            ),
            KeyValue::new("mqrs.qos", publish.qos as i64),
        ],
    );
    let s = session.with_span(&root, gate.tracer.clone());
    (s, root)
}
