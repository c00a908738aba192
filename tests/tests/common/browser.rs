//! Headless Chromium for the viewer's tests: render a page and read the DOM its scripts built,
//! write a screenshot, or drive the page (clicks, typing) over the DevTools protocol.

use std::time::Duration;

use super::tools;

/// Renders `url` in headless Chromium and returns the DOM after scripts ran; also writes a
/// screenshot of the view to `target/screenshots/{shot}.png` for review.
pub async fn render_and_shoot(url: &str, shot: &str) -> String {
    let dir = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/screenshots"
    ));
    std::fs::create_dir_all(dir).expect("screenshot directory");
    let path = dir.join(format!("{shot}.png"));
    let _ = std::fs::remove_file(&path);
    chromium(
        url,
        &[
            format!("--screenshot={}", path.display()),
            "--window-size=1300,900".into(),
        ],
    )
    .await;
    let png = std::fs::read(&path).expect("a screenshot was written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 5_000,
        "{}: {} bytes",
        path.display(),
        png.len()
    );
    render(url).await
}

/// Renders `url` in headless Chromium and returns the DOM after scripts ran.
pub async fn render(url: &str) -> String {
    chromium(url, &["--dump-dom".to_string()]).await
}

/// Runs headless Chromium on `url` with `extra` flags; returns what it printed.
pub async fn chromium(url: &str, extra: &[String]) -> String {
    let chromium = tools::require("chromium", "chromium");
    let profile = std::env::temp_dir().join(format!(
        "mqrs-chromium-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    let out = tools::run(
        tokio::process::Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--virtual-time-budget=5000",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg(url),
        Duration::from_secs(60),
    )
    .await;
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

pub fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A page in headless Chromium, driven over the DevTools protocol: real mouse clicks and key
/// presses go through the browser's input pipeline, and scripts read what the page shows.
pub struct Page {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next_id: u64,
    browser: tokio::process::Child,
    profile: std::path::PathBuf,
}

impl Page {
    /// Starts Chromium on `url` and waits until the page has loaded.
    pub async fn open(url: &str) -> Page {
        Page::open_with(url, &[]).await
    }

    /// [`Page::open`] with `extra` Chromium flags (say, a certificate's key to trust).
    pub async fn open_with(url: &str, extra: &[String]) -> Page {
        let chromium = tools::require("chromium", "chromium");
        let profile =
            std::env::temp_dir().join(format!("mqrs-cdp-{}-{}", std::process::id(), rand_suffix()));
        std::fs::create_dir_all(&profile).expect("profile directory");
        let browser = tokio::process::Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
                "--window-size=1300,900",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg("about:blank")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            // Its own process group, so the browser and all its helper processes end together.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("start chromium");
        // Chromium writes the port it chose to this file once it listens.
        let port_file = profile.join("DevToolsActivePort");
        let mut port = None;
        for _ in 0..300 {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                port = text
                    .lines()
                    .next()
                    .and_then(|l| l.trim().parse::<u16>().ok());
                if port.is_some() {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let port = port.expect("chromium opened its DevTools port within 30 s");
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let (_, list) = tokio::time::timeout(
            Duration::from_secs(10),
            super::http_get_text(addr, "/json/list"),
        )
        .await
        .expect("chromium lists its targets within 10 s");
        let targets: serde_json::Value = serde_json::from_str(&list).expect("target list");
        let ws_url = targets
            .as_array()
            .and_then(|t| t.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .expect("a page target")
            .to_string();
        let (ws, _) = tokio_tungstenite::connect_async(&ws_url)
            .await
            .expect("DevTools connection");
        let mut page = Page {
            ws,
            next_id: 0,
            browser,
            profile,
        };
        page.goto(url).await;
        page
    }

    /// Loads `url` and waits for it to finish loading.
    pub async fn goto(&mut self, url: &str) {
        self.call("Page.navigate", serde_json::json!({ "url": url }))
            .await;
        self.wait_for(
            "document.readyState === 'complete' && location.href !== 'about:blank'",
            "the page loads",
        )
        .await;
    }

    /// Sends one DevTools command and returns its result.
    pub async fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        match self.try_call(method, params).await {
            Ok(v) => v,
            Err(e) => panic!("{method}: {e}"),
        }
    }

    /// Sends one DevTools command; its result, or the error Chromium answered.
    async fn try_call(
        &mut self,
        method: &str,
        params: serde_json::Value,
    ) -> Result<serde_json::Value, serde_json::Value> {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        self.next_id += 1;
        let id = self.next_id;
        let msg = serde_json::json!({ "id": id, "method": method, "params": params });
        self.ws
            .send(Message::text(msg.to_string()))
            .await
            .expect("send to chromium");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("{method}: no answer from chromium in 30 s"));
            let Some(Ok(Message::Text(text))) = next else {
                continue;
            };
            let v: serde_json::Value = serde_json::from_str(&text).expect("DevTools JSON");
            if v["id"] == id {
                return match v.get("error") {
                    Some(e) => Err(e.clone()),
                    None => Ok(v["result"].clone()),
                };
            }
        }
    }

    /// Runs `js` in the page (promises awaited) and returns its value.
    pub async fn eval(&mut self, js: &str) -> serde_json::Value {
        match self.try_eval(js).await {
            Ok(v) => v,
            Err(e) => panic!("Runtime.evaluate: {e}"),
        }
    }

    /// [`Page::eval`], or the error Chromium answered (a script that throws still fails).
    async fn try_eval(&mut self, js: &str) -> Result<serde_json::Value, serde_json::Value> {
        let r = self
            .try_call(
                "Runtime.evaluate",
                serde_json::json!({ "expression": js, "awaitPromise": true, "returnByValue": true }),
            )
            .await?;
        assert!(
            r.get("exceptionDetails").is_none(),
            "script failed: {js}\n{}",
            r["exceptionDetails"]
        );
        Ok(r["result"]["value"].clone())
    }

    /// Waits until `js` is truthy in the page (10 s at most) and returns its value. A page
    /// navigating while `js` runs (a click that opens another page) counts as not yet.
    pub async fn wait_for(&mut self, js: &str, what: &str) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let r = self
                .try_eval(&format!(
                    "(() => {{ try {{ return {js}; }} catch (_) {{ return null; }} }})()"
                ))
                .await;
            let v = match r {
                Ok(v) => v,
                Err(e) if navigating(&e) => serde_json::Value::Null,
                Err(e) => panic!("Runtime.evaluate: {e}"),
            };
            let truthy = !matches!(&v, serde_json::Value::Null | serde_json::Value::Bool(false))
                && v != serde_json::json!(0)
                && v != serde_json::json!("");
            if truthy {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "waited 10 s for {what} ({js})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the middle of the first element matching `selector` with the mouse, as a user does.
    pub async fn click(&mut self, selector: &str) {
        let sel = serde_json::to_string(selector).expect("selector as JSON");
        let at = self
            .wait_for(
                &format!(
                    "(() => {{ const e = document.querySelector({sel}); if (!e) return null; \
                     e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); \
                     return r.width && r.height ? [r.x + r.width / 2, r.y + r.height / 2] : null; }})()"
                ),
                &format!("a visible `{selector}` to click"),
            )
            .await;
        let (x, y) = (at[0].clone(), at[1].clone());
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                serde_json::json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }),
            )
            .await;
        }
    }

    /// Types `text` into the focused element, key by key.
    pub async fn type_text(&mut self, text: &str) {
        for ch in text.chars() {
            self.call(
                "Input.dispatchKeyEvent",
                serde_json::json!({ "type": "char", "text": ch.to_string() }),
            )
            .await;
        }
    }

    /// Writes a screenshot of the page to `target/screenshots/{shot}.png` for review.
    pub async fn shoot(&mut self, shot: &str) {
        use base64::Engine;
        let r = self
            .call(
                "Page.captureScreenshot",
                serde_json::json!({ "format": "png" }),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("image data"))
            .expect("base64 image");
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 5_000,
            "{shot}: {} bytes",
            png.len()
        );
        let dir = std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../target/screenshots"
        ));
        std::fs::create_dir_all(dir).expect("screenshot directory");
        std::fs::write(dir.join(format!("{shot}.png")), png).expect("write screenshot");
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // The whole group: Chromium's helper processes outlive a killed main process. The
        // group id is the browser's pid (it leads its own group); never 0 or 1, which would
        // mean this process's group or every process.
        if let Some(pid) = self
            .browser
            .id()
            .and_then(|p| libc::pid_t::try_from(p).ok())
        {
            if pid > 1 {
                // SAFETY: kill(2) takes plain integers and touches no memory of ours.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
            }
        }
        let _ = self.browser.start_kill();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// True for the DevTools errors of a script run while its page was being replaced.
fn navigating(e: &serde_json::Value) -> bool {
    let m = e["message"].as_str().unwrap_or_default();
    [
        "Inspected target navigated or closed",
        "Execution context was destroyed",
        "Cannot find context with specified id",
    ]
    .iter()
    .any(|x| m.contains(x))
}
