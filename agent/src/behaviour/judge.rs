//! One subject's request against its baseline: the signals it raises ([`judge`]), and what the
//! baseline learns from it once decided ([`learn`]). Pure functions of the baseline, the
//! short-lived counts and the request's time, so that tests can play days in a second.
use std::{
    collections::{BTreeMap, HashMap},
    io::Write as _,
    net::IpAddr,
};

use serde_json::Value;

use crate::{
    store::baselines::{Baseline, TargetUse},
    vocab::{Process, Signal, Signals, Target},
};

/// One request (one JSON-RPC message, or the HTTP request itself) as the monitor sees it.
#[derive(Clone, Copy, Debug)]
pub struct Event<'a> {
    /// Seconds since the epoch.
    pub at: u64,
    /// Its action (`tools/call`, `tools/list`, `stream/open`, ...).
    pub action: &'a str,
    pub target: Option<(Target, &'a str)>,
    pub arguments: Option<&'a Value>,
    pub address: IpAddr,
    pub process: Option<&'a Process>,
}

/// When a baseline's signals start to count.
#[derive(Clone, Copy, Debug)]
pub struct Learning {
    pub days: u64,
    pub requests: u64,
}

impl Learning {
    pub fn is_learning(self, b: &Baseline, at: u64) -> bool {
        b.requests < self.requests
            || b.requests == 0
            || at < b.since.saturating_add(self.days.saturating_mul(86_400))
    }
}

/// The most entries a baseline keeps of each kind: beyond them nothing new is learned (and
/// what is new keeps raising its signal).
pub const MAX_TARGETS: usize = 1_000;
pub const MAX_ADDRESSES: usize = 256;
pub const MAX_PROCESSES: usize = 64;
pub const MAX_KEYS: usize = 64;
const MAX_METHODS: usize = 64;
/// The most different targets one enumeration window remembers.
const MAX_SPREAD: usize = 256;

/// A rate spike: over `RATE_FACTOR` times the peak, and over the floor.
const RATE_FACTOR: u64 = 3;
const TARGET_RATE_FLOOR: u64 = 10;
const ALL_RATE_FLOOR: u64 = 30;
const DENIAL_FLOOR: u64 = 5;
const DENIAL_FACTOR: u64 = 3;
/// How long after a list calls count towards enumeration.
const SPREAD_WINDOW: u64 = 300;
const SPREAD_FLOOR: u64 = 8;
const SPREAD_FACTOR: u64 = 2;
/// An hour or weekday is unusual under 1 in `RARE` of the requests.
const RARE: u64 = 100;
/// Arguments are unusual over `SIZE_FACTOR` times the largest and `SIZE_SLACK` bytes more.
const SIZE_FACTOR: u64 = 4;
const SIZE_SLACK: u64 = 1_024;
/// Calls of a tool before its arguments are compared.
const ARGS_AFTER: u64 = 3;

/// Counts within one minute.
#[derive(Clone, Copy, Debug, Default)]
struct Minute {
    /// Minutes since the epoch.
    at: u64,
    n: u64,
    /// It raised a signal: its count is not a peak to learn.
    flagged: bool,
}

impl Minute {
    /// Moves to `minute`; the count of the minute that ended, if it may be learned.
    fn roll(&mut self, minute: u64) -> Option<u64> {
        if self.at == minute {
            return None;
        }
        let done = (!self.flagged && self.n > 0).then_some(self.n);
        *self = Minute {
            at: minute,
            ..Minute::default()
        };
        done
    }
}

/// What follows a list: the targets called within the window.
#[derive(Debug, Default)]
struct Spread {
    listed_at: Option<u64>,
    seen: Vec<u64>,
    flagged: bool,
}

/// A subject's short-lived counts (memory only): this minute's requests, per target and in
/// all, this minute's denials, and what followed its latest list.
#[derive(Debug, Default)]
pub struct Live {
    all: Minute,
    targets: [HashMap<String, Minute>; 3],
    denials: Minute,
    spread: Spread,
}

fn kind(t: Target) -> usize {
    match t {
        Target::Tool => 0,
        Target::Resource => 1,
        Target::Prompt => 2,
    }
}

fn uses(b: &Baseline, t: Target) -> &BTreeMap<String, TargetUse> {
    match t {
        Target::Tool => &b.tools,
        Target::Resource => &b.resources,
        Target::Prompt => &b.prompts,
    }
}

fn uses_mut(b: &mut Baseline, t: Target) -> &mut BTreeMap<String, TargetUse> {
    match t {
        Target::Tool => &mut b.tools,
        Target::Resource => &mut b.resources,
        Target::Prompt => &mut b.prompts,
    }
}

fn is_list(action: &str) -> bool {
    matches!(
        action,
        "tools/list" | "resources/list" | "resources/templates/list" | "prompts/list"
    )
}

