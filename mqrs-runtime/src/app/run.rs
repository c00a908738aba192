//! Running an app: `start` (embedded broker, modules' `on_start`, gate, broker link, viewer,
//! collector), `run` until Ctrl-C or SIGTERM, and the graceful `shutdown` in the reverse order.

use std::time::Duration;

use futures_util::future::BoxFuture;
use mqrs_base::sync::Locked;
use tokio::task::JoinHandle;

use super::error::AppError;
use super::handle::{Addrs, App};
use crate::config::BrokerUrl;
use crate::gate;
use crate::transport::mqtt::broker::EmbeddedBroker;
use crate::transport::mqtt::Link;

impl App {
    /// Opens the broker connection (starting the embedded broker first when configured), the
    /// gate and the viewer; returns their addresses.
    ///
    /// A start that fails part-way shuts down what it had started (broker, link, listeners)
    /// before returning the error.
    pub async fn start(&self) -> Result<Addrs, AppError> {
        match self.start_all().await {
            Ok(a) => Ok(a),
            Err(e) => {
                self.shutdown().await;
                Err(e)
            }
        }
    }

    async fn start_all(&self) -> Result<Addrs, AppError> {
        if let Some(refusal) = &self.inner.refusal {
            return Err(refusal.error());
        }
        #[cfg(feature = "viewer")]
        super::viewer::check(self)?;
        #[cfg(not(feature = "viewer"))]
        {
            let t = &self.inner.config.trace;
            if t.store || t.viewer || t.collector {
                tracing::info!(
                    "built without the `viewer` feature: no trace store, viewer or collector here"
                );
            }
        }
        let broker_urls = self.start_broker().await?;
        let starts: Vec<(&'static str, BoxFuture<'static, Result<(), String>>)> = self
            .inner
            .modules
            .locked()
            .iter()
            .map(|m| (m.name, (m.start)(self.clone())))
            .collect();
        for (module, fut) in starts {
            fut.await
                .map_err(|reason| AppError::ModuleStart { module, reason })?;
            tracing::debug!(module, "module started");
        }
        let cfg = &self.inner.config;
        let mut addrs = Addrs::default();
        let mut gate_bound = None;
        if cfg.gate.enabled {
            let deps = gate::Deps {
                caller: self.inner.caller.clone(),
                registry: self.inner.registry.clone(),
                tracer: self.inner.tracing.tracer(gate::GATE_MODULE),
                history: self.inner.tracing.history().cloned(),
                hook: self.inner.hook.clone(),
                on_connect: self.inner.on_connect.clone(),
                pages: self.inner.pages.clone(),
                server_id: cfg.app.server_id.clone(),
            };
            let bound = gate::bind(deps, cfg.gate.clone())
                .await
                .map_err(|e| match e {
                    gate::StartError::Bind { what, addr, source } => {
                        AppError::Bind { what, addr, source }
                    }
                    gate::StartError::Tls(e) => AppError::Tls {
                        path: e.path,
                        reason: e.reason,
                    },
                })?;
            *self.inner.gate_counters.locked() = Some(bound.counters.clone());
            gate_bound = Some(bound);
        }
        if let (Some(mqtt), Some(urls)) = (&self.inner.mqtt, broker_urls) {
            let link = Link {
                urls,
                server_id: cfg.app.server_id.clone(),
                registry: self.inner.registry.clone(),
                default_timeout: cfg.rpc_timeout(),
                withdraw: self.inner.shutdown.subscribe(),
                grace: Duration::from_millis(cfg.gate.shutdown_grace_ms),
            };
            let (task, mut ready) = mqtt.start(link, self.inner.link_stop.subscribe());
            *self.inner.link_task.locked() = Some(task);
            // Serve calls from other processes before the first client arrives, if the broker
            // answers soon; otherwise the link keeps trying in the background.
            let wait = Duration::from_millis(cfg.broker.connect_wait_ms);
            if tokio::time::timeout(wait, ready.wait_for(|r| *r))
                .await
                .is_err()
            {
                tracing::warn!("not yet connected to the MQTT broker; still trying");
            }
        }
        addrs.broker = self.inner.broker.lock().await.as_ref().map(|b| b.addr());
        if let Some(bound) = gate_bound {
            for &(door, at) in &bound.doors {
                match door {
                    gate::Door::Tcp => addrs.gate = Some(at),
                    gate::Door::Tls => addrs.gate_tls = Some(at),
                    gate::Door::Ws | gate::Door::Wss => addrs.gate_ws = Some(at),
                }
                let scheme = door.url_scheme();
                let path = if matches!(door, gate::Door::Ws | gate::Door::Wss) {
                    "/mqtt"
                } else {
                    ""
                };
                tracing::info!("gate listening on {scheme}://{at}{path}");
            }
            self.push_task(bound.serve(self.inner.shutdown.subscribe()));
        }
        #[cfg(feature = "viewer")]
        super::viewer::serve(self, &mut addrs).await?;
        super::history::keep(self);
        *self.inner.addrs.locked() = addrs;
        Ok(addrs)
    }

