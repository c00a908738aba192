//! The broker connection of one process: connects to the configured broker (the URLs in turn
//! when there are several: the next at once when one fails, then with backoff once every one
//! has failed in a row, never a busy loop), subscribes the reply topic and the
//! request topics of the modules this process runs (again after every reconnection), completes
//! waiting calls from replies, keeps track of the other processes' presence, and hands
//! incoming calls to `serve`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use mqrs_base::sync::RwLocked;
use rumqttc::v5::mqttbytes::v5::{Filter, LastWill, Packet, Publish, SubscribeReasonCode};
use rumqttc::v5::mqttbytes::QoS;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::conn::{Connection, Options};
use super::outbox::Sender;
use super::presence::{Change, MAX_PROCESSES};
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

fn options(link: &Link, shared: &Shared) -> Options {
    // rumqttc's default packet limit is 10 KiB; allow the payload limit plus properties.
    let max = u32::try_from(shared.settings.max_payload + 64 * 1024).unwrap_or(u32::MAX);
    Options {
        // Stable per server id: a reconnection takes the old session over, so the broker
        // sends the old connection's last will (empty presence) before the new one announces
        // itself.
        client_id: format!("mqrs-{}", link.server_id),
        keep_alive: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(3),
        max_incoming: max,
        // If this process dies, the broker clears its presence for it.
        will: Some(LastWill::new(
            wire::presence_topic(&link.server_id),
            Vec::new(),
            QoS::AtLeastOnce,
            true,
            None,
        )),
        // Room for a few of the largest payloads, and for thousands of small calls at once.
        send_limit: (4 * max as usize).max(8 << 20),
    }
}

/// The subscriptions of this process: its reply topic and its modules' request topics.
/// What a new connection subscribes, the calls' first: a broker cluster replaces a moved
/// client's routes as it takes each subscription, and asking the nodes for retained presence
/// can wait on a dead one. `with_shared`: the shared subscriptions too (a process back after
/// a lost connection, which still knows who runs what).
fn filters(shared: &Shared, link: &Link, with_shared: bool) -> Vec<Filter> {
    let qos = shared.qos();
    let mut f = vec![Filter::new(shared.reply_topic.clone(), qos)];
    // Calls pinned to this process come only from callers that heard its presence, which it
    // announces once synced; on its first connection the shared subscriptions wait for that
    // too ([`synced`]). Once withdrawn, pinned calls still come (from callers that have not
    // yet heard it is leaving) and are served until it is gone.
    for module in link.registry.module_names() {
        let [shared_sub, pinned] = wire::call_subscriptions(&module, &link.server_id);
        f.push(Filter::new(pinned, qos));
        if with_shared {
            f.push(Filter::new(shared_sub, qos));
        }
    }
    f.push(Filter::new(
        format!("{}+", wire::PRESENCE_PREFIX),
        QoS::AtLeastOnce,
    ));
    f.push(Filter::new(sync_topic(shared), QoS::AtLeastOnce));
    f
}

/// This connection's sync topic: under [`wire::SYNC_PREFIX`], as unique as the reply topic.
fn sync_topic(shared: &Shared) -> String {
    let own = shared
        .reply_topic
        .strip_prefix(wire::REPLY_PREFIX)
        .unwrap_or(&shared.reply_topic);
    format!("{}{own}", wire::SYNC_PREFIX)
}

/// Subscribes, then sends this process the sync message: brokers deliver the retained
/// presence of the others, queued when the subscription was made, before it (a SUBACK or
/// PUBACK may overtake them: the embedded broker writes those at once).
/// `with_shared` as in [`filters`].
fn subscribe(shared: &Shared, link: &Link, client: &Sender, with_shared: bool) {
    if let Err(e) = client.subscribe_many(filters(shared, link, with_shared)) {
        tracing::warn!(error = %e, "cannot subscribe at the broker");
    }
    if let Err(e) = client.try_publish(
        sync_topic(shared),
        QoS::AtLeastOnce,
        false,
        Vec::new(),
        None,
    ) {
        tracing::warn!(error = %e, "cannot send the sync message");
    }
}

