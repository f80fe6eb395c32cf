//! One HTTP server type for the gateway's ports (metrics, HLS; later the API and the web
//! page): hyper's HTTP/1.1 server under axum routers, on a small tokio runtime the gateway
//! owns. Limits, all enforced before a handler runs:
//! - connections: at most `max_per_ip` per source and `max_connections` in all, decided in
//!   our accept loop before hyper sees the socket (excess closed at once);
//! - time: the whole request head within `header_timeout` (hyper's timer-based deadline, not
//!   per read; it also bounds idle keep-alive), the handler within `request_timeout` (408),
//!   and the response written within `request_timeout` of its first byte ([`DeadlineIo`]);
//! - size: request head at most `max_header_bytes` and `max_headers` fields, body at most
//!   `max_body` (413).

use super::limits::{ConnLimiter, Refused};
use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::runtime::{Handle, Runtime};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tower::ServiceExt;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

/// How long open connections get to finish when a server stops.
const STOP_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct Limits {
    pub header_timeout: Duration,
    pub request_timeout: Duration,
    pub max_per_ip: usize,
    pub max_connections: usize,
    pub max_body: usize,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub backlog: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_per_ip: 32,
            max_connections: 1024,
            max_body: 64 << 10,
            max_header_bytes: 16 << 10,
            max_headers: 64,
            backlog: 1024,
        }
    }
}

/// The tokio runtime the HTTP servers run on (few threads: handlers are short, file reads and
/// password checks go to the blocking pool).
pub struct HttpRuntime {
    rt: Option<Runtime>,
}

impl HttpRuntime {
    pub fn new(workers: usize) -> io::Result<HttpRuntime> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers.max(1))
            .max_blocking_threads(16)
            .thread_name("http")
            .enable_all()
            .build()?;
        Ok(HttpRuntime { rt: Some(rt) })
    }

    pub fn handle(&self) -> Handle {
        self.rt
            .as_ref()
            .expect("runtime lives until dropped")
            .handle()
            .clone()
    }
}

impl Drop for HttpRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(STOP_GRACE);
        }
    }
}

/// One listening port serving one router.
pub struct HttpServer {
    addr: SocketAddr,
    handle: Handle,
    stop: watch::Sender<bool>,
    accept: Option<JoinHandle<()>>,
    limiter: ConnLimiter,
    refused: Arc<AtomicU64>,
}

/// A listening socket not serving yet ([`HttpServer::bind`]): its port is known (port 0
/// asked: the one got) before the router that needs it is built.
pub struct Bound {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    handle: Handle,
}

impl Bound {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `router` on the socket, within `limits`.
    pub fn serve(self, router: Router, limits: Limits) -> HttpServer {
        let Bound {
            listener,
            addr,
            handle,
        } = self;
        let app = router
            .layer(TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                limits.request_timeout,
            ))
            .layer(RequestBodyLimitLayer::new(limits.max_body));
        let limiter = ConnLimiter::new(limits.max_per_ip, limits.max_connections);
        let refused = Arc::new(AtomicU64::new(0));
        let (stop, stop_rx) = watch::channel(false);
        let accept = handle.spawn(accept_loop(
            listener,
            app,
            limits,
            limiter.clone(),
            refused.clone(),
            stop_rx,
        ));
        HttpServer {
            addr,
            handle,
            stop,
            accept: Some(accept),
            limiter,
            refused,
        }
    }
}

impl HttpServer {
    /// Binds `host:port` (0: any free port) with a listen queue of `backlog`.
    pub fn bind(rt: &HttpRuntime, host: &str, port: u16, backlog: u32) -> io::Result<Bound> {
        let addr = (host, port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::other(format!("no address for {host}")))?;
        let handle = rt.handle();
        let listener = {
            let _in_runtime = handle.enter();
            let socket = if addr.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            socket.set_reuseaddr(true)?;
            socket.bind(addr)?;
            socket.listen(backlog)?
        };
        let addr = listener.local_addr()?;
        Ok(Bound {
            listener,
            addr,
            handle,
        })
    }

    pub fn start(
        rt: &HttpRuntime,
        host: &str,
        port: u16,
        router: Router,
        limits: Limits,
    ) -> io::Result<HttpServer> {
        Ok(HttpServer::bind(rt, host, port, limits.backlog)?.serve(router, limits))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.limiter.open()
    }

    /// Connections closed at accept because of the per-source or total cap.
    pub fn refused_connections(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Stops accepting, lets open requests finish (bounded), closes the rest.
    pub fn stop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(accept) = self.accept.take() {
            if Handle::try_current().is_ok() {
                accept.abort();
                return;
            }
            let _ = self.handle.block_on(async {
                tokio::time::timeout(STOP_GRACE + Duration::from_secs(1), accept).await
            });
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: Limits,
    limiter: ConnLimiter,
    refused: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    let mut last_warning: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            r = listener.accept() => match r {
                Ok((stream, peer)) => match limiter.admit(peer.ip()) {
                    Ok(permit) => {
                        let (app, limits, stop) = (app.clone(), limits.clone(), stop.clone());
                        conns.spawn(async move {
                            serve_connection(stream, peer, app, &limits, stop).await;
                            drop(permit);
                        });
                    }
                    Err(why) => {
                        drop(stream);
                        let n = refused.fetch_add(1, Ordering::Relaxed) + 1;
                        if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                            last_warning = Some(Instant::now());
                            let cap = match why {
                                Refused::PerIp => "per-source",
                                Refused::Total => "total",
                            };
                            eprintln!(
                                "[http] {}: connection from {} refused ({cap} cap; {n} refused so far)",
                                listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
                                peer.ip()
                            );
                        }
                    }
                },
                // Out of descriptors and the like: back off instead of spinning.
                Err(e) => {
                    eprintln!("[http] accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    let drain = async { while conns.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(STOP_GRACE, drain).await;
    conns.abort_all();
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: &Limits,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(DeadlineIo::new(stream, limits.request_timeout));
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        app.clone().oneshot(req)
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_headers)
        .keep_alive(true)
        .serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(STOP_GRACE, conn).await;
        }
    }
}

/// A TCP stream whose responses must be written within `limit` of their first byte: a
/// client that stops reading (or reads a byte now and then) cannot hold a connection with a
/// pending response for longer. The deadline is re-armed at the first write after request
/// bytes were read.
pub struct DeadlineIo {
    inner: TcpStream,
    limit: Duration,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    responding: bool,
}

impl DeadlineIo {
    pub fn new(inner: TcpStream, limit: Duration) -> DeadlineIo {
        DeadlineIo {
            inner,
            limit,
            deadline: None,
            responding: false,
        }
    }

    fn arm(&mut self) {
        if !self.responding {
            self.responding = true;
            self.deadline = Some(Box::pin(tokio::time::sleep(self.limit)));
        }
    }

    /// A pending write fails once the deadline has passed.
    fn pending_write<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let expired = self
            .deadline
            .as_mut()
            .is_some_and(|d| d.as_mut().poll(cx).is_ready());
        if expired {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "response not taken within the request deadline",
            )));
        }
        Poll::Pending
    }
}

impl AsyncRead for DeadlineIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.responding = false;
        }
        r
    }
}

impl AsyncWrite for DeadlineIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.arm();
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending => self.pending_write(cx),
            r => r,
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.arm();
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.pending_write(cx),
            r => r,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.pending_write(cx),
            r => r,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
