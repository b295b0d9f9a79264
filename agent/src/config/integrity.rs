//! A server's `integrity:`: whether what it offers is checked against pins, what happens to an
//! entry that differs from its pin or has none, and how pins are taken.
use std::time::Duration;

use super::yaml::{Node, Report};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Integrity {
    pub mode: IntegrityMode,
    /// Entries with no pin are pinned when first listed (trust on first use) instead of
    /// waiting for an operator's `moat tools approve`.
    pub pin_on_first_use: bool,
    /// Entries with a marker of poisoning are hidden and refused like unpinned ones (in
    /// `enforce` mode), even when pinned.
    pub hide_flagged: bool,
    /// How often Moat checks the server itself (None: only when clients list).
    pub recheck: Option<Duration>,
}

/// `recheck_s` when not given: every five minutes.
const RECHECK: Duration = Duration::from_secs(300);

impl Default for Integrity {
    /// No `integrity:` section: nothing is checked.
    fn default() -> Self {
        Self {
            mode: IntegrityMode::Off,
            pin_on_first_use: false,
            hide_flagged: false,
            recheck: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntegrityMode {
    /// A changed or unpinned entry is hidden from lists and its calls are refused.
    Enforce,
    /// Changed and unpinned entries pass, and are audited.
    Warn,
    Off,
}

pub(super) fn read_integrity(n: &Node<'_>, r: &mut Report) -> Option<Integrity> {
    let m = n.mapping(&["mode", "pin", "hide_flagged", "recheck_s"], r)?;
    let mode = match m.get("mode") {
        None => Some(IntegrityMode::Enforce),
        Some(v) => match v.string(r)?.as_str() {
            "enforce" => Some(IntegrityMode::Enforce),
            "warn" => Some(IntegrityMode::Warn),
            "off" => Some(IntegrityMode::Off),
            other => {
                r.add(
                    v,
                    format!("expected `enforce`, `warn` or `off`, found {other:?}"),
                );
                None
            }
        },
    };
    let pin_on_first_use = match m.get("pin") {
        None => Some(false),
        Some(v) => match v.string(r)?.as_str() {
            "approve" => Some(false),
            "first_use" => Some(true),
            other => {
                r.add(
                    v,
                    format!("expected `approve` or `first_use`, found {other:?}"),
                );
                None
            }
        },
    };
    let hide_flagged = match m.get("hide_flagged") {
        None => Some(false),
        Some(v) => v.boolean(r),
    };
    let recheck = match m.get("recheck_s") {
        None => Some(Some(RECHECK)),
        Some(v) => match v.integer(r)? {
            0 => Some(None),
            i @ 1..=86_400 => Some(Some(Duration::from_secs(i as u64))),
            i => {
                r.add(
                    v,
                    format!("expected 0 (off) or 1 to 86400 seconds, found {i}"),
                );
                None
            }
        },
    };
    Some(Integrity {
        mode: mode?,
        pin_on_first_use: pin_on_first_use?,
        hide_flagged: hide_flagged?,
        recheck: recheck?,
    })
}
