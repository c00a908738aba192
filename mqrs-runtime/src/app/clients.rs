//! What the app does to clients through the gate that holds their connection, in this
//! process or another: send one a message ([`App::send`]), send many one message with one
//! call per gate ([`App::send_batch`]), and close a connection ([`App::kick`]).

use std::collections::BTreeMap;

use opentelemetry::KeyValue;

use super::handle::{gate_at, gate_of, App};
use crate::error::RpcError;
use crate::gate::handlers::{Body, Delivered};
use crate::session::Session;

/// A client to reach: the gate that holds its connection (server id) and its session id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Recipient {
    /// The server id of the gate holding the connection (empty: any gate).
    pub server_id: String,
    /// The connection's session id.
    pub session_id: String,
}

impl From<&Session> for Recipient {
    fn from(s: &Session) -> Self {
        Recipient {
            server_id: s.serverid().to_string(),
            session_id: s.sessionid().to_string(),
        }
    }
}

/// What [`App::send_batch`] achieved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Clients whose connection took the message.
    pub delivered: usize,
    /// Those that were gone (no such connection, not reading, or their gate unreachable).
    pub gone: Vec<Recipient>,
}

impl App {
    /// Sends the session's client a message on `topic` (mqant's `Send`), through the gate that
    /// holds its connection, in this process or another. The message goes at QoS 0; the error
    /// says when the client is gone, the topic is not one a client can receive, or the message
    /// is over the gate's packet limit.
    ///
    /// ```no_run
    /// # async fn f(app: &mqrs_runtime::App, session: &mqrs_runtime::Session) {
    /// app.send(session, "Chat/OnSay", br#"{"from":"ann","text":"hi"}"#.to_vec())
    ///     .await
    ///     .expect("the client is connected");
    /// # }
    /// ```
    pub async fn send(
        &self,
        session: &Session,
        topic: impl Into<String>,
        payload: impl Into<Vec<u8>>,
    ) -> Result<(), RpcError> {
        let body = Body::of(payload.into());
        self.call::<_, ()>(&gate_of(session), "Send", session, (topic.into(), body))
            .await
    }

    /// Sends one message on `topic` to every listed client (mqant's `SendBatch`): one call per
    /// gate that holds some of them, not one per client, each traced as its own CLIENT span in
    /// the trace of `session` (the caller's).
    /// Answers how many got it and which were gone; an error only when the message itself is
    /// refused (a topic a client cannot receive, over the packet limit).
    ///
    /// ```no_run
    /// # async fn f(app: &mqrs_runtime::App, room: &[mqrs_runtime::Session], me: &mqrs_runtime::Session) {
    /// let d = app
    ///     .send_batch(me, room, "Chat/OnSay", br#"{"text":"hi all"}"#.to_vec())
    ///     .await
    ///     .expect("a message clients can receive");
    /// println!("{} delivered, {} gone", d.delivered, d.gone.len());
    /// # }
    /// ```
    pub async fn send_batch<R>(
        &self,
        session: &Session,
        to: impl IntoIterator<Item = R>,
        topic: impl Into<String>,
        payload: impl Into<Vec<u8>>,
    ) -> Result<Delivery, RpcError>
    where
        R: Into<Recipient>,
    {
        let mut by_gate: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in to {
            let r = r.into();
            by_gate.entry(r.server_id).or_default().push(r.session_id);
        }
        let (topic, body) = (topic.into(), Body::of(payload.into()));
        let calls = by_gate.into_iter().map(|(sid, ids)| {
            let (topic, body) = (&topic, &body);
            async move {
                // The recipient count on the CLIENT span too: the caller's view of the batch.
                let count = KeyValue::new("messaging.batch.message_count", ids.len() as i64);
                let r = self
                    .inner
                    .caller
                    .call_tagged::<_, Delivered>(
                        &gate_at(&sid),
                        "SendBatch",
                        session,
                        (&ids, topic, body),
                        vec![count],
                    )
                    .await;
                (sid, ids, r)
            }
        });
        let mut out = Delivery::default();
        for (sid, ids, r) in futures_util::future::join_all(calls).await {
            let gone = match r {
                Ok(d) => {
                    out.delivered += d.delivered;
                    d.gone
                }
                Err(e @ RpcError::BadArgs { .. }) => return Err(e),
                Err(e) => {
                    tracing::debug!(gate = %sid, error = %e, recipients = ids.len(), "send_batch: a gate did not answer; its clients count as gone");
                    ids
                }
            };
            out.gone
                .extend(gone.into_iter().map(|session_id| Recipient {
                    server_id: sid.clone(),
                    session_id,
                }));
        }
        Ok(out)
    }

    /// Closes the session's client connection (mqant's `Session.Close`), through the gate
    /// that holds it, once the messages already sent to it are written; `reason` goes to the
    /// gate's log. The error says when the client is already gone.
    ///
    /// ```no_run
    /// # async fn f(app: &mqrs_runtime::App, old: &mqrs_runtime::Session) {
    /// let _ = app.send(old, "Login/OnKick", br#"{"reason":"logged in elsewhere"}"#.to_vec()).await;
    /// let _ = app.kick(old, "logged in elsewhere").await;
    /// # }
    /// ```
    pub async fn kick(&self, session: &Session, reason: &str) -> Result<(), RpcError> {
        self.call::<_, ()>(&gate_of(session), "Kick", session, (reason,))
            .await
    }
}
