//! The gate's clocks, measured from a raw socket: keepalive is enforced at one and a half
//! intervals and every packet resets it, the CONNECT deadline is the configured time (no
//! less, not much more), and a stopped app closes its listeners at once.
//!
//! Each window is wide enough for a loaded 2-core machine and narrow enough that the wrong
//! rule (2.5 keepalives, half the connect timeout, a listener left open) falls outside it.

mod common;

use std::time::{Duration, Instant};

use common::raw::{
    connect_with_keepalive, read_exact, read_until_closed, CONNACK_OK, CONNECT_V4, PINGREQ,
};
use common::start_demo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Connects with keepalive 1 s and returns the socket after the CONNACK.
async fn connected(addr: std::net::SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(&connect_with_keepalive(1))
        .await
        .expect("write");
    assert_eq!(
        read_exact(&mut s, 4, Duration::from_secs(3)).await,
        CONNACK_OK
    );
    s
}

/// Waits until the gate closes `s` without sending anything, and asserts that this happened
/// between `min_ms` and `max_ms` after `since`.
async fn assert_closed_between(s: &mut TcpStream, since: Instant, min_ms: u64, max_ms: u64) {
    assert!(read_until_closed(s, Duration::from_secs(4))
        .await
        .is_empty());
    let waited = since.elapsed();
    assert!(
        waited >= Duration::from_millis(min_ms) && waited < Duration::from_millis(max_ms),
        "closed after {waited:?}, expected between {min_ms} and {max_ms} ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_is_dropped_after_one_and_a_half_keepalives() {
    let d = start_demo(|_| {}).await;
    let mut s = connected(d.gate).await;
    // 1.5 × 1 s. Enforcing at 2.5 × would close at 2.5 s; at 1 × at 1 s.
    assert_closed_between(&mut s, Instant::now(), 1400, 2200).await;
    d.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_packet_resets_the_keepalive_timer() {
    let d = start_demo(|_| {}).await;
    // PINGREQ every 0.8 s for 4 s: each is answered, and the connection outlives 1.5 s by far.
    let mut s = connected(d.gate).await;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(800)).await;
        s.write_all(PINGREQ).await.expect("ping");
        assert_eq!(
            read_exact(&mut s, 2, Duration::from_secs(1)).await,
            [0xD0, 0]
        );
    }
    // Any other packet counts as well: a QoS 0 PUBLISH without msgid (no reply) every 0.8 s.
    let publish = [&[0x30, 17, 0, 15][..], b"Chat/HD_Nothing"].concat();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(800)).await;
        s.write_all(&publish).await.expect("publish");
    }
    // Then silence: closed about 1.5 s after the last packet, not before.
    assert_closed_between(&mut s, Instant::now(), 1400, 2200).await;
    d.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_must_arrive_within_the_connect_timeout_and_no_sooner_is_enforced() {
    let d = start_demo(|c| c.gate.connect_timeout_ms = 1000).await;
    // Silence: closed at the deadline, not before it.
    let mut s = TcpStream::connect(d.gate).await.expect("connect");
    assert_closed_between(&mut s, Instant::now(), 950, 1700).await;
    // A CONNECT sent at 0.7 s, inside the deadline, is accepted.
    let mut s = TcpStream::connect(d.gate).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(700)).await;
    s.write_all(CONNECT_V4).await.expect("write");
    assert_eq!(
        read_exact(&mut s, 4, Duration::from_secs(2)).await,
        CONNACK_OK
    );
    d.app.shutdown().await;
}

/// True when a TCP connection to `addr` is refused within a short wait.
async fn refused(addr: std::net::SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr)).await,
        Ok(Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_app_closes_its_listeners_promptly() {
    let d = start_demo(|_| {}).await;
    // A client is connected while the app stops; it is closed too. So is a socket that never
    // sent CONNECT (a probe, a port scanner): the stop does not wait for its connect timeout.
    let mut s = connected(d.gate).await;
    let _idle = TcpStream::connect(d.gate).await.expect("idle socket");
    assert!(!refused(d.gate).await && !refused(d.viewer).await);
    let started = Instant::now();
    d.app.shutdown().await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "shutdown took {took:?}: a service kept running past its stop signal"
    );
    assert!(refused(d.gate).await, "the gate still accepts connections");
    assert!(
        refused(d.viewer).await,
        "the viewer still accepts connections"
    );
    assert!(read_until_closed(&mut s, Duration::from_secs(1))
        .await
        .is_empty());
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_fails_part_way_closes_what_it_had_opened() {
    // The collector's port is taken, and the collector starts last: by then the embedded
    // broker, its link and the gate are up, and must all be closed again.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let (gate, broker) = (free_port(), free_port());
    let mut cfg = mqrs_runtime::Config::ephemeral();
    cfg.gate.tcp_addr = ([127, 0, 0, 1], gate).into();
    cfg.broker.embedded_addr = ([127, 0, 0, 1], broker).into();
    cfg.trace.collector_addr = taken.local_addr().expect("addr");
    let app = demo::build_app(cfg).expect("app");
    let e = app.start().await.expect_err("the collector cannot bind");
    assert!(e.to_string().contains("OTLP collector"), "{e}");
    for port in [gate, broker] {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        assert!(
            refused(addr).await,
            "port {port} still open after the failed start"
        );
    }
}
