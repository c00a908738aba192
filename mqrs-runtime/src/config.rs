//! Settings, in the spirit of mqant's `server.conf`: a TOML file (comments allowed), every key
//! optional with a sensible default, unknown keys refused so typos do not pass silently.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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
    /// The MQTT broker that carries calls between processes.
    pub broker: BrokerSection,
    /// Which modules each process runs, by process id (mqant's `ProcessID`):
    /// `[processes.front] modules = ["gate", "chat"]`; a process started with that id runs them.
    pub processes: BTreeMap<String, ProcessSection>,
}

/// `[processes.<id>]`: one process of a deployment.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessSection {
    /// The modules it runs.
    pub modules: Vec<String>,
    /// Its server id (default: the process id).
    pub server_id: Option<String>,
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
    /// Call timeout in milliseconds (mqant's `RpcExpired`); at most an hour is used.
    pub timeout_ms: u64,
    /// Most attempts of a call to an idempotent handler (`#[rpc(idempotent)]`), each on
    /// another instance, within the call's deadline; 1 turns retries off. Default 2.
    pub max_attempts: u32,
    /// Hedging of such calls: when an attempt has not answered in this many milliseconds, the
    /// next is sent to another instance beside it and the first answer wins. 0 (the default)
    /// turns it off.
    pub hedge_after_ms: u64,
}

/// `[gate]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GateSection {
    /// Run the gate.
    pub enabled: bool,
    /// MQTT over TCP listen address.
    pub tcp_addr: SocketAddr,
    /// MQTT over WebSocket listen address (subprotocol `mqtt`, any path); `""` in a file
    /// turns it off.
    #[serde(deserialize_with = "optional_addr")]
    pub ws_addr: Option<SocketAddr>,
    /// The gate's certificate chain, PEM, leaf first. With `tls_key` it turns TLS on: MQTT
    /// over TLS on `tls_addr`, and the WebSocket listener speaks WSS.
    pub tls_cert: Option<PathBuf>,
    /// The private key of `tls_cert`, PEM (PKCS #8, PKCS #1 or SEC1).
    pub tls_key: Option<PathBuf>,
    /// MQTT over TLS listen address, used when `tls_cert` is set; `""` turns it off (WSS only).
    #[serde(deserialize_with = "optional_addr")]
    pub tls_addr: Option<SocketAddr>,
    /// Largest MQTT packet accepted, in bytes, checked from the fixed header.
    pub max_packet_size: usize,
    /// Time allowed for the first packet (CONNECT), in milliseconds.
    pub connect_timeout_ms: u64,
    /// Most open client connections.
    pub max_connections: usize,
    /// Most open client connections from one IP address, so one host cannot take every
    /// connection (players behind one NAT share an address: keep room for them).
    pub max_connections_per_ip: usize,
    /// Longest a connection may stay silent, in milliseconds, whatever keepalive it asked for
    /// (keepalive 0 included); a keepalive below it is enforced at 1.5 times its value.
    pub max_idle_ms: u64,
    /// Once a packet has started to arrive, the time allowed for the rest of it, in
    /// milliseconds; a client that stops in the middle of a packet is disconnected.
    pub packet_timeout_ms: u64,
    /// Most bytes of requests one connection may have received and not yet handled; past it
    /// the gate stops reading that client until some are done.
    pub max_request_bytes: usize,
    /// The same bound over all connections together; large packets still arriving count
    /// against it too.
    pub max_total_request_bytes: usize,
    /// Most bytes of replies waiting for one client to read them; a client that reads more
    /// slowly than it asks is disconnected (counted, logged once).
    pub max_outgoing_bytes: usize,
    /// Requests of one connection handled at once. 1 (the default): one after the other, in
    /// the order they arrived, as a player's actions must be. More: that many at once, in no
    /// particular order. Either way, more wait and the client is not read meanwhile.
    pub max_inflight: usize,
    /// Capacity of each connection's outgoing queue, in packets.
    pub outgoing_queue: usize,
    /// On shutdown, how long requests in flight may take to finish, in milliseconds.
    pub shutdown_grace_ms: u64,
}

