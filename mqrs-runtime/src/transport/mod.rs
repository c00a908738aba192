//! Transports carry a call from the caller to the process that runs the handler.
//!
//! A call addresses a [`Target`] (a module, optionally pinned to one server id, mqant's
//! `Module@serverId`) and a method. The [`Transport`] contract has request/reply and
//! fire-and-forget; the deadline travels with every call. [`InProcess`] serves the modules of
//! this process; the app's router sends every other call to the remote transport it was built
//! with (an MQTT broker), so a call to a module in the same process never leaves it.

mod contract;
mod inproc;
pub(crate) mod mqtt;
mod router;

pub use contract::{Request, Target, Transport};
pub(crate) use inproc::InProcess;
pub(crate) use mqtt::MqttTransport;
pub use mqtt::{BrokerStats, EmbeddedBrokerStats};
pub(crate) use router::Router;
