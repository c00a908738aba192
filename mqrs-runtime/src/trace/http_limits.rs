//! Bounds on the HTTP side (viewer and OTLP collector), so that no number of HTTP clients can
//! starve the gate: at most [`MAX_CONNECTIONS`] connections are accepted at once (the rest
//! wait in the kernel's backlog and take no file descriptor of the process), a connection that
//! sends nothing within [`FIRST_BYTE`] of being accepted, or nothing for [`IDLE`] later, is
//! closed, and at most [`MAX_HEAVY_QUERIES`] searches over the store run at once. Also here: the
//! one check both HTTP services use to give the HTTP layer's own errors their error shape.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// Most HTTP connections open at once per listener.
pub const MAX_CONNECTIONS: usize = 64;

/// A connection silent this long (between requests, or in the middle of one) is closed.
pub const IDLE: Duration = Duration::from_secs(10);

/// A new connection must send its first bytes within this time.
pub const FIRST_BYTE: Duration = Duration::from_secs(2);

/// Most store searches (trace search, latency, dependencies) running at once in the process.
pub const MAX_HEAVY_QUERIES: usize = 1;

/// The process's permits for store searches.
pub(crate) static HEAVY_QUERIES: Semaphore = Semaphore::const_new(MAX_HEAVY_QUERIES);

/// A listener that accepts a connection only when fewer than [`MAX_CONNECTIONS`] are open.
pub(crate) struct Limited {
    inner: TcpListener,
    open: Arc<Semaphore>,
}

impl Limited {
    /// Wraps a bound listener.
    pub(crate) fn new(inner: TcpListener) -> Limited {
        Limited {
            inner,
            open: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
        }
    }
}

impl axum::serve::Listener for Limited {
    type Io = LimitedStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            // The semaphore is never closed; should it be, accept without a permit bound.
            let permit = self.open.clone().acquire_owned().await.ok();
            match self.inner.accept().await {
                Ok((io, addr)) => {
                    let _ = io.set_nodelay(true);
                    let stream = LimitedStream {
                        io,
                        _permit: permit,
                        idle: Box::pin(tokio::time::sleep(FIRST_BYTE)),
                    };
                    return (stream, addr);
                }
                Err(e) => {
                    // Out of descriptors and the like: wait rather than spin.
                    tracing::debug!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// An accepted connection: holds its place among the open ones, and fails its reads once it
/// has been silent for [`IDLE`].
pub(crate) struct LimitedStream {
    io: TcpStream,
    _permit: Option<OwnedSemaphorePermit>,
    idle: Pin<Box<Sleep>>,
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.idle.as_mut().reset(Instant::now() + IDLE);
                }
                Poll::Ready(r)
            }
            Poll::Pending => match self.idle.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "HTTP connection idle",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// An error answer the HTTP layer made itself (plain text, not `typed` in one of the service's
/// own content types): its status and text, so the service can answer in its own error shape.
/// Anything else comes back unchanged.
pub(crate) async fn untyped_error(
    r: axum::response::Response,
    typed: &[&str],
) -> Result<(axum::http::StatusCode, String), axum::response::Response> {
    let status = r.status();
    let is_typed = r
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| typed.iter().any(|t| v.starts_with(t)));
    if !(status.is_client_error() || status.is_server_error()) || is_typed {
        return Err(r);
    }
    let text = match axum::body::to_bytes(r.into_body(), 64 * 1024).await {
        Ok(b) if !b.is_empty() => String::from_utf8_lossy(&b).into_owned(),
        _ => status.canonical_reason().unwrap_or("error").to_string(),
    };
    Ok((status, text))
}