/// `[trace]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TraceSection {
    /// Keep finished spans in the embedded store.
    pub store: bool,
    /// Count every gate request and RPC (rate, errors by type, duration histogram), whatever
    /// is sampled: what the dashboard, `/metrics` and the OTLP metrics export read. About
    /// 0.1 µs per call; off, those show only what the spans held tell.
    pub metrics: bool,
    /// Most bytes the metrics' time slots and histograms take.
    pub metrics_max_bytes: usize,
    /// Requests each gate connection keeps in its history (time, route, duration, reply size,
    /// error, trace id when kept), whatever is sampled; `[trace] metrics = false` keeps none.
    pub history_per_connection: usize,
    /// Requests kept in all connections' histories together.
    pub history_max_entries: usize,
    /// How long a closed connection's history is kept, seconds.
    pub history_keep_s: u64,
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
    /// Most traces kept for one client session: a session over it loses its own oldest
    /// trace, so one flooding client cannot wipe everyone's history.
    pub max_traces_per_session: usize,
    /// Keep the store across restarts in this directory (logs of the spans placed); empty:
    /// in memory only.
    pub data_dir: String,
    /// Send every span by OTLP/HTTP to this collector (`http://host:4318`); empty: do not.
    pub otlp_export: String,
    /// Spans waiting for export at most; more are dropped and counted.
    pub otlp_queue: usize,
    /// Serve the OTLP/HTTP collector (`POST /v1/traces`) into the store, beside the viewer.
    pub collector: bool,
    /// Collector listen address.
    pub collector_addr: SocketAddr,
    /// Largest OTLP request body accepted, in bytes (after gzip).
    pub collector_max_body: usize,
    /// Spans the collector takes may start or end at most this many seconds after this
    /// machine's clock; later ones are refused (in the answer's partial success) and counted.
    pub collector_max_skew_s: u64,
    /// Share of new traces recorded, 0.0 to 1.0, decided once at the root (after
    /// `on_request_tracing`) and followed by every span of the request in every process.
    pub sample_ratio: f64,
    /// Per root operation (`"Chat/HD_CurrentRoom"`), a ratio that replaces `sample_ratio`.
    pub sample_operations: BTreeMap<String, f64>,
    /// At most this many new traces recorded per second by this process; 0: no cap.
    pub max_traces_per_second: u32,
    /// Keep a trace the sampler skipped when one of its spans fails (error reply, handler
    /// error, timeout, panic): the spans from the root to the failure are stored.
    pub keep_failed: bool,
    /// Keep a trace the sampler skipped when one of its spans takes at least this many
    /// milliseconds; 0: never.
    pub keep_slow_ms: u64,
}

/// `[broker]`: how this process reaches modules in other processes.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerSection {
    /// `"embedded"` (a broker inside this process, on `embedded_addr`), `"none"` (this process
    /// only), or the URL of a standard broker, `"mqtt://host:port"`. A list of URLs is the
    /// nodes of one cluster: the process connects to one and fails over to the next.
    pub url: BrokerUrl,
    /// Where the embedded broker listens; other processes connect to it there.
    pub embedded_addr: SocketAddr,
    /// QoS of calls and replies, 0 or 1. Deadlines bound a lost message either way.
    pub qos: u8,
    /// Largest request or reply payload in bytes; larger ones fail with a clear error.
    pub max_payload: usize,
    /// Most calls of this process waiting for a reply from another one (and most calls from
    /// other processes being served here at once).
    pub max_pending: usize,
    /// Most bytes of calls from other processes held here while they are served (each counts
    /// twice its payload, read and decoded); past it, calls are answered "unavailable".
    pub max_serving_bytes: usize,
    /// How long `start` waits for the first broker connection before going on without it,
    /// and how long a call made while this process is not connected (before its first
    /// connection, reconnecting, moving to the next node of a cluster) waits for the
    /// connection before it fails; never past the call's deadline. Calls without a reply
    /// (`call_nr`) do not wait.
    pub connect_wait_ms: u64,
    /// Embedded broker: most retained messages held; a client past it is disconnected.
    pub embedded_max_retained: usize,
    /// Embedded broker: most bytes (topic and payload) of all retained messages together.
    pub embedded_max_retained_bytes: usize,
    /// Embedded broker: longest topic name or subscription filter, in bytes; a client past
    /// it is disconnected.
    pub embedded_max_topic_bytes: usize,
    /// Embedded broker: most subscriptions one client holds; past it, SUBACK refuses.
    pub embedded_max_subscriptions: usize,
    /// Embedded broker: most messages waiting to be written to one client (per QoS lane).
    pub embedded_client_queue: usize,
    /// Embedded broker: most bytes queued for one client behind its lanes (oldest dropped).
    pub embedded_max_queued_bytes: usize,
}

