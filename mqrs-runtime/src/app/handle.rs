//! [`App`]: the handle a process's modules, gate and callers share, and what it holds.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use mqrs_base::sync::{Locked, RwLocked};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::client::Caller;
use crate::config::Config;
use crate::error::RpcError;
use crate::gate::{self, Admission, ConnectInfo, GateRequest, HookCell};
use crate::server::Registry;
use crate::session::Session;
use crate::trace::{spans, Tracing};
use crate::transport::mqtt::broker::{BrokerLimits, EmbeddedBroker};
use crate::transport::mqtt::{BrokerStats, MqttTransport};

pub(super) type StartHook =
    Box<dyn Fn(App) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;
pub(super) type StopHook = Box<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// A module the app runs: its name and its lifecycle hooks (which hold the instance).
pub(super) struct ModuleEntry {
    pub(super) name: &'static str,
    pub(super) start: StartHook,
    pub(super) stop: StopHook,
}

/// Addresses the running services listen on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Addrs {
    /// The MQTT gate, when enabled.
    pub gate: Option<SocketAddr>,
    /// The gate's MQTT over WebSocket listener (WSS when TLS is on), when enabled.
    pub gate_ws: Option<SocketAddr>,
    /// The gate's MQTT over TLS listener, when TLS is on.
    pub gate_tls: Option<SocketAddr>,
    /// The trace viewer and API, when enabled.
    pub viewer: Option<SocketAddr>,
    /// The embedded MQTT broker, when this process runs one.
    pub broker: Option<SocketAddr>,
    /// The OTLP/HTTP collector (`POST /v1/traces`), when enabled.
    pub collector: Option<SocketAddr>,
}

pub(super) struct Inner {
    pub(super) config: Config,
    pub(super) registry: Arc<Registry>,
    pub(super) caller: Caller,
    pub(super) tracing: Arc<Tracing>,
    pub(super) hook: HookCell,
    pub(super) on_connect: gate::ConnectCell,
    pub(super) pages: gate::PagesCell,
    pub(super) modules: Mutex<Vec<ModuleEntry>>,
    pub(super) shutdown: watch::Sender<bool>,
    pub(super) addrs: Mutex<Addrs>,
    pub(super) tasks: Mutex<Vec<JoinHandle<()>>>,
    pub(super) gate_counters: Mutex<Option<Arc<gate::GateCounters>>>,
    /// The broker transport, unless the app is in-process only or got another remote.
    pub(super) mqtt: Option<MqttTransport>,
    pub(super) broker: tokio::sync::Mutex<Option<EmbeddedBroker>>,
    /// The embedded broker's limits, while it runs and after (their counters stay readable).
    pub(super) broker_limits: Mutex<Option<Arc<BrokerLimits>>>,
    /// Stops the broker link, after the gate has drained (its requests may call other
    /// processes until the end).
    pub(super) link_stop: watch::Sender<bool>,
    /// The embedded trace store, when `[trace] store` is on.
    #[cfg(feature = "viewer")]
    pub(super) store: Option<Arc<mqrs_viewer::TraceStore>>,
    /// Why the app must not start: the first setting that did not parse (see `checked`).
    pub(super) refusal: Option<super::checked::Refusal>,
    /// The broker nodes `[broker] url` names, parsed once.
    pub(super) broker_urls: Result<Vec<(String, u16)>, String>,
    pub(super) link_task: Mutex<Option<JoinHandle<()>>>,
}

/// The root of a trace started by [`App::start_trace`]; ends when dropped.
pub struct RootSpan {
    pub(super) session: Session,
    pub(super) _end: spans::EndOnDrop,
}

impl RootSpan {
    /// The session that carries this trace.
    pub fn session(&self) -> &Session {
        &self.session
    }
}

/// A handle to the application; cheap to clone, shared by every module.
#[derive(Clone)]
pub struct App {
    pub(super) inner: Arc<Inner>,
}

impl App {
    /// The handle calls go through; module code can keep one instead of the whole app.
    pub fn caller(&self) -> &Caller {
        &self.inner.caller
    }