/// The signals `e` raises (none while the baseline learns), counting it in `live`; whether
/// the baseline is learning.
pub fn judge(
    b: &mut Baseline,
    live: &mut Live,
    e: &Event<'_>,
    learning: Learning,
) -> (Signals, bool) {
    let minute = e.at / 60;
    if let Some(n) = live.all.roll(minute) {
        b.peak_per_minute = b.peak_per_minute.max(n);
    }
    live.all.n += 1;
    if let Some(n) = live.denials.roll(minute) {
        b.peak_denials = b.peak_denials.max(n);
    }
    let target_minute = e.target.and_then(|(t, name)| {
        let known = uses_mut(b, t).get_mut(name)?;
        let counts = &mut live.targets[kind(t)];
        if !counts.contains_key(name) {
            if counts.len() >= MAX_TARGETS {
                return None;
            }
            counts.insert(name.to_string(), Minute::default());
        }
        let m = counts.get_mut(name).expect("inserted above");
        if let Some(n) = m.roll(minute) {
            known.peak_per_minute = known.peak_per_minute.max(n);
        }
        m.n += 1;
        Some((m, known.peak_per_minute))
    });
    let target_rate = target_minute.as_ref().map(|(m, peak)| (m.n, *peak));
    let spread = follow_list(b, &mut live.spread, e);
    let is_learning = learning.is_learning(b, e.at);
    if is_learning {
        return (Signals::default(), true);
    }
    let mut s = Signals::default();
    if !b.methods.contains_key(e.action) {
        s.insert(Signal::NewMethod);
    }
    if let Some((t, name)) = e.target
        && !uses(b, t).contains_key(name)
    {
        s.insert(Signal::NewTool);
    }
    if !b.addresses.contains_key(address_key(e.address).as_str()) {
        s.insert(Signal::NewAddress);
    }
    if let Some(p) = e.process
        && !b.processes.contains_key(process_key(p).as_str())
    {
        s.insert(Signal::NewProcess);
    }
    if off_hours(b, e.at) {
        s.insert(Signal::OffHours);
    }
    let over = |n: u64, peak: u64, floor: u64| n > floor.max(RATE_FACTOR.saturating_mul(peak));
    let target_spike = target_rate.is_some_and(|(n, peak)| over(n, peak, TARGET_RATE_FLOOR));
    let all_spike = over(live.all.n, b.peak_per_minute, ALL_RATE_FLOOR);
    if target_spike || all_spike {
        s.insert(Signal::RateSpike);
        live.all.flagged |= all_spike;
        if let Some((m, _)) = target_minute.filter(|_| target_spike) {
            m.flagged = true;
        }
    }
    if live.denials.n >= DENIAL_FLOOR.max(DENIAL_FACTOR.saturating_mul(b.peak_denials)) {
        s.insert(Signal::DenialBurst);
        live.denials.flagged = true;
    }
    if spread > SPREAD_FLOOR.max(SPREAD_FACTOR.saturating_mul(b.peak_spread)) {
        s.insert(Signal::Enumeration);
        live.spread.flagged = true;
    }
    if unusual_arguments(b, e) {
        s.insert(Signal::UnusualArguments);
    }
    (s, false)
}

/// Notes a list (a new window, learning the spread of the one that ended) or a call within the
/// window; how many different targets the window has seen.
fn follow_list(b: &mut Baseline, spread: &mut Spread, e: &Event<'_>) -> u64 {
    let open = spread
        .listed_at
        .is_some_and(|t| e.at.saturating_sub(t) < SPREAD_WINDOW);
    if is_list(e.action) {
        if !open {
            if !spread.flagged {
                b.peak_spread = b.peak_spread.max(spread.seen.len() as u64);
            }
            *spread = Spread {
                listed_at: Some(e.at),
                ..Spread::default()
            };
        }
        return spread.seen.len() as u64;
    }
    let Some((t, name)) = e.target.filter(|_| open) else {
        return 0;
    };
    let h = fnv(kind(t), name);
    if !spread.seen.contains(&h) && spread.seen.len() < MAX_SPREAD {
        spread.seen.push(h);
    }
    spread.seen.len() as u64
}

