//! The chat page: served by the gate's WebSocket port (`GET /`, and its MQTT client at
//! `/mqtt.js`), from the same origin as the MQTT endpoint the page connects to. The page and its
//! client are the team's own (`demo/web/`), with no library.

use mqrs_runtime::App;

/// The chat page; `{{VIEWER}}` stands for the trace viewer's address.
const CHAT_HTML: &str = include_str!("../web/chat.html");

/// The page's MQTT 3.1.1 client over WebSocket.
const MQTT_JS: &str = include_str!("../web/mqtt.js");

/// Adds the chat page to `app`'s WebSocket port; its message lines link to traces in the
/// viewer at `viewer` (`http://host:port`), when there is one.
pub fn add_pages(app: &App, viewer: Option<&str>) {
    let html = CHAT_HTML.replace("{{VIEWER}}", viewer.unwrap_or(""));
    app.add_page("/", "text/html; charset=utf-8", html);
    app.add_page("/mqtt.js", "text/javascript; charset=utf-8", MQTT_JS);
}
