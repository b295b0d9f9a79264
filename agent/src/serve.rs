//! Accepts connections (steered, or from plain listeners) within the connection limits, finds
//! the protected server from the original destination, terminates TLS, and serves HTTP/1.1
//! and HTTP/2 with the proxy.
//! A connection that has not sent its first request's headers within `header_timeout` (after
//! its TLS handshake, which has the same limit), or has no request in flight for
//! `idle_timeout`, is closed.
//!
//! Stopping drains: every connection already in the listener's queue is still accepted, each
//! connection finishes the requests it has in flight (HTTP/1.1 closes when idle, HTTP/2 sends
//! GOAWAY), and only what is still running after [`DRAIN`] is cut. Event streams have no end
//! to wait for: a connection with nothing else in flight is closed after [`STREAM_GRACE`].
use std::{
    collections::HashMap,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Buf as _, Bytes, BytesMut};
use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use serde_json::json;
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch},
};
use tokio_rustls::TlsAcceptor;

use crate::{
    audit::AuditLog,
    conn_limits::{Limiter, Permit},
    http::{Proxy, Site, forward},
    idle::Activity,
    listen::canonical,
    steer::identity::Identity,
    upstream::Upstream,
    vocab::Conn,
};

/// How long a stopping agent lets requests in flight finish.
pub const DRAIN: Duration = Duration::from_secs(20);

/// How long a stopping agent lets a connection whose requests in flight are all event streams
/// (no end to wait for) go on before it cuts them; their clients reconnect (resuming with
/// `Last-Event-ID` where the server keeps its events).
const STREAM_GRACE: Duration = Duration::from_secs(1);

pub struct Sites {
    pub by_port: HashMap<u16, Arc<Site>>,
}

/// An accepted connection, with its place within the connection limits.
pub type Accepted = (std::net::TcpStream, Permit);

/// The proxy's worker threads and the channels that hand them connections.
pub struct Workers {
    pub threads: Vec<std::thread::JoinHandle<()>>,
    pub handoff: Vec<mpsc::Sender<Accepted>>,
}

/// Starts `n` worker threads, each with its own single-threaded runtime and upstream pool: a
/// connection, its requests and its upstream exchanges stay on one thread, with no wake-ups
/// across threads. When `stop` changes, every connection is asked to finish; each thread
/// ends once its channel closes (nothing more is accepted) and its connections are done, or
/// after [`DRAIN`]: dropping its runtime ends what is left, whose audit records are still
/// written.
pub fn spawn_workers(
    n: usize,
    sites: &Arc<Sites>,
    upstream: &Arc<Upstream>,
    audit: &AuditLog,
    identity: Option<Arc<Identity>>,
    stop: &watch::Receiver<bool>,
) -> std::io::Result<Workers> {
    let mut threads = Vec::with_capacity(n);
    let mut senders = Vec::with_capacity(n);
    for i in 0..n {
        let (tx, mut rx) = mpsc::channel::<Accepted>(1024);
        let (sites, upstream, audit, identity, mut stop) = (
            sites.clone(),
            upstream.clone(),
            audit.clone(),
            identity.clone(),
            stop.clone(),
        );
        let thread = std::thread::Builder::new()
            .name(format!("moat-proxy-{i}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => return tracing::error!("proxy worker {i}: {e}"),
                };
                rt.block_on(async move {
                    let proxy = Arc::new(Proxy {
                        client: forward::client(upstream),
                        audit: audit.clone(),
                        identity,
                    });
                    let mut conns = tokio::task::JoinSet::new();
                    let mut stopping = false;
                    loop {
                        // The permit goes with the connection's task, and is given back when
                        // the task ends (or is dropped with the runtime).
                        let (stream, permit) = tokio::select! {
                            s = rx.recv() => match s {
                                Some(s) => s,
                                None => break,
                            },
                            Some(_) = conns.join_next() => continue,
                            r = stop.changed(), if !stopping => {
                                // Also when the sender is gone: the agent is stopping.
                                let _ = r;
                                stopping = true;
                                continue;
                            }
                        };
                        let stream = match TcpStream::from_std(stream) {
                            Ok(s) => s,
                            Err(e) => {
                                tracing::warn!("proxy worker {i}: {e}");
                                continue;
                            }
                        };
                        let (sites, proxy, audit, stop) =
                            (sites.clone(), proxy.clone(), audit.clone(), stop.clone());
                        conns.spawn(async move {
                            connection(stream, &sites, proxy, &audit, stop).await;
                            drop(permit);
                        });
                    }
                    let left = conns.len();
                    let drained = tokio::time::timeout(DRAIN, async {
                        while conns.join_next().await.is_some() {}
                    });
                    if drained.await.is_err() {
                        tracing::warn!(
                            worker = i,
                            connections = conns.len(),
                            "cutting connections still busy after the drain"
                        );
                    } else if left > 0 {
                        tracing::debug!(worker = i, connections = left, "drained");
                    }
                });
            })?;
        threads.push(thread);
        senders.push(tx);
    }
    Ok(Workers {
        threads,
        handoff: senders,
    })
}

