//! The WebSocket opening handshake (RFC 6455 §4.2) on the gate's WebSocket port: any request
//! path is accepted (clients default to `/mqtt`; mqant's used `/mqant`); a client that offers
//! subprotocols must offer `mqtt` (MQTT 3.1.1 §6), which is echoed back; no extension is
//! agreed. A plain `GET` of a page the app added is answered with it; any other request that
//! is no WebSocket upgrade is answered in plain HTTP and closed.

use bytes::BytesMut;
use mqrs_base::sync::RwLocked;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::frames::WsStream;
use crate::gate::pages::{Page, PagesCell};

/// Longest request head read, in bytes.
const MAX_HEAD: usize = 8 * 1024;

/// Most request headers read.
const MAX_HEADERS: usize = 48;

/// Why a handshake did not open a WebSocket; the client was answered in plain HTTP where it
/// could be.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    /// Reading or answering failed.
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    /// The connection ended before the request head did.
    #[error("the connection closed during the handshake")]
    Closed,
    /// A request that breaks the handshake's rules, answered with its HTTP status.
    #[error("{1} (answered {0})")]
    Bad(u16, &'static str),
}

/// What a request on the WebSocket port opened.
pub(crate) enum Opened<S> {
    /// A WebSocket, handshake done.
    Ws(WsStream<S>),
    /// A page was served; the connection is closed.
    Page,
}

/// Reads the handshake request, answers it, and returns the open stream (or serves the page
/// asked for).
pub(crate) async fn open<S>(mut io: S, pages: &PagesCell) -> Result<Opened<S>, Refused>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(1024);
    let (answer, head_len) = loop {
        if io.read_buf(&mut buf).await? == 0 {
            return Err(Refused::Closed);
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(n)) => {
                if let Some(page) = page_for(&req, pages) {
                    serve(&mut io, &page).await?;
                    return Ok(Opened::Page);
                }
                break (answer(&req), n);
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {
                buf.reserve(1024.min(MAX_HEAD - buf.len()));
            }
            Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
                break (
                    Err(Refused::Bad(431, "a request head over 8 KiB or 48 headers")),
                    0,
                );
            }
            Err(_) => break (Err(Refused::Bad(400, "not an HTTP request")), 0),
        }
    };
    match answer {
        Ok(response) => {
            io.write_all(response.as_bytes()).await?;
            let early = buf.split_off(head_len);
            Ok(Opened::Ws(WsStream::new(io, early)))
        }
        Err(Refused::Bad(status, why)) => {
            let body = match status {
                426 => {
                    "This port speaks MQTT over WebSocket: connect with the subprotocol `mqtt`.\n"
                }
                _ => why,
            };
            let extra = if status == 426 {
                "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
            } else {
                ""
            };
            let reply = format!(
                "HTTP/1.1 {status} {}\r\n{extra}Connection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
                reason(status),
                body.len(),
            );
            let _ = io.write_all(reply.as_bytes()).await;
            let _ = io.shutdown().await;
            Err(Refused::Bad(status, why))
        }
        Err(e) => Err(e),
    }
}

/// The page a plain `GET` (no upgrade) asks for, if the app added one at its path.
fn page_for(req: &httparse::Request<'_, '_>, pages: &PagesCell) -> Option<Page> {
    if req.method != Some("GET") || values(req, "upgrade").next().is_some() {
        return None;
    }
    let path = req.path?.split(['?', '#']).next()?;
    pages.read_locked().get(path).cloned()
}

/// Answers with `page` and closes.
async fn serve<S: AsyncWrite + Unpin>(io: &mut S, page: &Page) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n",
        page.content_type,
        page.body.len()
    );
    io.write_all(head.as_bytes()).await?;
    io.write_all(&page.body).await?;
    io.shutdown().await
}

