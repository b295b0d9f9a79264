//! Tamper evidence without the BPF LSM: whether each pinned link is still attached to its hook
//! and still runs Moat's program (by id, as the agent loaded or found it, and by tag). Another
//! root process can detach a link or swap its program; `moat status` and `/readyz` say so.
use std::{os::fd::AsFd as _, path::Path};

use aya::programs::{ProgramInfo, loaded_programs};
use serde::Serialize;

use agent_common::{PROG_BIND4, PROG_BIND6, PROG_CONNECT, PROG_STEER, PROG_TAMPER};

use super::sys;

/// Each program: its name in the object, and the suffix of its pinned link and program files.
pub const PROGRAMS: [(&str, &str); 5] = [
    (PROG_STEER, "steer"),
    (PROG_BIND4, "bind4"),
    (PROG_BIND6, "bind6"),
    (PROG_CONNECT, "connect"),
    (PROG_TAMPER, "tamper"),
];

/// The tag of a program, as `bpftool` prints it.
pub fn tag_hex(tag: u64) -> String {
    format!("{tag:016x}")
}

/// One of Moat's programs as it was pinned: the link file's suffix, its id and tag.
#[derive(Debug, Clone, Copy)]
pub struct Program {
    pub file: &'static str,
    pub id: u32,
    pub tag: u64,
    /// Its size after the verifier (which prunes diagnostics that are off).
    pub xlated: u32,
}

/// The pinned programs of `dir` (those it has).
pub fn pinned(dir: &Path) -> Vec<Program> {
    PROGRAMS
        .iter()
        .filter_map(|(_, file)| {
            let info = ProgramInfo::from_pin(dir.join(format!("prog_{file}"))).ok()?;
            Some(Program {
                file,
                id: info.id(),
                tag: info.tag(),
                xlated: info.size_translated().unwrap_or(0),
            })
        })
        .collect()
}

/// How one link stands.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LinkCheck {
    pub link: String,
    /// Still attached to its network namespace or cgroup.
    pub attached: bool,
    /// The program it runs.
    pub prog_id: u32,
    pub tag: Option<String>,
    /// Moat's program: the one expected.
    pub expected_id: u32,
    pub expected_tag: String,
    /// The expected program's size after the verifier, in bytes.
    pub xlated_bytes: u32,
}

impl LinkCheck {
    /// What is wrong, in a sentence.
    pub fn problem(&self) -> Option<String> {
        if !self.attached {
            return Some(format!("{} was detached from its hook", self.link));
        }
        (self.prog_id != self.expected_id).then(|| {
            format!(
                "{} runs program {} (tag {}), not Moat's {} (tag {})",
                self.link,
                self.prog_id,
                self.tag.as_deref().unwrap_or("unknown"),
                self.expected_id,
                self.expected_tag
            )
        })
    }
}

/// Checks every link of `dir` against `expected`; a link that cannot be read is reported as
/// detached (its pin is gone or the kernel refuses it).
pub fn check(dir: &Path, expected: &[Program]) -> Vec<LinkCheck> {
    expected
        .iter()
        .map(|p| {
            let link = format!("link_{}", p.file);
            let state = sys::obj_get(&dir.join(&link))
                .and_then(|fd| sys::link_state(fd.as_fd(), p.file == "steer"));
            let (attached, prog_id) = match state {
                Ok(s) => (s.target != 0, s.prog_id),
                Err(_) => (false, 0),
            };
            let tag = if prog_id == p.id {
                Some(tag_hex(p.tag))
            } else {
                loaded_programs()
                    .flatten()
                    .find(|i| i.id() == prog_id)
                    .map(|i| tag_hex(i.tag()))
            };
            LinkCheck {
                link,
                attached,
                prog_id,
                tag,
                expected_id: p.id,
                expected_tag: tag_hex(p.tag),
                xlated_bytes: p.xlated,
            }
        })
        .collect()
}
