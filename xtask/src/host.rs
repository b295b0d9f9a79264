//! A private test host for the demo and the benchmarks: a network namespace, a child cgroup and
//! a pin directory of its own (the privileged tests' [`Netns`]), the `moat` binary, and cleanup
//! on drop.
use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{Result, sh};

#[allow(dead_code)]
#[path = "../../agent/tests/common/netns.rs"]
mod netns;

use netns::Netns;

pub struct Lab {
    pub name: String,
    ns: Netns,
    pub bpffs: PathBuf,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub audit: PathBuf,
    pub moat: PathBuf,
    /// `agent.upstream_ports` in the config; None: the default range.
    pub upstream_ports: Option<&'static str>,
    /// The config's `servers:` section.
    servers: String,
    agent: Option<Child>,
    children: Vec<Child>,
}

/// Builds the agent (release profile) and returns its path.
pub fn build_moat() -> Result<PathBuf> {
    sh(Command::new(env!("CARGO")).args(["build", "--quiet", "--release", "-p", "moat"]))?;
    Ok(workspace().join("target/release/moat"))
}

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

impl Lab {
    /// A fresh host named `name` whose config protects `servers` (a YAML `servers:` list).
    pub fn new(name: &str, moat: PathBuf, servers: &str) -> Result<Self> {
        if !nix::unistd::geteuid().is_root() {
            return Err("this needs root (network namespaces, kernel programs)".into());
        }
        let dir = workspace().join("target").join(name);
        let ns = Netns::create(name, false, &moat)?;
        let lab = Self {
            name: name.into(),
            bpffs: ns.bpffs.clone(),
            ns,
            config: dir.join("moat.yaml"),
            audit: dir.join("audit.jsonl"),
            dir,
            moat,
            upstream_ports: Some("64000-64999"),
            servers: servers.into(),
            agent: None,
            children: Vec::new(),
        };
        std::fs::create_dir_all(&lab.dir).map_err(|e| e.to_string())?;
        // A new log, and a new chain: not continued from the head of an earlier run's.
        let _ = std::fs::remove_file(&lab.audit);
        let _ = std::fs::remove_file(lab.dir.join("state/audit-head"));
        lab.write_config(&format!("  path: {}\n", lab.audit.display()))?;
        Ok(lab)
    }

    /// Replaces the config's `servers:` section (and what follows it) for the next
    /// `write_config`.
    pub fn set_servers(&mut self, servers: &str) {
        self.servers = servers.into();
    }

    /// Writes the config with `audit` (lines indented two spaces) as its `audit:` section;
    /// the agent reads it when it next starts.
    pub fn write_config(&self, audit: &str) -> Result {
        let ports = self
            .upstream_ports
            .map(|p| format!("  upstream_ports: {p}\n"))
            .unwrap_or_default();
        let config = format!(
            "agent:\n  bpffs: {}\n  cgroup: {}\n  state_dir: {}\n{ports}audit:\n{audit}{}",
            self.bpffs.display(),
            self.ns.cgroup.display(),
            self.dir.join("state").display(),
            self.servers,
        );
        std::fs::write(&self.config, config).map_err(|e| e.to_string())
    }

    /// A command run inside the host's network namespace and cgroup.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.ns.command(program)
    }

    /// Starts a background process that is killed when the host is dropped.
    pub fn spawn(&mut self, mut cmd: Command, log: &str) -> Result {
        let log = File::create(self.dir.join(log)).map_err(|e| e.to_string())?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = cmd
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("{cmd:?}: {e}"))?;
        self.children.push(child);
        Ok(())
    }

    pub fn start_agent(&mut self) -> Result {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("agent.log"))
            .map_err(|e| e.to_string())?;
        let mut cmd = self.command(&self.moat);
        cmd.args(["run", "-c"])
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log);
        self.agent = Some(cmd.spawn().map_err(|e| e.to_string())?);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self
                .status()
                .is_some_and(|s| s["proxy_socket"].is_u64() && s["agent_running"] == true)
            {
                return Ok(());
            }
            if let Some(st) = self
                .agent
                .as_mut()
                .and_then(|a| a.try_wait().ok().flatten())
            {
                return Err(format!(
                    "agent exited ({st}); see {}",
                    self.dir.join("agent.log").display()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err("agent did not become ready".into())
    }

    pub fn kill_agent(&mut self) {
        if let Some(mut a) = self.agent.take() {
            let _ = a.kill();
            let _ = a.wait();
        }
    }

    pub fn status(&self) -> Option<Value> {
        let out = Command::new(&self.moat)
            .args(["status", "--json", "--bpffs"])
            .arg(&self.bpffs)
            .output()
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Runs `f` on a thread inside the host's network namespace.
    pub fn in_ns<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.ns.in_ns(false, f)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.kill_agent();
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.ns.remove(&self.moat);
    }
}
