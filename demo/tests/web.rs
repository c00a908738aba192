//! The chat page's own MQTT client (`demo/web/mqtt.js`) passes its unit tests under Node
//! (`node --test demo/web/`). README's test command, `cargo xtask test`, installs Node when
//! it is missing.

use std::process::Command;

#[test]
fn the_chat_pages_mqtt_client_passes_its_unit_tests() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/web/");
    let out = Command::new("node")
        .args(["--test", dir])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run node ({e}); README's test command, `cargo xtask test`, installs it")
        });
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every test file ran: the client's six tests, none skipped.
    assert!(text.contains("# pass 6"), "{text}");
    assert!(text.contains("# fail 0"), "{text}");
}
