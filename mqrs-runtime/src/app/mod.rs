//! `App`: the modules of one process, their lifecycle (start, run until Ctrl-C or `stop`,
//! graceful shutdown) and the services around them (gate, trace store, viewer). It is made
//! by [`App::builder`] (or [`App::new`]), which decides the transport for calls to modules
//! that are not in this process.

mod builder;
mod checked;
mod clients;
mod error;
mod handle;
mod history;
mod module;
mod run;
#[cfg(feature = "viewer")]
mod viewer;

pub use builder::AppBuilder;
pub use clients::{Delivery, Recipient};
pub use error::AppError;
pub use handle::{Addrs, App, RootSpan};
pub use module::{Lifecycle, RpcModule};