    /// Starts the embedded broker when configured; returns the broker addresses to connect to.
    async fn start_broker(&self) -> Result<Option<Vec<(String, u16)>>, AppError> {
        if self.inner.mqtt.is_none() {
            return Ok(None);
        }
        let cfg = &self.inner.config.broker;
        let sid = &self.inner.config.app.server_id;
        if sid.is_empty() || sid.contains(['/', '+', '#', '@']) {
            return Err(AppError::BrokerSettings(format!(
                "server_id `{sid}` is part of MQTT topics: it must be non-empty and contain none of / + # @"
            )));
        }
        let announced = self.inner.registry.announced();
        if let Some(why) = crate::transport::mqtt::wire::presence_refused(sid, &announced) {
            return Err(AppError::BrokerSettings(format!(
                "{why}: other processes would refuse this one's presence"
            )));
        }
        match &cfg.url {
            BrokerUrl::None => Ok(None),
            BrokerUrl::Embedded => {
                let b = EmbeddedBroker::start(cfg.embedded_addr, cfg.max_payload + 64 * 1024, cfg)
                    .await
                    .map_err(|reason| AppError::Broker {
                        addr: cfg.embedded_addr,
                        reason,
                    })?;
                let addr = b.addr();
                tracing::info!("embedded MQTT broker on mqtt://{addr}");
                *self.inner.broker_limits.locked() = Some(b.limits());
                *self.inner.broker.lock().await = Some(b);
                Ok(Some(vec![(addr.ip().to_string(), addr.port())]))
            }
            BrokerUrl::Urls(_) => self
                .inner
                .broker_urls
                .clone()
                .map(Some)
                .map_err(AppError::BrokerSettings),
        }
    }

    /// Starts, then runs until Ctrl-C, SIGTERM (what `docker stop`, systemd and Kubernetes
    /// send) or [`App::stop`], then shuts down gracefully.
    pub async fn run(&self) -> Result<(), AppError> {
        // Listening starts before the app does: a signal that arrives while it starts stops it
        // gracefully instead of killing the process.
        let mut signals = Signals::listen();
        self.start().await?;
        tracing::info!("app running; Ctrl-C or SIGTERM stops it");
        let mut rx = self.inner.shutdown.subscribe();
        tokio::select! {
            what = signals.recv() => tracing::info!("{what}: shutting down"),
            _ = rx.wait_for(|v| *v) => {}
        }
        self.shutdown().await;
        Ok(())
    }

    /// Asks a running app to shut down.
    pub fn stop(&self) {
        let _ = self.inner.shutdown.send(true);
    }

    /// Stops gracefully: listeners close at once, requests in flight get the gate's grace
    /// period to finish, modules' `on_stop` run, then the broker link and the embedded broker
    /// stop and the spans still queued for export are flushed.
    pub async fn shutdown(&self) {
        self.stop();
        let tasks = std::mem::take(&mut *self.inner.tasks.locked());
        // The gate takes up to its grace period to let requests in flight finish.
        let wait = Duration::from_millis(self.inner.config.gate.shutdown_grace_ms)
            + Duration::from_secs(2);
        for t in tasks {
            if tokio::time::timeout(wait, t).await.is_err() {
                tracing::warn!(
                    wait_ms = wait.as_millis() as u64,
                    "a service did not stop in time"
                );
            }
        }
        let modules = std::mem::take(&mut *self.inner.modules.locked());
        for m in modules.iter().rev() {
            if tokio::time::timeout(Duration::from_secs(5), (m.stop)())
                .await
                .is_err()
            {
                tracing::warn!(module = m.name, "on_stop did not finish within 5 s");
            }
        }
        // The gate has drained: now the broker link, then the embedded broker.
        let _ = self.inner.link_stop.send(true);
        let link = self.inner.link_task.locked().take();
        if let Some(t) = link {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        if let Some(b) = self.inner.broker.lock().await.take() {
            b.stop().await;
        }
        // Flushing the OTLP export can wait on the collector: not on a runtime thread.
        let t = self.inner.tracing.clone();
        let flush = tokio::task::spawn_blocking(move || t.shutdown());
        if tokio::time::timeout(Duration::from_secs(5), flush)
            .await
            .is_err()
        {
            tracing::warn!(
                "the OTLP collector did not take the last spans within 5 s; not waiting"
            );
        }
        self.inner.registry.clear();
        tracing::info!("app stopped");
    }

    pub(super) fn push_task(&self, t: JoinHandle<()>) {
        self.inner.tasks.locked().push(t);
    }
}

/// Ctrl-C (SIGINT) and SIGTERM, listened for from the moment this is made.
struct Signals {
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn listen() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let listen = |kind: SignalKind, name: &str| match signal(kind) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for {name}; run until stopped");
                    None
                }
            };
            Signals {
                interrupt: listen(SignalKind::interrupt(), "Ctrl-C"),
                terminate: listen(SignalKind::terminate(), "SIGTERM"),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// Resolves with the signal's name when one arrives; never if none can be listened for.
    async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            async fn one(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                () = one(&mut self.interrupt) => "Ctrl-C",
                () = one(&mut self.terminate) => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            match tokio::signal::ctrl_c().await {
                Ok(()) => "Ctrl-C",
                Err(_) => std::future::pending().await,
            }
        }
    }
}
