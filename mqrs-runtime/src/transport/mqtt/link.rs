//! The broker connection of one process: connects to the configured broker (the URLs in turn
//! when there are several, with backoff, never a busy loop), subscribes the reply topic and the
//! request topics of the modules this process runs (again after every reconnection), completes
//! waiting calls from replies, and serves incoming calls on their own tasks.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::{
    Filter, LastWill, Packet, Publish, PublishProperties, SubscribeReasonCode,
};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use super::{wire, MqttTransport, Shared};
use crate::error::RpcError;
use crate::rpc::dispatch::dispatch_held;
use crate::rpc::Registry;
use crate::trace::sampling::KeepReason;

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
    let serving = Arc::new(Semaphore::new(shared.settings.max_pending.max(1)));
    let mut attempt = 0usize;
    let mut backoff = Duration::from_millis(100);
    let mut reported = false;
    'connections: loop {
        let url = &link.urls[attempt % link.urls.len()];
        let (client, mut events) = AsyncClient::new(options(&link, &shared, url), 1024);
        *shared.client.write().unwrap_or_else(|p| p.into_inner()) = Some(client.clone());
        loop {
            let withdrawn = shared.withdrawn.load(Ordering::Acquire);
            let event = tokio::select! {
                _ = shutdown.changed() => {
                    close(&shared, &link, &client, &mut events, &serving).await;
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
                    on_publish(&shared, &link, &client, &serving, p);
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
                    shared
                        .presence
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .clear();
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
    *shared.client.write().unwrap_or_else(|p| p.into_inner()) = None;
}

/// Ends the broker session cleanly: presence withdrawn, DISCONNECT, then a short wait for both
/// to go out.
async fn close(
    shared: &Shared,
    link: &Link,
    client: &AsyncClient,
    events: &mut rumqttc::v5::EventLoop,
    serving: &Arc<Semaphore>,
) {
    if !shared.withdrawn.load(Ordering::Acquire) {
        withdraw(shared, link, client);
    }
    // Calls still being served finish and their replies go out (the connection keeps being
    // polled meanwhile); bounded by the grace period.
    let permits = u32::try_from(shared.settings.max_pending.max(1)).unwrap_or(u32::MAX);
    let drained = serving.clone().acquire_many_owned(permits);
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

fn on_publish(
    shared: &Arc<Shared>,
    link: &Link,
    client: &AsyncClient,
    serving: &Arc<Semaphore>,
    mut p: Publish,
) {
    let Ok(topic) = std::str::from_utf8(&p.topic) else {
        shared.counters.malformed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    if topic == shared.reply_topic {
        on_reply(shared, &p);
        return;
    }
    if let Some((server_id, modules)) = wire::decode_presence(topic, &p.payload) {
        let mut presence = shared.presence.write().unwrap_or_else(|p| p.into_inner());
        let Some(modules) = modules else {
            if server_id == link.server_id
                && shared.connected.load(Ordering::Acquire)
                && !shared.withdrawn.load(Ordering::Acquire)
            {
                // A stale last will of an earlier connection of ours: announce again.
                announce(shared, link, client);
                return;
            }
            if presence.remove(server_id).is_some() {
                tracing::info!(server_id = %server_id, "a process left");
            }
            return;
        };
        if presence.get(server_id) != Some(&modules) {
            tracing::info!(server_id = %server_id, ?modules, "a process joined");
            presence.insert(server_id.to_string(), modules);
        }
        return;
    }
    let Some((module, method)) = wire::parse_call_topic(topic) else {
        shared.counters.malformed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    // The properties are taken apart: the call keeps their strings without copying them.
    let mut props = p.properties.take().unwrap_or_default();
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
        tracing::debug!(
            topic,
            "request refused: its response topic is not under mqrs/reply/ (or is over 256 bytes), or its correlation data is over 64 bytes"
        );
        return;
    }
    let deadline = wire::request_deadline(Some(&props), link.default_timeout);
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
        payload: p.payload,
    };
    let (shared, client, registry) = (shared.clone(), client.clone(), link.registry.clone());
    // What the call holds while it is served: its payload, the arguments decoded from it, and
    // its trace properties.
    let held = 2 * call.payload.len()
        + call.traceparent.as_ref().map_or(0, String::len)
        + call.tracestate.as_ref().map_or(0, String::len);
    let bytes = u32::try_from(held)
        .ok()
        .and_then(|n| shared.serving_bytes.clone().try_acquire_many_owned(n).ok());
    match (serving.clone().try_acquire_owned(), bytes) {
        (Ok(permit), Some(bytes)) => {
            tokio::spawn(async move {
                let _permits = (permit, bytes);
                serve(&shared, &client, &registry, call).await;
            });
        }
        (permit, _) => {
            // Too many calls, or bytes of calls, being served: answer at once, without a task
            // or an await, so a flood costs neither memory nor time here; a full send queue
            // drops the answer.
            let limit = if permit.is_err() {
                "calls ([broker] max_pending)"
            } else {
                "bytes of calls ([broker] max_serving_bytes)"
            };
            let busy = Err(RpcError::Unavailable(format!(
                "`{}`: this process is serving too many {limit}",
                call.name
            )));
            if let Some((topic, correlation)) = call.reply_to {
                let props = PublishProperties {
                    correlation_data: correlation,
                    ..Default::default()
                };
                let payload = wire::encode_reply(&busy);
                if let Err(e) =
                    client.try_publish_with_properties(topic, shared.qos(), false, payload, props)
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
    deadline: std::time::Instant,
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

async fn serve(shared: &Shared, client: &AsyncClient, registry: &Registry, call: Incoming) {
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

/// Runs a served call until its deadline; past it the caller has given up, so the handler is
/// cancelled (its span says so) and its permit returns: a hung handler cannot starve others.
async fn run_until<S>(
    deadline: std::time::Instant,
    name: &str,
    call: impl std::future::Future<Output = (Result<Vec<u8>, RpcError>, Option<S>)>,
) -> (Result<Vec<u8>, RpcError>, Option<S>) {
    tokio::time::timeout_at(deadline.into(), call)
        .await
        .unwrap_or_else(|_| (Err(RpcError::DeadlineExceeded(name.to_string())), None))
}

async fn reply(
    shared: &Shared,
    client: &AsyncClient,
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
    if std::time::Instant::now() >= call.deadline {
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
    if let Err(e) = client
        .publish_with_properties(topic, shared.qos(), false, payload, props)
        .await
    {
        tracing::debug!(method = %call.name, error = %e, "cannot publish a reply");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use rumqttc::v5::mqttbytes::QoS;

    use super::*;
    use crate::config::BrokerSection;
    use crate::trace::{StoreLimits, TraceStore, Tracing};
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
        // A client whose one-message request queue is already full: publishing the reply
        // waits there until the event loop (the queue's reader) is dropped.
        let (client, events) = AsyncClient::new(MqttOptions::new("t", "127.0.0.1", 1), 1);
        client
            .try_publish("filler", QoS::AtMostOnce, false, Vec::new())
            .expect("the queue takes one message");
        let payload = wire::encode_request(&Session::default(), None, b"[]").expect("encodes");
        let call = Incoming {
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            tracestate: None,
            name: "M/f".into(),
            module_len: 1,
            deadline: Instant::now() + Duration::from_secs(30),
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
        drop(events);
        serving.await.expect("serve ends");
        let t = store.trace(trace_id).expect("the SERVER span is stored");
        let span = t.spans.iter().find(|s| s.name == "M/f").expect("M/f");
        assert_eq!(span.kind, "server");
        assert_eq!(span.parent_span_id, Some(0xb7ad_6b71_6920_3331));
    }
}
