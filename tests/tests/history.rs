//! The gate's request history outlives a restart with a data directory: a player's requests,
//! guest login included, read back from `/api/history` by the next process.

mod common;

use rumqttc::QoS;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_history_outlives_a_restart_with_a_data_dir() {
    let dir = std::env::temp_dir().join(format!(
        "mqrs-history-restart-{}-{}",
        std::process::id(),
        common::browser::rand_suffix()
    ));
    let with_dir = |c: &mut mqrs_runtime::Config| c.trace.data_dir = dir.display().to_string();
    let d = common::start_demo(with_dir).await;
    let c = d.logged_in("rita").await;
    for _ in 0..3 {
        let r = c
            .request("Chat/HD_CurrentRoom", b"{}", QoS::AtLeastOnce)
            .await
            .expect("reply");
        assert_eq!(r["Error"], "", "{r}");
    }
    let failed = c
        .request("Chat/HD_JoinChat", br#"{"roomName": ""}"#, QoS::AtLeastOnce)
        .await
        .expect("reply");
    assert_ne!(failed["Error"], "", "{failed}");
    let (_, before) = d.get("/api/history?user=rita").await;
    let before = before["data"][0]["entries"].clone();
    assert_eq!(before.as_array().map(Vec::len), Some(5), "{before}");
    d.app.shutdown().await;

    let again = common::start_demo(with_dir).await;
    let (status, after) = again.get("/api/history?user=rita").await;
    assert_eq!(status, 200);
    let session = &after["data"][0];
    assert!(session["closed_at_us"].as_u64().is_some(), "{after}");
    let entries = session["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 5, "{after}");
    for (a, b) in entries.iter().zip(before.as_array().expect("before")) {
        for k in [
            "start_us",
            "duration_us",
            "operation",
            "reply_bytes",
            "error_type",
            "trace_id",
        ] {
            assert_eq!(a[k], b[k], "{k}: {a} against {b}");
        }
    }
    assert_eq!(entries[4]["error_type"], "handler_error", "{after}");
    assert!(entries[4]["error"].as_str().is_some_and(|e| !e.is_empty()));
    // By session id too.
    let sid = session["session_id"].as_str().expect("session id");
    let (_, by_session) = again.get(&format!("/api/history?session={sid}")).await;
    assert_eq!(by_session["data"][0]["user_id"], "rita");
    let (status, _) = again.get("/api/history").await;
    assert_eq!(status, 400, "one of session and user is asked for");
    again.app.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
