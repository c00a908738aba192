//! The serving side of a call: refuses work whose deadline has passed, opens the SERVER span
//! (through `trace::spans`), runs the handler with a session that carries that span and the
//! deadline, contains panics, and records the outcome. Once `trace::layer` is installed, a traced
//! handler is polled with its span as the current OpenTelemetry context.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use opentelemetry::context::FutureExt as _;

use super::registry::Route;
use crate::deadline::Deadline;
use crate::error::RpcError;
use crate::session::Session;
use crate::trace::spans::{self, CancelMark};
use crate::trace::{layer, metrics};

/// Runs `route` for one call, inside a SERVER span when the session is traced. A call whose
/// deadline has already passed is answered with [`RpcError::DeadlineExceeded`]; its handler
/// never runs.
pub async fn dispatch(
    route: Arc<Route>,
    session: Session,
    args: Vec<u8>,
    deadline: Deadline,
) -> Result<Vec<u8>, RpcError> {
    dispatch_held(route, session, args, deadline).await.0
}

/// [`dispatch`], handing back the SERVER span (if any) ended but not yet delivered: dropped
/// once the reply is on its way, its storing and export do not add to the call's latency.
pub(crate) async fn dispatch_held(
    route: Arc<Route>,
    session: Session,
    args: Vec<u8>,
    deadline: Deadline,
) -> (Result<Vec<u8>, RpcError>, Option<spans::EndOnDrop>) {
    // Counted whatever the sampler decides, refusals included; a call dropped before it ends
    // (cancelled at its deadline) is counted as past its deadline.
    let mut counting = Counting(Some(metrics::start(route.series.enabled())), &route.series);
    let (result, span) = serve(&route, session.served_by(route.service), args, deadline).await;
    if let Some(started) = counting.0.take() {
        started.record(&route.series, result.as_ref().err());
    }
    (result, span)
}

/// Counts a call that is dropped before it ends.
struct Counting<'a>(Option<metrics::Started>, &'a mqrs_base::red::Series);

impl Drop for Counting<'_> {
    fn drop(&mut self) {
        if let Some(started) = self.0.take() {
            started.record_kind(self.1, Some("deadline_exceeded"));
        }
    }
}

async fn serve(
    route: &Route,
    session: Session,
    args: Vec<u8>,
    deadline: Deadline,
) -> (Result<Vec<u8>, RpcError>, Option<spans::EndOnDrop>) {
    let late = deadline.has_passed();
    let Some(parent) = session.trace_cx() else {
        if late {
            return (
                Err(RpcError::DeadlineExceeded(route.name.to_string())),
                None,
            );
        }
        return (
            run(route, session.with_deadline(deadline), args).await,
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
        let handler = run(route, inner, args);
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
        let route = Arc::new(Route::new(
            "M",
            "f",
            Box::new(move |_, _| {
                flag.store(true, Ordering::SeqCst);
                Box::pin(async { Ok(b"null".to_vec()) })
            }),
            tracer.clone(),
        ));
        let past = Deadline::after_from(
            std::time::Instant::now() - Duration::from_millis(1),
            Duration::ZERO,
        );
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
            Deadline::after(Duration::from_secs(1)),
        )
        .await;
        assert_eq!(ok.as_deref(), Ok(&b"null"[..]));
        assert!(ran.load(Ordering::SeqCst));
    }

    /// A handler's `tracing` logs with the layer installed: they land in its own spans.
    mod with_the_layer {
        use std::sync::Arc;
        use std::time::Duration;

        use crate::deadline::Deadline;

        use opentelemetry::{Context, Value};
        use tracing::Instrument;

        use crate::server::dispatch::dispatch;
        use crate::server::registry::Route;
        use crate::session::Session;
        use crate::trace::layer::tests::{named, subscriber, tag, trace_id};
        use crate::trace::layer::InHandler;
        use crate::trace::spans;
        use crate::trace::{StoreLimits, TraceStore, Tracing};

        /// A route whose handler logs, then runs a `tracing` span across an await point.
        fn logging_route(tracer: crate::trace::ServiceTracer) -> Arc<Route> {
            Arc::new(Route::new(
                "M",
                "f",
                Box::new(|session: Session, _| {
                    Box::pin(async move {
                        let user = session.userid().to_string();
                        tracing::info!(user = %user, "start");
                        async {
                            tokio::task::yield_now().await;
                            tracing::info!(user = %user, "working");
                        }
                        .instrument(tracing::info_span!("work", user = %user))
                        .await;
                        tokio::task::yield_now().await;
                        tracing::info!(user = %user, "done");
                        Ok(b"null".to_vec())
                    })
                }),
                tracer,
            ))
        }

        /// Two traced handlers interleaved on one thread: each one's logs land in its own spans.
        #[tokio::test(flavor = "current_thread")]
        async fn interleaved_handlers_keep_their_logs_apart() {
            let _default = tracing::subscriber::set_default(subscriber());
            let store = Arc::new(TraceStore::new(StoreLimits::default()));
            let tracing = Tracing::new(Some(store.clone()));
            let tracer = tracing.tracer("M");
            let route = logging_route(tracer.clone());
            let deadline = Deadline::after(Duration::from_secs(5));
            let call = |user: &str| {
                let root = spans::internal_root(&tracer, "root".into());
                let s = Session::new(crate::session::SessionData {
                    userid: user.into(),
                    ..Default::default()
                })
                .with_span(&root, tracer.clone());
                (root, dispatch(route.clone(), s, vec![], deadline))
            };
            let (root_a, a) = call("a");
            let (root_b, b) = call("b");
            let (ra, rb) = futures_util::future::join(a, b).await;
            assert!(ra.is_ok() && rb.is_ok());
            // Untraced: the same handler records nothing and still works.
            let r = dispatch(route.clone(), Session::default(), vec![], deadline).await;
            assert!(r.is_ok());
            assert!(Context::map_current(|cx| cx.get::<InHandler>().is_none()));
            for (root, user) in [(root_a, "a"), (root_b, "b")] {
                let id = trace_id(root.cx());
                drop(root);
                let all = store.trace(id).expect("stored").spans;
                assert_eq!(all.len(), 3, "{all:#?}");
                let rpc = named(&all, "M/f");
                let work = named(&all, "work");
                assert_eq!(work.parent_span_id, Some(rpc.span_id));
                let names: Vec<_> = rpc.events.iter().map(|e| &*e.name).collect();
                assert_eq!(names, ["start", "done"]);
                assert_eq!(work.events.len(), 1);
                assert_eq!(work.events[0].name, "working");
                for e in rpc.events.iter().chain(&work.events) {
                    assert_eq!(tag(&e.attributes, "user"), Some(&Value::from(user)));
                }
                assert_eq!(tag(&work.tags, "user"), Some(&Value::from(user)));
            }
            assert_eq!(store.stats().traces, 2);
        }
    }
}
