//! Who is calling: the facts of one client as the gate sees them ([`SessionData`]), and the
//! span attribute values made from them once and shared by every span that carries them.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use opentelemetry::Value;
use serde::{Deserialize, Serialize};

/// The identity and connection facts of one client, as the gate sees them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionData {
    /// User id bound by a login handler; empty while anonymous.
    #[serde(default)]
    pub userid: String,
    /// Unique id of the client connection at its gate.
    #[serde(default)]
    pub sessionid: String,
    /// Transport the client used: `tcp` or `ws`.
    #[serde(default)]
    pub network: String,
    /// Remote address of the client, `ip:port`.
    #[serde(default)]
    pub ip: String,
    /// Id of the gate server that holds the connection.
    #[serde(default)]
    pub serverid: String,
    /// Free-form settings carried with the session.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
}

/// The session's facts, with their span attribute values made once and shared by every span
/// of every request that uses the same facts.
#[derive(Clone, Default)]
pub(crate) struct Facts {
    data: SessionData,
    attrs: OnceLock<SpanAttrs>,
    conn: OnceLock<ConnAttrs>,
}

impl Facts {
    /// The facts, their span values not made yet.
    pub(crate) fn new(data: SessionData) -> Facts {
        Facts {
            data,
            attrs: OnceLock::new(),
            conn: OnceLock::new(),
        }
    }

    /// The facts to change; their span values are made again on next use.
    pub(crate) fn data_mut(&mut self) -> &mut SessionData {
        self.attrs = OnceLock::new();
        self.conn = OnceLock::new();
        &mut self.data
    }

    /// The facts as they are.
    pub(crate) fn data(&self) -> &SessionData {
        &self.data
    }

    /// The RPC span attribute values of these facts, made on first use.
    pub(crate) fn span_attrs(&self) -> &SpanAttrs {
        self.attrs.get_or_init(|| {
            let d = &self.data;
            SpanAttrs {
                user: (!d.userid.is_empty()).then(|| shared_value(&d.userid)),
                session: (!d.sessionid.is_empty()).then(|| shared_value(&d.sessionid)),
            }
        })
    }

    /// The connection's span attribute values (only the gate's root span has them), made on
    /// first use: a session that arrived from another process never makes them.
    pub(crate) fn conn_attrs(&self) -> &ConnAttrs {
        self.conn.get_or_init(|| ConnAttrs {
            scheme: shared_value(url_scheme(&self.data.network)),
            ip: shared_value(&self.data.ip),
        })
    }
}

impl std::ops::Deref for Facts {
    type Target = SessionData;
    fn deref(&self) -> &SessionData {
        &self.data
    }
}

/// Span attribute values of a session, reference-counted so a span takes them without copying.
#[derive(Clone, Debug)]
pub(crate) struct SpanAttrs {
    /// `user.id`, when a user is bound.
    pub(crate) user: Option<Value>,
    /// `session.id`, when the session has one.
    pub(crate) session: Option<Value>,
}

/// The connection's span attribute values, shared like [`SpanAttrs`].
#[derive(Clone, Debug)]
pub(crate) struct ConnAttrs {
    /// `url.scheme`: how the client reached the gate.
    pub(crate) scheme: Value,
    /// `client.address`.
    pub(crate) ip: Value,
}

/// The URL scheme a client used for a session's `network` (`tcp` and `tls` are MQTT's own
/// `mqtt` and `mqtts`; `ws` and `wss` are their own).
pub(crate) fn url_scheme(network: &str) -> &str {
    match network {
        "tcp" => "mqtt",
        "tls" => "mqtts",
        other => other,
    }
}

/// A span attribute value from session text, cut like the store cuts values: a client's
/// megabyte user name does not ride on every span.
fn shared_value(s: &str) -> Value {
    if s.is_empty() {
        return Value::from("");
    }
    let s = mqrs_base::text::cut(s, mqrs_base::text::MAX_VALUE_BYTES);
    Value::String(Arc::<str>::from(s.as_ref()).into())
}
