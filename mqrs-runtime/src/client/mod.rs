//! The calling side: [`Caller`], the handle every call goes through (the app, module clients
//! and the gate hold one). It works out the call's deadline, opens the CLIENT span through
//! `trace::spans`, and hands the call to the app's router; `retry` sends a call of an
//! idempotent handler again on another instance when an attempt fails.

mod retry;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use mqrs_base::red::Kind;
use opentelemetry::KeyValue;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::deadline::Deadline;
use crate::error::RpcError;
use crate::server::encode_args;
use crate::session::Session;
use crate::trace::{metrics, names, spans, Tracing};
use crate::transport::{Request, Target, Transport};

/// Makes RPC calls by name; cheap to clone. [`App::call`](crate::App::call) and the generated
/// clients use one; the gate gets one instead of the whole app.
#[derive(Clone)]
pub struct Caller {
    inner: Arc<CallerInner>,
}

struct CallerInner {
    transport: Arc<dyn Transport>,
    tracing: Arc<Tracing>,
    /// Service name for CLIENT spans of calls made with a session that no module has taken up
    /// (it arrived from another process, or was started outside the gate).
    service: Arc<str>,
    /// The tracer of `service`, taken from `tracing` on the first such call.
    own_tracer: OnceLock<crate::trace::ServiceTracer>,
    timeout: Duration,
    /// Most attempts of a call to an idempotent handler (`[rpc] max_attempts`).
    max_attempts: usize,
    /// Sends another attempt of such a call when the first is this slow (`[rpc] hedge_after_ms`).
    hedge_after: Option<Duration>,
}

impl Caller {
    /// Calls through `transport`, each call limited to `timeout` (and to what is left of the
    /// session's own deadline); calls to idempotent handlers make up to `retries.0` attempts,
    /// the next one beside a slow one after `retries.1` when set.
    pub(crate) fn new(
        transport: Arc<dyn Transport>,
        tracing: Arc<Tracing>,
        service: &str,
        timeout: Duration,
        retries: (u32, Option<Duration>),
    ) -> Self {
        Caller {
            inner: Arc::new(CallerInner {
                transport,
                tracing,
                service: Arc::from(service),
                own_tracer: OnceLock::new(),
                timeout,
                max_attempts: retries.0.clamp(1, retry::MAX_ATTEMPTS) as usize,
                hedge_after: retries.1,
            }),
        }
    }

    /// Calls `module/method` with `args` (a tuple: `()`, `(a,)`, `(a, b)`) and decodes the
    /// result, like mqant's `RpcInvoke`. `module` may pin a server: `Chat@chat-2`.
    pub async fn call<A, R>(
        &self,
        module: &str,
        method: &str,
        session: &Session,
        args: A,
    ) -> Result<R, RpcError>
    where
        A: Serialize,
        R: DeserializeOwned,
    {
        self.call_tagged(module, method, session, args, Vec::new())
            .await
    }

    /// [`Caller::call`] of a handler that is safe to run twice (the typed client of an
    /// `#[rpc(idempotent)]` handler calls this): when an attempt times out, finds its instance
    /// gone or busy, it is sent again to another instance, within the call's deadline, up to
    /// `[rpc] max_attempts` in all. A call by name is retried the same way when the instances
    /// serving it declare the handler idempotent.
    pub async fn call_idempotent<A, R>(
        &self,
        module: &str,
        method: &str,
        session: &Session,
        args: A,
    ) -> Result<R, RpcError>
    where
        A: Serialize,
        R: DeserializeOwned,
    {
        self.call_with(module, method, session, args, Vec::new(), true)
            .await
    }

    /// False when no process can serve `module/method` (see [`Transport::reaches`]).
    pub(crate) fn reaches(&self, module: &str, method: &str) -> bool {
        self.inner.transport.reaches(Target::parse(module), method)
    }

