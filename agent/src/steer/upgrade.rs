//! Upgrade in place: this binary's programs replace the pinned ones through the pinned links
//! (BPF_LINK_UPDATE, as Cloudflare's tubular does), on the pinned maps, so a hook never goes
//! empty and the maps keep their entries and counters. A map whose layout this version changed
//! cannot be reused: the upgrade is refused and the pinned programs stay attached (the ports
//! stay closed) until the operator detaches.
use std::{
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use agent_common::{MAP_SETTINGS, Settings};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, Map, MapData, MapInfo},
    programs::ProgramInfo,
};

use super::{
    diagnostics,
    load::{
        Context as _, Hooks, MAPS, SteerError, attach, io_err, load_program, missing, object,
        optional,
    },
    pin_file, sys,
    verify::{PROGRAMS, tag_hex},
};

/// What happened to one program.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Replaced {
    pub program: &'static str,
    /// The pinned program's tag before, when there was one.
    pub old_tag: Option<String>,
    pub new_tag: String,
    /// `kept` (its link runs the pinned program, which has this version's instructions),
    /// `replaced` (through its link), `reattached` (its link had been detached) or `attached`
    /// (the pins had no link for it).
    pub how: &'static str,
}

/// Replaces the programs pinned in `dir` with this binary's, reusing (and, for maps this
/// version adds, creating) the pinned maps. A link that runs the pinned program with this
/// version's tag and the same verified size (the same diagnostics level: the verifier prunes
/// what is off) is left as it is, unless diagnostics are asked for (their reader needs this
/// load's ring buffer); one that runs anything else (an older version, or a program someone
/// swapped in) gets this version's; a detached one is attached again.
pub fn upgrade(
    dir: &Path,
    hooks: &Hooks,
    log_level: u8,
) -> Result<(Vec<Replaced>, Option<diagnostics::KernelLogger>), SteerError> {
    let object = object();
    check_maps(dir, object)?;
    // A map this version adds is created below: the pinned programs cannot be using it, so
    // none of them is kept, whatever its tag.
    let adds_maps = MAPS.iter().any(|(_, f)| !dir.join(f).exists());
    let may_keep = !adds_maps && log_level == 0;
    let mut loader = EbpfLoader::new();
    let paths: Vec<(&str, PathBuf)> = MAPS.iter().map(|(n, f)| (*n, dir.join(f))).collect();
    for (name, path) in &paths {
        loader.map_pin_path(name, path.as_path());
    }
    let mut ebpf = diagnostics::load(loader, object, &log_level)?;
    claim(dir)?;
    let mut done = Vec::new();
    for (name, file) in PROGRAMS {
        match replace(&mut ebpf, dir, hooks, name, file, may_keep) {
            Ok(r) => done.push(r),
            Err(e) if optional(name) => super::unavailable(name, &e),
            Err(e) => return Err(e),
        }
    }
    let log = diagnostics::logger(&mut ebpf, log_level)?;
    Ok((done, log))
}

