//! What both benchmarks call: a 49-byte JSON message and a module that echoes it.

use mqrs_runtime::{rpc, rpc_module, Session};
use serde::{Deserialize, Serialize};

/// A 49-byte JSON body, as in the field notes' floors.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Msg {
    #[serde(rename = "roomName")]
    pub room_name: String,
    #[serde(rename = "userName")]
    pub user_name: String,
    pub seq: u32,
}

/// The message every call sends.
pub fn msg() -> Msg {
    Msg {
        room_name: "mqant".into(),
        user_name: "user1".into(),
        seq: 123,
    }
}

/// A module whose `echo` returns its argument.
pub struct Bench;

#[rpc_module]
impl Bench {
    #[rpc]
    async fn echo(&self, _session: Session, m: Msg) -> Result<Msg, String> {
        Ok(m)
    }
}
