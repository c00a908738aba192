//! One client request: route by topic, apply the `HD_` rule, start the root span when
//! `on_request_tracing` says so, call the handler, reply on the request topic, end the span.

use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer};
use opentelemetry::KeyValue;
use rumqttc::mqttbytes::v4::Publish;
use rumqttc::mqttbytes::QoS;

use super::conn::ConnShared;
use super::topic::{body_to_args, encode_reply, parse_topic, wants_reply, ClientTopic};
use super::Gate;
use crate::error::RpcError;
use crate::rpc::dispatch::{record_error, EndOnDrop};
use crate::session::Session;

/// Handles one PUBLISH from a client.
pub(crate) async fn handle(gate: &Gate, conn: &ConnShared, publish: Publish) {
    let session = conn.session();
    let topic = parse_topic(&publish.topic);
    let traced = (gate.app.tracing_hook())(&session, &publish);
    let (session, root) = if traced {
        let (s, guard) = start_root(gate, session, &publish, topic.as_ref().ok());
        (s, Some(guard))
    } else {
        (session, None)
    };
    let result = match topic {
        Ok(t) => call(gate, &session, &t, &publish.payload).await,
        Err(reason) => Err(RpcError::BadArgs {
            method: publish.topic.clone(),
            reason,
        }),
    };
    if let (Err(e), Some(root)) = (&result, &root) {
        record_error(&root.0, e);
    }
    if wants_reply(&publish.topic) {
        let trace_id = root.as_ref().and_then(|_| session.trace_id());
        let payload = encode_reply(result, trace_id.as_deref());
        let size = payload.len() as i64;
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
            root.0.span().add_event(
                event,
                vec![KeyValue::new("messaging.message.body.size", size)],
            );
        }
    } else if let Err(e) = result {
        tracing::debug!(topic = %publish.topic, error = %e, "gate: request without msgid failed");
    }
    // The root span ends here, after the reply has been handed to the connection.
    drop(root);
}

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
    // Every module of this process answers under the app's server id.
    if let Some(sid) = topic.server_id.filter(|sid| *sid != gate.server_id) {
        return Err(RpcError::UnknownModule(format!("{}@{sid}", topic.module)));
    }
    let args = body_to_args(&name, body)?;
    gate.app
        .call_raw(topic.module, topic.handler, session, args)
        .await
}

fn start_root(
    gate: &Gate,
    session: Session,
    publish: &Publish,
    topic: Option<&ClientTopic<'_>>,
) -> (Session, EndOnDrop) {
    let route = match topic {
        Some(t) => format!("{}/{}", t.module, t.handler),
        None => "invalid-topic".to_string(),
    };
    let tracer = &gate.tracer.tracer;
    let mut attrs = vec![
        KeyValue::new("network.protocol.name", "mqtt"),
        KeyValue::new("network.transport", session.network().to_string()),
        KeyValue::new("client.address", session.ip().to_string()),
        KeyValue::new("mqrs.topic", publish.topic.clone()),
        KeyValue::new("mqrs.qos", publish.qos as i64),
        KeyValue::new("session.id", session.sessionid().to_string()),
    ];
    if !session.userid().is_empty() {
        attrs.push(KeyValue::new("user.id", session.userid().to_string()));
    }
    let span = tracer
        .span_builder(format!("gate {route}"))
        .with_kind(SpanKind::Server)
        .with_attributes(attrs)
        .start_with_context(tracer, &opentelemetry::Context::new());
    let cx = opentelemetry::Context::new().with_span(span);
    let s = session.with_trace(cx.clone(), gate.tracer.clone());
    (s, EndOnDrop(cx))
}
