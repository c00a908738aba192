//! [`AppBuilder`]: settings, the transport to other processes, modules and the tracing hook,
//! gathered before the app exists.

use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::watch;

use super::error::AppError;
use super::handle::{Addrs, App, Inner};
use super::module::RpcModule;
use crate::client::Caller;
use crate::config::{BrokerUrl, Config};
use crate::gate::{GateRequest, TracingHook};
use crate::red::Red;
use crate::server::Registry;
use crate::session::Session;
use crate::trace::{SpanSink, Tracing};
use crate::transport::{InProcess, MqttTransport, Router, Transport};
use mqrs_base::history::{History, Limits as HistoryLimits};

type AddModule = Box<dyn FnOnce(&App) -> Result<(), AppError>>;

/// Builds an [`App`]; made by [`App::builder`].
///
/// ```
/// use mqrs_runtime::{rpc, rpc_module, App, Config, Session};
///
/// pub struct Echo;
///
/// #[rpc_module]
/// impl Echo {
///     #[rpc(name = "HD_Echo")]
///     async fn echo(&self, _session: Session, text: String) -> Result<String, String> {
///         Ok(text)
///     }
/// }
///
/// let app = App::builder()
///     .config(Config::ephemeral())
///     .module(|_app| Echo)
///     .on_request_tracing(|session, _request| !session.is_guest())
///     .build()
///     .expect("app");
/// assert_eq!(app.handlers(), ["Echo/HD_Echo"]);
/// ```
#[must_use = "an AppBuilder does nothing until .build()"]
#[derive(Default)]
pub struct AppBuilder {
    config: Config,
    remote: Option<Arc<dyn Transport>>,
    modules: Vec<AddModule>,
    hook: Option<TracingHook>,
}

impl AppBuilder {
    /// The settings (default: [`Config::default`]).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The transport for calls to modules that do not run in this process (an MQTT broker).
    /// Without one, such calls fail with "unknown module".
    pub fn remote(mut self, transport: Arc<dyn Transport>) -> Self {
        self.remote = Some(transport);
        self
    }

    /// Adds a module, made from the app handle once the app exists (modules usually keep one
    /// to make calls): `.module(Login::new)` with `fn new(app: &App) -> Login`.
    pub fn module<M: RpcModule>(mut self, make: impl FnOnce(&App) -> M + 'static) -> Self {
        self.modules
            .push(Box::new(move |app: &App| app.add_module(make(app))));
        self
    }

    /// The rule that decides which client requests the gate traces (default: all).
    pub fn on_request_tracing(
        mut self,
        hook: impl Fn(&Session, &GateRequest<'_>) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.hook = Some(Arc::new(hook));
        self
    }

    /// The app, with its modules added.
    pub fn build(mut self) -> Result<App, AppError> {
        let modules = std::mem::take(&mut self.modules);
        let app = self.build_empty();
        for add in modules {
            add(&app)?;
        }
        Ok(app)
    }

    /// The app without the modules given to [`AppBuilder::module`].
    pub(super) fn build_empty(self) -> App {
        let config = self.config;
        let registry = Arc::new(Registry::default());
        let red = Arc::new(if config.trace.metrics {
            Red::with_limit(config.trace.metrics_max_bytes.max(1))
        } else {
            Red::disabled()
        });
        let history = config.trace.metrics.then(|| {
            Arc::new(History::new(
                HistoryLimits {
                    per_connection: config.trace.history_per_connection,
                    max_entries: config.trace.history_max_entries,
                    keep_closed_ms: config.trace.history_keep_s.saturating_mul(1000),
                },
                red.clone(),
            ))
        });
        #[cfg(feature = "viewer")]
        let store = super::viewer::make_store(&config.trace, &red, history.as_ref());
        #[cfg(feature = "viewer")]
        let sink = store.clone().map(|s| s as Arc<dyn SpanSink>);
        #[cfg(not(feature = "viewer"))]
        let sink: Option<Arc<dyn SpanSink>> = None;
        // Settings that do not parse are logged here and refuse `App::start`.
        let checked = super::checked::check(&config);
        let mut tracing = Tracing::new(sink)
            .with_sampling(checked.sampling)
            .with_red(red)
            .with_history(history);
        if let Some(url) = &checked.otlp {
            if let Err(e) = tracing.export_to(url, config.trace.otlp_queue) {
                tracing::error!(error = %e, "OTLP export is off");
            }
        }
        let tracing = Arc::new(tracing);
        // A remote transport given here wins; otherwise the broker settings decide.
        let mqtt = match (&self.remote, &config.broker.url) {
            (None, BrokerUrl::Embedded | BrokerUrl::Urls(_)) => Some(MqttTransport::new(
                config.broker.clone(),
                &config.app.server_id,
            )),
            _ => None,
        };
        let remote = self
            .remote
            .or_else(|| mqtt.clone().map(|m| Arc::new(m) as Arc<dyn Transport>));
        let router = Router::new(
            InProcess::new(registry.clone()),
            Arc::from(config.app.server_id.as_str()),
            remote,
        );
        let caller = Caller::new(
            Arc::new(router),
            tracing.clone(),
            &config.app.name,
            config.rpc_timeout(),
            (config.rpc.max_attempts, config.rpc_hedge_after()),
        );
        let hook = self
            .hook
            .unwrap_or_else(|| Arc::new(|_: &Session, _: &GateRequest<'_>| true));
        App {
            inner: Arc::new(Inner {
                registry,
                caller,
                tracing,
                hook: Arc::new(RwLock::new(hook)),
                on_connect: Arc::default(),
                pages: Arc::default(),
                modules: Mutex::new(Vec::new()),
                shutdown: watch::channel(false).0,
                addrs: Mutex::new(Addrs::default()),
                tasks: Mutex::new(Vec::new()),
                gate_counters: Mutex::new(None),
                mqtt,
                broker: tokio::sync::Mutex::new(None),
                broker_limits: std::sync::Mutex::new(None),
                link_stop: watch::channel(false).0,
                link_task: Mutex::new(None),
                refusal: checked.refusal,
                broker_urls: checked.broker_urls,
                #[cfg(feature = "viewer")]
                store,
                config,
            }),
        }
    }
}

impl App {
    /// An app with these settings, no modules yet, and no transport beyond this process: every
    /// module it calls must be added to it. [`App::builder`] sets more.
    pub fn new(config: Config) -> App {
        App::builder().config(config).build_empty()
    }

    /// Starts building an app: settings, the transport to other processes, modules, the
    /// tracing hook.
    ///
    /// ```
    /// # use mqrs_runtime::{App, Config};
    /// let app = App::builder().config(Config::ephemeral()).build().expect("app");
    /// # let _ = app;
    /// ```
    pub fn builder() -> AppBuilder {
        AppBuilder::default()
    }
}
