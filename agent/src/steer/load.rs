//! The kernel object and what loading it takes: its maps by name and pin file, where its
//! programs attach, and the errors of loading, attaching and pinning.
use std::{
    fs::File,
    io,
    path::{Path, PathBuf},
};

use agent_common::{
    MAP_CONNS, MAP_COUNTERS, MAP_EVENTS, MAP_PORTS, MAP_PROXY, MAP_SEALED, MAP_SETTINGS,
    PROG_CONNECT, PROG_STEER, PROG_TAMPER,
};
use aya::{
    Btf, Ebpf,
    programs::{
        CgroupAttachMode, CgroupSockAddr, Lsm, ProgramError, SkLookup, SockOps, links::FdLink,
    },
};

/// Pinned map files, by map name.
pub const MAPS: [(&str, &str); 7] = [
    (MAP_PORTS, "map_ports"),
    (MAP_SEALED, "map_sealed"),
    (MAP_PROXY, "map_proxy"),
    (MAP_COUNTERS, "map_counters"),
    (MAP_SETTINGS, "map_settings"),
    (MAP_EVENTS, "map_events"),
    (MAP_CONNS, "map_conns"),
];
#[derive(Debug, thiserror::Error)]
pub enum SteerError {
    #[error("{path} is not on a bpf filesystem (mount one with `mount -t bpf bpf /sys/fs/bpf`)")]
    NotBpffs { path: PathBuf },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{what}: {source}")]
    Bpf {
        what: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "{path} holds the programs of a Moat whose map {map} has another layout ({why}); \
         they stay attached and keep the protected ports closed: run `moat detach --bpffs {path}` \
         and start the agent again to load the current ones"
    )]
    Incompatible {
        path: PathBuf,
        map: &'static str,
        why: String,
    },
    #[error("nothing is attached: {path} does not exist")]
    NotAttached { path: PathBuf },
    #[error(
        "{path} holds the programs of an earlier Moat, which cannot seal upstream ports (no {missing}); \
         they stay attached and keep the protected ports closed: run `moat detach --bpffs {path}` \
         and start the agent again to load the current ones"
    )]
    Outdated {
        path: PathBuf,
        missing: &'static str,
    },
}

/// Adds what was being done to a bpf error.
pub trait Context<T> {
    fn context(self, what: impl Into<String>) -> Result<T, SteerError>;
}

impl<T, E: Into<Box<dyn std::error::Error + Send + Sync>>> Context<T> for Result<T, E> {
    fn context(self, what: impl Into<String>) -> Result<T, SteerError> {
        self.map_err(|e| SteerError::Bpf {
            what: what.into(),
            source: e.into(),
        })
    }
}

pub fn missing(what: String) -> SteerError {
    SteerError::Bpf {
        what,
        source: "missing from the object".into(),
    }
}

pub fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SteerError {
    let path = path.to_owned();
    move |source| SteerError::Io { what, path, source }
}

/// Where the programs attach.
pub struct Hooks {
    /// A network namespace file, e.g. /proc/self/ns/net.
    pub netns: PathBuf,
    /// A cgroup2 directory.
    pub cgroup: PathBuf,
}

/// The kernel programs' object, built with the agent.
pub fn object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/moat-ebpf"))
}

pub fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, SteerError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| missing(format!("program {name}")))?
        .try_into()
        .context(format!("program {name}"))
}

/// Loads program `name` into the kernel, as its type.
pub fn load_program(ebpf: &mut Ebpf, name: &str) -> Result<(), SteerError> {
    match name {
        PROG_STEER => program::<SkLookup>(ebpf, name)?.load(),
        PROG_CONNECT => program::<SockOps>(ebpf, name)?.load(),
        PROG_TAMPER => {
            let btf = Btf::from_sys_fs().context("reading the kernel's BTF")?;
            program::<Lsm>(ebpf, name)?.load("bpf", &btf)
        }
        _ => program::<CgroupSockAddr>(ebpf, name)?.load(),
    }
    .map_err(refusal)
    .context(format!("loading {name}"))
}

/// The kernel's refusal of a program: the error of BPF_PROG_LOAD, with the verifier's log
/// when it wrote one (a kernel that refuses a program type writes none).
fn refusal(e: ProgramError) -> Box<dyn std::error::Error + Send + Sync> {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            if log.trim().is_empty() {
                format!("the kernel refused it before verifying it ({io_error})").into()
            } else {
                format!("the verifier refused it ({io_error}):\n{}", log.trim_end()).into()
            }
        }
        other => other.into(),
    }
}

/// Whether program `name` may be missing: the BPF LSM program, on kernels without the BPF
/// LSM active (the links are then checked from userspace only).
pub fn optional(name: &str) -> bool {
    name == PROG_TAMPER
}

/// Attaches loaded program `name` to its hook (sk_lookup: the network namespace; the LSM
/// program: the kernel's bpf hook; the others: the cgroup) and pins its link at `link_path`.
pub fn attach(
    ebpf: &mut Ebpf,
    name: &str,
    hooks: &Hooks,
    link_path: &Path,
) -> Result<(), SteerError> {
    let link: FdLink = if name == PROG_TAMPER {
        let p: &mut Lsm = program(ebpf, name)?;
        let id = p.attach().context(format!("attaching {name}"))?;
        p.take_link(id)
            .context(format!("taking the {name} link"))?
            .into()
    } else if name == PROG_STEER {
        let netns =
            File::open(&hooks.netns).map_err(io_err("opening network namespace", &hooks.netns))?;
        let p: &mut SkLookup = program(ebpf, name)?;
        let id = p.attach(&netns).context(format!("attaching {name}"))?;
        p.take_link(id)
            .context(format!("taking the {name} link"))?
            .into()
    } else {
        let cgroup = File::open(&hooks.cgroup).map_err(io_err("opening cgroup", &hooks.cgroup))?;
        if name == PROG_CONNECT {
            let p: &mut SockOps = program(ebpf, name)?;
            let id = p
                .attach(&cgroup, CgroupAttachMode::default())
                .context(format!("attaching {name}"))?;
            p.take_link(id)
                .context(format!("taking the {name} link"))?
                .try_into()
                .context(format!("{name} link"))?
        } else {
            let p: &mut CgroupSockAddr = program(ebpf, name)?;
            let id = p
                .attach(&cgroup, CgroupAttachMode::default())
                .context(format!("attaching {name}"))?;
            p.take_link(id)
                .context(format!("taking the {name} link"))?
                .try_into()
                .context(format!("{name} link"))?
        }
    };
    link.pin(link_path)
        .context(format!("pinning the {name} link"))?;
    Ok(())
}
