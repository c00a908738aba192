//! The calling side: `App::call` by name, the one place that opens a CLIENT span, and the
//! timeout that applies to every call.

use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::dispatch::{record_error, rpc_attributes, EndOnDrop};
use super::encode_args;
use crate::app::App;
use crate::error::RpcError;
use crate::session::Session;

impl App {
    /// Calls `module/method` with `args` (a tuple: `()`, `(a,)`, `(a, b)`) and decodes the result,
    /// like mqant's `RpcInvoke`.
    ///
    /// The call runs under the RPC timeout from settings (3 s by default). When `session` is
    /// traced, the call is recorded as a CLIENT span and the handler's span nests under it.
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
        let bytes = encode_args(method, &args)?;
        let reply = self.call_raw(module, method, session, bytes).await?;
        serde_json::from_slice(&reply).map_err(|e| RpcError::BadReply {
            method: format!("{module}/{method}"),
            reason: e.to_string(),
        })
    }

    /// Calls `module/method` and ignores the result (mqant's `RpcInvokeNR`); errors are logged.
    pub fn call_nr<A: Serialize>(&self, module: &str, method: &str, session: &Session, args: A) {
        let bytes = match encode_args(method, &args) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(%module, %method, error = %e, "call_nr: cannot encode arguments");
                return;
            }
        };
        let (app, module, method, session) = (
            self.clone(),
            module.to_string(),
            method.to_string(),
            session.clone(),
        );
        tokio::spawn(async move {
            if let Err(e) = app.call_raw(&module, &method, &session, bytes).await {
                tracing::warn!(%module, %method, error = %e, "call_nr failed");
            }
        });
    }

    /// Calls with already-encoded JSON arguments and returns the encoded reply.
    pub async fn call_raw(
        &self,
        module: &str,
        method: &str,
        session: &Session,
        args: Vec<u8>,
    ) -> Result<Vec<u8>, RpcError> {
        let timeout = self.rpc_timeout();
        let Some(parent) = session.trace_cx() else {
            let fut = self
                .transport()
                .request(module, method, session.clone(), args);
            return with_timeout(module, method, timeout, fut).await;
        };
        let tracer = match &parent.tracer {
            Some(t) => t.clone(),
            None => self.tracing().tracer(self.name()),
        };
        let name = format!("{module}/{method}");
        let span = tracer
            .tracer
            .span_builder(name.clone())
            .with_kind(SpanKind::Client)
            .with_attributes(rpc_attributes(&name, session))
            .start_with_context(&tracer.tracer, &parent.cx);
        let cx = parent.cx.with_span(span);
        let guard = EndOnDrop(cx.clone());
        let callee = session.with_trace(cx, tracer);
        let fut = self.transport().request(module, method, callee, args);
        let result = with_timeout(module, method, timeout, fut).await;
        if let Err(e) = &result {
            record_error(&guard.0, e);
        }
        result
    }
}

async fn with_timeout(
    module: &str,
    method: &str,
    timeout: std::time::Duration,
    fut: impl std::future::Future<Output = Result<Vec<u8>, RpcError>>,
) -> Result<Vec<u8>, RpcError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(RpcError::Timeout {
            method: format!("{module}/{method}"),
            timeout,
        }),
    }
}
