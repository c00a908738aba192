//! The gate's own RPC methods, callable from any process by the gate's server id
//! (`Gate@<serverid>`, which every session carries): `Bind`, `UnBind` and `Push` change the
//! session the gate keeps for a connection; `Send` publishes a message to the client.
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

/// Registers `Bind`, `UnBind`, `Push` and `Send` under [`GATE_MODULE`].
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
                send(&gate, session.sessionid(), topic, body.into_bytes()).await?;
                Ok(b"null".to_vec())
            })
        }),
        tracer,
    );
}

/// Publishes `payload` on `topic` to the client of connection `sessionid`, at QoS 0 (as mqant's
/// gate pushes); waits while the client's outgoing queue is full.
async fn send(
    gate: &Gate,
    sessionid: &str,
    topic: String,
    payload: Vec<u8>,
) -> Result<(), RpcError> {
    let bad = |reason: String| RpcError::BadArgs {
        method: "Gate/Send".into(),
        reason,
    };
    rules::check_topic(&topic).map_err(|why| bad(why.replace("PUBLISH", "message")))?;
    // PUBLISH header: fixed header (up to 5 bytes) and the topic's length and bytes.
    let packet = payload.len() + topic.len() + 7;
    if topic.len() > usize::from(u16::MAX) || packet > gate.max_outgoing() {
        return Err(bad(format!(
            "the message is {packet} bytes, over the gate's packet limit of {} bytes",
            gate.max_outgoing()
        )));
    }
    let conn = gate.connection(sessionid)?;
    if conn.publish(topic, QoS::AtMostOnce, payload).await {
        Ok(())
    } else {
        Err(RpcError::Handler(format!(
            "client `{sessionid}` is gone or does not read its messages"
        )))
    }
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
