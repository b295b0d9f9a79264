//! The latency client of `bench proxy`: the hidden subcommand LATENCY_CMD, one keep-alive
//! connection per target (plain HTTP or HTTPS), one request at a time.
use std::{
    io::{self, BufRead as _, BufReader, Read, Write},
    net::{Ipv4Addr, TcpStream},
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject as _};
use serde_json::{Value, json};

use crate::{
    Result,
    bench::{
        mcp_post,
        stats::{percentile, round1},
    },
};

/// The hidden subcommand run by the release build.
pub const LATENCY_CMD: &str = "bench-proxy-latency";

/// Warm-up requests per target, discarded, and a bound on a run.
const LAT_WARMUP: usize = 200;
const LAT_MAX: Duration = Duration::from_secs(6);
/// Bounds every read and write.
const TIMEOUT: Duration = Duration::from_secs(2);

/// `LATENCY_CMD CA SAMPLES TARGET...` (TARGET: `http:PORT` or `https:PORT` on 127.0.0.1): one
/// keep-alive connection per target, one request at a time, the targets taking turns (in
/// rotating order); prints one JSON line with each target's latency percentiles. Bounded by
/// SAMPLES per target and LAT_MAX.
pub fn latency_client(args: &[String]) -> Result {
    let [ca, samples, targets @ ..] = args else {
        return Err(format!("usage: {LATENCY_CMD} CA SAMPLES TARGET..."));
    };
    let samples: usize = samples.parse().map_err(|_| "SAMPLES: not a number")?;
    let tls = Arc::new(tls_client_config(Path::new(ca))?);
    let mut clients = targets
        .iter()
        .map(|t| Client::open(t, &tls).map_err(|e| format!("{t}: {e}")))
        .collect::<Result<Vec<_>>>()?;
    let n = clients.len();
    let mut calls = vec![0u64; n];
    let mut errors = vec![0u64; n];
    let mut us: Vec<Vec<f64>> = vec![Vec::with_capacity(samples); n];
    let deadline = Instant::now() + LAT_MAX;
    for i in 0..LAT_WARMUP + samples {
        if Instant::now() > deadline {
            break;
        }
        for k in 0..n {
            let j = (i + k) % n;
            calls[j] += 1;
            let t = Instant::now();
            match clients[j].call() {
                Ok(()) if i >= LAT_WARMUP => us[j].push(t.elapsed().as_secs_f64() * 1e6),
                Ok(()) => {}
                Err(e) => {
                    errors[j] += 1;
                    if errors[j] == 1 {
                        eprintln!("{}: {e}", targets[j]);
                    }
                    // A fresh connection; give up on the target when that fails too.
                    clients[j] = Client::open(&targets[j], &tls)
                        .map_err(|e| format!("{}: {e}", targets[j]))?;
                }
            }
        }
    }
    let report: Vec<Value> = (0..n)
        .map(|j| {
            json!({
                "target": targets[j],
                "samples": us[j].len(),
                "calls": calls[j],
                "errors": errors[j],
                "p50_us": round1(percentile(&us[j], 0.5)),
                "p90_us": round1(percentile(&us[j], 0.9)),
                "p99_us": round1(percentile(&us[j], 0.99)),
            })
        })
        .collect();
    println!("{}", json!({ "targets": report }));
    Ok(())
}

