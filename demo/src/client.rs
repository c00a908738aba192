//! A small MQTT client for the gate, on rumqttc: connect, publish a request on
//! `Module/HD_Handler/msgid`, wait for the reply on the same topic; messages the server sends
//! on other topics (`App::send`) wait in a small queue for [`GateClient::message`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, NetworkOptions, Packet, QoS};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Value>>>>;

/// Messages from the server that answer no request: topic and payload.
type Messages = mpsc::Sender<(String, Vec<u8>)>;

/// Most server messages kept for [`GateClient::message`]; later ones are dropped.
const MESSAGES_KEPT: usize = 256;

/// Why a request through the gate failed.
#[derive(Debug)]
pub enum ClientError {
    /// The MQTT connection failed or closed.
    Connection(String),
    /// No reply arrived in time.
    Timeout(String),
    /// The reply was not the gate's JSON.
    BadReply(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Connection(e) => write!(f, "MQTT connection: {e}"),
            ClientError::Timeout(t) => write!(f, "no reply on {t} in time"),
            ClientError::BadReply(e) => write!(f, "reply is not the gate's JSON: {e}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// One client connection to the gate.
pub struct GateClient {
    client: AsyncClient,
    pending: Pending,
    messages: tokio::sync::Mutex<mpsc::Receiver<(String, Vec<u8>)>>,
    next: Mutex<u64>,
    task: tokio::task::JoinHandle<()>,
    /// How long `request` waits for a reply.
    pub timeout: Duration,
}

impl GateClient {
    /// Connects as `client_id` to the gate at `host:port` and waits for the CONNACK.
    pub async fn connect(
        client_id: &str,
        host: &str,
        port: u16,
    ) -> Result<GateClient, ClientError> {
        Self::connect_with(MqttOptions::new(client_id, host, port)).await
    }

    /// Connects with `opts` (its transport: TCP, TLS, WebSocket) and waits for the CONNACK;
    /// keepalive and packet size are set here.
    pub async fn connect_with(opts: MqttOptions) -> Result<GateClient, ClientError> {
        let (client, mut eventloop) = rumqttc_client(opts);
        // Wait for the CONNACK before handing the client out.
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => break,
                Ok(_) => {}
                Err(e) => return Err(ClientError::Connection(e.to_string())),
            }
        }
        let pending: Pending = Arc::default();
        let (messages_tx, messages) = mpsc::channel(MESSAGES_KEPT);
        let task = tokio::spawn(pump(eventloop, pending.clone(), messages_tx));
        Ok(GateClient {
            client,
            pending,
            messages: tokio::sync::Mutex::new(messages),
            next: Mutex::new(0),
            task,
            timeout: Duration::from_secs(10),
        })
    }

    /// Sends `body` to `Module/Handler/<msgid>` and returns the gate's reply.
    pub async fn request(
        &self,
        module_handler: &str,
        body: &[u8],
        qos: QoS,
    ) -> Result<Value, ClientError> {
        let msgid = {
            let mut n = self.next.lock().unwrap_or_else(|p| p.into_inner());
            *n += 1;
            *n
        };
        let topic = format!("{module_handler}/{msgid}");
        self.request_on(&topic, body, qos).await
    }

    /// Sends `body` on exactly `topic` and waits for the reply on it.
    pub async fn request_on(
        &self,
        topic: &str,
        body: &[u8],
        qos: QoS,
    ) -> Result<Value, ClientError> {
        self.exchange(topic, topic, body, qos).await
    }

    /// Sends `body` on `topic` and waits for the reply on `reply_topic` (subscribed with
    /// [`GateClient::subscribe`]): request/reply through a plain broker, with no gate.
    pub async fn request_via(
        &self,
        topic: &str,
        reply_topic: &str,
        body: &[u8],
    ) -> Result<Value, ClientError> {
        self.exchange(topic, reply_topic, body, QoS::AtMostOnce)
            .await
    }

    async fn exchange(
        &self,
        topic: &str,
        reply_topic: &str,
        body: &[u8],
        qos: QoS,
    ) -> Result<Value, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(reply_topic.to_string(), tx);
        self.client
            .publish(topic, qos, false, body.to_vec())
            .await
            .map_err(|e| ClientError::Connection(e.to_string()))?;
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err(ClientError::Connection("connection closed".into())),
            Err(_) => {
                self.pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(reply_topic);
                Err(ClientError::Timeout(reply_topic.to_string()))
            }
        }
    }

    /// Logs in as `user` (`Login/HD_Login`), asking again for up to `patience` while the gate
    /// answers with an error (its Login module may not be known to it yet); the last error
    /// when it never succeeds.
    pub async fn log_in(&self, user: &str, patience: Duration) -> Result<(), String> {
        let body = serde_json::json!({"userName": user, "passWord": "pw"}).to_string();
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let r = self
                .request("Login/HD_Login", body.as_bytes(), QoS::AtLeastOnce)
                .await
                .map_err(|e| format!("login {user}: {e}"))?;
            if r["Error"] == "" {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("login {user}: {r}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Subscribes to `filter` at QoS 0 (a broker's SUBACK is not waited for).
    pub async fn subscribe(&self, filter: &str) -> Result<(), ClientError> {
        self.client
            .subscribe(filter, QoS::AtMostOnce)
            .await
            .map_err(|e| ClientError::Connection(e.to_string()))
    }

    /// Publishes without waiting for anything.
    pub async fn publish(&self, topic: &str, body: &[u8], qos: QoS) -> Result<(), ClientError> {
        self.client
            .publish(topic, qos, false, body.to_vec())
            .await
            .map_err(|e| ClientError::Connection(e.to_string()))
    }

    /// The next message the server sent on a topic no request waits on (a push), as topic and
    /// payload; `None` if none comes within `wait` or the connection is closed.
    pub async fn message(&self, wait: Duration) -> Option<(String, Vec<u8>)> {
        let mut rx = self.messages.lock().await;
        tokio::time::timeout(wait, rx.recv()).await.ok().flatten()
    }

    /// Disconnects cleanly.
    pub async fn disconnect(self) {
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
    }
}

/// A rumqttc client as this module's clients (and the benchmarks' floors) use it: keepalive
/// 30 s, packets up to 1 MiB, `TCP_NODELAY`, 64 requests queued.
pub fn rumqttc_client(mut opts: MqttOptions) -> (AsyncClient, EventLoop) {
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(opts, 64);
    let mut net = NetworkOptions::new();
    net.set_tcp_nodelay(true);
    eventloop.set_network_options(net);
    (client, eventloop)
}

async fn pump(mut eventloop: EventLoop, pending: Pending, messages: Messages) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let waiter = pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&p.topic);
                let Some(tx) = waiter else {
                    if messages.try_send((p.topic, p.payload.to_vec())).is_err() {
                        tracing::debug!("server message dropped: nobody reads them");
                    }
                    continue;
                };
                let value = serde_json::from_slice::<Value>(&p.payload).unwrap_or_else(|e| {
                    Value::String(ClientError::BadReply(e.to_string()).to_string())
                });
                let _ = tx.send(value);
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "client connection ended");
                // Dropping the waiters tells every pending request that the connection is gone.
                pending.lock().unwrap_or_else(|p| p.into_inner()).clear();
                return;
            }
        }
    }
}