/// The others' presence is in: join the shared subscriptions (a call taken from them can now
/// reach any module another process runs) unless `joined` already, and announce this process.
/// Not once withdrawn.
fn synced(shared: &Shared, link: &Link, client: &Sender, joined: bool) {
    // Back after a lost connection: who did not announce themselves again left meanwhile.
    let gone = shared.presence.write_locked().forget_unconfirmed();
    for server_id in gone {
        tracing::debug!(server_id = %server_id, "a process left while this one was away");
        shared.fail_pinned(&server_id);
    }
    if !joined && !shared.withdrawn.load(Ordering::Acquire) {
        let filters: Vec<Filter> = link
            .registry
            .module_names()
            .iter()
            .map(|m| {
                let [shared_sub, _pinned] = wire::call_subscriptions(m, &link.server_id);
                Filter::new(shared_sub, shared.qos())
            })
            .collect();
        if !filters.is_empty() {
            if let Err(e) = client.subscribe_many(filters) {
                tracing::warn!(error = %e, "cannot subscribe at the broker");
            }
        }
    }
    announce(shared, link, client);
}

/// This process's presence message: what it announces, no modules once it has withdrawn
/// (it still finishes the calls it holds), empty once it is gone.
fn presence(shared: &Shared, link: &Link) -> (String, Vec<u8>) {
    let payload = if shared.gone.load(Ordering::Acquire) {
        Vec::new()
    } else if shared.withdrawn.load(Ordering::Acquire) {
        wire::encode_presence(&wire::Announced::default())
    } else {
        wire::encode_presence(&link.registry.announced())
    };
    (wire::presence_topic(&link.server_id), payload)
}

/// Publishes this process's presence (retained, QoS 1) without waiting.
fn announce(shared: &Shared, link: &Link, client: &Sender) {
    let (topic, payload) = presence(shared, link);
    if let Err(e) = client.try_publish(topic, QoS::AtLeastOnce, true, payload, None) {
        tracing::warn!(error = %e, "cannot announce this process's modules");
    }
}

