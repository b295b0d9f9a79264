//! One worker's upstream connections (HTTP/1.1 keep-alive), never shared between principals:
//! kept per (upstream address, principal), and reused only after the previous response was
//! read to its end, so that a request one client manages to desynchronise a connection with
//! can only ever reach the same client's later requests.
use std::{
    collections::HashMap,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, Weak},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{
    HeaderValue, Request, Response, Uri, header,
    uri::{self, PathAndQuery},
};
use http_body::{Frame, SizeHint};
use hyper::{
    body::Incoming,
    client::conn::http1::{self, SendRequest},
};
use hyper_util::rt::TokioIo;
use tokio::task::AbortHandle;

use super::{Upstream, UpstreamError};
use crate::auth::sessions::Owner;

/// The body of a request sent upstream: any body, boxed. The same type as the proxy's own
/// response bodies, which it hands over as they are; named here so that the pool does not
/// depend on the proxy that uses it.
pub type ProxyBody = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

/// Whose connections these are: the upstream, and the principal (None on a server without
/// authentication, whose clients are all anonymous alike).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub addr: SocketAddr,
    pub principal: Option<Owner>,
}

/// How many idle connections a worker keeps, and how long.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// An idle connection is closed after this long.
    pub idle_timeout: Duration,
    /// Idle connections per key; beyond, the one idle longest is closed.
    pub per_key: usize,
    /// Keys (principals) kept; beyond, the least recently used key's connections are closed.
    pub keys: usize,
    /// Idle connections in all; beyond, the least recently used keys' are closed.
    pub total: usize,
}

impl Default for Limits {
    /// Without authentication all clients are one key: as many idle connections for it as the
    /// shared pool kept before (64 per worker).
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(30),
            per_key: 64,
            keys: 128,
            total: 256,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error(transparent)]
    Connect(#[from] UpstreamError),
    #[error("HTTP/1.1 handshake with {addr}: {source}")]
    Handshake {
        addr: SocketAddr,
        source: hyper::Error,
    },
    #[error("exchange with {addr}: {source}")]
    Send {
        addr: SocketAddr,
        source: hyper::Error,
    },
}

/// The pool of one worker; clones share it.
#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shared>,
}

struct Shared {
    upstream: Arc<Upstream>,
    limits: Limits,
    idle: Mutex<Idle>,
}

#[derive(Default)]
struct Idle {
    keys: HashMap<Key, Conns>,
    /// The idle connections of all keys.
    count: usize,
    /// Counts checkouts and returns: the recency of a key.
    clock: u64,
    /// Whether the task closing expired connections runs.
    reaping: bool,
}

struct Conns {
    /// Most recently returned last (taken first).
    list: Vec<Parked>,
    used: u64,
}

/// An idle connection, and since when.
struct Parked {
    conn: Connection,
    since: Instant,
}

/// An upstream connection: what sends requests on it, and the task that runs it. When this
/// goes the task is aborted, which closes the connection at once (hyper's own task may
/// otherwise linger, e.g. when the response ended before the request was written).
struct Connection {
    send: SendRequest<ProxyBody>,
    task: AbortHandle,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Idle connections, counted.
#[cfg(test)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counts {
    pub keys: usize,
    pub connections: usize,
}

impl Pool {
    pub fn new(upstream: Arc<Upstream>) -> Self {
        Self::with_limits(upstream, Limits::default())
    }

    pub fn with_limits(upstream: Arc<Upstream>, limits: Limits) -> Self {
        Self {
            shared: Arc::new(Shared {
                upstream,
                limits,
                idle: Mutex::default(),
            }),
        }
    }

