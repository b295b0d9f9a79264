//! The kernel side of Moat: load, attach and pin the programs, or adopt the pins of an earlier run.
//!
//! Everything lives in one bpffs directory per instance. Programs, links and maps are pinned in a
//! temporary directory that is then renamed into place, so a directory that exists is complete.
//! The pins keep the programs attached when the agent dies; with no proxy socket in the sockmap,
//! the steering program drops every connection to a protected port (fail closed), and sealed
//! upstream ports stay sealed. Only [`detach`] removes them.
pub mod diagnostics;
pub mod identity;
mod load;
pub mod sys;
pub mod upgrade;
pub mod verify;

use std::{
    io,
    os::fd::{AsFd, BorrowedFd},
    path::{Path, PathBuf},
};

use agent_common::{
    Counters, HOST_COUNTERS, MAP_COUNTERS, MAP_EVENTS, MAP_PORTS, MAP_PROXY, MAP_SEALED,
    MAP_SETTINGS, PROG_CONNECT, PROG_STEER, PROG_TAMPER, PROXY_SLOT, PortEntry, Settings,
};
use aya::{
    Ebpf,
    maps::{Array, HashMap, Map, MapData, PerCpuHashMap, PerCpuValues, RingBuf},
};
use load::{Context as _, MAPS, attach, io_err, load_program, missing, object};
pub use load::{Hooks, SteerError, optional};

/// Pinned links; removing them (and detaching) is what opens the ports again.
pub const LINKS: [&str; 4] = ["link_steer", "link_bind4", "link_bind6", "link_connect"];

/// Open handles on the pinned maps of one instance.
pub struct Kernel {
    pub dir: PathBuf,
    /// True when the pins existed before this process started.
    pub adopted: bool,
    /// What adopting did to each pinned program (empty when this process attached them).
    pub upgraded: Vec<upgrade::Replaced>,
    /// Moat's programs as pinned when opened: what the links must run.
    programs: Vec<verify::Program>,
    /// The reader of the programs' diagnostics, when this process loaded them with some.
    pub log: Option<diagnostics::KernelLogger>,
    ports: HashMap<MapData, u32, PortEntry>,
    sealed: HashMap<MapData, u32, PortEntry>,
    counters: PerCpuHashMap<MapData, u32, Counters>,
    settings: Array<MapData, Settings>,
    proxy: MapData,
    events: Option<RingBuf<MapData>>,
}

impl Kernel {
    /// Adopts the pins in `dir`, replacing their programs with this binary's through their
    /// links ([`upgrade::upgrade`]), or loads, attaches and pins the programs if there are none.
    /// `log_level`: the diagnostics loaded into the programs (see [`diagnostics`]).
    pub fn attach_or_adopt(dir: &Path, hooks: &Hooks, log_level: u8) -> Result<Self, SteerError> {
        check_bpffs(dir)?;
        if dir.exists() {
            let (upgraded, log) = upgrade::upgrade(dir, hooks, log_level)?;
            // Loading parsed the kernel's BTF: see below.
            // SAFETY: mi_collect takes no pointers; it only purges memory already freed.
            unsafe { libmimalloc_sys::mi_collect(true) };
            let mut k = Self::open(dir, true)?;
            k.upgraded = upgraded;
            k.log = log;
            return Ok(k);
        }
        let log = load_and_pin(dir, hooks, log_level)?;
        // Loading parsed the kernel's BTF (tens of MiB, freed now): give those pages back to
        // the system rather than keep them in the allocator's heap for the agent's lifetime.
        // SAFETY: mi_collect takes no pointers; it only purges memory already freed.
        unsafe { libmimalloc_sys::mi_collect(true) };
        let mut k = Self::open(dir, false)?;
        k.log = log;
        Ok(k)
    }

