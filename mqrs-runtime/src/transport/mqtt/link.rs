//! The broker connection of one process: connects to the configured broker (the URLs in turn
//! when there are several, with backoff, never a busy loop), subscribes the reply topic and the
//! request topics of the modules this process runs (again after every reconnection), completes
//! waiting calls from replies, keeps track of the other processes' presence, and hands
//! incoming calls to `serve`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use mqrs_base::sync::RwLocked;
use rumqttc::v5::mqttbytes::v5::{Filter, LastWill, Packet, Publish, SubscribeReasonCode};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::remote::MqttTransport;
use super::shared::Shared;
use super::wire;
use crate::server::Registry;

/// What the connection needs besides the transport's shared state.
pub(crate) struct Link {
    /// Broker `(host, port)`s, tried in order.
    pub(crate) urls: Vec<(String, u16)>,
    /// This process's server id (its pinned request topics, its MQTT client id).
    pub(crate) server_id: String,
    /// Handlers of this process, to serve incoming calls.
    pub(crate) registry: Arc<Registry>,
    /// Deadline of an incoming call that carries none.
    pub(crate) default_timeout: Duration,
    /// Turns true when the app starts stopping: withdraw presence and call subscriptions, so
    /// other processes stop sending calls here while this one drains.
    pub(crate) withdraw: watch::Receiver<bool>,
    /// Longest wait at the end for calls being served to finish and their replies to go out.
    pub(crate) grace: Duration,
}

/// Longest wait between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl MqttTransport {
    /// Starts the connection task; `ready` turns true once connected and subscribed.
    pub(crate) fn start(
        &self,
        link: Link,
        shutdown: watch::Receiver<bool>,
    ) -> (JoinHandle<()>, watch::Receiver<bool>) {
        let (ready_tx, ready_rx) = watch::channel(false);
        let task = tokio::spawn(run(self.shared.clone(), link, shutdown, ready_tx));
        (task, ready_rx)
    }
}

fn options(link: &Link, shared: &Shared, (host, port): &(String, u16)) -> MqttOptions {
    // Stable per server id: a reconnection takes the old session over, so the broker sends the
    // old connection's last will (empty presence) before the new one announces itself.
    let client_id = format!("mqrs-{}", link.server_id);
    let mut opts = MqttOptions::new(client_id, host.clone(), *port);
    opts.set_clean_start(true);
    opts.set_keep_alive(Duration::from_secs(5));
    opts.set_connection_timeout(3);
    // rumqttc's default packet limit is 10 KiB; allow the payload limit plus properties.
    let max = u32::try_from(shared.settings.max_payload + 64 * 1024).unwrap_or(u32::MAX);
    opts.set_max_packet_size(Some(max));
    let mut net = rumqttc::NetworkOptions::new();
    // Without it a request/reply pair stalls on delayed ACKs (about 40 ms each way).
    net.set_tcp_nodelay(true);
    opts.set_network_options(net);
    // If this process dies, the broker clears its presence for it.
    opts.set_last_will(LastWill::new(
        wire::presence_topic(&link.server_id),
        Vec::new(),
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        true,
        None,
    ));
    opts
}

/// The subscriptions of this process: its reply topic and its modules' request topics.
fn filters(shared: &Shared, link: &Link) -> Vec<Filter> {
    let qos = shared.qos();
    let mut f = vec![
        Filter::new(shared.reply_topic.clone(), qos),
        Filter::new(
            format!("{}+", wire::PRESENCE_PREFIX),
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        ),
    ];
    if !shared.withdrawn.load(Ordering::Acquire) {
        for module in link.registry.module_names() {
            for topic in wire::call_subscriptions(&module, &link.server_id) {
                f.push(Filter::new(topic, qos));
            }
        }
    }
    f
}

/// This process's presence message: its modules, or empty once it has withdrawn.
fn presence(shared: &Shared, link: &Link) -> (String, Vec<u8>) {
    let payload = if shared.withdrawn.load(Ordering::Acquire) {
        Vec::new()
    } else {
        wire::encode_presence(&link.registry.module_names())
    };
    (wire::presence_topic(&link.server_id), payload)
}

/// Publishes this process's presence (retained, QoS 1) without waiting.
fn announce(shared: &Shared, link: &Link, client: &AsyncClient) {
    let (topic, payload) = presence(shared, link);
    let qos = rumqttc::v5::mqttbytes::QoS::AtLeastOnce;
    if let Err(e) = client.try_publish(topic, qos, true, payload) {
        tracing::warn!(error = %e, "cannot announce this process's modules");
    }
}

