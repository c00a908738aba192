//! The benchmark binary `load` in each of its comparisons, run briefly so it cannot rot: every
//! phase answers requests without errors and the summary lines a reader looks for are printed.
//! Figures are not checked here (they belong to `docs/benchmarks.md`); that the measurement
//! runs end to end against real processes, brokers and transports is.

use std::process::Command;

/// Runs `load` with `args`; its standard output, after checking it succeeded.
fn load(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_load"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run load");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "load {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs `load` with `mode` for a brief round: 4 clients x 2 in flight, 1 s per phase.
fn brief(mode: &[&str]) -> String {
    let short = [
        "--clients",
        "4",
        "--inflight",
        "2",
        "--seconds",
        "1",
        "--rounds",
        "1",
    ];
    load(&[mode, &short[..]].concat())
}

/// The rows of the phases named `names`: each must exist and report no errors (the fifth
/// column of the request table).
fn assert_rows(out: &str, names: &[&str]) {
    for name in names {
        let row = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no `{name}` row in:\n{out}"));
        let req_s: f64 = row
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no rate in `{row}`"));
        assert!(req_s > 0.0, "`{name}` answered nothing: {row}");
    }
}

#[test]
fn transports_run_over_tcp_websocket_tls_and_wss_with_both_clients() {
    for client in ["rumqttc", "lean"] {
        let out = load(&[
            "--transports",
            "--client",
            client,
            "--clients",
            "4",
            "--inflight",
            "2",
            "--seconds",
            "1",
            "--rounds",
            "1",
        ]);
        assert_rows(&out, &["tcp", "ws", "tls", "wss"]);
        for ratio in ["ws/tcp: throughput", "tls/tcp: throughput", "wss/tcp"] {
            assert!(out.contains(ratio), "no `{ratio}` line:\n{out}");
        }
        // Every phase answered without an error (the errors column).
        for l in out.lines().filter(|l| l.contains("ms ")) {
            assert_eq!(l.split_whitespace().nth(4), Some("0"), "errors in `{l}`");
        }
    }
}

#[test]
fn counting_is_compared_with_a_demo_that_counts_nothing() {
    let out = brief(&["--metrics-cost"]);
    assert_rows(&out, &["counted", "uncounted"]);
    assert!(out.contains("counted/uncounted throughput"), "{out}");
    assert!(out.contains("counting adds"), "{out}");
}

#[test]
fn fanout_reaches_every_member_through_the_gate_and_mosquitto() {
    let out = load(&[
        "--fanout",
        "8",
        "--senders",
        "2",
        "--seconds",
        "1",
        "--rounds",
        "1",
    ]);
    assert_rows(&out, &["mqrs"]);
    // Without mosquitto there is no floor, and the benchmark says so.
    if !out.contains("no floor") {
        assert_rows(&out, &["mosquitto"]);
        assert!(out.contains("mqrs/mosquitto"), "no ratio:\n{out}");
    }
}

#[test]
fn idle_connections_are_held_and_all_answer_a_ping() {
    let out = load(&["--connections", "300"]);
    assert!(
        out.contains("PINGREQ answered by 150/150 TCP and 150/150 WebSocket connections"),
        "not every held connection answered:\n{out}"
    );
    assert!(out.contains("bytes/connection"), "{out}");
}

#[test]
fn the_split_runs_beside_its_bare_floor_through_both_brokers() {
    let out = brief(&["--split"]);
    let mut phases = vec![
        "emb-bare",
        "emb-untraced",
        "emb-traced",
        "emb-10%-base",
        "emb-10%",
        "1-process",
    ];
    // Without mosquitto the run says so and measures the embedded broker only.
    if !out.contains("no mosquitto phases") {
        phases.extend([
            "mosq-bare",
            "mosq-untraced",
            "mosq-traced",
            "mosq-10%-base",
            "mosq-10%",
        ]);
        assert!(out.contains("mosq: split untraced/bare"), "{out}");
    }
    assert_rows(&out, &phases);
    for l in out.lines().filter(|l| l.contains("ms ")) {
        assert_eq!(l.split_whitespace().nth(4), Some("0"), "errors in `{l}`");
    }
    assert!(out.contains("emb: split untraced/bare"), "{out}");
    assert!(out.contains("traced 100 %/untraced"), "{out}");
    // Every process on the path is measured: the modules process in the split phases, the
    // responder in the floor's, the collector and exporter threads when tracing.
    let row = |name: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(name) && !l.contains("ms "))
            .unwrap_or_else(|| panic!("no CPU line for {name}:\n{out}"))
            .to_string()
    };
    assert!(row("emb-bare").contains("responder"), "{out}");
    let traced = row("emb-traced");
    assert!(
        traced.contains("modules") && traced.contains("OTLP export"),
        "{traced}"
    );
}

#[test]
fn collector_ingest_is_measured_with_the_gate_idle_and_busy() {
    let out = brief(&["--collector"]);
    for line in [
        "ingest, gate idle",
        "gate alone",
        "ingest, gate busy",
        "median ingest",
    ] {
        assert!(out.contains(line), "no `{line}` in:\n{out}");
    }
    let spans: f64 = out
        .lines()
        .find(|l| l.starts_with("ingest, gate idle"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no rate:\n{out}"));
    assert!(spans > 0.0, "{out}");
}

#[test]
fn restarts_and_a_kill_under_load_are_measured_window_by_window() {
    let out = brief(&["--restarts"]);
    let windows = [
        "steady before",
        "SIGTERM chat-a",
        "SIGTERM chat-b",
        "SIGTERM login-a",
        "SIGTERM login-b",
        "SIGKILL login-b",
        "steady after",
    ];
    let runs = if out.contains("not through mosquitto") {
        1
    } else {
        2
    };
    for w in windows {
        let rows: Vec<&str> = out.lines().filter(|l| l.starts_with(w)).collect();
        assert_eq!(rows.len(), runs, "`{w}` rows in:\n{out}");
        for row in rows {
            // The last column: errors. Restarts and the kill of an instance of idempotent
            // handlers cost none.
            let errors = row.split_whitespace().last().unwrap_or_default();
            assert_eq!(errors, "0", "{row}\n{out}");
        }
    }
}