    /// Opens the pins of `dir` without attaching anything (status, detach, restart). Pins made
    /// by an earlier version without the sealed-port map are refused ([`SteerError::Outdated`]):
    /// their programs cannot seal, and their counters have another layout.
    pub fn open(dir: &Path, adopted: bool) -> Result<Self, SteerError> {
        if !dir.exists() {
            return Err(SteerError::NotAttached {
                path: dir.to_owned(),
            });
        }
        let sealed_file = pin_file(MAP_SEALED);
        if !dir.join(sealed_file).exists() {
            return Err(SteerError::Outdated {
                path: dir.to_owned(),
                missing: sealed_file,
            });
        }
        let map = |name: &str| -> Result<Map, SteerError> {
            let file = pin_file(name);
            let path = dir.join(file);
            let data = MapData::from_pin(&path)
                .context(format!("opening pinned map {}", path.display()))?;
            Map::from_map_data(data).context(format!("reading pinned map {}", path.display()))
        };
        let typed = |name: &str| format!("pinned map {name} has an unexpected type");
        let ports = HashMap::try_from(map(MAP_PORTS)?).context(typed(MAP_PORTS))?;
        let sealed = HashMap::try_from(map(MAP_SEALED)?).context(typed(MAP_SEALED))?;
        let counters = PerCpuHashMap::try_from(map(MAP_COUNTERS)?).context(typed(MAP_COUNTERS))?;
        let settings = Array::try_from(map(MAP_SETTINGS)?).context(typed(MAP_SETTINGS))?;
        let events = RingBuf::try_from(map(MAP_EVENTS)?).context(typed(MAP_EVENTS))?;
        let proxy_path = dir.join(pin_file(MAP_PROXY));
        let proxy = MapData::from_pin(&proxy_path)
            .context(format!("opening pinned map {}", proxy_path.display()))?;
        Ok(Self {
            dir: dir.to_owned(),
            adopted,
            upgraded: Vec::new(),
            programs: verify::pinned(dir),
            log: None,
            ports,
            sealed,
            counters,
            settings,
            proxy,
            events: Some(events),
        })
    }

    pub fn settings(&self) -> Result<Settings, SteerError> {
        self.settings.get(&0, 0).context("reading settings")
    }

    pub fn set_settings(&mut self, s: Settings) -> Result<(), SteerError> {
        self.settings.set(0, s, 0).context("writing settings")
    }

    /// Puts the proxy's listening socket in the sockmap: from now on protected ports are steered to it.
    pub fn set_proxy(&self, listener: BorrowedFd<'_>) -> Result<(), SteerError> {
        sys::sockmap_set(self.proxy.fd().as_fd(), PROXY_SLOT, listener)
            .context("putting the proxy socket in the sockmap")
    }

    /// Takes the proxy socket out of the sockmap if it is still the one with `cookie` (a
    /// stopping agent: new connections are dropped from now on, not queued at a socket that
    /// will not take them; an agent that took over has already put its own there).
    pub fn release_proxy(&self, cookie: u64) -> Result<bool, SteerError> {
        if self.proxy_socket()? != Some(cookie) {
            return Ok(false);
        }
        sys::sockmap_clear(self.proxy.fd().as_fd(), PROXY_SLOT)
            .context("taking the proxy socket out of the sockmap")?;
        Ok(true)
    }

    /// The cookie of the proxy socket, or None when no agent is serving (connections are dropped).
    pub fn proxy_socket(&self) -> Result<Option<u64>, SteerError> {
        sys::sockmap_cookie(self.proxy.fd().as_fd(), PROXY_SLOT).context("reading the sockmap")
    }

