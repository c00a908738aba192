//! Where a phase's clients connect: the gate's address, its transport (MQTT over TCP, TLS,
//! WebSocket or WSS), the certificate to trust, and the process to measure.

use std::sync::Arc;

use demo::client::GateClient;
use rumqttc::{MqttOptions, TlsConfiguration, Transport};
use tokio_rustls::rustls::ClientConfig;

/// The transport a door speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// MQTT over TCP.
    Tcp,
    /// MQTT over WebSocket, `ws://host:port/mqtt`.
    Ws,
    /// MQTT over TLS.
    Tls,
    /// MQTT over WebSocket over TLS, `wss://host:port/mqtt`.
    Wss,
}

/// One way into a gate.
#[derive(Clone)]
pub struct Door {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Transport.
    pub kind: Kind,
    /// The certificate chain to trust, for TLS and WSS.
    pub tls: Option<Arc<ClientConfig>>,
    /// The gate's process, to read its CPU time and memory.
    pub pid: Option<u32>,
    /// Other processes on a request's path (modules, broker, responder), or threads of one
    /// (named by the start of their name), whose CPU time per request a phase reports too.
    pub also: Vec<Measured>,
}

impl Door {
    /// A door at `addr` (`HOST:PORT`).
    pub fn parse(addr: &str, kind: Kind, pid: Option<u32>) -> Result<Door, String> {
        let (host, port) = addr
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
            .ok_or_else(|| format!("`{addr}`: expected HOST:PORT"))?;
        Ok(Door {
            host,
            port,
            kind,
            tls: None,
            pid,
            also: Vec::new(),
        })
    }

    /// The same door, with process `pid` (named `name`) measured too.
    pub fn measuring(mut self, name: &str, pid: u32) -> Door {
        self.also.push(Measured {
            name: name.to_string(),
            pid,
            thread: None,
        });
        self
    }

    /// The same door, with the threads of process `pid` whose name starts with `thread`
    /// measured too (as `name`).
    pub fn measuring_thread(mut self, name: &str, pid: u32, thread: &'static str) -> Door {
        self.also.push(Measured {
            name: name.to_string(),
            pid,
            thread: Some(thread),
        });
        self
    }
    /// The same door, trusting `config`'s roots.
    pub fn trusting(mut self, config: Arc<ClientConfig>) -> Door {
        self.tls = Some(config);
        self
    }

    /// Connects a client as `id` and waits for its CONNACK.
    pub async fn connect(&self, id: &str) -> Result<GateClient, String> {
        let tls = || {
            self.tls
                .clone()
                .map(TlsConfiguration::Rustls)
                .ok_or("TLS needs a certificate to trust")
        };
        let opts = match self.kind {
            Kind::Tcp => MqttOptions::new(id, &self.host, self.port),
            Kind::Tls => {
                let mut o = MqttOptions::new(id, &self.host, self.port);
                o.set_transport(Transport::Tls(tls()?));
                o
            }
            Kind::Ws | Kind::Wss => {
                let scheme = if self.kind == Kind::Ws { "ws" } else { "wss" };
                let url = format!("{scheme}://{}:{}/mqtt", self.host, self.port);
                let mut o = MqttOptions::new(id, url, self.port);
                o.set_transport(if self.kind == Kind::Ws {
                    Transport::Ws
                } else {
                    Transport::Wss(tls()?)
                });
                o
            }
        };
        GateClient::connect_with(opts)
            .await
            .map_err(|e| e.to_string())
    }
}

/// A process, or some of its threads, whose CPU time a phase reports.
#[derive(Clone)]
pub struct Measured {
    /// What the report calls it.
    pub name: String,
    /// The process.
    pub pid: u32,
    /// Only its threads whose name starts with this.
    pub thread: Option<&'static str>,
}

impl Measured {
    /// CPU seconds used so far.
    pub fn cpu_seconds(&self) -> Option<f64> {
        match self.thread {
            None => demo::harness::cpu_seconds(self.pid),
            Some(t) => demo::harness::thread_cpu_seconds(self.pid, t),
        }
    }
}

/// `count` connections to the gate at `gate` (`host:port`, plain MQTT), named `{prefix}-{i}`
/// and logged in as `{prefix}{i}`; each asks again for up to `patience` while the gate does
/// not yet know a Login instance.
pub async fn logged_in(
    count: usize,
    gate: &str,
    prefix: &str,
    patience: std::time::Duration,
) -> Result<Vec<Arc<GateClient>>, String> {
    let (host, port) = gate.rsplit_once(':').ok_or("gate address")?;
    let port: u16 = port.parse().map_err(|_| "gate port")?;
    let mut players = Vec::with_capacity(count);
    for i in 0..count {
        let c = GateClient::connect(&format!("{prefix}-{i}"), host, port)
            .await
            .map_err(|e| format!("player {i}: {e}"))?;
        c.log_in(&format!("{prefix}{i}"), patience).await?;
        players.push(Arc::new(c));
    }
    Ok(players)
}
