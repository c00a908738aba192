//! Settings, in the spirit of mqant's `server.conf`: a TOML file (comments allowed), every key
//! optional with a sensible default, unknown keys refused so typos do not pass silently.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// Everything an app can be configured with.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// App-wide settings.
    pub app: AppSection,
    /// RPC settings.
    pub rpc: RpcSection,
    /// The client-facing MQTT gate.
    pub gate: GateSection,
    /// The embedded trace store and viewer.
    pub trace: TraceSection,
}

/// `[app]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppSection {
    /// Service name for spans not started by a module.
    pub name: String,
    /// Id of this server, written into the sessions its gate creates.
    pub server_id: String,
}

/// `[rpc]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RpcSection {
    /// Call timeout in milliseconds (mqant's `RpcExpired`).
    pub timeout_ms: u64,
}

/// `[gate]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GateSection {
    /// Run the gate.
    pub enabled: bool,
    /// MQTT over TCP listen address.
    pub tcp_addr: SocketAddr,
    /// Largest MQTT packet accepted, in bytes, checked from the fixed header.
    pub max_packet_size: usize,
    /// Time allowed for the first packet (CONNECT), in milliseconds.
    pub connect_timeout_ms: u64,
    /// Most open client connections.
    pub max_connections: usize,
    /// Most requests of one connection being handled at once; more wait (backpressure).
    pub max_inflight: usize,
    /// Capacity of each connection's outgoing queue, in packets.
    pub outgoing_queue: usize,
}

/// `[trace]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TraceSection {
    /// Keep finished spans in the embedded store.
    pub store: bool,
    /// Serve the viewer and Jaeger-compatible API.
    pub viewer: bool,
    /// Viewer listen address.
    pub viewer_addr: SocketAddr,
    /// Most traces kept.
    pub max_traces: usize,
    /// Most bytes kept (approximate).
    pub max_bytes: usize,
    /// Most spans kept per trace.
    pub max_spans_per_trace: usize,
}

impl Default for AppSection {
    fn default() -> Self {
        AppSection {
            name: "mqrs".into(),
            server_id: "gate-1".into(),
        }
    }
}

impl Default for RpcSection {
    fn default() -> Self {
        RpcSection { timeout_ms: 3000 }
    }
}

impl Default for GateSection {
    fn default() -> Self {
        GateSection {
            enabled: true,
            tcp_addr: SocketAddr::from(([127, 0, 0, 1], 3563)),
            max_packet_size: 1 << 20,
            connect_timeout_ms: 5000,
            max_connections: 10_000,
            max_inflight: 64,
            outgoing_queue: 256,
        }
    }
}

impl Default for TraceSection {
    fn default() -> Self {
        TraceSection {
            store: true,
            viewer: true,
            viewer_addr: SocketAddr::from(([127, 0, 0, 1], 7700)),
            max_traces: 10_000,
            max_bytes: 64 << 20,
            max_spans_per_trace: 2_000,
        }
    }
}

/// A settings file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read settings file {path}: {source}")]
    Read {
        /// File path.
        path: String,
        /// I/O error.
        source: std::io::Error,
    },
    /// The file is not valid settings.
    #[error("invalid settings in {path}: {message}")]
    Parse {
        /// File path.
        path: String,
        /// What is wrong, with line and column.
        message: String,
    },
}

impl Config {
    /// Reads settings from a TOML file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses settings from TOML text.
    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// The RPC timeout as a duration.
    pub fn rpc_timeout(&self) -> Duration {
        Duration::from_millis(self.rpc.timeout_ms.max(1))
    }

    /// Settings for tests and embedding: every listener on a free loopback port.
    pub fn ephemeral() -> Config {
        let mut c = Config::default();
        c.gate.tcp_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        c.trace.viewer_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_partial_file_with_comments() {
        let c = Config::from_toml(
            "# mqant-style settings\n[rpc]\ntimeout_ms = 500 # short\n[gate]\ntcp_addr = \"127.0.0.1:4000\"\n",
        )
        .expect("valid");
        assert_eq!(c.rpc_timeout(), Duration::from_millis(500));
        assert_eq!(c.gate.tcp_addr.port(), 4000);
        assert_eq!(c.gate.max_packet_size, 1 << 20);
    }

    #[test]
    fn refuses_unknown_keys_with_location() {
        let err = Config::from_toml("[gate]\ntcp_adr = \"x\"\n").expect_err("typo");
        assert!(err.contains("tcp_adr"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }
}