    /// Makes the protected-port map equal `protected` and the sealed-port map equal `sealed`
    /// (port, server id), keeping the counters of ports that stay and creating counters for new
    /// ones. New entries go in before stale ones go out, so a port that changes from one map
    /// to the other is never open in between.
    pub fn reconcile(
        &mut self,
        protected: &[(u16, u32)],
        sealed: &[(u16, u32)],
    ) -> Result<(), SteerError> {
        let ncpus = aya::util::nr_cpus()
            .map_err(|(_, e)| e)
            .context("counting CPUs")?;
        let zero = || PerCpuValues::try_from(vec![Counters::default(); ncpus]);
        let wanted =
            |list: &[(u16, u32)], port: u32| list.iter().any(|(p, _)| u32::from(*p) == port);
        let ports = protected.iter().chain(sealed).map(|(p, _)| u32::from(*p));
        for key in std::iter::once(HOST_COUNTERS).chain(ports) {
            if self.counters.get(&key, 0).is_err() {
                let z = zero().context("creating counters")?;
                self.counters
                    .insert(key, z, 0)
                    .context(format!("creating counters for port {key}"))?;
            }
        }
        for (port, id) in protected {
            self.ports
                .insert(u32::from(*port), PortEntry { server_id: *id }, 0)
                .context(format!("protecting port {port}"))?;
        }
        for (port, id) in sealed {
            self.sealed
                .insert(u32::from(*port), PortEntry { server_id: *id }, 0)
                .context(format!("sealing port {port}"))?;
        }
        let stale = |map: &HashMap<MapData, u32, PortEntry>, keep: &[(u16, u32)]| -> Vec<u32> {
            map.keys()
                .filter_map(Result::ok)
                .filter(|k| !wanted(keep, *k))
                .collect()
        };
        for port in stale(&self.ports, protected) {
            self.ports
                .remove(&port)
                .context(format!("unprotecting port {port}"))?;
            if !wanted(sealed, port) {
                let _ = self.counters.remove(&port);
            }
        }
        for port in stale(&self.sealed, sealed) {
            self.sealed
                .remove(&port)
                .context(format!("unsealing port {port}"))?;
            if !wanted(protected, port) {
                let _ = self.counters.remove(&port);
            }
        }
        Ok(())
    }

    /// Protected ports and their server ids, sorted by port.
    pub fn ports(&self) -> Vec<(u16, u32)> {
        sorted(&self.ports)
    }

    /// Sealed ports and the ids of the servers whose upstreams they are, sorted by port.
    pub fn sealed(&self) -> Vec<(u16, u32)> {
        sorted(&self.sealed)
    }

    /// Counters summed over CPUs for `key` (a port, or [`HOST_COUNTERS`]).
    pub fn counters(&self, key: u32) -> Counters {
        let mut total = Counters::default();
        if let Ok(per_cpu) = self.counters.get(&key, 0) {
            per_cpu.iter().for_each(|c| total.add(c));
        }
        total
    }

    /// Whether each link is attached and runs the program that was pinned when this was
    /// opened.
    pub fn verify(&self) -> Vec<verify::LinkCheck> {
        verify::check(&self.dir, &self.programs)
    }

    /// Hands the event ring buffer to its reader (once).
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.events.take()
    }
}

fn sorted(map: &HashMap<MapData, u32, PortEntry>) -> Vec<(u16, u32)> {
    let mut v: Vec<(u16, u32)> = map
        .iter()
        .filter_map(Result::ok)
        .map(|(k, e)| (k as u16, e.server_id))
        .collect();
    v.sort_unstable();
    v
}

fn pin_file(map_name: &str) -> &'static str {
    MAPS.iter()
        .find(|(n, _)| *n == map_name)
        .map(|(_, f)| *f)
        .expect("known map")
}

fn check_bpffs(dir: &Path) -> Result<(), SteerError> {
    let parent = dir.parent().unwrap_or(Path::new("/"));
    match sys::is_bpffs(parent) {
        Ok(true) => Ok(()),
        Ok(false) => Err(SteerError::NotBpffs {
            path: parent.to_owned(),
        }),
        Err(e) => Err(SteerError::Io {
            what: "checking",
            path: parent.to_owned(),
            source: e,
        }),
    }
}

/// Loads the programs, attaches them to `hooks`, pins everything in a temporary directory and
/// renames it to `dir`. On error nothing is left behind.
fn load_and_pin(
    dir: &Path,
    hooks: &Hooks,
    log_level: u8,
) -> Result<Option<diagnostics::KernelLogger>, SteerError> {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("moat");
    // bpffs refuses names with a dot.
    let tmp = dir.with_file_name(format!("{name}-tmp-{}", std::process::id()));
    std::fs::create_dir(&tmp).map_err(io_err("creating", &tmp))?;
    let result = pin_into(&tmp, hooks, log_level).and_then(|log| {
        std::fs::rename(&tmp, dir).map_err(io_err("renaming into place", dir))?;
        Ok(log)
    });
    if result.is_err() {
        remove_pins(&tmp);
    }
    result
}

