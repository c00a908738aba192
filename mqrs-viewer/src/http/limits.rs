//! The HTTP side's own thread and its bounds (viewer and OTLP collector), so that no number of
//! HTTP clients can starve the gate or exhaust the process.
//!
//! - Both services run on one thread of their own ([`runtime`]), at a lower scheduling
//!   priority than the gate's workers: building a large answer or decoding a large OTLP body
//!   can take at most that one thread, never a gate worker.
//! - At most [`MAX_CONNECTIONS`] connections are open at once per listener (the rest wait in
//!   the kernel's backlog), at most [`MAX_PER_ADDRESS`] of them from one IP address (more are
//!   closed at once and counted), so one host cannot take every slot.
//! - A connection must send its first bytes within [`FIRST_BYTE`], each request head within
//!   [`HEAD`], and each body at [`BODY_MIN_RATE`] on average after [`BODY_GRACE`]; a connection
//!   silent for [`IDLE`] is closed.
//! - At most [`MAX_HEAVY_QUERIES`] answers that scan the store or build a large body run at
//!   once in the process.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::{pin, Pin};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::Router;
use futures_util::StreamExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use mqrs_base::budget::{Budget, Share};
use mqrs_base::sync::Locked;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, Sleep};

/// Most HTTP connections open at once per listener.
pub const MAX_CONNECTIONS: usize = 64;

/// Most HTTP connections one IP address may hold open at once per listener.
pub const MAX_PER_ADDRESS: usize = 16;

/// A connection silent this long (between requests, or in the middle of one) is closed, and
/// so is one that takes none of an answer's bytes for this long.
pub const IDLE: Duration = Duration::from_secs(10);

/// A new connection must send its first bytes within this time.
pub const FIRST_BYTE: Duration = Duration::from_secs(2);

/// A request's head (request line and headers) must arrive whole within this time; a
/// keep-alive connection waiting for its next request is closed after it too.
pub const HEAD: Duration = Duration::from_secs(5);

/// A request body gets this long before [`BODY_MIN_RATE`] applies to it.
pub const BODY_GRACE: Duration = Duration::from_secs(5);

/// The slowest average rate, in bytes a second, at which a request body may arrive.
pub const BODY_MIN_RATE: u64 = 256 << 10;

/// Most heavy answers (a search, a scan of every span, a trace read back) built at once in
/// the process.
pub const MAX_HEAVY_QUERIES: usize = 1;

/// How long open connections may take to finish their requests when the service stops.
const DRAIN: Duration = Duration::from_secs(5);

/// The process's budget of heavy answers.
pub(crate) static HEAVY_QUERIES: LazyLock<Budget> =
    LazyLock::new(|| Budget::new(MAX_HEAVY_QUERIES));

/// What one HTTP listener's bounds turned away, read from its [`HttpCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct HttpStats {
    /// Connections closed at once because their address already held `MAX_PER_ADDRESS`.
    pub refused_per_address: u64,
    /// Connections closed because a request head did not arrive within `HEAD`.
    pub head_timeouts: u64,
    /// Requests refused because their body came slower than `BODY_MIN_RATE`.
    pub slow_bodies: u64,
}

mqrs_base::counters! {
    /// The counters behind [`HttpStats`], shared by one listener's connections.
    pub struct HttpCounters => HttpStats { refused_per_address, head_timeouts, slow_bodies }
}

/// The runtime the viewer and the collector run on: one thread (`mqrs-http`) for the whole
/// process, started on first use, at a lower priority than the gate's workers on Linux.
pub(crate) fn runtime() -> io::Result<&'static Handle> {
    static RT: OnceLock<Handle> = OnceLock::new();
    static START: Mutex<()> = Mutex::new(());
    if let Some(h) = RT.get() {
        return Ok(h);
    }
    let _one = START.locked();
    if let Some(h) = RT.get() {
        return Ok(h);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = rt.handle().clone();
    std::thread::Builder::new()
        .name("mqrs-http".into())
        .spawn(move || {
            lower_priority();
            rt.block_on(std::future::pending::<()>());
        })?;
    Ok(RT.get_or_init(|| handle))
}

/// Gives this thread a nice value of 10, so the gate's threads go first when the cores are
/// busy.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid and setpriority take and return plain integers; on Linux, PRIO_PROCESS
    // with a thread id sets that thread's nice value only.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        if libc::setpriority(libc::PRIO_PROCESS, tid, 10) != 0 {
            tracing::debug!("could not lower the HTTP thread's priority");
        }
    }
}

/// Binds `addr` on the HTTP thread and serves `app` there until `shutdown` turns true; then new
/// connections are refused at once and open ones get [`DRAIN`] to finish their requests.
pub(crate) async fn serve(
    what: &'static str,
    app: Router,
    addr: SocketAddr,
    shutdown: watch::Receiver<bool>,
    counters: Arc<HttpCounters>,
) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    let rt = runtime()?;
    let listener = rt
        .spawn(TcpListener::bind(addr))
        .await
        .map_err(io::Error::other)??;
    let local = listener.local_addr()?;
    let task = rt.spawn(accept_loop(what, listener, app, shutdown, counters));
    Ok((local, task))
}

