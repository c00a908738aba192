//! The gate: the client-facing MQTT server. Clients publish to `Module/HD_Handler/msgid` and
//! get the reply on the same topic. It also serves `Gate/Bind`, `Gate/UnBind`, `Gate/Push` and
//! `Gate/Send` (see `handlers`), so a handler in any process can change the session the gate
//! keeps for a connection, or send its client a message.

mod admit;
mod conn;
mod connect;
pub(crate) mod handlers;
mod hook;
mod listen;
mod pages;
mod peer;
mod request;
mod rules;
mod state;
mod stats;
mod tls;
pub(crate) mod topic;
mod ws;

pub use admit::{Admission, ConnectInfo, Password, Refusal};
pub(crate) use admit::{ConnectCell, ConnectHook};
pub(crate) use hook::HookCell;
pub use hook::{GateRequest, TracingHook};
pub(crate) use listen::{bind, Door, StartError};
pub(crate) use pages::{Page, PagesCell};
pub(crate) use state::Deps;
pub(crate) use state::GATE_MODULE;
pub(crate) use stats::GateCounters;
pub use stats::GateStats;