/// Stops taking new calls from other processes: out of the shared subscriptions (the broker
/// gives their calls to the other instances) and no modules announced (callers stop pinning
/// calls here). Calls already on their way are still served.
fn withdraw(shared: &Shared, link: &Link, client: &Sender) {
    shared.withdrawn.store(true, Ordering::Release);
    for module in link.registry.module_names() {
        let [shared_sub, _pinned] = wire::call_subscriptions(&module, &link.server_id);
        let _ = client.unsubscribe(shared_sub);
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
    // Failures in a row since the last connection: the next node is tried at once until each
    // has failed once, then after the backoff.
    let mut failed_in_row = 0usize;
    let mut backoff = Duration::from_millis(100);
    let mut reported = false;
    let opts = options(&link, &shared);
    loop {
        let url = link.urls[attempt % link.urls.len()].clone();
        let opened = tokio::select! {
            _ = shutdown.changed() => break,
            r = Connection::open(&url.0, url.1, &opts) => r,
        };
        let failed = match opened {
            Ok((mut conn, ack)) => {
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
                reported = false;
                let client = conn.sender();
                *shared.client.write_locked() = Some(client.clone());
                // Back after a lost connection, still knowing who runs what: take calls from
                // the shared subscriptions at once rather than after the sync.
                let early = !shared.withdrawn.load(Ordering::Acquire)
                    && !*link.withdraw.borrow()
                    && shared.presence.read_locked().reconnecting();
                subscribe(&shared, &link, &client, early);
                let opened_at = std::time::Instant::now();
                let served =
                    serve_connection(&shared, &mut link, &mut shutdown, &ready, &mut conn, early)
                        .await;
                // A connection that held for a while starts a new row of failures; one the
                // broker closes at once (a refusal after CONNACK, two processes taking the same
                // client id from each other) does not, so that cannot become a busy loop.
                if opened_at.elapsed() >= Duration::from_secs(1) {
                    backoff = Duration::from_millis(100);
                    failed_in_row = 0;
                }
                match served {
                    None => {
                        close(&shared, &link, conn).await;
                        break;
                    }
                    Some(e) => e,
                }
            }
            Err(e) => e,
        };
        shared
            .counters
            .connection_errors
            .fetch_add(1, Ordering::Relaxed);
        let was = shared.connected.load(Ordering::Acquire);
        shared.set_up(false);
        *shared.client.write_locked() = None;
        shared.fail_sent("the connection to the MQTT broker was lost");
        // Processes may leave while we are away: once back, those whose retained presence
        // did not come again are forgotten.
        shared.presence.write_locked().unconfirm_all();
        // Fail over to the next node of the cluster, if there are several: at once while some
        // node has not failed in this row (a process whose node died serves again as soon as
        // the next one takes it), after the backoff once all have.
        attempt += 1;
        failed_in_row += 1;
        let wait = failed_in_row >= link.urls.len();
        let next = &link.urls[attempt % link.urls.len()];
        if was || !reported {
            tracing::warn!(
                broker = %format!("mqtt://{}:{}", url.0, url.1),
                error = %failed,
                next = %format!("mqtt://{}:{}", next.0, next.1),
                retry_in_ms = if wait { backoff.as_millis() as u64 } else { 0 },
                "MQTT broker unreachable; calls to other processes wait for it up to [broker] connect_wait_ms, then fail"
            );
            reported = true;
        } else {
            tracing::debug!(error = %failed, "MQTT broker still unreachable");
        }
        if wait {
            failed_in_row = 0;
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
    shared.set_stopped();
    shared.fail_all("the app is stopping");
    *shared.client.write_locked() = None;
}

/// Handles one connection's packets until it fails (the error) or the app stops (`None`);
/// `joined`: its shared subscriptions were made with the others ([`filters`]).
async fn serve_connection(
    shared: &Arc<Shared>,
    link: &mut Link,
    shutdown: &mut watch::Receiver<bool>,
    ready: &watch::Sender<bool>,
    conn: &mut Connection,
    joined: bool,
) -> Option<super::conn::ConnError> {
    let client = conn.sender();
    let sync_topic = sync_topic(shared);
    // Until the sync message is back, this process neither announces itself nor takes calls
    // from the shared subscriptions; a broker that does not send it back gets 2 s.
    let mut is_synced = false;
    let connected_at = std::time::Instant::now();
    let sync_wait = tokio::time::sleep(Duration::from_secs(2));
    tokio::pin!(sync_wait);
    loop {
        let withdrawn = shared.withdrawn.load(Ordering::Acquire);
        let packet = tokio::select! {
            _ = shutdown.changed() => return None,
            () = &mut sync_wait, if !is_synced => {
                tracing::warn!("the broker did not send this process's sync message back within 2 s; announcing anyway");
                is_synced = true;
                synced(shared, link, &client, joined);
                continue;
            }
            r = link.withdraw.changed(), if !withdrawn => {
                if r.is_ok() && *link.withdraw.borrow() {
                    withdraw(shared, link, &client);
                }
                continue;
            }
            p = conn.poll() => p,
        };
        match packet {
            Ok(Packet::SubAck(ack)) => {
                let refused = ack
                    .return_codes
                    .iter()
                    .filter(|c| !matches!(c, SubscribeReasonCode::Success(_)))
                    .count();
                tracing::debug!(
                    after_ms = connected_at.elapsed().as_millis() as u64,
                    filters = ack.return_codes.len(),
                    "subscribed"
                );
                if refused > 0 {
                    tracing::error!(
                        refused,
                        codes = ?ack.return_codes,
                        "the broker refused subscriptions: some calls to this process will time out"
                    );
                }
            }
            Ok(Packet::PubAck(_)) => {
                // Once synced, the presence announcement is the QoS 1 publish acknowledged:
                // others hear of this process from now on.
                if is_synced && !shared.connected.load(Ordering::Acquire) {
                    shared.set_up(true);
                    let _ = ready.send(true);
                }
            }
            Ok(Packet::Publish(p)) if p.topic == sync_topic.as_bytes() => {
                if !is_synced {
                    tracing::debug!(
                        after_ms = connected_at.elapsed().as_millis() as u64,
                        "the sync message is back: joining the shared subscriptions and announcing"
                    );
                    is_synced = true;
                    synced(shared, link, &client, joined);
                }
            }
            Ok(Packet::Publish(p)) => on_publish(shared, link, &client, p),
            Ok(_) => {}
            Err(e) => return Some(e),
        }
    }
}

/// How long a stopping process keeps serving as before once it has withdrawn: the broker
/// may have given it calls of the shared subscriptions before it left them, and callers that
/// had not yet heard of the withdrawal may have pinned calls to it.
const SETTLE: Duration = Duration::from_millis(300);

/// Ends the broker session cleanly: presence withdrawn, calls that still arrive served for
/// [`SETTLE`], then until none is being served (up to the grace period), then presence emptied
/// (gone) and DISCONNECT after everything queued.
async fn close(shared: &Arc<Shared>, link: &Link, mut conn: Connection) {
    let client = conn.sender();
    if !shared.withdrawn.load(Ordering::Acquire) {
        withdraw(shared, link, &client);
    }
    let started = tokio::time::Instant::now();
    let settled = started + SETTLE.min(link.grace);
    let give_up = started + link.grace;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    loop {
        let now = tokio::time::Instant::now();
        if now >= settled && shared.serving.calls.in_use() == 0 {
            break;
        }
        if now >= give_up {
            tracing::warn!("calls from other processes still running after the grace period");
            break;
        }
        tokio::select! {
            _ = tick.tick() => {}
            p = conn.poll() => match p {
                Ok(Packet::Publish(p)) => on_publish(shared, link, &client, p),
                Ok(_) => {}
                Err(_) => break,
            },
        }
    }
    // Everything held is answered: now gone (an empty retained presence, as the last will
    // would say), so callers waiting on this process fail at once instead of at their deadline.
    shared.gone.store(true, Ordering::Release);
    announce(shared, link, &client);
    shared.set_up(false);
    conn.close(Duration::from_millis(500)).await;
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

fn on_publish(shared: &Arc<Shared>, link: &Link, client: &Sender, mut p: Publish) {
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

/// A presence message: a process joined (with what it announces) or left (`None`).
fn on_presence(
    shared: &Shared,
    link: &Link,
    client: &Sender,
    server_id: &str,
    said: Option<wire::Announced>,
) {
    if server_id == link.server_id
        && shared.connected.load(Ordering::Acquire)
        && !shared.withdrawn.load(Ordering::Acquire)
        && said.as_ref() != Some(&link.registry.announced())
    {
        // Only this process speaks for its server id: anything else on its topic is answered
        // by announcing again. A stale last will of an earlier connection (empty) always is;
        // other words (another client's) at most once a second.
        if said.is_none() || shared.reannounce.due(Duration::from_secs(1)) {
            announce(shared, link, client);
        } else {
            tracing::debug!(server_id = %server_id, "another client keeps writing this process's presence");
        }
        return;
    }
    let modules = said.as_ref().map(|a| a.modules.clone());
    let change = shared.presence.write_locked().apply(server_id, said);
    match change {
        Change::None => {}
        Change::Joined if modules.as_ref().is_some_and(Vec::is_empty) => {
            tracing::info!(server_id = %server_id, "a process runs no modules, or is stopping")
        }
        Change::Joined => tracing::info!(server_id = %server_id, ?modules, "a process joined"),
        Change::Left => {
            tracing::info!(server_id = %server_id, "a process left");
            // Calls waiting on it will get no reply: they fail now (and are retried elsewhere
            // when safe), not at their deadline.
            shared.fail_pinned(server_id);
        }
        Change::Full => {
            shared.counters.malformed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(server_id = %server_id, "presence refused: {MAX_PROCESSES} processes known already");
        }
    }
}
