//! What both benchmarks call: a 49-byte JSON message and a module that echoes it.

use std::time::{Duration, Instant};

use mqrs_runtime::{rpc, rpc_module, App, Session};
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

/// Runs `f` `n / 10` times to warm up, then `n` times one after the other; returns the sorted
/// latencies and the total time of the measured calls.
pub async fn sequential<F, Fut>(n: usize, mut f: F) -> (Vec<Duration>, Duration)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..n / 10 {
        f().await;
    }
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        f().await;
        lat.push(t.elapsed());
    }
    let total = start.elapsed();
    lat.sort();
    (lat, total)
}

/// One `Bench/echo` call through `app` with `session`.
pub async fn echo(app: &App, session: &Session, m: &Msg) {
    let r: Msg = app
        .call("Bench", "echo", session, (m,))
        .await
        .expect("call");
    std::hint::black_box(r);
}
