//! The clients of `bench steer`, in the lab: new connections as fast as one thread makes them,
//! and new connections each carrying one MCP request, timed to the first response byte.
use std::{
    io::{self, Read as _, Write as _},
    net::SocketAddr,
    time::{Duration, Instant},
};

use socket2::{Domain, Socket, Type};

use super::{SLICE, TIMEOUT, pin};
use crate::{bench::mcp_post, host::Lab};

/// A client socket (in the calling thread's namespace) that resets on close, so that neither
/// side keeps the connection in TIME_WAIT, with connect and read bounded by TIMEOUT.
fn client_socket() -> io::Result<Socket> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    s.set_linger(Some(Duration::ZERO))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    s.set_read_timeout(Some(TIMEOUT))?;
    Ok(s)
}

/// connect, send `request` (if any), then read the server's first byte.
fn first_byte(s: &Socket, addr: SocketAddr, request: Option<&[u8]>) -> io::Result<()> {
    s.connect(&addr.into())?;
    if let Some(r) = request {
        (&*s).write_all(r)?;
    }
    let mut b = [0u8; 1];
    match (&*s).read(&mut b)? {
        1 => Ok(()),
        _ => Err(io::ErrorKind::UnexpectedEof.into()),
    }
}

fn fetch(addr: SocketAddr) -> io::Result<()> {
    first_byte(&client_socket()?, addr, None)
}

/// Connections per second to `addr` from one client in the lab (pinned to `cpu`, if given) in
/// each SLICE of `span`, and how many connections failed.
pub fn rate(lab: &Lab, addr: SocketAddr, span: Duration, cpu: Option<usize>) -> (Vec<f64>, u64) {
    lab.in_ns(move || {
        pin(cpu);
        let (mut slices, mut err) = (Vec::new(), 0);
        let start = Instant::now();
        while start.elapsed() < span {
            let (t, mut ok) = (Instant::now(), 0u64);
            while t.elapsed() < SLICE {
                match fetch(addr) {
                    Ok(()) => ok += 1,
                    Err(_) => err += 1,
                }
            }
            slices.push(ok as f64 / t.elapsed().as_secs_f64());
        }
        (slices, err)
    })
}

#[derive(Default)]
pub struct Lat {
    pub us: Vec<f64>,
    pub errors: u64,
}

impl Lat {
    pub fn extend(&mut self, other: Lat) {
        self.us.extend(other.us);
        self.errors += other.errors;
    }
}

/// `n` samples each of connect + MCP_CALL to the first response byte to `a` and `b`, alternating
/// which goes first.
pub fn latency(lab: &Lab, a: SocketAddr, b: SocketAddr, n: usize) -> (Lat, Lat) {
    lab.in_ns(move || {
        let request = mcp_post("127.0.0.1");
        let mut lat = [Lat::default(), Lat::default()];
        for i in 0..n {
            let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
            for k in order {
                let addr = [a, b][k];
                let sample = client_socket().and_then(|s| {
                    let t = Instant::now();
                    first_byte(&s, addr, Some(&request))?;
                    Ok(t.elapsed())
                });
                match sample {
                    Ok(d) => lat[k].us.push(d.as_secs_f64() * 1e6),
                    Err(_) => lat[k].errors += 1,
                }
            }
        }
        let [a, b] = lat;
        (a, b)
    })
}
