//! A server's `behaviour:`: whether each subject's requests are compared with what it usually
//! does (its baseline), whether policies act on the signals, and how long a baseline learns.
use super::yaml::{Node, Report};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Behaviour {
    pub mode: BehaviourMode,
    /// Days from a subject's first request before its signals count.
    pub learn_days: u64,
    /// Requests a subject makes before its signals count (both must pass).
    pub learn_requests: u64,
}

impl Default for Behaviour {
    /// No `behaviour:` section: nothing is learned.
    fn default() -> Self {
        Self {
            mode: BehaviourMode::Off,
            learn_days: LEARN_DAYS,
            learn_requests: LEARN_REQUESTS,
        }
    }
}

const LEARN_DAYS: u64 = 7;
const LEARN_REQUESTS: u64 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BehaviourMode {
    /// Signals are recorded and policies read them (`context.behaviour`).
    Enforce,
    /// Signals are recorded (audit, metrics, `moat behaviour show`); policies do not see them.
    Shadow,
    Off,
}

pub(super) fn read_behaviour(n: &Node<'_>, r: &mut Report) -> Option<Behaviour> {
    let m = n.mapping(&["mode", "learn_days", "learn_requests"], r)?;
    let mode = match m.get("mode") {
        None => Some(BehaviourMode::Enforce),
        Some(v) => match v.string(r)?.as_str() {
            "enforce" => Some(BehaviourMode::Enforce),
            "shadow" => Some(BehaviourMode::Shadow),
            "off" => Some(BehaviourMode::Off),
            other => {
                r.add(
                    v,
                    format!("expected `enforce`, `shadow` or `off`, found {other:?}"),
                );
                None
            }
        },
    };
    let bounded = |key: &str, default: u64, max: i64, r: &mut Report| match m.get(key) {
        None => Some(default),
        Some(v) => match v.integer(r)? {
            i @ 0.. if i <= max => Some(i as u64),
            i => {
                r.add(v, format!("expected 0 to {max}, found {i}"));
                None
            }
        },
    };
    let learn_days = bounded("learn_days", LEARN_DAYS, 365, r);
    let learn_requests = bounded("learn_requests", LEARN_REQUESTS, 1_000_000, r);
    Some(Behaviour {
        mode: mode?,
        learn_days: learn_days?,
        learn_requests: learn_requests?,
    })
}
