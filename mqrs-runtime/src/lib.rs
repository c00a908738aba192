//! mqrs: a framework for distributed game and chat back ends, after mqant, whose RPC calls
//! are traced without a line of span code.
//!
//! A module is a plain struct whose `impl` block carries `#[rpc_module]`; each `#[rpc]`
//! method is a handler reachable as `Module/method`, and every call to it runs inside an
//! OpenTelemetry SERVER span that nests under the caller's CLIENT span.
//!
//! ```no_run
//! use mqrs_runtime::{rpc, rpc_module, App, Config, Session};
//!
//! pub struct Login { app: App }
//!
//! #[rpc_module]
//! impl Login {
//!     #[rpc]
//!     async fn track(&self, session: Session) -> Result<String, String> {
//!         session.span().set_attribute("track", "track测试");
//!         Ok("My is Login Module".into())
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let app = App::new(Config::default());
//! app.add_module(Login { app: app.clone() })?;
//! app.run().await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

extern crate self as mqrs_runtime;

pub mod app;
mod client;
pub mod config;
pub mod error;
pub mod gate;
mod identity;
mod server;
pub mod session;
pub mod trace;
pub mod transport;

pub use app::{Addrs, App, AppBuilder, AppError, Lifecycle, RootSpan, RpcModule};
pub use client::Caller;
pub use config::Config;
pub use error::RpcError;
pub use mqrs_macros::{rpc, rpc_module};
pub use session::{Session, SessionData};

/// Items the macros' generated code and the benchmarks refer to; not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::server::registry::{HandlerFuture, ModuleRef, RpcMethod};
    pub use crate::server::shim::{decode_args, decode_no_args, downcast, IntoReply};
    pub use inventory;
    pub use serde;
    pub use serde_json;

    /// Records one span as mqrs records its RPC spans (a child of the span in `parent`) and
    /// ends it, for the span benchmark.
    pub fn record_span(
        tracer: &crate::trace::ServiceTracer,
        parent: &opentelemetry::Context,
        kind: opentelemetry::trace::SpanKind,
        name: &'static str,
        attributes: Vec<opentelemetry::KeyValue>,
    ) {
        use opentelemetry::trace::TraceContextExt;
        let span = crate::trace::recorded::Recorded::start(
            &tracer.policy,
            parent.span().span_context(),
            kind,
            std::borrow::Cow::Borrowed(name),
            attributes,
        );
        drop(span);
    }
}

/// The names most modules need.
pub mod prelude {
    pub use crate::{rpc, rpc_module, App, Config, RpcError, Session};
}
