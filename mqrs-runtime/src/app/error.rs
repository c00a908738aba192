//! [`AppError`]: why the app could not start or take a module.

use std::net::SocketAddr;

/// Why the app could not start or take a module.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The name belongs to a built-in module.
    #[error("the module name `{0}` is reserved for the built-in gate")]
    ReservedName(&'static str),
    /// Two modules with one name.
    #[error("a module named `{0}` is already added")]
    DuplicateModule(&'static str),
    /// Some `#[rpc]` registrations of a module are missing from the binary.
    #[error(
        "module `{module}` declares handlers {missing:?} but their registrations are not linked \
         into this binary; reference the crate that defines `{module}` from your binary \
         (e.g. `use that_crate as _;`)"
    )]
    MissingRegistrations {
        /// Module name.
        module: &'static str,
        /// Handlers whose registration is missing.
        missing: Vec<&'static str>,
    },
    /// A module's `on_start` failed.
    #[error("module `{module}` failed to start: {reason}")]
    ModuleStart {
        /// Module name.
        module: &'static str,
        /// What its `on_start` returned.
        reason: String,
    },
    /// The embedded MQTT broker could not start.
    #[error(
        "cannot start the embedded MQTT broker on {addr}: {reason}; if another process already \
         runs it there, start this one with --broker mqtt://{addr} (settings: [broker] url)"
    )]
    Broker {
        /// Address tried.
        addr: SocketAddr,
        /// What the broker said.
        reason: String,
    },
    /// The OTLP export endpoint is not usable.
    #[error("OTLP export: {0}")]
    Otlp(String),
    /// A sampling setting of `[trace]` is out of range.
    #[error("tracing settings: {0}")]
    Sampling(String),
    /// The broker settings are not usable.
    #[error("broker settings: {0}")]
    BrokerSettings(String),
    /// `[trace] data_dir` cannot be read or written.
    #[error("trace data directory {0} cannot be used (the log says why)")]
    DataDir(String),
    /// The gate's TLS certificate or key cannot be used.
    #[error("gate TLS: {}: {reason}", path.display())]
    Tls {
        /// The file at fault.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A listener could not be opened.
    #[error("cannot listen for {what} on {addr}: {source}")]
    Bind {
        /// Which service.
        what: &'static str,
        /// Address tried.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}
