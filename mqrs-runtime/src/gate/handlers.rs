//! The gate's own RPC methods, callable from any process by the gate's server id
//! (`Gate@<serverid>`, which every session carries): `Bind`, `UnBind` and `Push` change the
//! session the gate keeps for a connection; `Send` publishes a message to the client,
//! `SendBatch` one message to many of its clients, and `Kick` closes a client's connection.
//! None has an `HD_` prefix, so no client can call them.

use std::collections::BTreeMap;
use std::sync::Arc;

use rumqttc::QoS;

use super::rules;
use super::state::{Gate, GATE_MODULE};
use crate::error::RpcError;
use crate::server::registry::HandlerFn;
use crate::server::{decode_args, HandlerFuture, Registry};
use crate::session::Session;

/// The body of a message for a client, as `Gate/Send` takes it: text (a JSON string) or, for
/// payloads that are not UTF-8, an array of byte values.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub(crate) enum Body {
    /// A UTF-8 payload, sent as it is.
    Text(String),
    /// Any other payload.
    Bytes(Vec<u8>),
}

impl Body {
    /// The form that carries `payload` most compactly.
    pub(crate) fn of(payload: Vec<u8>) -> Body {
        match String::from_utf8(payload) {
            Ok(text) => Body::Text(text),
            Err(e) => Body::Bytes(e.into_bytes()),
        }
    }

    fn into_bytes(self) -> Vec<u8> {
        match self {
            Body::Text(t) => t.into_bytes(),
            Body::Bytes(b) => b,
        }
    }
}

/// What `Gate/SendBatch` answers: how many clients got the message, and the session ids of
/// those that were gone.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Delivered {
    pub(crate) delivered: usize,
    pub(crate) gone: Vec<String>,
}

/// Registers `Bind`, `UnBind`, `Push`, `Send`, `SendBatch` and `Kick` under [`GATE_MODULE`].
pub(super) fn register(reg: &Registry, gate: &Arc<Gate>) {
    let tracer = gate.tracer.clone();
    reg.add(
        GATE_MODULE,
        "Bind",
        sync(gate, "Gate/Bind", |g, s, (userid,): (String,)| {
            g.update(s.sessionid(), |d| d.userid = userid)
        }),
        tracer.clone(),
    );
    reg.add(
        GATE_MODULE,
        "UnBind",
        sync(gate, "Gate/UnBind", |g, s, (): ()| {
            g.update(s.sessionid(), |d| d.userid.clear())
        }),
        tracer.clone(),
    );
    reg.add(
        GATE_MODULE,
        "Push",
        sync(
            gate,
            "Gate/Push",
            |g, s, (settings,): (BTreeMap<String, String>,)| {
                g.update(s.sessionid(), |d| d.settings.extend(settings))
            },
        ),
        tracer.clone(),
    );
    let weak = Arc::downgrade(gate);
    reg.add(
        GATE_MODULE,
        "Send",
        Box::new(move |session: Session, args: Vec<u8>| -> HandlerFuture {
            let gate = weak.upgrade();
            Box::pin(async move {
                let gate = gate.ok_or_else(stopped)?;
                let (topic, body): (String, Body) = decode_args("Gate/Send", &args)?;
                let payload = body.into_bytes();
                check_message("Gate/Send", &gate, &topic, &payload)?;
                let conn = gate.connection(session.sessionid())?;
                if conn.publish(topic, QoS::AtMostOnce, payload).await {
                    Ok(b"null".to_vec())
                } else {
                    Err(RpcError::Handler(format!(
                        "client `{}` is gone or does not read its messages",
                        session.sessionid()
                    )))
                }
            })
        }),
        tracer.clone(),
    );
    let weak = Arc::downgrade(gate);
    reg.add(
        GATE_MODULE,
        "SendBatch",
        Box::new(move |session: Session, args: Vec<u8>| -> HandlerFuture {
            let gate = weak.upgrade();
            Box::pin(async move {
                let gate = gate.ok_or_else(stopped)?;
                let (ids, topic, body): (Vec<String>, String, Body) =
                    decode_args("Gate/SendBatch", &args)?;
                let payload = body.into_bytes();
                check_message("Gate/SendBatch", &gate, &topic, &payload)?;
                session
                    .span()
                    .set_attribute("messaging.batch.message_count", ids.len() as i64);
                let report = send_batch(&gate, ids, &topic, payload).await;
                session
                    .span()
                    .set_attribute("mqrs.delivered", report.delivered as i64);
                serde_json::to_vec(&report).map_err(|e| RpcError::Handler(e.to_string()))
            })
        }),
        tracer.clone(),
    );
    reg.add(
        GATE_MODULE,
        "Kick",
        sync(gate, "Gate/Kick", |g, s, (reason,): (String,)| {
            g.kick(s.sessionid(), &reason)
        }),
        tracer,
    );
}

/// Publishes one message to every listed connection at once (a slow reader delays only its
/// own copy); the ones not found or not taking it are gone.
async fn send_batch(gate: &Gate, ids: Vec<String>, topic: &str, payload: Vec<u8>) -> Delivered {
    let payload = bytes::Bytes::from(payload);
    let sends = ids.into_iter().map(|id| {
        let payload = payload.clone();
        async move {
            let sent = match gate.connection(&id) {
                Ok(conn) => {
                    conn.publish(topic.to_string(), QoS::AtMostOnce, payload)
                        .await
                }
                Err(_) => false,
            };
            (id, sent)
        }
    });
    let mut report = Delivered::default();
    for (id, sent) in futures_util::future::join_all(sends).await {
        if sent {
            report.delivered += 1;
        } else {
            report.gone.push(id);
        }
    }
    report
}

/// Checks that `payload` on `topic` is a message a client can receive, within the gate's
/// packet limit.
fn check_message(method: &str, gate: &Gate, topic: &str, payload: &[u8]) -> Result<(), RpcError> {
    let bad = |reason: String| RpcError::BadArgs {
        method: method.into(),
        reason,
    };
    rules::check_topic(topic).map_err(|why| bad(why.replace("PUBLISH", "message")))?;
    // PUBLISH header: fixed header (up to 5 bytes) and the topic's length and bytes.
    let packet = payload.len() + topic.len() + 7;
    if topic.len() > usize::from(u16::MAX) || packet > gate.max_outgoing() {
        return Err(bad(format!(
            "the message is {packet} bytes, over the gate's packet limit of {} bytes",
            gate.max_outgoing()
        )));
    }
    Ok(())
}

fn stopped() -> RpcError {
    RpcError::Unavailable("the gate has stopped".into())
}

/// A handler that decodes its arguments as `A` and applies `f` at once.
fn sync<A, F>(gate: &Arc<Gate>, name: &'static str, f: F) -> HandlerFn
where
    A: serde::de::DeserializeOwned,
    F: Fn(&Gate, &Session, A) -> Result<(), RpcError> + Send + Sync + Copy + 'static,
{
    let weak = Arc::downgrade(gate);
    Box::new(move |session: Session, args: Vec<u8>| -> HandlerFuture {
        let r = match (weak.upgrade(), decode_args::<A>(name, &args)) {
            (None, _) => Err(stopped()),
            (_, Err(e)) => Err(e),
            (Some(g), Ok(a)) => f(&g, &session, a).map(|()| b"null".to_vec()),
        };
        Box::pin(std::future::ready(r))
    })
}
