//! The gate's connection state machine fed arbitrary bytes over real TCP, and its WebSocket
//! door arbitrary handshakes and frames: bounded proptest runs (`cargo fuzz` needs a nightly
//! toolchain this project does not assume). Whatever arrives, no task panics, every
//! connection ends, and normal clients are served after.

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

/// A WebSocket handshake the gate accepts.
const UPGRADE: &[u8] = b"GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n";

/// A frame as a client might send it: any first byte (FIN, reserved bits, opcode), masked or
/// not, with a length field of each of the three sizes that may lie about the payload.
fn frame() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<u8>(),
        any::<bool>(),
        0u8..3,
        any::<u64>(),
        proptest::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(|(first, masked, size, lie, payload)| {
            let mask = if masked { 0x80 } else { 0 };
            let mut f = vec![first];
            match size {
                0 => f.push(mask | (payload.len().min(125) as u8)),
                1 => {
                    f.push(mask | 126);
                    f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
                }
                _ => {
                    f.push(mask | 127);
                    f.extend_from_slice(&lie.to_be_bytes());
                }
            }
            if masked {
                f.extend_from_slice(&[1, 2, 3, 4]);
            }
            f.extend(payload);
            f
        })
}

/// A well-formed masked binary frame carrying `data`.
fn binary(data: &[u8]) -> Vec<u8> {
    let mut f = vec![0x82, 0x80 | 126];
    f.extend_from_slice(&(data.len() as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(data);
    f
}

fn ws_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // A handshake cut short or broken anywhere.
        (
            0usize..UPGRADE.len(),
            proptest::collection::vec(any::<u8>(), 0..256)
        )
            .prop_map(|(cut, junk)| [&UPGRADE[..cut], &junk].concat()),
        // A good handshake, then arbitrary frames.
        proptest::collection::vec(frame(), 0..8)
            .prop_map(|fs| [UPGRADE.to_vec(), fs.concat()].concat()),
        // A good handshake, CONNECT in a frame, then packet-shaped chunks in frames.
        proptest::collection::vec(packet(), 0..8).prop_map(|ps| {
            let frames: Vec<u8> = ps.iter().flat_map(|p| binary(p)).collect();
            [UPGRADE.to_vec(), binary(CONNECT_V4), frames].concat()
        }),
    ]
}

/// Starts the demo with short time limits, sends each of `cases` inputs drawn from `inputs`
/// to the listener `door` picks (reading back for a moment, then going away), waits for every
/// connection to end and checks no task panicked; hands back the runtime and the demo for the
/// check that a good client is served after.
fn fuzz(
    door: impl Fn(&common::Running) -> std::net::SocketAddr,
    inputs: impl Strategy<Value = Vec<u8>>,
    cases: u32,
) -> (tokio::runtime::Runtime, common::Running) {
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
    let addr = door(&d);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&inputs, |bytes| {
            rt.block_on(async {
                let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
                let _ = s.write_all(&bytes).await;
                // Read whatever comes back for a moment; then go away.
                let mut sink = [0u8; 4096];
                let _ = tokio::time::timeout(Duration::from_millis(5), s.read(&mut sink)).await;
            });
            Ok(())
        })
        .expect("no input may break the gate");
    rt.block_on(common::wait_for(
        "every fuzzed connection to end",
        Duration::from_secs(10),
        || d.app.gate_stats().is_some_and(|s| s.open == 0),
    ));
    let stats = d.app.gate_stats().expect("gate");
    assert_eq!(stats.panics, 0, "{stats:?}");
    assert!(stats.accepted >= u64::from(cases), "{stats:?}");
    (rt, d)
}

#[test]
fn the_websocket_door_survives_arbitrary_handshakes_and_frames() {
    let (rt, d) = fuzz(|d| d.ws, ws_input(), 300);
    rt.block_on(async {
        // A Paho client over WebSocket is served after all that.
        let lines = common::tools::paho_chat(d.ws.port(), "after-ws-fuzz", &["ws"]).await;
        assert_eq!(lines[1]["reply"]["Error"], "", "{lines:?}");
        d.app.shutdown().await;
    });
}

#[test]
fn the_gate_survives_arbitrary_bytes() {
    let (rt, d) = fuzz(|d| d.gate, input(), 400);
    rt.block_on(async {
        let c = d.logged_in("after-fuzz").await;
        let r = common::join_chat(&c, "fuzz", QoS::AtLeastOnce).await;
        assert_eq!(r["Error"], "", "{r}");
        d.app.shutdown().await;
    });
}