    /// Sends `req` on an idle connection of `key`, or a new one; if the idle connection turns
    /// out to be closed (by the server, meanwhile) before the request went out, once more on
    /// a new connection. The request line carries the origin form of the request's URI. The
    /// response's body gives the connection back when it has been read to its end.
    pub async fn send(
        &self,
        key: Key,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<Body>, PoolError> {
        origin_form(&mut req, key.addr);
        let addr = key.addr;
        let (mut conn, reused) = match self.shared.checkout(&key) {
            Some(conn) => (conn, true),
            None => (self.shared.connect(addr).await?, false),
        };
        let resp = match conn.send.try_send_request(req).await {
            Ok(resp) => resp,
            Err(mut e) => match e.take_message() {
                Some(req) if reused => {
                    tracing::debug!(%addr, "idle upstream connection closed: {}", e.error());
                    conn = self.shared.connect(addr).await?;
                    conn.send
                        .send_request(req)
                        .await
                        .map_err(|source| PoolError::Send { addr, source })?
                }
                _ => {
                    return Err(PoolError::Send {
                        addr,
                        source: e.into_error(),
                    });
                }
            },
        };
        let (parts, inner) = resp.into_parts();
        let mut body = Body {
            inner,
            back: Some(Box::new(Back {
                conn,
                key,
                pool: self.shared.clone(),
            })),
        };
        // Nothing to read (e.g. 204, or Content-Length: 0): the exchange is over.
        if hyper::body::Body::is_end_stream(&body.inner) {
            body.give_back();
        }
        Ok(Response::from_parts(parts, body))
    }

    /// The idle connections now.
    #[cfg(test)]
    pub fn idle(&self) -> Counts {
        let idle = self.shared.lock();
        debug_assert_eq!(
            idle.count,
            idle.keys.values().map(|c| c.list.len()).sum::<usize>()
        );
        Counts {
            keys: idle.keys.len(),
            connections: idle.count,
        }
    }
}

/// `http://host:port/p?q` becomes `/p?q`, with the Host header kept (or set from `addr`).
fn origin_form(req: &mut Request<ProxyBody>, addr: SocketAddr) {
    if req.uri().authority().is_some() || req.uri().scheme().is_some() {
        let mut parts = uri::Parts::default();
        parts.path_and_query = Some(
            req.uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
        *req.uri_mut() = Uri::from_parts(parts).expect("a path alone is a URI");
    }
    if !req.headers().contains_key(header::HOST) {
        let host = HeaderValue::from_str(&addr.to_string()).expect("an address is a valid header");
        req.headers_mut().insert(header::HOST, host);
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Idle> {
        // Nothing panics while holding it; if something did, the lists are still whole.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently returned idle connection of `key` that is ready for a request;
    /// expired, closed or not ready ones on the way are closed.
    fn checkout(&self, key: &Key) -> Option<Connection> {
        let timeout = self.limits.idle_timeout;
        let mut idle = self.lock();
        let Idle {
            keys, count, clock, ..
        } = &mut *idle;
        *clock += 1;
        let conns = keys.get_mut(key)?;
        conns.used = *clock;
        while let Some(p) = conns.list.pop() {
            *count -= 1;
            if p.conn.send.is_ready() && p.since.elapsed() < timeout {
                return Some(p.conn);
            }
        }
        None
    }

    async fn connect(&self, addr: SocketAddr) -> Result<Connection, PoolError> {
        let stream = self.upstream.connect(addr).await?;
        let (send, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|source| PoolError::Handshake { addr, source })?;
        let task = tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%addr, "upstream connection: {e}");
            }
        })
        .abort_handle();
        Ok(Connection { send, task })
    }

    /// Keeps a connection whose exchange is over, ready for the next request of `key`.
    fn put(self: &Arc<Self>, key: Key, conn: Connection) {
        let limits = self.limits;
        let keep = limits.per_key.min(limits.total);
        if keep == 0 || limits.keys == 0 {
            return;
        }
        let parked = Parked {
            conn,
            since: Instant::now(),
        };
        let mut idle = self.lock();
        let Idle {
            keys,
            count,
            clock,
            reaping,
        } = &mut *idle;
        *clock += 1;
        // Room for one more connection, and for a new key: the least recently used other
        // keys go first.
        let new = !keys.contains_key(&key);
        while *count >= limits.total || (new && keys.len() >= limits.keys) {
            let lru = keys
                .iter()
                .filter(|(k, _)| **k != key)
                .min_by_key(|(_, c)| c.used)
                .map(|(k, _)| k.clone());
            let Some(gone) = lru.and_then(|k| keys.remove(&k)) else {
                break;
            };
            *count -= gone.list.len();
        }
        let conns = keys.entry(key).or_insert_with(|| Conns {
            list: Vec::new(),
            used: 0,
        });
        conns.used = *clock;
        if conns.list.len() >= keep {
            conns.list.remove(0);
            *count -= 1;
        }
        conns.list.push(parked);
        *count += 1;
        if !*reaping {
            *reaping = true;
            tokio::spawn(reap(Arc::downgrade(self), limits.idle_timeout));
        }
    }

    /// Closes the expired and the closed idle connections, and forgets keys left with none.
    fn expire(&self) {
        let timeout = self.limits.idle_timeout;
        let mut idle = self.lock();
        for conns in idle.keys.values_mut() {
            conns
                .list
                .retain(|p| !p.conn.send.is_closed() && p.since.elapsed() < timeout);
        }
        idle.keys.retain(|_, c| !c.list.is_empty());
        idle.count = idle.keys.values().map(|c| c.list.len()).sum();
    }
}

/// Runs while the pool lives: every half idle timeout, expires what has been idle too long.
async fn reap(shared: Weak<Shared>, timeout: Duration) {
    let every = (timeout / 2).max(Duration::from_millis(10));
    loop {
        tokio::time::sleep(every).await;
        match shared.upgrade() {
            Some(s) => s.expire(),
            None => return,
        }
    }
}

/// A connection on loan to a response, and where it goes back.
struct Back {
    conn: Connection,
    key: Key,
    pool: Arc<Shared>,
}

/// The body of an upstream response. Read to its end, it gives its connection back to the
/// pool; dropped before (the client went away, or stopped reading), the connection is closed.
/// (On a worker's single thread, the connection's task has taken in the end of the response,
/// and is ready for the next request, before the response's reader sees that end.)
pub struct Body {
    inner: Incoming,
    back: Option<Box<Back>>,
}

impl Body {
    /// The response has been read to its end: the connection is kept if the exchange is over
    /// on its side too. It is not when the request's body is still being written (the server
    /// answered before reading all of it): such a connection is closed.
    fn give_back(&mut self) {
        if let Some(back) = self.back.take()
            && back.conn.send.is_ready()
        {
            let Back { conn, key, pool } = *back;
            pool.put(key, conn);
        }
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.give_back(),
            Poll::Ready(None) => self.give_back(),
            // A broken exchange: the connection goes when the body does.
            Poll::Ready(Some(Err(_))) => self.back = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests;
