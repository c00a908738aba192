//! Calls between processes through an MQTT 5 broker, and the broker a process can embed
//! (`broker.rs`). The topics, payloads and properties are in `wire.rs`; the connection that
//! reconnects, subscribes and serves incoming calls is in `link.rs`, over one MQTT 5 session
//! (`conn.rs`, with rumqttc's packet codec) whose writes are coalesced (`outbox.rs`).
//!
//! [`MqttTransport`] is the remote side of the app's router: a call to a module that does not
//! run in this process is published on the module's request topic with a reply address and a
//! correlation id; the reply (or its absence until the deadline) completes it. A reply whose
//! correlation is unknown, or that arrives after its caller gave up, is dropped and counted,
//! never delivered to another call.

pub(crate) mod broker;
mod budget;
mod conn;
mod link;
mod outbox;
mod presence;
mod remote;
mod serve;
mod shared;
pub(crate) mod wire;

pub use broker::EmbeddedBrokerStats;
pub(crate) use link::Link;
pub(crate) use remote::MqttTransport;
pub use shared::BrokerStats;
