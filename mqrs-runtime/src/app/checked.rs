//! The settings the app reads, checked once when it is built: the sampling settings, the OTLP
//! endpoint and the broker URLs are parsed here and nowhere else. What does not pass is logged
//! when the app is built (which then goes on without it) and refuses `App::start`.

use crate::config::{parse_url, BrokerUrl, Config};
use crate::trace::export::traces_url;
use crate::trace::Sampling;

/// The parsed settings, and why the app must not start when some did not parse.
pub(super) struct Checked {
    /// How new traces are sampled (the defaults when the settings were refused).
    pub(super) sampling: Sampling,
    /// The OTLP traces URL spans are exported to, if any.
    pub(super) otlp: Option<String>,
    /// The broker nodes to connect to, when the settings name standard brokers.
    pub(super) broker_urls: Result<Vec<(String, u16)>, String>,
    /// The first setting that refuses `App::start`, in the order `start` reports them.
    pub(super) refusal: Option<Refusal>,
}

/// A setting that refuses `App::start`, every time it is asked.
#[derive(Clone, Debug)]
pub(super) enum Refusal {
    /// `[trace] otlp_export` is not an http:// URL.
    Otlp(String),
    /// The sampling settings are out of range.
    Sampling(String),
}

impl Refusal {
    /// The error `App::start` answers with.
    pub(super) fn error(&self) -> super::AppError {
        match self {
            Refusal::Otlp(e) => super::AppError::Otlp(e.clone()),
            Refusal::Sampling(e) => super::AppError::Sampling(e.clone()),
        }
    }
}

/// Checks `config` once.
pub(super) fn check(config: &Config) -> Checked {
    let mut refusal = None;
    let t = &config.trace;
    let otlp = match (!t.otlp_export.is_empty()).then(|| traces_url(&t.otlp_export)) {
        Some(Ok(url)) => Some(url),
        Some(Err(e)) => {
            tracing::error!(error = %e, "OTLP export is off");
            refusal.get_or_insert(Refusal::Otlp(e));
            None
        }
        None => None,
    };
    let sampling = Sampling::from_config(t).unwrap_or_else(|e| {
        tracing::error!(error = %e, "sampling settings ignored");
        refusal.get_or_insert(Refusal::Sampling(e));
        Sampling::default()
    });
    let broker_urls = match &config.broker.url {
        BrokerUrl::Urls(urls) if urls.is_empty() => Err("the broker URL list is empty".into()),
        BrokerUrl::Urls(urls) => urls.iter().map(|u| parse_url(u)).collect(),
        BrokerUrl::Embedded | BrokerUrl::None => Ok(Vec::new()),
    };
    Checked {
        sampling,
        otlp,
        broker_urls,
        refusal,
    }
}
