//! The embedded trace backend (the `viewer` feature): the store this process's spans go to,
//! the viewer and its API, and the OTLP collector, all from `mqrs_viewer`, made and started
//! from `[trace]`.

use std::sync::Arc;
use std::time::Duration;

use mqrs_base::history::History;
use mqrs_base::red::Red;
use mqrs_viewer::{StoreLimits, TraceStore};

use super::error::AppError;
use super::handle::{Addrs, App};
use crate::config::TraceSection;

/// The store `[trace]` asks for, if any. A data directory that cannot be used is logged here
/// and refused by [`check`] when the app starts.
pub(super) fn make_store(
    cfg: &TraceSection,
    red: &Arc<Red>,
    history: Option<&Arc<History>>,
) -> Option<Arc<TraceStore>> {
    if !cfg.store {
        return None;
    }
    let limits = StoreLimits {
        max_traces: cfg.max_traces,
        max_bytes: cfg.max_bytes,
        max_spans_per_trace: cfg.max_spans_per_trace,
        max_traces_per_session: cfg.max_traces_per_session,
    };
    let dir = &cfg.data_dir;
    if dir.is_empty() {
        return Some(Arc::new(
            TraceStore::new(limits)
                .with_red(red.clone())
                .with_history(history.cloned()),
        ));
    }
    let history_file = std::path::Path::new(dir).join(super::history::HISTORY_FILE);
    if let Some(h) = history {
        match h.load(&history_file, super::history::now_ms()) {
            Ok(n) if n > 0 => tracing::info!(requests = n, "request history read back"),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, file = %history_file.display(), "the request history file is not read; starting without it")
            }
        }
    }
    Some(
        TraceStore::persistent_with(
            limits,
            std::path::Path::new(dir),
            red.clone(),
            history.cloned(),
        )
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, dir, "the trace data directory cannot be used");
            Arc::new(
                TraceStore::new(limits)
                    .with_red(red.clone())
                    .with_history(history.cloned()),
            )
        }),
    )
}

/// Refuses to start when `[trace] data_dir` is set and could not be used.
pub(super) fn check(app: &App) -> Result<(), AppError> {
    let dir = &app.inner.config.trace.data_dir;
    if !dir.is_empty() && app.inner.store.as_ref().is_some_and(|s| !s.is_persistent()) {
        return Err(AppError::DataDir(dir.clone()));
    }
    Ok(())
}

/// Starts the viewer and the collector `[trace]` asks for; their addresses go into `addrs`.
pub(super) async fn serve(app: &App, addrs: &mut Addrs) -> Result<(), AppError> {
    let cfg = &app.inner.config.trace;
    let Some(store) = &app.inner.store else {
        return Ok(());
    };
    if cfg.viewer {
        let (addr, task) = mqrs_viewer::serve_viewer(
            store.clone(),
            cfg.viewer_addr,
            app.inner.shutdown.subscribe(),
        )
        .await
        .map_err(|source| AppError::Bind {
            what: "the trace viewer",
            addr: cfg.viewer_addr,
            source,
        })?;
        tracing::info!("trace viewer on http://{addr}/");
        addrs.viewer = Some(addr);
        app.push_task(task);
    }
    if cfg.collector {
        let (addr, task) = mqrs_viewer::serve_collector(
            store.clone(),
            cfg.collector_addr,
            cfg.collector_max_body,
            Duration::from_secs(cfg.collector_max_skew_s),
            app.inner.shutdown.subscribe(),
        )
        .await
        .map_err(|source| AppError::Bind {
            what: "the OTLP collector",
            addr: cfg.collector_addr,
            source,
        })?;
        tracing::info!("OTLP collector on http://{addr}/v1/traces");
        addrs.collector = Some(addr);
        app.push_task(task);
    }
    Ok(())
}

impl App {
    /// The embedded trace store, when `[trace] store` is on.
    pub fn trace_store(&self) -> Option<Arc<TraceStore>> {
        self.inner.store.clone()
    }
}
