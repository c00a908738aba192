//! MQTT over WebSocket: the opening handshake (`handshake`) and the byte stream over binary
//! frames (`frames`) that the connection state machine reads and writes as it does TCP.
//!
//! Frames are decoded as they arrive rather than through `tokio-tungstenite`'s message
//! stream, which buffers every message whole (up to its size cap) before handing it on: here
//! a large MQTT packet in one frame counts against the gate's byte budget and packet timeout
//! from its first byte, as over TCP. `tungstenite` still reads and writes the frame headers
//! and derives the handshake's accept key.

mod frames;
mod handshake;

pub(crate) use frames::{violation, WsStream};
pub(crate) use handshake::{open, Opened};