/// Where the broker is: see [`BrokerSection::url`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerUrl {
    /// No broker: every called module must run in this process.
    None,
    /// A broker inside this process.
    Embedded,
    /// The nodes of a standard broker (or cluster), tried in order.
    Urls(Vec<String>),
}

/// An address, or none when the text is empty.
fn optional_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    match text.trim() {
        "" => Ok(None),
        t => t.parse().map(Some).map_err(|e| {
            serde::de::Error::custom(format!("`{t}` is not an address like 127.0.0.1:3653: {e}"))
        }),
    }
}

impl<'de> Deserialize<'de> for BrokerUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        let urls = match Raw::deserialize(d)? {
            Raw::One(s) if s == "embedded" => return Ok(BrokerUrl::Embedded),
            Raw::One(s) if s == "none" => return Ok(BrokerUrl::None),
            Raw::One(s) => vec![s],
            Raw::Many(v) => v,
        };
        BrokerUrl::parse_list(urls).map_err(serde::de::Error::custom)
    }
}

impl BrokerUrl {
    /// Checks every entry is `mqtt://host:port` (or `tcp://`); an empty list is refused.
    pub fn parse_list(urls: Vec<String>) -> Result<BrokerUrl, String> {
        if urls.is_empty() {
            return Err("broker url list is empty".into());
        }
        for u in &urls {
            parse_url(u)?;
        }
        Ok(BrokerUrl::Urls(urls))
    }
}

impl Default for BrokerSection {
    fn default() -> Self {
        BrokerSection {
            url: BrokerUrl::Embedded,
            embedded_addr: SocketAddr::from(([127, 0, 0, 1], 1883)),
            qos: 0,
            max_payload: 1 << 20,
            max_pending: 10_000,
            max_serving_bytes: 64 << 20,
            embedded_max_retained: 4096,
            embedded_max_retained_bytes: 16 << 20,
            embedded_max_topic_bytes: 1024,
            embedded_max_subscriptions: 1024,
            embedded_client_queue: 1024,
            embedded_max_queued_bytes: 16 << 20,
            connect_wait_ms: 3000,
        }
    }
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
        RpcSection {
            timeout_ms: 3000,
            max_attempts: 2,
            hedge_after_ms: 0,
        }
    }
}

impl Default for GateSection {
    fn default() -> Self {
        GateSection {
            enabled: true,
            tcp_addr: SocketAddr::from(([127, 0, 0, 1], 3563)),
            ws_addr: Some(SocketAddr::from(([127, 0, 0, 1], 3653))),
            tls_cert: None,
            tls_key: None,
            tls_addr: Some(SocketAddr::from(([127, 0, 0, 1], 8883))),
            max_packet_size: 1 << 20,
            connect_timeout_ms: 5000,
            max_connections: 10_000,
            max_connections_per_ip: 256,
            max_idle_ms: 300_000,
            packet_timeout_ms: 10_000,
            max_outgoing_bytes: 4 << 20,
            max_request_bytes: 4 << 20,
            max_total_request_bytes: 64 << 20,
            max_inflight: 1,
            outgoing_queue: 256,
            shutdown_grace_ms: 5000,
        }
    }
}