fn pin_into(
    tmp: &Path,
    hooks: &Hooks,
    log_level: u8,
) -> Result<Option<diagnostics::KernelLogger>, SteerError> {
    let mut ebpf = diagnostics::load(aya::EbpfLoader::new(), object(), &log_level)?;
    for (name, file) in MAPS {
        let map = ebpf
            .map(name)
            .ok_or_else(|| missing(format!("map {name}")))?;
        map.pin(tmp.join(file))
            .context(format!("pinning map {name}"))?;
    }
    for (name, file) in verify::PROGRAMS {
        let loaded = load_program(&mut ebpf, name)
            .and_then(|()| attach(&mut ebpf, name, hooks, &tmp.join(format!("link_{file}"))));
        match loaded {
            Err(e) if optional(name) => {
                unavailable(name, &e);
                continue;
            }
            r => r?,
        }
        ebpf.program_mut(name)
            .ok_or_else(|| missing(format!("program {name}")))?
            .pin(tmp.join(format!("prog_{file}")))
            .context(format!("pinning {name}"))?;
    }
    diagnostics::logger(&mut ebpf, log_level)
}

/// Loads each of Moat's programs into the kernel, through its verifier, without attaching or
/// pinning anything (`moat doctor`): the program's name and type, and why the kernel refused it.
pub fn probe() -> Vec<(&'static str, &'static str, Result<(), String>)> {
    let mut ebpf = match Ebpf::load(object()) {
        Ok(e) => e,
        Err(e) => {
            let why = format!("loading the object: {e}");
            return verify::PROGRAMS
                .iter()
                .map(|(name, _)| (*name, kind(name), Err(why.clone())))
                .collect();
        }
    };
    verify::PROGRAMS
        .iter()
        .map(|(name, _)| {
            let loaded = load_program(&mut ebpf, name);
            let why = loaded.map_err(|e| match e {
                SteerError::Bpf { source, .. } => format!("{source}"),
                other => other.to_string(),
            });
            (*name, kind(name), why)
        })
        .collect()
}

/// The program type of each of Moat's programs, as the kernel names it.
fn kind(name: &str) -> &'static str {
    match name {
        PROG_STEER => "sk_lookup",
        PROG_CONNECT => "sock_ops",
        PROG_TAMPER => "lsm/bpf",
        _ => "cgroup/bind",
    }
}

/// Says that an optional program (the BPF LSM's) could not be loaded or attached.
fn unavailable(name: &str, e: &SteerError) {
    tracing::warn!(
        program = name,
        "not attached ({e}): without the BPF LSM (`bpf` in /sys/kernel/security/lsm, kernel \
         option lsm=...,bpf) tampering with the links is not recorded by the kernel; `moat \
         status` and /readyz still check them"
    );
}

/// Detaches every pinned link of the instance in `dir` (for all holders, also a running agent)
/// and removes the directory. This is the only way the protected ports open again.
pub fn detach(dir: &Path) -> Result<(), SteerError> {
    if !dir.exists() {
        return Err(SteerError::NotAttached {
            path: dir.to_owned(),
        });
    }
    for link in LINKS {
        let path = dir.join(link);
        match sys::obj_get(&path) {
            Ok(fd) => sys::link_detach(fd).map_err(io_err("detaching", &path))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(SteerError::Io {
                    what: "opening",
                    path,
                    source: e,
                });
            }
        }
    }
    remove_pins(dir);
    if dir.exists() {
        return Err(SteerError::Io {
            what: "removing",
            path: dir.to_owned(),
            source: io::Error::other("the directory is not empty"),
        });
    }
    Ok(())
}

fn remove_pins(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// The cgroup2 mount point, for `cgroup: auto`.
pub fn cgroup2_root() -> io::Result<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts")?;
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, dir, fstype) = (f.next()?, f.next()?, f.next()?);
            (fstype == "cgroup2").then(|| PathBuf::from(dir))
        })
        .next()
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "no cgroup2 filesystem in /proc/mounts",
            )
        })
}

/// The cgroup v2 id of this process: the inode of its cgroup directory, which is what
/// `bpf_get_current_cgroup_id()` returns in the kernel.
pub fn own_cgroup_id() -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt as _;
    let line = std::fs::read_to_string("/proc/self/cgroup")?;
    let rel = line
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "no cgroup v2 entry in /proc/self/cgroup",
            )
        })?;
    let dir = cgroup2_root()?.join(rel.trim_start_matches('/'));
    Ok(std::fs::metadata(dir)?.ino())
}
