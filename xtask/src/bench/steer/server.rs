//! The servers of `bench steer`, in the lab: one that answers every connection with one byte
//! (for the connection rate) and one that answers one HTTP request (for the latency samples).
use std::{
    io::{self, Write as _},
    net::{Ipv6Addr, SocketAddr, TcpListener},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use socket2::{Domain, Socket, Type};

use super::{TIMEOUT, UPSTREAM_PORTS, pin};
use crate::{Result, host::Lab};

/// A listener on [::]:port (dual stack) in the lab that answers every connection with one byte
/// (or, `http`, reads one HTTP request and answers it with a small JSON-RPC result) and closes
/// it, on a thread of its own (pinned to `cpu`, if given).
pub struct Server {
    stop: Arc<AtomicBool>,
    accepts: Arc<AtomicU64>,
    upstream: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start(lab: &Lab, port: u16, cpu: Option<usize>, http: bool) -> Result<Self> {
        let listener = lab
            .in_ns(move || -> io::Result<TcpListener> {
                let s = Socket::new(Domain::IPV6, Type::STREAM, None)?;
                s.set_only_v6(false)?;
                s.set_reuse_address(true)?;
                s.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)).into())?;
                s.listen(1024)?;
                // accept() honours SO_RCVTIMEO: wake up now and then to see `stop`.
                s.set_read_timeout(Some(Duration::from_millis(100)))?;
                Ok(s.into())
            })
            .map_err(|e| format!("listening on [::]:{port} in the lab: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let accepts = Arc::new(AtomicU64::new(0));
        let upstream = Arc::new(AtomicU64::new(0));
        let thread = std::thread::spawn({
            let (stop, accepts, upstream) = (stop.clone(), accepts.clone(), upstream.clone());
            move || {
                pin(cpu);
                let response = http_response();
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((mut s, peer)) => {
                            accepts.fetch_add(1, Ordering::Relaxed);
                            if (UPSTREAM_PORTS.0..=UPSTREAM_PORTS.1).contains(&peer.port()) {
                                upstream.fetch_add(1, Ordering::Relaxed);
                            }
                            if http {
                                let _ = s
                                    .set_read_timeout(Some(TIMEOUT))
                                    .and_then(|()| read_request(&mut s))
                                    .and_then(|()| s.write_all(&response));
                            } else {
                                let _ = s.write_all(b"x");
                            }
                        }
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                            ) => {}
                        // Out of descriptors and the like: back off.
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            }
        });
        Ok(Self {
            stop,
            accepts,
            upstream,
            thread: Some(thread),
        })
    }

    pub fn accepts(&self) -> u64 {
        self.accepts.load(Ordering::Relaxed)
    }

    /// Accepted connections whose peer port is one of the agent's upstream ports.
    pub fn upstream(&self) -> u64 {
        self.upstream.load(Ordering::Relaxed)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The `http` server's answer: a small JSON-RPC result, and the connection closes.
fn http_response() -> Vec<u8> {
    let body = r#"{"jsonrpc":"2.0","id":1,"result":{}}"#;
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Reads one HTTP/1.1 request: its headers, then a body of Content-Length bytes or chunks up
/// to the last one (the proxy may forward either way).
fn read_request(s: &mut impl io::Read) -> io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return Err(io::ErrorKind::InvalidData.into());
        }
        read_more(s, &mut buf, &mut chunk)?;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let done = |body: &[u8]| match length {
        Some(n) => body.len() >= n,
        None if head.contains("transfer-encoding: chunked") => body.ends_with(b"0\r\n\r\n"),
        None => true,
    };
    while !done(&buf[end..]) {
        read_more(s, &mut buf, &mut chunk)?;
    }
    Ok(())
}

/// Appends what one read of `s` gives to `buf`; the end of the stream is an error.
fn read_more(s: &mut impl io::Read, buf: &mut Vec<u8>, chunk: &mut [u8]) -> io::Result<()> {
    let n = s.read(chunk)?;
    if n == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}