/// Stops taking calls from other processes: call subscriptions dropped, presence emptied.
fn withdraw(shared: &Shared, link: &Link, client: &AsyncClient) {
    shared.withdrawn.store(true, Ordering::Release);
    for module in link.registry.module_names() {
        for topic in wire::call_subscriptions(&module, &link.server_id) {
            let _ = client.try_unsubscribe(topic);
        }
    }
    announce(shared, link, client);
    tracing::info!("stopping: withdrew this process's modules from the broker");
}

async fn run(
    shared: Arc<Shared>,
    mut link: Link,
    mut shutdown: watch::Receiver<bool>,
    ready: watch::Sender<bool>,
) {
    let mut attempt = 0usize;
    let mut backoff = Duration::from_millis(100);
    let mut reported = false;
    'connections: loop {
        let url = &link.urls[attempt % link.urls.len()];
        let (client, mut events) = AsyncClient::new(options(&link, &shared, url), 1024);
        *shared.client.write_locked() = Some(client.clone());
        loop {
            let withdrawn = shared.withdrawn.load(Ordering::Acquire);
            let event = tokio::select! {
                _ = shutdown.changed() => {
                    close(&shared, &link, &client, &mut events).await;
                    break 'connections;
                }
                r = link.withdraw.changed(), if !withdrawn => {
                    if r.is_ok() && *link.withdraw.borrow() {
                        withdraw(&shared, &link, &client);
                    }
                    continue;
                }
                e = events.poll() => e,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    let broker_max = ack
                        .properties
                        .as_ref()
                        .and_then(|p| p.max_packet_size)
                        .unwrap_or(0);
                    shared
                        .broker_max_packet
                        .store(broker_max, Ordering::Relaxed);
                    shared.counters.connects.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(broker = %format!("mqtt://{}:{}", url.0, url.1), "connected to the MQTT broker");
                    backoff = Duration::from_millis(100);
                    reported = false;
                    let (c, f) = (client.clone(), filters(&shared, &link));
                    let presence = presence(&shared, &link);
                    tokio::spawn(async move {
                        if let Err(e) = c.subscribe_many(f).await {
                            tracing::warn!(error = %e, "cannot subscribe at the broker");
                        }
                        let (topic, payload) = presence;
                        let qos = rumqttc::v5::mqttbytes::QoS::AtLeastOnce;
                        if let Err(e) = c.publish(topic, qos, true, payload).await {
                            tracing::warn!(error = %e, "cannot announce this process's modules");
                        }
                    });
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    let refused = ack
                        .return_codes
                        .iter()
                        .filter(|c| !matches!(c, SubscribeReasonCode::Success(_)))
                        .count();
                    if refused > 0 {
                        tracing::error!(
                            refused,
                            codes = ?ack.return_codes,
                            "the broker refused subscriptions: some calls to this process will time out"
                        );
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    // The presence announcement (the only QoS 1 publish at connect) is through:
                    // the broker delivered the retained presence of the others before it.
                    shared.connected.store(true, Ordering::Release);
                    let _ = ready.send(true);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    on_publish(&shared, &link, &client, p);
                }
                Ok(_) => {}
                Err(e) => {
                    shared
                        .counters
                        .connection_errors
                        .fetch_add(1, Ordering::Relaxed);
                    let was = shared.connected.swap(false, Ordering::AcqRel);
                    shared.fail_all("the connection to the MQTT broker was lost");
                    // Processes may leave while we are away; retained presence refills the map
                    // after the reconnection.
                    shared.presence.write_locked().clear();
                    if was || !reported {
                        tracing::warn!(
                            broker = %format!("mqtt://{}:{}", url.0, url.1),
                            error = %e,
                            retry_in_ms = backoff.as_millis() as u64,
                            "MQTT broker unreachable; calls to other processes fail until it is back"
                        );
                        reported = true;
                    } else {
                        tracing::debug!(error = %e, "MQTT broker still unreachable");
                    }
                    tokio::select! {
                        _ = shutdown.changed() => break 'connections,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    if link.urls.len() > 1 {
                        // Fail over to the next node of the cluster.
                        attempt += 1;
                        continue 'connections;
                    }
                }
            }
        }
    }
    shared.connected.store(false, Ordering::Release);
    shared.fail_all("the app is stopping");
    *shared.client.write_locked() = None;
}

