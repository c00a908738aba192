//! The gate's connection state machine fed arbitrary bytes over real TCP: a bounded proptest
//! run (`cargo fuzz` needs a nightly toolchain this project does not assume). Whatever arrives,
//! no task panics, every connection ends, and normal clients are served after.

mod common;

use std::time::Duration;

use common::raw::CONNECT_V4;
use common::start_demo;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use rumqttc::QoS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A packet-shaped chunk: a type/flags byte, a short length, and that many arbitrary bytes (the
/// length may lie).
fn packet() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<u8>(),
        0u8..64,
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(first, len, body)| {
            let mut p = vec![first, len];
            p.extend(body);
            p
        })
}

fn input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // Anything at all, CONNECT or not.
        proptest::collection::vec(any::<u8>(), 0..1024),
        // A valid CONNECT, then anything.
        proptest::collection::vec(any::<u8>(), 0..1024)
            .prop_map(|rest| [CONNECT_V4, &rest].concat()),
        // A valid CONNECT, then packet-shaped chunks.
        proptest::collection::vec(packet(), 0..16).prop_map(|ps| [
            CONNECT_V4.to_vec(),
            ps.concat()
        ]
        .concat()),
    ]
}

#[test]
fn the_gate_survives_arbitrary_bytes() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let d = rt.block_on(start_demo(|c| {
        c.gate.connect_timeout_ms = 300;
        c.gate.max_idle_ms = 500;
        c.gate.packet_timeout_ms = 200;
    }));
    let port = d.gate.port();
    let mut runner = TestRunner::new(Config {
        cases: 400,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&input(), |bytes| {
            rt.block_on(async {
                let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .expect("connect");
                let _ = s.write_all(&bytes).await;
                // Read whatever comes back for a moment; then go away.
                let mut sink = [0u8; 4096];
                let _ = tokio::time::timeout(Duration::from_millis(5), s.read(&mut sink)).await;
            });
            Ok(())
        })
        .expect("no input may break the gate");
    rt.block_on(async {
        common::wait_for(
            "every fuzzed connection to end",
            Duration::from_secs(10),
            || d.app.gate_stats().is_some_and(|s| s.open == 0),
        )
        .await;
        let stats = d.app.gate_stats().expect("gate");
        assert_eq!(stats.panics, 0, "{stats:?}");
        assert!(stats.accepted >= 400, "{stats:?}");
        let c = d.logged_in("after-fuzz").await;
        let r = common::join_chat(&c, "fuzz", QoS::AtLeastOnce).await;
        assert_eq!(r["Error"], "", "{r}");
        d.app.shutdown().await;
    });
}
