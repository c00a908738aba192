//! The viewer's HTTP side: the Jaeger v1 JSON API (`jaeger.rs`, which assembles the router),
//! the v3 API (`v3.rs`), the search parameters both read (`search_params.rs`), the answers
//! read from the RED metrics (`red.rs`) and Jaeger's metrics API over them (`monitor.rs`), the
//! Jaeger UI's OTLP upload (`transform.rs`), players' request histories (`history.rs`), and
//! the web page (`ui.rs`).

mod history;
pub(crate) mod jaeger;
mod monitor;
mod red;
pub mod search_params;
mod transform;
mod ui;
mod v3;

pub use jaeger::serve as serve_viewer;