/// Ends the broker session cleanly: presence withdrawn, DISCONNECT, then a short wait for both
/// to go out.
async fn close(
    shared: &Shared,
    link: &Link,
    client: &AsyncClient,
    events: &mut rumqttc::v5::EventLoop,
) {
    if !shared.withdrawn.load(Ordering::Acquire) {
        withdraw(shared, link, client);
    }
    // Calls still being served finish and their replies go out (the connection keeps being
    // polled meanwhile); bounded by the grace period.
    let drained = shared.serving.calls.take_all();
    tokio::pin!(drained);
    let until = tokio::time::sleep(link.grace);
    tokio::pin!(until);
    loop {
        tokio::select! {
            _ = &mut drained => break,
            _ = &mut until => {
                tracing::warn!("calls from other processes still running after the grace period");
                break;
            }
            ev = events.poll() => match ev {
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == shared.reply_topic.as_bytes() => {
                    on_reply(shared, &p);
                }
                Ok(_) => {}
                Err(_) => break,
            },
        }
    }
    shared.connected.store(false, Ordering::Release);
    if client.try_disconnect().is_ok() {
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while let Ok(ev) = events.poll().await {
                if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                    break;
                }
            }
        })
        .await;
    }
}

/// A publish on this process's reply topic: completes the call waiting for it, or is counted
/// and dropped when nobody waits (its caller gave up, or the correlation is unknown).
fn on_reply(shared: &Shared, p: &Publish) {
    let kept = wire::reply_kept(p.properties.as_ref());
    let done = wire::correlation_id(p.properties.as_ref())
        .is_some_and(|id| shared.complete(id, &p.payload, kept));
    if !done {
        shared.counters.late_replies.fetch_add(1, Ordering::Relaxed);
        tracing::debug!("a reply arrived after its caller gave up; dropped");
    }
}

fn on_publish(shared: &Arc<Shared>, link: &Link, client: &AsyncClient, mut p: Publish) {
    let Ok(topic) = std::str::from_utf8(&p.topic) else {
        shared.counters.malformed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    if topic == shared.reply_topic {
        on_reply(shared, &p);
        return;
    }
    if let Some(decoded) = wire::decode_presence(topic, &p.payload) {
        let Ok((server_id, modules)) = decoded else {
            shared.counters.malformed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        on_presence(shared, link, client, server_id, modules);
        return;
    }
    let Some((module, method)) = wire::parse_call_topic(topic) else {
        shared.counters.malformed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let props = p.properties.take().unwrap_or_default();
    let call = super::serve::Call {
        module,
        method,
        props,
        payload: p.payload,
    };
    super::serve::admit(shared, &link.registry, link.default_timeout, client, call);
}

/// Most other processes this one keeps track of; announcements of more are refused.
const MAX_PROCESSES: usize = 4096;

/// A presence message: a process joined (with its modules) or left (`None`).
fn on_presence(
    shared: &Shared,
    link: &Link,
    client: &AsyncClient,
    server_id: &str,
    modules: Option<Vec<String>>,
) {
    if server_id == link.server_id
        && shared.connected.load(Ordering::Acquire)
        && !shared.withdrawn.load(Ordering::Acquire)
        && modules.as_ref() != Some(&link.registry.module_names())
    {
        // Only this process speaks for its server id: anything else on its topic is answered
        // by announcing again. A stale last will of an earlier connection (empty) always is;
        // other words (another client's) at most once a second.
        if modules.is_none() || shared.reannounce.due(Duration::from_secs(1)) {
            announce(shared, link, client);
        } else {
            tracing::debug!(server_id = %server_id, "another client keeps writing this process's presence");
        }
        return;
    }
    let mut presence = shared.presence.write_locked();
    let Some(modules) = modules else {
        if presence.remove(server_id).is_some() {
            tracing::info!(server_id = %server_id, "a process left");
        }
        return;
    };
    if presence.get(server_id) == Some(&modules) {
        return;
    }
    if presence.len() >= MAX_PROCESSES && !presence.contains_key(server_id) {
        shared.counters.malformed.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(server_id = %server_id, "presence refused: {MAX_PROCESSES} processes known already");
        return;
    }
    tracing::info!(server_id = %server_id, ?modules, "a process joined");
    presence.insert(server_id.to_string(), modules);
}