    /// Calls `module/method` and does not wait for a result (mqant's `RpcInvokeNR`); a call
    /// that cannot be handed over is logged.
    pub fn call_nr<A: Serialize>(&self, module: &str, method: &str, session: &Session, args: A) {
        let target = Target::parse(module);
        // Counted like any call: its time is the hand-over, its error a failed one.
        let started = metrics::start(self.inner.tracing.red().enabled());
        let result = encode_args(method, &args).and_then(|args| {
            let deadline = self.deadline(Instant::now(), session);
            let (span, callee) = self.client_span(target, method, session);
            let r = self.inner.transport.notify(Request {
                target,
                method,
                session: callee,
                args,
                deadline,
            });
            record(span, &r);
            r
        });
        if started.counted() {
            self.count(started, session, target, method, &result);
        }
        if let Err(e) = result {
            tracing::warn!(%module, %method, error = %e, "call_nr failed");
        }
    }

    /// Calls with already-encoded JSON arguments and returns the encoded reply.
    pub async fn call_raw(
        &self,
        module: &str,
        method: &str,
        session: &Session,
        args: Vec<u8>,
    ) -> Result<Vec<u8>, RpcError> {
        self.call_raw_with(module, method, session, args, Vec::new(), false)
            .await
    }

    /// [`Caller::call`] with `tags` added to its CLIENT span (what only the caller knows,
    /// such as how many recipients a batch has).
    pub(crate) async fn call_tagged<A, R>(
        &self,
        module: &str,
        method: &str,
        session: &Session,
        args: A,
        tags: Vec<KeyValue>,
    ) -> Result<R, RpcError>
    where
        A: Serialize,
        R: DeserializeOwned,
    {
        self.call_with(module, method, session, args, tags, false)
            .await
    }

    /// Encodes `args`, calls (see [`Caller::call_raw_with`]) and decodes the reply.
    async fn call_with<A, R>(
        &self,
        module: &str,
        method: &str,
        session: &Session,
        args: A,
        tags: Vec<KeyValue>,
        idempotent: bool,
    ) -> Result<R, RpcError>
    where
        A: Serialize,
        R: DeserializeOwned,
    {
        let bytes = encode_args(method, &args)?;
        let reply = self
            .call_raw_with(module, method, session, bytes, tags, idempotent)
            .await?;
        serde_json::from_slice(&reply).map_err(|e| RpcError::BadReply {
            method: format!("{module}/{method}"),
            reason: e.to_string(),
        })
    }

    /// Every call by request and reply ends here: one attempt, or attempts on instances in
    /// turn when the handler is idempotent (`idempotent`, or as its instances declare).
    async fn call_raw_with(
        &self,
        module: &str,
        method: &str,
        session: &Session,
        args: Vec<u8>,
        tags: Vec<KeyValue>,
        idempotent: bool,
    ) -> Result<Vec<u8>, RpcError> {
        let target = Target::parse(module);
        let started = metrics::start(self.inner.tracing.red().enabled());
        let start = Instant::now();
        let deadline = self.deadline(start, session);
        let attempts = retry::attempts(
            &*self.inner.transport,
            self.inner.max_attempts,
            target,
            method,
            idempotent,
        );
        let result = if attempts > 1 {
            let (module, args, tags) = (target.module, &args, &tags);
            let attempt = |a: retry::Attempt| {
                let target = Target::on_server(module, &a.instance);
                let (mut span, callee) = self.client_span(target, method, session);
                if let Some(span) = &mut span {
                    for tag in tags {
                        spans::tag_mut(span, tag.clone());
                    }
                    spans::tag_mut(span, KeyValue::new(retry::ATTEMPT, a.number as i64));
                    spans::tag_mut(span, KeyValue::new(retry::INSTANCE, a.instance.to_string()));
                }
                let mut span = AttemptSpan(span);
                let args = args.clone();
                async move {
                    let target = Target::on_server(module, &a.instance);
                    let result = self
                        .send(target, method, callee, args, a.now, a.deadline)
                        .await;
                    record(span.0.take(), &result);
                    result
                }
            };
            let plan = retry::Plan {
                attempts,
                hedge_after: self.inner.hedge_after,
            };
            let transport = &*self.inner.transport;
            retry::run(transport, (module, method), start, deadline, plan, attempt).await
        } else {
            let (mut span, callee) = self.client_span(target, method, session);
            if let Some(span) = &mut span {
                for tag in tags {
                    spans::tag_mut(span, tag);
                }
            }
            let result = self
                .send(target, method, callee, args, start, deadline)
                .await;
            record(span, &result);
            result
        };
        if started.counted() {
            self.count(started, session, target, method, &result);
        }
        result
    }

