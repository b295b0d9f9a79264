//! One test's host, of one of two kinds with the same methods. A privileged host (root) is a
//! fresh network namespace (and a "remote" one joined by a veth pair), a child cgroup and a
//! bpffs directory, with the kernel programs attached by the agent. A plain host needs no root:
//! the agent runs `moat run --unprotected` on loopback ports the harness picks, for the tests
//! of what happens after a connection is accepted (HTTP, auth, policy, audit).
use std::{
    fs::File,
    io::Write as _,
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Output},
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::Value;

use super::{MOAT, Netns, Recorded, free_port, upstream::Server};

pub const PORT: u16 = 8000;
pub const RESERVED: (u16, u16) = (64000, 64099);

static NEXT: AtomicU32 = AtomicU32::new(0);

const NEEDS_ROOT: &str = "the privileged tests load kernel programs and create network \
                          namespaces: run them as root (`sudo cargo xtask test`)";

fn require_root() {
    assert!(nix::unistd::geteuid().is_root(), "{NEEDS_ROOT}");
}

/// Whether a privileged test may run here: as root, yes. Otherwise it says it is skipped and
/// the test returns early (`if !privileged() { return; }`), unless MOAT_REQUIRE_PRIVILEGED is
/// set (as `cargo xtask test` does), where a privileged test that cannot run fails.
pub fn privileged() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("MOAT_REQUIRE_PRIVILEGED").is_none(),
        "MOAT_REQUIRE_PRIVILEGED is set: {NEEDS_ROOT}"
    );
    // Straight to standard error: the test harness captures eprintln! of passing tests.
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    let _ = writeln!(std::io::stderr(), "skipped {test}: {NEEDS_ROOT}");
    false
}

/// One test's machine: privileged, the protected host namespace, a remote namespace, a cgroup,
/// pins; plain, a directory and loopback ports (its namespace paths are empty then).
pub struct Host {
    pub name: String,
    pub netns: PathBuf,
    pub remote_netns: PathBuf,
    pub cgroup: PathBuf,
    pub bpffs: PathBuf,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub audit: PathBuf,
    plain: Option<Plain>,
    /// The namespaces, cgroup and pins of a privileged host.
    ns: Option<Netns>,
    agent: Option<Child>,
    servers: Vec<Server>,
    children: Vec<Child>,
}

/// The loopback ports of a plain host.
struct Plain {
    port: u16,
    upstream_port: u16,
    admin: u16,
    authz: u16,
}