/// Puts this version's `name` in through its link (or keeps, reattaches or attaches it).
fn replace(
    ebpf: &mut Ebpf,
    dir: &Path,
    hooks: &Hooks,
    name: &'static str,
    file: &str,
    may_keep: bool,
) -> Result<Replaced, SteerError> {
    let (link_path, prog_path) = (
        dir.join(format!("link_{file}")),
        dir.join(format!("prog_{file}")),
    );
    let new = {
        load_program(ebpf, name)?;
        let prog = ebpf
            .program(name)
            .ok_or_else(|| missing(format!("program {name}")))?;
        prog.info().context(format!("reading {name}"))?
    };
    let new_tag = new.tag();
    let pinned = ProgramInfo::from_pin(&prog_path).ok();
    let old_tag = pinned.as_ref().map(ProgramInfo::tag);
    let link = match sys::obj_get(&link_path) {
        Ok(fd) => Some(fd),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err("opening", &link_path)(e)),
    };
    let state = link
        .as_ref()
        .map(|l| sys::link_state(l.as_fd(), file == "steer"))
        .transpose()
        .map_err(io_err("reading", &link_path))?;
    let how = match (&link, state) {
        (Some(_), Some(s))
            if s.target != 0
                && may_keep
                && old_tag == Some(new_tag)
                && pinned.as_ref().and_then(ProgramInfo::size_translated)
                    == new.size_translated()
                && pinned.as_ref().map(ProgramInfo::id) == Some(s.prog_id) =>
        {
            "kept"
        }
        (Some(l), Some(s)) if s.target != 0 => {
            let prog = ebpf
                .program(name)
                .ok_or_else(|| missing(format!("program {name}")))?;
            let new = prog.fd().context(name.to_string())?;
            sys::link_update(l.as_fd(), new.as_fd())
                .map_err(io_err("replacing the program of", &link_path))?;
            "replaced"
        }
        (Some(_), _) => {
            // Detached (by someone): a new link, pinned over the dead one.
            let fresh = dir.join(format!("link_{file}_new"));
            let _ = std::fs::remove_file(&fresh);
            attach(ebpf, name, hooks, &fresh)?;
            std::fs::rename(&fresh, &link_path)
                .map_err(io_err("renaming into place", &link_path))?;
            "reattached"
        }
        (None, _) => {
            attach(ebpf, name, hooks, &link_path)?;
            "attached"
        }
    };
    if how != "kept" {
        let prog = ebpf
            .program_mut(name)
            .ok_or_else(|| missing(format!("program {name}")))?;
        // Pinned beside, then renamed over the old pin: the file never goes missing.
        let fresh = dir.join(format!("prog_{file}_new"));
        let _ = std::fs::remove_file(&fresh);
        prog.pin(&fresh).context(format!("pinning {name}"))?;
        std::fs::rename(&fresh, &prog_path).map_err(io_err("renaming into place", &prog_path))?;
    }
    Ok(Replaced {
        program: name,
        old_tag: old_tag.map(tag_hex),
        new_tag: tag_hex(new_tag),
        how,
    })
}

/// Names this process as the one replacing the programs (`Settings::manager_tgid`): the BPF
/// LSM program does not report its link updates as tampering. The agent it replaces stays the
/// one the bind guard lets through until this one starts serving.
fn claim(dir: &Path) -> Result<(), SteerError> {
    let path = dir.join(pin_file(MAP_SETTINGS));
    let data = MapData::from_pin(&path).context(format!("opening {}", path.display()))?;
    let mut settings: Array<MapData, Settings> = Array::try_from(Map::Array(data))
        .context(format!("{} has an unexpected type", path.display()))?;
    let mut s = settings.get(&0, 0).context("reading settings")?;
    s.manager_tgid = std::process::id();
    settings.set(0, s, 0).context("writing settings")
}

/// Refuses pinned maps whose type, key, value or size differ from this version's.
fn check_maps(dir: &Path, object: &[u8]) -> Result<(), SteerError> {
    let obj = aya_obj::Object::parse(object).context("reading the kernel programs' object")?;
    for (name, file) in MAPS {
        let path = dir.join(file);
        if !path.exists() {
            continue;
        }
        let def = obj
            .maps
            .get(name)
            .ok_or_else(|| missing(format!("map {name}")))?;
        let pinned = MapInfo::from_pin(&path).context(format!("reading {}", path.display()))?;
        let kind = pinned.map_type().map(|t| t as u32).unwrap_or(u32::MAX);
        let same = kind == def.map_type()
            && pinned.key_size() == def.key_size()
            && pinned.value_size() == def.value_size()
            && pinned.max_entries() == def.max_entries();
        if !same {
            return Err(SteerError::Incompatible {
                path: dir.to_owned(),
                map: file,
                why: format!(
                    "pinned: type {kind}, key {} B, value {} B, {} entries; this version: type {}, key {} B, value {} B, {} entries",
                    pinned.key_size(),
                    pinned.value_size(),
                    pinned.max_entries(),
                    def.map_type(),
                    def.key_size(),
                    def.value_size(),
                    def.max_entries()
                ),
            });
        }
    }
    Ok(())
}
