//! The embedded broker: a standard MQTT 5 (and 3.1.1) broker inside the process, so one
//! command runs a whole deployment and other processes can join it on a loopback port.
//!
//! It is the `mqtt5` crate's broker: async on the app's tokio runtime, MQTT 5 with shared
//! subscriptions, a clean shutdown that the app awaits (rumqttd, the other embeddable broker,
//! blocks forever with no shutdown and pulls older axum/hyper/rustls). Persistence and `$SYS`
//! topics are off: calls are short-lived and bounded by their deadlines.

use std::net::SocketAddr;
use std::time::Duration;

use mqtt5::broker::{BrokerConfig, BrokerShutdownHandle, MqttBroker, StorageConfig};
use tokio::task::JoinHandle;

/// A running embedded broker.
pub(crate) struct EmbeddedBroker {
    addr: SocketAddr,
    shutdown: BrokerShutdownHandle,
    task: JoinHandle<()>,
}

impl EmbeddedBroker {
    /// Binds `addr` (port 0: any free port) and starts serving.
    pub(crate) async fn start(addr: SocketAddr, max_packet: usize) -> Result<Self, String> {
        let storage = StorageConfig {
            enable_persistence: false,
            ..StorageConfig::default()
        };
        let config = BrokerConfig::default()
            .with_bind_address(addr)
            .with_max_packet_size(max_packet.max(1024))
            .with_session_expiry(Duration::from_secs(60))
            .with_storage(storage)
            .with_sys_topics_enabled(false);
        let mut broker = MqttBroker::with_config(config)
            .await
            .map_err(|e| e.to_string())?;
        let local = broker
            .local_addr()
            .ok_or_else(|| "the broker has no listener".to_string())?;
        let shutdown = broker.shutdown_handle();
        let mut ready = broker.ready_receiver();
        let task = tokio::spawn(async move {
            if let Err(e) = broker.run().await {
                tracing::error!(error = %e, "embedded MQTT broker stopped on error");
            }
        });
        let _ = tokio::time::timeout(Duration::from_secs(5), ready.wait_for(|r| *r)).await;
        Ok(EmbeddedBroker {
            addr: local,
            shutdown,
            task,
        })
    }

    /// Where it listens.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops it and waits (up to 5 s) until its connections are closed.
    pub(crate) async fn stop(self) {
        self.shutdown.shutdown();
        let abort = self.task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .is_err()
        {
            // Aborted, not detached: it must not keep the port.
            abort.abort();
            tracing::warn!("the embedded MQTT broker did not stop within 5 s; aborted");
        }
    }
}
