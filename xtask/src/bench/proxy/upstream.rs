//! The upstream MCP server of `bench proxy`: the hidden subcommand UPSTREAM_CMD that serves
//! (hyper, HTTP/1.1, one thread, TCP_NODELAY), and the handle `bench proxy` runs it by.
use std::{
    convert::Infallible,
    io::{self, BufRead as _, BufReader, Write},
    net::{Ipv4Addr, TcpListener as StdListener},
    path::Path,
    process::{Child, ChildStdin, ChildStdout, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{
    Request, Response,
    body::Incoming,
    header::{CONTENT_TYPE, HeaderValue},
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, sync::oneshot};

use crate::{Result, host::Lab};

/// The hidden subcommand run by the release build.
pub const UPSTREAM_CMD: &str = "bench-proxy-upstream";

/// The answer to every request.
const RESPONSE: &[u8] =
    br#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"ok"}]}}"#;

/// The upstream MCP server, run in the lab as its own process (`serve_upstream`). It prints
/// `ready` once listening, answers each line on stdin with the requests served per port, and
/// exits when stdin closes.
pub struct Upstream {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    pub pid: u32,
}

impl Upstream {
    pub fn start(lab: &Lab, xtask: &Path, ports: &[u16]) -> Result<Self> {
        let mut child = lab
            .command(xtask)
            .arg(UPSTREAM_CMD)
            .args(ports.iter().map(|p| p.to_string()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{}: {e}", xtask.display()))?;
        // `lab.command` execs: the child is the server itself.
        let pid = child.id();
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().ok_or("upstream stdout")?);
        let mut up = Self {
            child,
            stdin,
            stdout,
            pid,
        };
        let mut line = String::new();
        let _ = up.stdout.read_line(&mut line);
        if line.trim() != "ready" {
            return Err(format!(
                "the upstream server did not start: {}",
                line.trim()
            ));
        }
        Ok(up)
    }

    /// Requests answered so far on each port, in the order given to `start`.
    pub fn served(&mut self) -> Result<Vec<u64>> {
        let stdin = self.stdin.as_mut().ok_or("upstream stdin")?;
        writeln!(stdin, "served").map_err(|e| format!("upstream: {e}"))?;
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .map_err(|e| format!("upstream: {e}"))?;
        line.split_whitespace()
            .map(|w| w.parse().map_err(|_| format!("upstream answered {line:?}")))
            .collect()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        // Closing stdin stops it; a bounded wait, then kill.
        drop(self.stdin.take());
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `UPSTREAM_CMD PORT...`: hyper HTTP/1.1 on one tokio thread, on 127.0.0.1:PORT in the calling
/// network namespace, answering every request with a JSON-RPC result after reading its body.
pub fn serve_upstream(args: &[String]) -> Result {
    let ports: Vec<u16> = args
        .iter()
        .map(|a| a.parse().map_err(|_| format!("not a port: {a}")))
        .collect::<Result<_>>()?;
    let listeners = ports
        .iter()
        .map(|&p| {
            let l = StdListener::bind((Ipv4Addr::LOCALHOST, p))
                .map_err(|e| format!("127.0.0.1:{p}: {e}"))?;
            l.set_nonblocking(true).map_err(|e| e.to_string())?;
            Ok(l)
        })
        .collect::<Result<Vec<_>>>()?;
    let served: Vec<Arc<AtomicU64>> = ports.iter().map(|_| Arc::default()).collect();
    let (stop, stopped) = oneshot::channel::<()>();
    // Control on stdin, off the serving thread.
    std::thread::spawn({
        let served = served.clone();
        move || {
            let mut out = io::stdout();
            for line in io::stdin().lines() {
                if line.is_err() {
                    break;
                }
                let n: Vec<String> = served
                    .iter()
                    .map(|n| n.load(Ordering::Relaxed).to_string())
                    .collect();
                if writeln!(out, "{}", n.join(" ")).is_err() {
                    break;
                }
                let _ = out.flush();
            }
            let _ = stop.send(());
        }
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    rt.block_on(async move {
        for (l, n) in listeners.into_iter().zip(served) {
            let l = TcpListener::from_std(l).expect("tokio listener");
            tokio::spawn(accept_loop(l, n));
        }
        println!("ready");
        let _ = stopped.await;
    });
    Ok(())
}

async fn accept_loop(listener: TcpListener, served: Arc<AtomicU64>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(_) => {
                // Out of descriptors and the like: back off.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let served = served.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let served = served.clone();
                async move {
                    let _ = req.into_body().collect().await;
                    served.fetch_add(1, Ordering::Relaxed);
                    let mut resp = Response::new(Full::new(Bytes::from_static(RESPONSE)));
                    resp.headers_mut()
                        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