impl Host {
    /// A privileged host (root: see [`privileged`]).
    pub fn new() -> Self {
        require_root();
        let name = format!(
            "moat-t{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let ns = Netns::create(&name, true, Path::new(MOAT)).unwrap();
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        let host = Self {
            netns: ns.netns.clone(),
            remote_netns: ns.remote.clone().unwrap(),
            cgroup: ns.cgroup.clone(),
            bpffs: ns.bpffs.clone(),
            config: dir.join("moat.yaml"),
            audit: dir.join("audit.jsonl"),
            dir,
            name,
            plain: None,
            ns: Some(ns),
            agent: None,
            servers: Vec::new(),
            children: Vec::new(),
        };
        host.write_default_config();
        host
    }

    /// A plain host: no root, no namespace, no kernel programs; the agent runs `moat run
    /// --unprotected` with its protected port, its upstream and its admin listener on loopback
    /// ports picked for this host (see [`free_port`]).
    pub fn plain() -> Self {
        let name = format!(
            "moat-p{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        let host = Self {
            netns: PathBuf::new(),
            remote_netns: PathBuf::new(),
            cgroup: PathBuf::new(),
            // Never attached: an unprotected agent refuses to start while pins are there.
            bpffs: dir.join("no-bpffs"),
            config: dir.join("moat.yaml"),
            audit: dir.join("audit.jsonl"),
            dir,
            name,
            plain: Some(Plain {
                port: free_port(),
                upstream_port: free_port(),
                admin: free_port(),
                authz: free_port(),
            }),
            ns: None,
            agent: None,
            servers: Vec::new(),
            children: Vec::new(),
        };
        host.write_default_config();
        host
    }

    fn write_default_config(&self) {
        self.write_config(&self.default_servers());
    }

    /// The `servers:` section of the default config: `files`, plain HTTP and unauthenticated,
    /// on [`Host::port`], its upstream on [`Host::upstream_port`].
    pub fn default_servers(&self) -> String {
        format!(
            "servers:\n  - name: files\n    port: {}\n    upstream: {}\n    dangerous: {{plaintext: true, unauthenticated: true}}\n",
            self.port(),
            self.upstream()
        )
    }

    pub fn is_plain(&self) -> bool {
        self.plain.is_some()
    }

    /// The protected port of the default server: PORT in a namespace, a free loopback port on
    /// a plain host.
    pub fn port(&self) -> u16 {
        self.plain.as_ref().map_or(PORT, |p| p.port)
    }

    /// Where a client on this host reaches the protected port: 127.0.0.1 and [`Host::port`].
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port()))
    }

    /// The port of the default server's upstream: the protected port itself in a namespace
    /// (the kernel tells the agent's connections from the clients'), another one on a plain
    /// host.
    pub fn upstream_port(&self) -> u16 {
        self.plain.as_ref().map_or(PORT, |p| p.upstream_port)
    }

    /// The default server's `upstream:` value.
    pub fn upstream(&self) -> String {
        format!("http://127.0.0.1:{}", self.upstream_port())
    }

    /// Where the agent's admin listener is: the default 127.0.0.1:9901 in a namespace, a free
    /// port on a plain host.
    pub fn admin_addr(&self) -> SocketAddr {
        let port = self.plain.as_ref().map_or(9901, |p| p.admin);
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// The port of Moat's authorization server (the issuer of `issuer: local`): 9443 in a
    /// namespace, a free port on a plain host.
    pub fn authz_port(&self) -> u16 {
        self.plain.as_ref().map_or(9443, |p| p.authz)
    }

    /// The `authorization_server:` section a config gets when a server names `issuer: local`
    /// and the test gave none: plain HTTP on loopback.
    pub fn authz_section(&self) -> String {
        format!(
            "authorization_server:\n  issuer: http://127.0.0.1:{}\n  dangerous: {{plaintext: true}}\n",
            self.authz_port()
        )
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
        let agent = match &self.plain {
            None => format!(
                "  bpffs: {}\n  cgroup: {}\n",
                self.bpffs.display(),
                self.cgroup.display()
            ),
            Some(_) => format!(
                "  bpffs: {}\n  admin_listen: {}\n",
                self.bpffs.display(),
                self.admin_addr()
            ),
        };
        let authz =
            if servers.contains("issuer: local") && !servers.contains("authorization_server:") {
                self.authz_section()
            } else {
                String::new()
            };
        let text = format!(
            "agent:\n{agent}  state_dir: {}\n  upstream_ports: {}-{}\naudit:\n{audit}{servers}{authz}",
            self.dir.join("state").display(),
            RESERVED.0,
            RESERVED.1,
        );
        std::fs::write(&self.config, text).unwrap();
    }

    /// A command that runs inside the host namespace and the test's cgroup (on a plain host,
    /// just the command).
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut c = match &self.ns {
            Some(ns) => ns.command(program),
            None => Command::new(program),
        };
        c.args(args);
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

    /// Like [`Host::start_agent`], with more arguments to `moat run` (on a plain host,
    /// `--unprotected` comes first).
    pub fn start_agent_with(&mut self, args: &[&str]) {
        self.start_agent_under(&[], args);
    }

    /// Like [`Host::start_agent_with`], the agent run by `wrapper` (a command that execs the
    /// rest, e.g. `prlimit --nofile=600:600`).
    pub fn start_agent_under(&mut self, wrapper: &[&str], args: &[&str]) {
        assert!(self.agent.is_none(), "agent already running");
        let unprotected: &[&str] = if self.is_plain() {
            &["--unprotected"]
        } else {
            &[]
        };
        let (log, out) = self.agent_output("agent.log");
        let (program, before): (&str, &[&str]) = match wrapper {
            [] => (MOAT, &[]),
            [program, rest @ ..] => (program, rest),
        };
        let moat: &[&str] = if wrapper.is_empty() { &[] } else { &[MOAT] };
        let child = self
            .command(
                program,
                &[
                    before,
                    moat,
                    &["run", "-c", self.config.to_str().unwrap()],
                    unprotected,
                    args,
                ]
                .concat(),
            )
            .stdout(out)
            .stderr(log)
            .spawn()
            .unwrap();
        let pid = child.id();
        self.agent = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // Steered: its socket is in the sockmap. Unprotected: its listeners are bound and
            // `moat status` names it.
            let serving = self.try_status().is_some_and(|s| match &self.plain {
                None => s["proxy_socket"].is_u64() && s["agent_running"] == true,
                Some(_) => s["unprotected"]["pid"] == pid,
            });
            if serving {
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

    /// Where an agent writes: its log (`log`, new) and its standard output (`agent.out`,
    /// appended to across restarts).
    fn agent_output(&self, log: &str) -> (File, File) {
        let log = File::create(self.dir.join(log)).unwrap();
        let out = File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("agent.out"))
            .unwrap();
        (log, out)
    }

    /// `moat run --take-over` beside the running agent: returns once the old agent has exited
    /// (its exit status) and the new one serves; the new one's log goes to `agent-2.log`.
    pub fn take_over_agent(&mut self) -> std::process::ExitStatus {
        let mut old = self.agent.take().expect("agent running");
        let (log, out) = self.agent_output("agent-2.log");
        let child = self
            .command(
                MOAT,
                &["run", "-c", self.config.to_str().unwrap(), "--take-over"],
            )
            .stdout(out)
            .stderr(log)
            .spawn()
            .unwrap();
        let pid = child.id();
        self.agent = Some(child);
        let status = old.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let serving = self.try_status().is_some_and(|s| {
                s["proxy_socket"].is_u64() && s["agent_running"] == true && s["agent_pid"] == pid
            });
            if serving {
                return status;
            }
            if let Some(st) = self.agent.as_mut().unwrap().try_wait().unwrap() {
                panic!("the new agent exited ({st}): {}", self.log("agent-2.log"));
            }
            assert!(
                Instant::now() < deadline,
                "new agent not serving: {}",
                self.log("agent-2.log")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A ping from 127.0.0.1 in the host namespace to the protected [`PORT`]: the peer the
    /// server saw (in the reserved ports when the agent forwarded it), or why it failed.
    pub fn ping_local(&self) -> std::io::Result<SocketAddr> {
        let target = SocketAddr::from(([127, 0, 0, 1], PORT));
        self.in_ns(false, move || super::fetch(target, None))
    }

    /// A log file of the test's directory.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
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

    /// `moat status --json`: of the pins, and on a plain host (with the config) of the
    /// unprotected agent.
    fn try_status(&self) -> Option<Value> {
        let mut cmd = Command::new(MOAT);
        cmd.args(["status", "--json", "--bpffs"]).arg(&self.bpffs);
        if self.is_plain() {
            cmd.arg("-c").arg(&self.config);
        }
        let out = cmd.output().ok()?;
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    /// `moat COMMAND... -c <config> ARGS...`, which must succeed; its JSON output.
    pub fn moat_json(&self, command: &[&str], args: &[&str]) -> Value {
        let out = Command::new(MOAT)
            .args(command)
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "moat {command:?} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// A token of Moat's own issuer for `sub` on `server` (`moat token mint`).
    pub fn mint(&self, server: &str, sub: &str) -> String {
        let out = Command::new(MOAT)
            .args(["token", "mint", "-c"])
            .arg(&self.config)
            .args(["--server", server, "--sub", sub])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    pub fn status(&self) -> Value {
        self.try_status().expect("moat status --json works")
    }

    /// The running agent's pid, as `moat status` says.
    pub fn agent_pid(&self) -> i32 {
        let s = self.status();
        let pid = match &self.plain {
            None => &s["agent_pid"],
            Some(_) => &s["unprotected"]["pid"],
        };
        pid.as_i64().unwrap_or_else(|| panic!("no agent in {s}")) as i32
    }

    pub fn port_counters(&self, port: u16) -> Value {
        self.counters_in("ports", port)
    }

    /// The counters of `port` in the status's `list` (`ports`, `sealed`); null if absent.
    pub fn counters_in(&self, list: &str, port: u16) -> Value {
        self.status()[list]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["port"] == port)
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Both `moat check` and `moat run` (with `--unprotected` on a plain host) refuse the
    /// current config with exit status 2 and an error containing every one of `needles`.
    pub fn assert_config_refused(&self, needles: &[&str]) {
        for sub in ["check", "run"] {
            let mut cmd = Command::new(MOAT);
            cmd.args([sub, "-c", self.config.to_str().unwrap()]);
            if self.is_plain() {
                cmd.arg("--unprotected");
            }
            let out = cmd.output().unwrap();
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

    /// Runs `f` on a thread inside the host (or remote) network namespace; on a plain host, on
    /// a thread (it has no remote namespace).
    pub fn in_ns<T: Send + 'static>(
        &self,
        remote: bool,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        match &self.ns {
            Some(ns) => ns.in_ns(remote, f),
            None => {
                assert!(
                    !remote,
                    "a plain host has no remote namespace: use Host::new()"
                );
                std::thread::spawn(f).join().unwrap()
            }
        }
    }

    /// A plain-HTTP JSON-RPC server in the host namespace on [::]:port (dual stack; on a plain
    /// host on 127.0.0.1:port): every request is answered with the peer address it came from,
    /// and recorded.
    pub fn start_server(&mut self, port: u16) -> Arc<Recorded> {
        let addr: SocketAddr = match self.plain {
            None => (std::net::Ipv6Addr::UNSPECIFIED, port).into(),
            Some(_) => ([127, 0, 0, 1], port).into(),
        };
        let listener = self.in_ns(false, move || TcpListener::bind(addr).unwrap());
        let (server, requests) = Server::start(listener);
        self.servers.push(server);
        requests
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
        self.servers.clear();
        if let Some(ns) = &self.ns {
            ns.remove(Path::new(MOAT));
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