/// The `101 Switching Protocols` answer to `req`, or why it is refused.
fn answer(req: &httparse::Request<'_, '_>) -> Result<String, Refused> {
    let header = |name: &'static str| values(req, name);
    let has_token = |name: &'static str, token: &str| {
        header(name)
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if req.method != Some("GET") {
        return Err(Refused::Bad(405, "a WebSocket handshake is a GET"));
    }
    if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") {
        return Err(Refused::Bad(
            426,
            "a plain HTTP request, not a WebSocket upgrade",
        ));
    }
    if !header("sec-websocket-version").any(|v| v.trim() == "13") {
        return Err(Refused::Bad(426, "a WebSocket version other than 13"));
    }
    let Some(key) = header("sec-websocket-key").next().map(str::trim) else {
        return Err(Refused::Bad(400, "no Sec-WebSocket-Key"));
    };
    if key.len() != 24 {
        return Err(Refused::Bad(
            400,
            "a Sec-WebSocket-Key that is not 16 bytes in base64",
        ));
    }
    let offered: Vec<&str> = header("sec-websocket-protocol")
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let protocol = match offered.is_empty() {
        // A client that names no subprotocol is taken at its word that it speaks MQTT.
        true => "",
        false if offered.contains(&"mqtt") => "Sec-WebSocket-Protocol: mqtt\r\n",
        false => return Err(Refused::Bad(400, "subprotocols offered, but not `mqtt`")),
    };
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    Ok(format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{protocol}\r\n"
    ))
}

/// The values of every `name` header (case-insensitive) that are text.
fn values<'r>(
    req: &'r httparse::Request<'_, '_>,
    name: &'static str,
) -> impl Iterator<Item = &'r str> + 'r {
    req.headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn handshake(request: &str) -> (Result<(), String>, String) {
        let (a, mut b) = tokio::io::duplex(64 * 1024);
        b.write_all(request.as_bytes()).await.expect("write");
        let pages = PagesCell::default();
        pages.write_locked().insert(
            "/".into(),
            Page {
                content_type: "text/html; charset=utf-8",
                body: bytes::Bytes::from_static(b"<p>hi</p>"),
            },
        );
        let r = open(a, &pages)
            .await
            .map_err(|e| e.to_string())
            .and_then(|o| match o {
                Opened::Ws(_) => Ok(()),
                Opened::Page => Err("a page".into()),
            });
        let mut back = vec![0u8; 4096];
        let n = b.read(&mut back).await.unwrap_or(0);
        (r, String::from_utf8_lossy(&back[..n]).into_owned())
    }

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    #[tokio::test]
    async fn an_mqtt_client_gets_its_subprotocol_and_the_accept_key_of_rfc_6455() {
        let req = format!("GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqttv3.1, mqtt\r\n\r\n");
        let (r, back) = handshake(&req).await;
        assert!(r.is_ok(), "{r:?}");
        assert!(back.starts_with("HTTP/1.1 101 "), "{back}");
        // RFC 6455 §1.3's example.
        assert!(
            back.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
            "{back}"
        );
        assert!(back.contains("Sec-WebSocket-Protocol: mqtt\r\n"), "{back}");
        // Any path, and no subprotocol at all, is accepted too.
        let req = format!("GET /anything?x=1 HTTP/1.1\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n");
        let (r, back) = handshake(&req).await;
        assert!(
            r.is_ok() && !back.contains("Sec-WebSocket-Protocol"),
            "{back}"
        );
    }

    #[tokio::test]
    async fn what_is_not_an_mqtt_websocket_is_answered_in_http_and_refused() {
        let ws = |extra: &str| {
            format!("GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n")
        };
        let cases = [
            (
                ws(&format!(
                    "Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Protocol: chat\r\n"
                )),
                "400",
            ),
            (ws(""), "400"),
            ("GET /other HTTP/1.1\r\nHost: x\r\n\r\n".to_string(), "426"),
            (
                ws(&format!("Sec-WebSocket-Key: {KEY}\r\n")).replace("GET", "POST"),
                "405",
            ),
            (
                format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000)),
                "431",
            ),
            (
                "\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00\r\n\r\n".to_string(),
                "400",
            ),
        ];
        for (req, status) in cases {
            let (r, back) = handshake(&req).await;
            assert!(r.is_err(), "{req:?}");
            assert!(
                back.starts_with(&format!("HTTP/1.1 {status} ")),
                "{req:?}: {back}"
            );
        }
    }

    #[tokio::test]
    async fn a_plain_get_of_an_added_page_is_answered_with_it() {
        let (r, back) = handshake("GET /?room=x HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(r, Err("a page".to_string()));
        assert!(back.starts_with("HTTP/1.1 200 OK\r\n"), "{back}");
        assert!(
            back.contains("Content-Type: text/html; charset=utf-8\r\n"),
            "{back}"
        );
        assert!(back.ends_with("\r\n\r\n<p>hi</p>"), "{back}");
    }
}