    /// Counts a call to `target`/`method` made with `session` in its CLIENT series: as the
    /// service serving it here (traced or not), or as this app outside any handler.
    fn count<T>(
        &self,
        started: metrics::Started,
        session: &Session,
        target: Target<'_>,
        method: &str,
        result: &Result<T, RpcError>,
    ) {
        let traced = session.trace_cx().and_then(|t| t.tracer.as_ref());
        let caller: &str = match (session.serving(), traced) {
            (Some(s), _) => s,
            (None, Some(t)) => &t.policy.service,
            (None, None) => &self.inner.service,
        };
        let error = result.as_ref().err();
        self.inner.tracing.red().with_series(
            Kind::Client,
            caller,
            (target.module, method),
            "",
            |s| started.record(s, error),
        );
    }

    /// The call's CLIENT span when `session` is traced, and the session the callee gets (it
    /// carries that span, so the callee's SERVER span nests under it).
    fn client_span(
        &self,
        target: Target<'_>,
        method: &str,
        session: &Session,
    ) -> (Option<spans::EndOnDrop>, Session) {
        let Some(parent) = session.trace_cx() else {
            return (None, session.clone());
        };
        let tracer = self.tracer_for(parent.tracer.as_ref());
        let name = names::intern_parts(&[target.module, "/", method]);
        let span = spans::client(&tracer, &parent.sc, name, session.span_source());
        let callee = session.with_span(&span, tracer);
        (Some(span), callee)
    }

    /// The app's timeout from `now`, or what is left of the session's deadline if sooner.
    fn deadline(&self, now: Instant, session: &Session) -> Deadline {
        Deadline::after_from(now, self.inner.timeout).sooner(session.deadline())
    }

    fn tracer_for(&self, t: Option<&crate::trace::ServiceTracer>) -> crate::trace::ServiceTracer {
        match t {
            Some(t) => t.clone(),
            None => self
                .inner
                .own_tracer
                .get_or_init(|| self.inner.tracing.tracer(&self.inner.service))
                .clone(),
        }
    }

    async fn send(
        &self,
        target: Target<'_>,
        method: &str,
        session: Session,
        args: Vec<u8>,
        start: Instant,
        deadline: Deadline,
    ) -> Result<Vec<u8>, RpcError> {
        if deadline.since(start).is_zero() {
            // The caller's own caller has used up the budget: do not even send.
            return Err(RpcError::DeadlineExceeded(format!(
                "{}/{method}",
                target.module
            )));
        }
        let fut = self.inner.transport.request(Request {
            target,
            method,
            session,
            args,
            deadline,
        });
        match deadline.bound(fut).await {
            Some(r) => r,
            None => Err(RpcError::Timeout {
                method: format!("{}/{method}", target.module),
                timeout: deadline.since(start),
            }),
        }
    }
}

/// The CLIENT span of one attempt: tagged as cancelled when the attempt is dropped before it
/// ends (another attempt answered first).
struct AttemptSpan(Option<spans::EndOnDrop>);

impl Drop for AttemptSpan {
    fn drop(&mut self) {
        if let Some(span) = &mut self.0 {
            spans::tag_mut(span, KeyValue::new(retry::CANCELLED, true));
        }
    }
}

/// Marks the CLIENT span, if any, as failed when the call failed; it ends when dropped.
fn record<T>(mut span: Option<spans::EndOnDrop>, result: &Result<T, RpcError>) {
    if let (Some(span), Err(e)) = (&mut span, result) {
        spans::record_error_mut(span, e);
    }
}
