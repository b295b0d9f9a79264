//! What a policy decision is asked about (the request, its caller and where it came from), and
//! the facts derived from it that Cedar's request and the decision cache's key both read.
use std::{
    net::IpAddr,
    time::{SystemTime, UNIX_EPOCH},
};

use serde_json::Value;

use crate::vocab::{Assessment, ContentFacts, Principal, Process, Target};

/// What is asked, by whom, from where.
pub struct Input<'a> {
    pub server: &'a str,
    /// The action: a method's (see [`crate::vocab::Method::action`]), or an HTTP action's.
    pub action: &'static str,
    /// The tool, resource URI or prompt name the method is about.
    pub target: Option<(Target, &'a str)>,
    pub arguments: Option<&'a Value>,
    pub principal: &'a Principal,
    pub source_ip: IpAddr,
    pub tls: Option<&'a str>,
    pub session: Option<&'a str>,
    pub process: Option<&'a Process>,
    /// Calls in the last minute by this principal to this tool (or method), this one included.
    pub rate: u64,
    pub now: SystemTime,
    /// Deciding whether to show an entry of a list result (no arguments), not a call.
    pub listing: bool,
    /// How the tool or prompt stands against its pin, on a server with `integrity` on.
    pub integrity: Option<Standing<'a>>,
    /// How the request compares with its subject's baseline, on a server with `behaviour` in
    /// `enforce` mode.
    pub behaviour: Option<&'a Assessment>,
    /// What content inspection found in a call's arguments, on a server with `inspect` on.
    pub content: Option<&'a ContentFacts>,
}

/// A target's pin state (`pinned`, `changed`, `unpinned`) and the markers found in it.
#[derive(Clone, Copy)]
pub struct Standing<'a> {
    pub state: &'a str,
    pub markers: &'a [&'a str],
}

/// The whole seconds of the request's time since the epoch (0 before it).
pub(super) fn seconds(input: &Input<'_>) -> u64 {
    input
        .now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The hour of the day (UTC) at `secs`.
pub(super) fn hour(secs: u64) -> u64 {
    (secs % 86_400) / 3_600
}

/// The day of the week (UTC) at `secs`, as `Mon`..`Sun`.
pub(super) fn weekday(secs: u64) -> &'static str {
    // 1970-01-01 was a Thursday.
    ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][((secs / 86_400) % 7) as usize]
}

/// A JSON value as a tag: strings as they are, anything else as its JSON text.
pub(super) fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