async fn accept_loop(
    what: &'static str,
    listener: TcpListener,
    app: Router,
    mut shutdown: watch::Receiver<bool>,
    counters: Arc<HttpCounters>,
) {
    let open = Budget::new(MAX_CONNECTIONS);
    let per_address: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let accepted = tokio::select! {
            biased;
            () = stopped(&mut shutdown) => break,
            permit = open.take(1) => match permit {
                Some(permit) => tokio::select! {
                    biased;
                    () = stopped(&mut shutdown) => break,
                    r = listener.accept() => r.map(|(io, peer)| (io, peer, permit)),
                },
                None => break,
            },
        };
        let (io, peer, permit) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors and the like: wait rather than spin.
                tracing::debug!(error = %e, "{what}: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = AddressSlot::take(&per_address, peer.ip()) else {
            counters.refused_per_address.fetch_add(1, Relaxed);
            tracing::debug!(%peer, "{what}: address holds {MAX_PER_ADDRESS} connections; closed");
            continue;
        };
        let _ = io.set_nodelay(true);
        let stream = LimitedStream {
            io,
            _permit: permit,
            _slot: slot,
            idle: Box::pin(tokio::time::sleep(FIRST_BYTE)),
            stalled: None,
        };
        conns.spawn(serve_connection(
            stream,
            app.clone(),
            stop_rx.clone(),
            counters.clone(),
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained =
        tokio::time::timeout(DRAIN, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::debug!("{what}: connections still open after {DRAIN:?}; closed");
        conns.abort_all();
    }
}

/// Resolves once `shutdown` turns true (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|v| *v).await;
}

async fn serve_connection(
    stream: LimitedStream,
    app: Router,
    mut stop: watch::Receiver<bool>,
    counters: Arc<HttpCounters>,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
    let mut conn = pin!(conn);
    let stopping = async move {
        let _ = stop.wait_for(|v| *v).await;
    };
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = stopping => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        if e.is_timeout() {
            counters.head_timeouts.fetch_add(1, Relaxed);
        }
        tracing::trace!(error = %e, "HTTP connection ended");
    }
}

/// One of the connections an address holds; given back when dropped.
struct AddressSlot {
    map: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl AddressSlot {
    /// A slot for `ip`, or `None` when it holds [`MAX_PER_ADDRESS`] already.
    fn take(map: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr) -> Option<AddressSlot> {
        let mut m = map.locked();
        let n = m.entry(ip).or_insert(0);
        if *n >= MAX_PER_ADDRESS {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            map: map.clone(),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut m = self.map.locked();
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// An accepted connection: holds its place among the open ones and its address's, fails its
/// reads once it has been silent for [`IDLE`], and its writes once the peer has taken no
/// bytes for as long (a client that asks for an answer and never reads it).
struct LimitedStream {
    io: TcpStream,
    _permit: Share,
    _slot: AddressSlot,
    idle: Pin<Box<Sleep>>,
    /// Since when a write has waited for the peer, if one is waiting.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl LimitedStream {
    /// Passes a write's result on, failing it once writes have waited [`IDLE`] in a row.
    fn watch_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if r.is_ready() {
            self.stalled = None;
            return r;
        }
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(IDLE)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "HTTP peer took no bytes of its answer",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
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
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.watch_write(cx, r)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        self.watch_write(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.watch_write(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Why a request body was not read whole.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// It is larger than the limit.
    TooLarge,
    /// It came slower than [`BODY_MIN_RATE`].
    TooSlow,
    /// The connection failed while it came.
    Broken(String),
}

/// Reads `body` whole, refusing it past `max` bytes or when, after [`BODY_GRACE`], it has come
/// slower than [`BODY_MIN_RATE`] on average.
pub(crate) async fn read_body(
    body: Body,
    max: usize,
    counters: &HttpCounters,
) -> Result<Bytes, BodyError> {
    let start = Instant::now();
    let mut stream = body.into_data_stream();
    let mut out = Vec::new();
    loop {
        let allowed = BODY_GRACE + Duration::from_secs_f64(out.len() as f64 / BODY_MIN_RATE as f64);
        let next = match tokio::time::timeout_at(start + allowed, stream.next()).await {
            Ok(next) => next,
            Err(_) => {
                counters.slow_bodies.fetch_add(1, Relaxed);
                return Err(BodyError::TooSlow);
            }
        };
        match next {
            None => return Ok(Bytes::from(out)),
            Some(Err(e)) => return Err(BodyError::Broken(e.to_string())),
            Some(Ok(chunk)) => {
                if out.len() + chunk.len() > max {
                    return Err(BodyError::TooLarge);
                }
                out.extend_from_slice(&chunk);
            }
        }
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