    /// Sets the rule that decides which client requests are traced (default: all).
    pub fn set_on_request_tracing(
        &self,
        hook: impl Fn(&Session, &GateRequest<'_>) -> bool + Send + Sync + 'static,
    ) {
        *self.inner.hook.write_locked() = Arc::new(hook);
    }

    /// Sets who may connect to the gate (default: everyone, as guests). The hook sees each
    /// CONNECT and answers [`Admission::Accept`], [`Admission::AcceptAs`] a user id (the
    /// session starts bound to it) or [`Admission::Refuse`] with an MQTT 3.1.1 CONNACK code.
    /// It may call modules with [`ConnectInfo::session`]: those calls nest under the trace's
    /// `gate CONNECT` span. A hook that does not answer within `[gate] connect_timeout_ms`
    /// refuses as "server unavailable"; an address refused again and again waits longer
    /// before its next CONNECT is heard.
    ///
    /// ```no_run
    /// # fn demo(app: &mqrs_runtime::App) {
    /// use mqrs_runtime::{Admission, Refusal};
    /// app.set_on_connect(|c| async move {
    ///     match (c.username.as_deref(), c.password.as_ref().map(|p| p.expose())) {
    ///         (Some(user), Some("let me in")) => Admission::AcceptAs(user.to_string()),
    ///         (None, None) => Admission::Accept,
    ///         _ => Admission::Refuse(Refusal::BadCredentials),
    ///     }
    /// });
    /// # }
    /// ```
    pub fn set_on_connect<F, Fut>(&self, hook: F)
    where
        F: Fn(ConnectInfo) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Admission> + Send + 'static,
    {
        let hook: gate::ConnectHook = Arc::new(move |c| Box::pin(hook(c)));
        *self.inner.on_connect.write_locked() = Some(hook);
    }

    /// Serves `body` as `content_type` at `path` (say `/` or `/app.js`) to plain `GET`
    /// requests on the gate's WebSocket port: a browser client served from the origin of the
    /// MQTT endpoint it uses (`ws(s)://<host>/mqtt`). A later call for the same path replaces
    /// the page.
    ///
    /// ```no_run
    /// # fn f(app: &mqrs_runtime::App) {
    /// app.add_page("/", "text/html; charset=utf-8", "<h1>Hello</h1>");
    /// # }
    /// ```
    pub fn add_page(&self, path: &str, content_type: &'static str, body: impl Into<bytes::Bytes>) {
        let page = gate::Page {
            content_type,
            body: body.into(),
        };
        self.inner
            .pages
            .write_locked()
            .insert(path.to_string(), page);
    }

    /// Binds `userid` to the session, here and in the gate's copy for later requests.
    pub async fn bind(
        &self,
        session: &mut Session,
        userid: impl Into<String>,
    ) -> Result<(), RpcError> {
        let userid = userid.into();
        session.set_userid(userid.clone());
        self.call::<_, ()>(&gate_of(session), "Bind", session, (userid,))
            .await
    }

    /// Starts a new trace outside the gate (a timer, a background job): a root INTERNAL span
    /// named `name`, recorded under the app's name; calls made with [`RootSpan::session`] nest
    /// under it, and it ends when the returned value is dropped.
    pub fn start_trace(&self, name: impl Into<String>, session: &Session) -> RootSpan {
        let tracer = self.inner.tracing.tracer(self.name());
        let end = spans::internal_root(&tracer, name.into());
        RootSpan {
            session: session.with_span(&end, tracer),
            _end: end,
        }
    }

    /// Calls `module/method` with `args` (a tuple: `()`, `(a,)`, `(a, b)`) and decodes the
    /// result, like mqant's `RpcInvoke`; see [`Caller::call`].
    ///
    /// The call runs under the RPC timeout from settings (3 s by default), or within what is
    /// left of the session's deadline if that is sooner. When `session` is traced, the call is
    /// recorded as a CLIENT span and the handler's span nests under it.
    pub async fn call<A, R>(
        &self,
        module: &str,
        method: &str,
        session: &Session,
        args: A,
    ) -> Result<R, RpcError>
    where
        A: serde::Serialize,
        R: serde::de::DeserializeOwned,
    {
        self.inner.caller.call(module, method, session, args).await
    }

    /// [`App::call`] of a handler that is safe to run twice: a failed attempt (no reply in
    /// time, its instance gone or busy) is sent again to another instance within the
    /// deadline; see [`Caller::call_idempotent`]. Typed clients of `#[rpc(idempotent)]`
    /// handlers call this.
    pub async fn call_idempotent<A, R>(
        &self,
        module: &str,
        method: &str,
        session: &Session,
        args: A,
    ) -> Result<R, RpcError>
    where
        A: serde::Serialize,
        R: serde::de::DeserializeOwned,
    {
        self.inner
            .caller
            .call_idempotent(module, method, session, args)
            .await
    }

    /// Calls `module/method` without waiting for a result (mqant's `RpcInvokeNR`).
    pub fn call_nr<A: serde::Serialize>(
        &self,
        module: &str,
        method: &str,
        session: &Session,
        args: A,
    ) {
        self.inner.caller.call_nr(module, method, session, args)
    }

    /// Calls with already-encoded JSON arguments and returns the encoded reply.
    pub async fn call_raw(
        &self,
        module: &str,
        method: &str,
        session: &Session,
        args: Vec<u8>,
    ) -> Result<Vec<u8>, RpcError> {
        self.inner
            .caller
            .call_raw(module, method, session, args)
            .await
    }

    /// Removes the user id from the session, here and at the gate (mqant's `UnBind`).
    pub async fn unbind(&self, session: &mut Session) -> Result<(), RpcError> {
        session.set_userid("");
        self.call::<_, ()>(&gate_of(session), "UnBind", session, ())
            .await
    }

    /// Stores the session's settings at the gate, so later requests carry them (mqant's `Push`).
    pub async fn push(&self, session: &Session) -> Result<(), RpcError> {
        self.call::<_, ()>(
            &gate_of(session),
            "Push",
            session,
            (&session.data().settings,),
        )
        .await
    }

    /// The addresses bound by [`App::start`].
    pub fn addrs(&self) -> Addrs {
        *self.inner.addrs.locked()
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The app's name (service name for spans not started by a module).
    pub fn name(&self) -> &str {
        &self.inner.config.app.name
    }

    /// The gate's counters (connections, contained panics), once the gate has started.
    pub fn gate_stats(&self) -> Option<gate::GateStats> {
        self.inner
            .gate_counters
            .locked()
            .as_ref()
            .map(|c| c.snapshot())
    }

    /// The modules each process on the broker announced (this one included), by server id;
    /// empty without a broker.
    pub fn cluster(&self) -> std::collections::BTreeMap<String, Vec<String>> {
        self.inner
            .mqtt
            .as_ref()
            .map(MqttTransport::announced)
            .unwrap_or_default()
    }

    /// The OTLP exporter's counters (exported, dropped, failed), when spans are exported.
    pub fn export_stats(&self) -> Option<crate::trace::ExportStats> {
        self.inner.tracing.export_stats()
    }

    /// The OTLP metrics exporter's counters (points sent, failed requests, points given up),
    /// when spans are exported (the RED metrics go to the same collector).
    pub fn metrics_export_stats(&self) -> Option<crate::trace::MetricsExportStats> {
        self.inner.tracing.metrics_export_stats()
    }

    /// The RED metrics of every call this process serves and makes, sampled or not.
    pub fn red(&self) -> &std::sync::Arc<crate::red::Red> {
        self.inner.tracing.red()
    }

    /// The broker connection's counters, when calls to other processes go through a broker.
    pub fn broker_stats(&self) -> Option<BrokerStats> {
        let mut stats = self.inner.mqtt.as_ref().map(MqttTransport::stats)?;
        stats.embedded = self
            .inner
            .broker_limits
            .locked()
            .as_ref()
            .map(|l| l.stats());
        Some(stats)
    }

    /// Every callable `Module/method`.
    pub fn handlers(&self) -> Vec<String> {
        self.inner.registry.names()
    }
}

/// The gate that holds the session's connection: `Gate@<serverid>`, or any gate when the
/// session names none.
pub(super) fn gate_of(session: &Session) -> String {
    gate_at(session.serverid())
}

/// The gate of server id `sid`, or any gate when it is empty.
pub(super) fn gate_at(sid: &str) -> String {
    match sid {
        "" => gate::GATE_MODULE.to_string(),
        sid => format!("{}@{sid}", gate::GATE_MODULE),
    }
}