impl Default for TraceSection {
    fn default() -> Self {
        TraceSection {
            store: true,
            metrics: true,
            metrics_max_bytes: mqrs_base::red::DEFAULT_LIMIT,
            history_per_connection: 256,
            history_max_entries: 200_000,
            history_keep_s: 3600,
            viewer: true,
            viewer_addr: SocketAddr::from(([127, 0, 0, 1], 7700)),
            max_traces: 10_000,
            max_bytes: 64 << 20,
            max_spans_per_trace: 2_000,
            max_traces_per_session: 1_000,
            data_dir: String::new(),
            otlp_export: String::new(),
            otlp_queue: 8192,
            collector: true,
            collector_addr: SocketAddr::from(([127, 0, 0, 1], 4318)),
            collector_max_body: 4 << 20,
            collector_max_skew_s: 3600,
            sample_ratio: 1.0,
            sample_operations: BTreeMap::new(),
            max_traces_per_second: 0,
            keep_failed: true,
            keep_slow_ms: 1000,
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

    /// The process `pid` of `[processes]`; the error lists the ids the settings define.
    pub fn process(&self, pid: &str) -> Result<&ProcessSection, String> {
        self.processes.get(pid).ok_or_else(|| {
            let known: Vec<&str> = self.processes.keys().map(String::as_str).collect();
            if known.is_empty() {
                format!("no process `{pid}`: the settings have no [processes] section")
            } else {
                format!(
                    "no process `{pid}` in [processes]; defined: {}",
                    known.join(", ")
                )
            }
        })
    }

    /// The RPC timeout as a duration.
    pub fn rpc_timeout(&self) -> Duration {
        Duration::from_millis(self.rpc.timeout_ms.max(1))
    }

    /// When a call of an idempotent handler sends its next attempt beside a slow one, if it
    /// does (`[rpc] hedge_after_ms`, 0: never).
    pub fn rpc_hedge_after(&self) -> Option<Duration> {
        (self.rpc.hedge_after_ms > 0).then(|| Duration::from_millis(self.rpc.hedge_after_ms))
    }

    /// Settings for tests and embedding: every listener on a free loopback port.
    pub fn ephemeral() -> Config {
        let mut c = Config::default();
        c.gate.tcp_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        c.gate.ws_addr = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        c.gate.tls_addr = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        c.trace.viewer_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        c.trace.collector_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        c.broker.embedded_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        c
    }
}

/// `host` and `port` of `mqtt://host:port` (or `tcp://host:port`); the error says what is wrong.
pub(crate) fn parse_url(url: &str) -> Result<(String, u16), String> {
    let rest = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
        .ok_or_else(|| format!("broker url `{url}` must start with mqtt://"))?;
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("broker url `{url}` needs a port, e.g. mqtt://{rest}:1883"))?;
    let port: u16 = port
        .trim_end_matches('/')
        .parse()
        .map_err(|_| format!("broker url `{url}`: `{port}` is not a port"))?;
    if host.is_empty() {
        return Err(format!("broker url `{url}` has no host"));
    }
    Ok((host.trim_matches(['[', ']']).to_string(), port))
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
        assert_eq!(c.gate.ws_addr.map(|a| a.port()), Some(3653));
        let off = Config::from_toml("[gate]\nws_addr = \"\"\n").expect("valid");
        assert_eq!(off.gate.ws_addr, None);
        let moved = Config::from_toml("[gate]\nws_addr = \"0.0.0.0:8083\"\n").expect("valid");
        assert_eq!(moved.gate.ws_addr.map(|a| a.port()), Some(8083));
        let e = Config::from_toml("[gate]\nws_addr = \"localhost\"\n").expect_err("bad");
        assert!(
            e.to_string().contains("`localhost` is not an address"),
            "{e}"
        );
    }

    #[test]
    fn processes_by_id() {
        let c = Config::from_toml(
            "[processes.front]\nmodules = [\"gate\", \"chat\"]\n[processes.back]\nmodules = [\"login\"]\nserver_id = \"login-1\"\n",
        )
        .expect("valid");
        assert_eq!(c.process("front").expect("front").modules, ["gate", "chat"]);
        assert_eq!(
            c.process("back").expect("back").server_id.as_deref(),
            Some("login-1")
        );
        let e = c.process("nope").expect_err("unknown");
        assert!(e.contains("defined: back, front"), "{e}");
    }

    #[test]
    fn broker_urls() {
        let c = |t: &str| Config::from_toml(&format!("[broker]\nurl = {t}\n"));
        assert_eq!(
            c("\"embedded\"").expect("ok").broker.url,
            BrokerUrl::Embedded
        );
        assert_eq!(c("\"none\"").expect("ok").broker.url, BrokerUrl::None);
        assert_eq!(
            c("[\"mqtt://a:1883\", \"mqtt://b:1884\"]")
                .expect("ok")
                .broker
                .url,
            BrokerUrl::Urls(vec!["mqtt://a:1883".into(), "mqtt://b:1884".into()])
        );
        for bad in ["\"http://a:1\"", "\"mqtt://a\"", "[]", "\"mqtt://:1883\""] {
            assert!(c(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refuses_unknown_keys_with_location() {
        let err = Config::from_toml("[gate]\ntcp_adr = \"x\"\n").expect_err("typo");
        assert!(err.contains("tcp_adr"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("mqtt://127.0.0.1:1883"),
            Ok(("127.0.0.1".into(), 1883))
        );
        assert_eq!(parse_url("tcp://broker:1884/"), Ok(("broker".into(), 1884)));
        assert_eq!(parse_url("mqtt://[::1]:1883"), Ok(("::1".into(), 1883)));
        for bad in [
            "127.0.0.1:1883",
            "mqtt://host",
            "mqtt://:1883",
            "mqtt://h:x",
            "http://h:1",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