/// Accepts connections from every listener (one when steered; one per server when
/// unprotected), with the same workers and limits. When `stop` changes, takes what is
/// already in each listener's queue, closes the listeners and returns true; returns false
/// when every worker is gone.
pub async fn accept(
    listeners: Vec<TcpListener>,
    workers: Vec<mpsc::Sender<Accepted>>,
    limits: Arc<Limiter>,
    stop: watch::Receiver<bool>,
) -> bool {
    let mut each = tokio::task::JoinSet::new();
    for listener in listeners {
        each.spawn(accept_on(
            listener,
            workers.clone(),
            limits.clone(),
            stop.clone(),
        ));
    }
    drop(workers);
    // Each ends when stopped (all do) or when the workers are gone (then dropping the set
    // ends the others).
    let mut stopped = true;
    while let Some(r) = each.join_next().await {
        if !matches!(r, Ok(true)) {
            stopped = false;
            break;
        }
    }
    stopped
}

/// How long a stopping agent keeps taking connections from its queue after the last one
/// came: those whose handshake was under way when it stopped.
const QUEUE_GRACE: Duration = Duration::from_millis(100);

/// Accepts connections and hands them to the workers in turn (the kernel would wake
/// whichever worker is idle, and one worker would end up with nearly every connection).
/// A connection beyond the `limits` is closed at once, with a reset (no lingering socket
/// state), before anything is read from it. Returns false when every worker is gone, true
/// when stopped (once the queue is empty).
async fn accept_on(
    listener: TcpListener,
    workers: Vec<mpsc::Sender<Accepted>>,
    limits: Arc<Limiter>,
    mut stop: watch::Receiver<bool>,
) -> bool {
    let mut next = 0usize;
    let mut spare = Spare::open();
    let mut stopping = *stop.borrow();
    loop {
        let accepted = if stopping {
            match tokio::time::timeout(QUEUE_GRACE, listener.accept()).await {
                Ok(a) => a,
                Err(_) => return true,
            }
        } else {
            tokio::select! {
                a = listener.accept() => a,
                _ = stop.changed() => {
                    stopping = true;
                    continue;
                }
            }
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if is_out_of_descriptors(&e) => {
                // Out of descriptors after all (something else holds many): refuse the
                // connection at once rather than leave it waiting in the kernel's queue.
                spare.refuse_one(&listener, &limits).await;
                continue;
            }
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit = match limits.admit(peer, || stream.local_addr().ok()) {
            Ok(p) => p,
            Err(_) => {
                let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                drop(stream);
                continue;
            }
        };
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        let mut accepted = (stream, permit);
        let mut handed = false;
        for _ in 0..workers.len() {
            let w = &workers[next % workers.len()];
            next = next.wrapping_add(1);
            match w.send(accepted).await {
                Ok(()) => {
                    handed = true;
                    break;
                }
                Err(mpsc::error::SendError(a)) => accepted = a,
            }
        }
        if !handed {
            return false;
        }
    }
}

async fn connection(
    stream: TcpStream,
    sites: &Sites,
    proxy: Arc<Proxy>,
    audit: &AuditLog,
    stop: watch::Receiver<bool>,
) {
    let (Ok(peer), Ok(dst)) = (stream.peer_addr(), stream.local_addr()) else {
        return;
    };
    let (peer, dst) = (canonical(peer), canonical(dst));
    let process = proxy
        .identity
        .as_ref()
        .and_then(|i| i.take(peer, dst))
        .map(Arc::new);
    let conn_record = |error: String| json!({ "conn": { "peer": peer.to_string(), "dst": dst.to_string() }, "error": error });
    // getsockname() is the original destination: it names the protected server.
    let Some(p) = sites.by_port.get(&dst.port()).cloned() else {
        audit
            .record(
                "connection",
                conn_record("no protected server on this port".into()),
            )
            .await;
        return;
    };
    let _ = stream.set_nodelay(true);
    let limits = p.server.limits;
    detect_vanished(&stream, limits.unresponsive_client);
    let activity = Activity::new();
    match &p.tls {
        None => {
            http(
                stream,
                activity,
                p.clone(),
                proxy,
                stop,
                Conn {
                    peer,
                    dst,
                    tls: None,
                    process,
                    serialized: Default::default(),
                },
            )
            .await
        }
        Some(tls) => {
            let accept = TlsAcceptor::from(tls.config.clone()).accept(stream);
            let handshake = tokio::time::timeout(limits.header_timeout, accept).await;
            p.metrics.tls_handshake(matches!(handshake, Ok(Ok(_))));
            match handshake {
                Ok(Ok(tls_stream)) => {
                    let version = tls_stream
                        .get_ref()
                        .1
                        .protocol_version()
                        .map(|v| Arc::<str>::from(format!("{v:?}")));
                    let conn = Conn {
                        peer,
                        dst,
                        tls: version,
                        process,
                        serialized: Default::default(),
                    };
                    http(tls_stream, activity, p.clone(), proxy, stop, conn).await;
                }
                Ok(Err(e)) => {
                    let mut r = conn_record(format!("TLS handshake: {e}"));
                    r["server"] = json!(p.server.name);
                    audit.record("connection", r).await;
                }
                Err(_) => {
                    let mut r = conn_record("TLS handshake timed out".into());
                    r["server"] = json!(p.server.name);
                    audit.record("connection", r).await;
                }
            }
        }
    }
}

async fn http<I>(
    mut io: I,
    activity: Arc<Activity>,
    p: Arc<Site>,
    proxy: Arc<Proxy>,
    mut stop: watch::Receiver<bool>,
    conn: Conn,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = p.server.limits;
    // hyper's own header timeout starts once it reads HTTP/1.1; before, while it waits for
    // the bytes that tell HTTP/1.1 from HTTP/2 (or for an HTTP/2 client's first request), a
    // client could send nothing, or part of the HTTP/2 preface, for as long as it liked.
    let first_request = tokio::time::sleep(limits.header_timeout);
    tokio::pin!(first_request);
    let (h2, first) = tokio::select! {
        r = first_bytes(&mut io) => match r {
            Ok(first) => first,
            Err(e) => return tracing::debug!("connection ended: {e}"),
        },
        () = &mut first_request => {
            return tracing::debug!("closing a connection that sent no request headers in time");
        }
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .max_concurrent_streams(100)
        .max_header_list_size(64 * 1024);
    let builder = if h2 {
        builder.http2_only()
    } else {
        builder.http1_only()
    };
    let conn = Arc::new(conn);
    let idle = limits.idle_timeout;
    let service = service_fn({
        let activity = activity.clone();
        move |req| {
            let (p, proxy, conn, in_flight) =
                (p.clone(), proxy.clone(), conn.clone(), activity.request());
            // Boxed: hyper keeps room for the future of a request for as long as the
            // connection lives; this way a held stream keeps a pointer, not the whole future.
            Box::pin(async move { proxy.handle(&p, &conn, req, in_flight).await })
        }
    });
    let serving = builder.serve_connection(TokioIo::new(Prefixed { first, io }), service);
    tokio::pin!(serving);
    let mut waiting_first = true;
    // Stopping: finish what is in flight and take no new request, once the connection's first
    // request came (a connection taken from the queue while stopping is still served).
    let mut stopping = stop.borrow().then(tokio::time::Instant::now);
    let mut shut = false;
    loop {
        if let Some(since) = stopping {
            if !shut && activity.any_request() {
                serving.as_mut().graceful_shutdown();
                shut = true;
            }
            if shut && since.elapsed() >= STREAM_GRACE && activity.only_streams() {
                return tracing::debug!(
                    "stopping: closing a connection with only event streams open"
                );
            }
        }
        tokio::select! {
            r = stop.changed(), if stopping.is_none() => {
                let _ = r;
                stopping = Some(tokio::time::Instant::now());
            }
            () = tokio::time::sleep(Duration::from_millis(10)), if stopping.is_some() => {}
            r = &mut serving => {
                if let Err(e) = r {
                    tracing::debug!("connection ended: {e}");
                }
                return;
            }
            () = &mut first_request, if waiting_first => {
                if !activity.any_request() {
                    tracing::debug!("closing a connection that sent no request headers in time");
                    return;
                }
                waiting_first = false;
            }
            () = tokio::time::sleep(idle / 4) => {
                if activity.idle_for() >= idle {
                    tracing::debug!("closing an idle connection");
                    return;
                }
            }
        }
    }
}

/// HTTP/2's connection preface, which a client with prior knowledge sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the client sent first, read as it came (up to 4 KiB: a whole request head as a rule),
/// and whether it begins with HTTP/2's preface; more is read only while it could still be the
/// preface. hyper then gets these bytes in one read: given a part of a head, it would double
/// its read buffer, which the connection keeps for as long as it lives.
async fn first_bytes<I: AsyncRead + Unpin>(io: &mut I) -> io::Result<(bool, Bytes)> {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        // At the end of the stream (or not the preface): HTTP/1.1, which sees what came.
        let n = io.read_buf(&mut buf).await?;
        let k = buf.len().min(H2_PREFACE.len());
        if n == 0 || buf[..k] != H2_PREFACE[..k] {
            return Ok((false, buf.freeze()));
        }
        if k == H2_PREFACE.len() {
            return Ok((true, buf.freeze()));
        }
    }
}

/// A connection with the bytes already read from it in front.
struct Prefixed<I> {
    first: Bytes,
    io: I,
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.first.is_empty() {
            return Pin::new(&mut self.io).poll_read(cx, buf);
        }
        let n = self.first.len().min(buf.remaining());
        buf.put_slice(&self.first[..n]);
        self.first.advance(n);
        if self.first.is_empty() {
            // Frees the buffer they came in.
            self.first = Bytes::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
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

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A client that vanishes (its host down, its network gone) without closing its connection is
/// noticed within `within`: what Moat sends must be acknowledged within it (TCP_USER_TIMEOUT),
/// and an idle connection is probed from half of it on (TCP keepalive), five probes in the
/// other half. The connection then fails, which ends its requests (and their upstream
/// streams), and their records are written.
fn detect_vanished(stream: &tokio::net::TcpStream, within: Duration) {
    let s = socket2::SockRef::from(stream);
    let secs = within.as_secs().max(2);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(secs / 2))
        .with_interval(Duration::from_secs((secs / 10).max(1)))
        .with_retries(5);
    let _ = s.set_tcp_keepalive(&keepalive);
    let _ = s.set_tcp_user_timeout(Some(within));
}

fn is_out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// One descriptor held back for the moment the process runs out: given up to accept one
/// waiting connection and close it with a reset, then taken again.
struct Spare {
    file: Option<std::fs::File>,
    last_warning: Option<std::time::Instant>,
}

impl Spare {
    fn open() -> Self {
        Self {
            file: std::fs::File::open("/dev/null").ok(),
            last_warning: None,
        }
    }

    async fn refuse_one(&mut self, listener: &TcpListener, limits: &Limiter) {
        if self
            .last_warning
            .is_none_or(|t| t.elapsed() > Duration::from_secs(10))
        {
            tracing::warn!("out of file descriptors: refusing new connections");
            self.last_warning = Some(std::time::Instant::now());
        }
        self.file = None;
        match tokio::time::timeout(Duration::from_millis(50), listener.accept()).await {
            Ok(Ok((stream, _))) => {
                let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                drop(stream);
                limits.refused_at_capacity();
            }
            // Nothing could be taken: wait a little rather than spin.
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
        self.file = std::fs::File::open("/dev/null").ok();
    }
}