/// TLS 1.2/1.3 trusting only `ca`, HTTP/1.1 by ALPN.
fn tls_client_config(ca: &Path) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
    for c in certs {
        let c = c.map_err(|e| format!("{}: {e}", ca.display()))?;
        roots.add(c).map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// One POST of `body` to /mcp on `target` (`http:PORT` or `https:PORT` on 127.0.0.1, TLS
/// trusting only `ca`) with the extra header lines `headers` (each ending in CRLF), on a
/// connection of its own: the response's status and body.
pub fn exchange(ca: &Path, target: &str, headers: &str, body: &str) -> Result<(String, String)> {
    let tls = Arc::new(tls_client_config(ca)?);
    let mut c = Client::open(target, &tls).map_err(|e| format!("{target}: {e}"))?;
    let (_, port) = target.split_once(':').unwrap_or_default();
    let request = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let w = c.io.get_mut();
    w.write_all(request.as_bytes())
        .and_then(|()| w.flush())
        .map_err(|e| format!("{target}: {e}"))?;
    let mut answer = Vec::new();
    let status = c
        .response(Some(&mut answer))
        .map_err(|e| format!("{target}: {e}"))?;
    Ok((status, String::from_utf8_lossy(&answer).into_owned()))
}

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

/// A blocking HTTP/1.1 keep-alive client that POSTs MCP_CALL to /mcp and reads the whole response.
struct Client {
    io: BufReader<Box<dyn Stream>>,
    request: Vec<u8>,
    line: String,
}

impl Client {
    fn open(target: &str, tls: &Arc<rustls::ClientConfig>) -> io::Result<Self> {
        let bad = || {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "expected http:PORT or https:PORT",
            )
        };
        let (scheme, port) = target.split_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let tcp = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(TIMEOUT))?;
        tcp.set_write_timeout(Some(TIMEOUT))?;
        let io: Box<dyn Stream> = match scheme {
            "http" => Box::new(tcp),
            "https" => {
                let name = ServerName::try_from("localhost").expect("a DNS name");
                let conn =
                    rustls::ClientConnection::new(tls.clone(), name).map_err(io::Error::other)?;
                Box::new(rustls::StreamOwned::new(conn, tcp))
            }
            _ => return Err(bad()),
        };
        Ok(Self {
            io: BufReader::with_capacity(16 * 1024, io),
            request: mcp_post(&format!("127.0.0.1:{port}")),
            line: String::new(),
        })
    }

    /// One request and its whole response, which must be a 200.
    fn call(&mut self) -> io::Result<()> {
        let w = self.io.get_mut();
        w.write_all(&self.request)?;
        w.flush()?;
        let status = self.response(None)?;
        if status == "200" {
            Ok(())
        } else {
            Err(io::Error::other(format!("status {status}")))
        }
    }

    /// Reads a response: returns its status, and its body into `body` (else skips it).
    fn response(&mut self, mut body: Option<&mut Vec<u8>>) -> io::Result<String> {
        let status = self.read_line()?;
        let status = status.split_whitespace().nth(1).unwrap_or("").to_owned();
        let (mut length, mut chunked) = (None, false);
        loop {
            let l = self.read_line()?;
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse::<u64>().ok();
                } else if k.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = v.to_ascii_lowercase().contains("chunked");
                }
            }
        }
        if chunked {
            loop {
                let size = self.read_line()?;
                let size = u64::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
                    .map_err(io::Error::other)?;
                if size == 0 {
                    while !self.read_line()?.is_empty() {} // trailers
                    break;
                }
                self.body(size, body.as_deref_mut())?;
                self.skip(2)?;
            }
        } else {
            let length = length.ok_or_else(|| io::Error::other("response without a length"))?;
            self.body(length, body)?;
        }
        Ok(status)
    }

    fn body(&mut self, n: u64, into: Option<&mut Vec<u8>>) -> io::Result<()> {
        match into {
            None => self.skip(n),
            Some(v) => {
                let got = (&mut self.io).take(n).read_to_end(v)?;
                if got as u64 == n {
                    Ok(())
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                }
            }
        }
    }

    /// The next line, without its line end; an error at the end of the stream.
    fn read_line(&mut self) -> io::Result<String> {
        self.line.clear();
        if self.io.read_line(&mut self.line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(self.line.trim_end_matches(['\r', '\n']).to_owned())
    }

    fn skip(&mut self, n: u64) -> io::Result<()> {
        if io::copy(&mut (&mut self.io).take(n), &mut io::sink())? == n {
            Ok(())
        } else {
            Err(io::ErrorKind::UnexpectedEof.into())
        }
    }
}
