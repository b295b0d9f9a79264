//! A private machine for the agent (root only): a network namespace of its own, with loopback
//! up and, when asked, a "remote" namespace joined to it by a veth pair (IPv4 and IPv6); a
//! child cgroup; and a pin directory on the bpffs. Shared by the privileged tests
//! (`agent/tests/common`) and `cargo xtask demo` and `bench` (`xtask/src/host.rs`, through
//! `#[path]`), so it needs nothing but `std` and `nix`.
use std::{
    ffi::OsStr,
    fs::File,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use nix::sched::{CloneFlags, setns};

/// The host's and the remote namespace's addresses on the veth pair.
pub const HOST_V4: &str = "10.99.0.1";
pub const REMOTE_V4: &str = "10.99.0.2";
pub const HOST_V6: &str = "fd99::1";
pub const REMOTE_V6: &str = "fd99::2";

pub struct Netns {
    pub name: String,
    /// `/run/netns/NAME`.
    pub netns: PathBuf,
    /// `/run/netns/NAME-r`, when made with a remote namespace.
    pub remote: Option<PathBuf>,
    /// NAME under the cgroup2 root.
    pub cgroup: PathBuf,
    /// NAME under the bpffs (not created: the agent pins there).
    pub bpffs: PathBuf,
}

impl Netns {
    /// Makes the namespace NAME (and NAME-r joined to it, with `remote`) and the cgroup NAME,
    /// after removing what an earlier run left under that name (`moat` detaches its pins). A
    /// bpffs is mounted at /sys/fs/bpf when none is.
    pub fn create(name: &str, remote: bool, moat: &Path) -> Result<Self, String> {
        let bpffs_root = match mount_point("bpf") {
            Some(p) => p,
            None => {
                std::fs::create_dir_all("/sys/fs/bpf").map_err(|e| format!("/sys/fs/bpf: {e}"))?;
                sh("mount -t bpf bpf /sys/fs/bpf")?;
                PathBuf::from("/sys/fs/bpf")
            }
        };
        let cgroup_root = mount_point("cgroup2").ok_or("no cgroup2 filesystem is mounted")?;
        let ns = Self {
            name: name.into(),
            netns: PathBuf::from("/run/netns").join(name),
            remote: remote.then(|| PathBuf::from("/run/netns").join(format!("{name}-r"))),
            cgroup: cgroup_root.join(name),
            bpffs: bpffs_root.join(name),
        };
        ns.remove(moat);
        std::fs::create_dir_all(&ns.cgroup).map_err(|e| format!("{}: {e}", ns.cgroup.display()))?;
        sh(&format!("ip netns add {name}; ip -n {name} link set lo up"))?;
        if remote {
            // Interface names have at most 15 bytes.
            let id: String = name.chars().filter(char::is_ascii_alphanumeric).collect();
            let id = &id[id.len().saturating_sub(12)..];
            let (h, r, vh, vr) = (
                name,
                format!("{name}-r"),
                format!("vh{id}"),
                format!("vr{id}"),
            );
            sh(&format!(
                "ip netns add {r}; ip -n {r} link set lo up
                 ip link add {vh} netns {h} type veth peer name {vr} netns {r}
                 ip -n {h} addr add {HOST_V4}/24 dev {vh}; ip -n {r} addr add {REMOTE_V4}/24 dev {vr}
                 ip -n {h} addr add {HOST_V6}/64 dev {vh} nodad; ip -n {r} addr add {REMOTE_V6}/64 dev {vr} nodad
                 ip -n {h} link set {vh} up; ip -n {r} link set {vr} up"
            ))?;
        }
        Ok(ns)
    }

    /// A command that runs inside the namespace and the cgroup.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(r#"echo $$ > "$1/cgroup.procs" && shift && exec nsenter --net="$@""#)
            .arg("sh")
            .arg(&self.cgroup)
            .arg(&self.netns)
            .arg("--")
            .arg(program);
        c
    }

    /// Runs `f` on a thread inside the namespace (or the remote one).
    pub fn in_ns<T: Send + 'static>(
        &self,
        remote: bool,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let ns = if remote {
            self.remote
                .clone()
                .expect("made without a remote namespace")
        } else {
            self.netns.clone()
        };
        std::thread::spawn(move || {
            setns(
                File::open(&ns).expect("the namespace"),
                CloneFlags::CLONE_NEWNET,
            )
            .expect("setns");
            f()
        })
        .join()
        .expect("the thread in the namespace")
    }

    /// Detaches the pins (with `moat`), deletes the namespaces and the cgroup; what is not
    /// there is skipped.
    pub fn remove(&self, moat: &Path) {
        let quiet = |c: &mut Command| {
            let _ = c.stdout(Stdio::null()).stderr(Stdio::null()).status();
        };
        quiet(
            Command::new(moat)
                .args(["detach", "--bpffs"])
                .arg(&self.bpffs),
        );
        quiet(Command::new("ip").args(["netns", "del", &self.name]));
        quiet(Command::new("ip").args(["netns", "del", &format!("{}-r", self.name)]));
        let _ = std::fs::remove_dir(&self.cgroup);
    }
}

/// Where a filesystem of type `fstype` is mounted.
pub fn mount_point(fstype: &str) -> Option<PathBuf> {
    std::fs::read_to_string("/proc/mounts")
        .ok()?
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&fstype)).then(|| PathBuf::from(f[1]))
        })
}

fn sh(script: &str) -> Result<(), String> {
    let out = Command::new("sh")
        .args(["-ec", script])
        .output()
        .map_err(|e| format!("sh: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
