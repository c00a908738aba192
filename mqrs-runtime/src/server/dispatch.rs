//! The serving side of a call: refuses work whose deadline has passed, opens the SERVER span
//! (through `trace::spans`), runs the handler with a session that carries that span and the
//! deadline, contains panics, and records the outcome. Once `trace::layer` is installed, a traced
//! handler is polled with its span as the current OpenTelemetry context.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures_util::FutureExt;
use opentelemetry::context::FutureExt as _;

use super::registry::Route;
use crate::error::RpcError;
use crate::session::Session;
use crate::trace::layer;
use crate::trace::spans::{self, CancelMark};

/// Runs `route` for one call, inside a SERVER span when the session is traced. A call whose
/// deadline has already passed is answered with [`RpcError::DeadlineExceeded`]; its handler
/// never runs.
pub async fn dispatch(
    route: Arc<Route>,
    session: Session,
    args: Vec<u8>,
    deadline: Instant,
) -> Result<Vec<u8>, RpcError> {
    dispatch_held(route, session, args, deadline).await.0
}

/// [`dispatch`], handing back the SERVER span (if any) ended but not yet delivered: dropped
/// once the reply is on its way, its storing and export do not add to the call's latency.
pub(crate) async fn dispatch_held(
    route: Arc<Route>,
    session: Session,
    args: Vec<u8>,
    deadline: Instant,
) -> (Result<Vec<u8>, RpcError>, Option<spans::EndOnDrop>) {
    let late = Instant::now() >= deadline;
    let Some(parent) = session.trace_cx() else {
        if late {
            return (
                Err(RpcError::DeadlineExceeded(route.name.to_string())),
                None,
            );
        }
        return (
            run(&route, session.with_deadline(deadline), args).await,
            None,
        );
    };
    let mut guard = spans::server(
        &route.tracer,
        &parent.sc,
        &route.values,
        &route.name,
        session.span_source(),
    );
    let result = if late {
        Err(RpcError::DeadlineExceeded(route.name.to_string()))
    } else {
        let cancel = CancelMark::new(&guard);
        let inner = session.with_span_until(&guard, route.tracer.clone(), deadline);
        // With `trace::layer` installed, polled with the span attached, so `tracing` spans and
        // events inside the handler land in it; without it, or in a trace the sampler skipped,
        // attaching would cost for nothing.
        let handler = run(&route, inner, args);
        let r = if guard.is_recording() && layer::installed() {
            handler.with_context(guard.cx().clone()).await
        } else {
            handler.await
        };
        cancel.disarm();
        r
    };
    if let Err(e) = &result {
        spans::record_error(&guard, e);
    }
    guard.stamp_end();
    (result, Some(guard))
}

async fn run(route: &Route, session: Session, args: Vec<u8>) -> Result<Vec<u8>, RpcError> {
    match AssertUnwindSafe((route.handler)(session, args))
        .catch_unwind()
        .await
    {
        Ok(r) => r,
        Err(_) => {
            tracing::error!(method = %route.name, "handler panicked");
            Err(RpcError::Panicked(route.name.to_string()))
        }
    }
}

// These tests read what was recorded from the embedded store.
#[cfg(all(test, feature = "viewer"))]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::trace::{StoreLimits, TraceStore, Tracing};

    #[tokio::test]
    async fn work_whose_deadline_has_passed_is_refused_and_never_runs() {
        let store = Arc::new(TraceStore::new(StoreLimits::default()));
        let tracing = Tracing::new(Some(store.clone()));
        let tracer = tracing.tracer("M");
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        let route = Arc::new(Route {
            name: Arc::from("M/f"),
            handler: Box::new(move |_, _| {
                flag.store(true, Ordering::SeqCst);
                Box::pin(async { Ok(b"null".to_vec()) })
            }),
            values: layer::handler_values(&tracer),
            tracer: tracer.clone(),
        });
        let past = Instant::now() - Duration::from_millis(1);
        // Untraced and traced: the same refusal; traced, the SERVER span says why.
        let e = dispatch(route.clone(), Session::default(), vec![], past)
            .await
            .expect_err("refused");
        assert_eq!(e, RpcError::DeadlineExceeded("M/f".into()));
        let root = spans::internal_root(&tracer, "root".into());
        let traced = Session::default().with_span(&root, tracer);
        let e = dispatch(route.clone(), traced, vec![], past)
            .await
            .expect_err("refused");
        assert_eq!(e.kind(), "deadline_exceeded");
        assert!(!ran.load(Ordering::SeqCst), "the handler must not run");
        let trace_id = u128::from_be_bytes(root.span_context().trace_id().to_bytes());
        drop(root);
        let t = store.trace(trace_id).expect("stored");
        let server = t
            .spans
            .iter()
            .find(|s| s.name == "M/f")
            .expect("server span");
        assert_eq!(
            server.tag("error.type").map(|v| v.as_str()),
            Some("deadline_exceeded".into())
        );
        // In time, it runs.
        let ok = dispatch(
            route,
            Session::default(),
            vec![],
            Instant::now() + Duration::from_secs(1),
        )
        .await;
        assert_eq!(ok.as_deref(), Ok(&b"null"[..]));
        assert!(ran.load(Ordering::SeqCst));
    }
}