fn fnv(kind: usize, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in std::iter::once(kind as u8).chain(name.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// The hour (0-23, UTC) and weekday (Monday 0) at `at`.
fn hour_and_day(at: u64) -> (usize, usize) {
    let days = at / 86_400;
    (((at % 86_400) / 3_600) as usize, ((days + 3) % 7) as usize)
}

fn off_hours(b: &Baseline, at: u64) -> bool {
    let (h, d) = hour_and_day(at);
    let around = b.hours[(h + 23) % 24] + b.hours[h] + b.hours[(h + 1) % 24];
    let rare = |n: u64| n.saturating_mul(RARE) < b.requests;
    // A weekday is judged once the baseline has seen two of each.
    let weeks = b.last.saturating_sub(b.since) >= 14 * 86_400;
    rare(around) || (weeks && rare(b.weekdays[d]))
}

fn unusual_arguments(b: &Baseline, e: &Event<'_>) -> bool {
    let (Some((Target::Tool, name)), Some(all @ Value::Object(args))) = (e.target, e.arguments)
    else {
        return false;
    };
    let Some(u) = b.tools.get(name).filter(|u| u.calls >= ARGS_AFTER) else {
        return false;
    };
    let new_key = u.keys.len() < MAX_KEYS && args.keys().any(|k| !u.keys.contains(k));
    let size = approximate_size(all);
    new_key || size > (u.max_size.saturating_mul(SIZE_FACTOR)).max(u.max_size + SIZE_SLACK)
}

/// About the size of `v` as JSON, without writing it.
fn approximate_size(v: &Value) -> u64 {
    match v {
        Value::Null | Value::Bool(_) | Value::Number(_) => 8,
        Value::String(s) => s.len() as u64 + 2,
        Value::Array(a) => 2 + a.iter().map(|v| approximate_size(v) + 1).sum::<u64>(),
        Value::Object(o) => {
            2 + o
                .iter()
                .map(|(k, v)| k.len() as u64 + 4 + approximate_size(v))
                .sum::<u64>()
        }
    }
}

/// Counts a denial of the subject's request at `at`.
pub fn denied(b: &mut Baseline, live: &mut Live, at: u64) {
    b.denials += 1;
    if let Some(n) = live.denials.roll(at / 60) {
        b.peak_denials = b.peak_denials.max(n);
    }
    live.denials.n += 1;
}

/// Learns a permitted request.
pub fn learn(b: &mut Baseline, e: &Event<'_>) {
    if b.requests == 0 {
        b.since = e.at;
    }
    b.last = b.last.max(e.at);
    b.requests += 1;
    bump(&mut b.methods, e.action, MAX_METHODS);
    if let Some((t, name)) = e.target {
        let all = uses_mut(b, t);
        // The key is made only for a target new to the baseline (no allocation per call).
        if !all.contains_key(name) && all.len() < MAX_TARGETS {
            all.insert(name.to_string(), TargetUse::default());
        }
        if let Some(u) = all.get_mut(name) {
            u.calls += 1;
            if let Some(v @ Value::Object(args)) = e.arguments {
                for k in args.keys() {
                    if u.keys.len() < MAX_KEYS && !u.keys.contains(k) {
                        u.keys.push(k.clone());
                    }
                }
                u.max_size = u.max_size.max(approximate_size(v));
            }
        }
    }
    let (h, d) = hour_and_day(e.at);
    b.hours[h] += 1;
    b.weekdays[d] += 1;
    bump(
        &mut b.addresses,
        address_key(e.address).as_str(),
        MAX_ADDRESSES,
    );
    if let Some(p) = e.process {
        bump(&mut b.processes, process_key(p).as_str(), MAX_PROCESSES);
    }
}

fn bump(counts: &mut BTreeMap<String, u64>, key: &str, max: usize) {
    if let Some(n) = counts.get_mut(key) {
        *n += 1;
    } else if counts.len() < max {
        counts.insert(key.to_string(), 1);
    }
}

/// A short key written on the stack (no allocation per request).
pub struct Key {
    buf: [u8; 96],
    len: usize,
}

impl Key {
    fn write(args: std::fmt::Arguments<'_>) -> Key {
        let mut buf = [0u8; 96];
        let mut cursor = std::io::Cursor::new(&mut buf[..]);
        // A key longer than the buffer is cut at its end (a command name is 16 bytes at most).
        let _ = cursor.write_fmt(args);
        let len = cursor.position() as usize;
        Key { buf, len }
    }

    pub fn as_str(&self) -> &str {
        // Cut at a char boundary if the buffer cut a character.
        match std::str::from_utf8(&self.buf[..self.len]) {
            Ok(s) => s,
            Err(e) => std::str::from_utf8(&self.buf[..e.valid_up_to()]).unwrap_or_default(),
        }
    }
}

/// How a source address is learned: IPv4 as it is, IPv6 by its /64.
pub fn address_key(ip: IpAddr) -> Key {
    match ip.to_canonical() {
        IpAddr::V4(a) => Key::write(format_args!("{a}")),
        IpAddr::V6(a) => {
            let s = a.segments();
            Key::write(format_args!(
                "{:x}:{:x}:{:x}:{:x}::/64",
                s[0], s[1], s[2], s[3]
            ))
        }
    }
}

/// How a local process is learned: its uid and command.
pub fn process_key(p: &Process) -> Key {
    Key::write(format_args!("uid {} {}", p.uid, p.comm))
}
