//! Cached and fresh decisions, on many requests made to differ from one another in one input
//! at a time: every decision must be the same both ways.
use std::path::Path;

use serde_json::{Value, json};

use super::{MON_TEN, Req, load_file, repo};
use crate::{
    policy::{Engine, Target},
    vocab::{Assessment, ContentFacts, ContentKind, Signal},
    vocab::{HttpAction, Process, method::METHODS},
};

/// A small deterministic generator (xorshift), so a failure can be reproduced.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
    /// The first item two times in three, else any.
    fn mostly<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        if self.chance(3) {
            self.pick(items)
        } else {
            &items[0]
        }
    }
    fn chance(&mut self, in_: u64) -> bool {
        self.next().is_multiple_of(in_)
    }
}

/// 2026-12-23T00:00:00Z, a Wednesday: when full.cedar's freeze starts.
const FREEZE: u64 = 1_797_984_000;

/// Working hours, a weekend, the hours' edges, the freeze's edges (to the second), and times
/// in and out of it at the same hour of the same weekday.
const TIMES: [u64; 14] = [
    MON_TEN,
    MON_TEN + 1,
    MON_TEN - 3601,
    MON_TEN + 7 * 3600 - 1,
    MON_TEN + 7 * 3600,
    MON_TEN + 9 * 3600,
    MON_TEN - 3 * 3600 - 1,
    MON_TEN - 2 * 86_400,
    FREEZE - 1,
    FREEZE,
    FREEZE - 7 * 86_400,
    FREEZE + 3 * 86_400,
    FREEZE + 10 * 86_400 - 1,
    FREEZE + 10 * 86_400,
];

const ADDRESSES: [&str; 5] = [
    "10.1.2.3",
    "127.0.0.1",
    "192.0.2.7",
    "::1",
    "::ffff:10.0.0.1",
];

/// Argument values: strings the policies test for, and values that are not strings.
fn values() -> Vec<Value> {
    let mut values: Vec<Value> =
        "hi -----BEGIN_PRIVATE_KEY----- /srv/repos/a /srv/data/x /srv/data/../../etc/shadow \
         acme/web main release/1 staging production auth-api hi_@everyone"
            .split_whitespace()
            .map(|w| json!(w.replace('_', " ")))
            .collect();
    values.extend([
        json!("SELECT 1"),
        json!("select 1; drop"),
        json!(["/srv/data/x"]),
        json!(42),
        json!(null),
    ]);
    values
}

fn random_request(rng: &mut Rng) -> Req {
    let words = |s: &'static str| s.split_whitespace().collect::<Vec<_>>();
    let all_groups = words(
        "staff engineering oncall sre admins analysts finance contractors suspended readers writers",
    );
    // Each tool with the arguments its policies (in full.cedar) test.
    let tools = words(
        "echo:text search_docs get_ticket comment_ticket:body read_file:path \
         list_directory:path write_file:path git_log create_branch:repository:branch \
         open_pull_request:repository run_pipeline query_logs:environment \
         restart_service:service deploy query_database:sql get_metrics report_q3 \
         delete_repository send_email list_dir delete_file:path",
    );
    let with_args: Vec<&str> = tools.iter().copied().filter(|t| t.contains(':')).collect();
    let keys = words("text path body repository branch environment service sql token password");
    let values = values();
    let mut r = Req::echo();
    // Half the time the groups of the many policies (the bench's), and maybe more.
    let mut groups: Vec<&str> = match rng.chance(2) {
        true => vec!["engineering", "staff", "oncall"],
        false => vec![],
    };
    for _ in 0..rng.next() % 3 {
        groups.push(*rng.pick(&all_groups));
    }
    r.principal.sub = rng.pick(&["alice", "bob", ""]).to_string();
    r.principal.client_id = rng.pick(&[None, Some("cli"), Some("")]).map(str::to_string);
    r.principal.scopes = rng
        .mostly(&[
            vec!["mcp:tools"],
            vec![],
            vec!["read"],
            vec!["read", "mcp:tools"],
        ])
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut claims = serde_json::Map::new();
    match rng.next() % 3 {
        0 => {}
        1 => {
            claims.insert("groups".into(), json!(groups));
        }
        _ => {
            claims.insert("groups".into(), json!(groups.join(" ")));
        }
    }
    if let Some(d) = rng.pick(&[
        None,
        Some(json!("platform")),
        Some(json!("eng")),
        Some(json!(7)),
    ]) {
        claims.insert("department".into(), d.clone());
    }
    r.principal.claims = claims;
    let (action, kind) = match rng.next() % 4 {
        0 => {
            let s = rng.pick(METHODS);
            (s.action, s.target())
        }
        1 => (
            *rng.pick(&[
                HttpAction::StreamOpen.action(),
                HttpAction::SessionEnd.action(),
            ]),
            None,
        ),
        _ => ("tools/call", Some(Target::Tool)),
    };
    r.action = action;
    r.target = kind.map(|k| {
        let name = match k {
            // Mostly one whose policies test its arguments.
            Target::Tool => match rng.chance(3) {
                true => rng.pick(&tools),
                false => rng.pick(&with_args),
            }
            .split(':')
            .next()
            .unwrap()
            .to_string(),
            Target::Resource => rng
                .pick(&["wiki://a", "file:///srv/repos/x", "file:///etc/passwd"])
                .to_string(),
            Target::Prompt => rng.pick(&["summarize_day", "standup", "other"]).to_string(),
        };
        (k, name)
    });
    r.args = match rng.next() % 5 {
        0 => None,
        1 => Some(json!("not an object")),
        _ => {
            // Mostly what the tool's policies test, sometimes more.
            let mut m = serde_json::Map::new();
            let tool = tools.iter().find(|t| {
                Some(t.split(':').next()) == r.target.as_ref().map(|(_, n)| Some(n.as_str()))
            });
            for key in tool.into_iter().flat_map(|t| t.split(':').skip(1)) {
                if !rng.chance(4) {
                    m.insert(key.to_string(), rng.pick(&values).clone());
                }
            }
            if rng.chance(3) {
                m.insert(rng.pick(&keys).to_string(), rng.pick(&values).clone());
            }
            Some(Value::Object(m))
        }
    };
    // Mostly what the forbidding policies let through, so that the others decide.
    r.ip = rng.mostly(&ADDRESSES).parse().unwrap();
    r.tls = rng
        .mostly(&[Some("TLSv1_3"), None, Some("none")])
        .map(str::to_string);
    r.session = rng.pick(&[None, Some("s1")]).map(str::to_string);
    r.process = rng.chance(4).then(|| Process {
        pid: 9,
        uid: *rng.pick(&[0, 1000]),
        gid: 0,
        comm: "python3".into(),
        cgroup_id: 1,
    });
    r.rate = rng.next() % 25;
    r.at = *rng.pick(&TIMES);
    r.listing = rng.chance(5);
    // Mostly pinned and clean, as on a server with integrity on; sometimes no integrity.
    r.integrity = match rng.next() % 6 {
        0 => None,
        1 => Some(("changed", vec![])),
        2 => Some(("pinned", vec!["model_directive"])),
        3 => Some(("unpinned", vec!["shared_name", "unusual_length"])),
        _ => Some(("pinned", vec![])),
    };
    // Mostly calm, as most requests are; sometimes no behaviour, or learning, or signals.
    let judged = |s: &[Signal], learning| {
        Some(Assessment::new(
            s.iter().copied().collect(),
            learning,
            false,
        ))
    };
    r.behaviour = match rng.next() % 8 {
        0 => None,
        1 => judged(&[], true),
        2 => judged(&[Signal::NewAddress], false),
        3 => judged(&[Signal::NewTool, Signal::OffHours], false),
        4 => judged(
            &[Signal::Enumeration, Signal::NewAddress, Signal::RateSpike],
            false,
        ),
        _ => judged(&[], false),
    };
    // Mostly nothing inspected or found; sometimes a secret, personal data, or both.
    let facts = |rules: &[&str], kinds: &[ContentKind]| {
        Some(ContentFacts {
            rules: rules.iter().map(|r| (*r).into()).collect(),
            kinds: kinds.to_vec(),
        })
    };
    r.content = match rng.next() % 6 {
        0 => facts(&["aws_access_key_id"], &[ContentKind::Secret]),
        1 => facts(&["email"], &[ContentKind::Personal]),
        2 => facts(
            &["email", "jwt"],
            &[ContentKind::Secret, ContentKind::Personal],
        ),
        3 => facts(&[], &[]),
        _ => None,
    };
    r
}

/// `a` with one thing changed to what it is in `b` (or, for the arguments, one argument
/// changed): requests that differ from another in one input only, so that an input the
/// policies read but the key lacks shows as a wrong decision.
fn vary(a: &Req, b: &Req, rng: &mut Rng) -> Req {
    let mut r = a.clone();
    match rng.next() % 20 {
        0 => r.principal.sub = b.principal.sub.clone(),
        1 => r.principal.client_id = b.principal.client_id.clone(),
        2 => r.principal.scopes = b.principal.scopes.clone(),
        n @ (3 | 4) => {
            let claim = ["groups", "department"][n as usize - 3];
            match b.principal.claims.get(claim) {
                Some(v) => r.principal.claims.insert(claim.into(), v.clone()),
                None => r.principal.claims.remove(claim),
            };
        }
        5 => (r.action, r.target) = (b.action, b.target.clone()),
        6 => r.args = b.args.clone(),
        7 | 8 => match &mut r.args {
            // One argument: another value, or gone.
            Some(Value::Object(m)) if !m.is_empty() => {
                let key = m.keys().nth(rng.next() as usize % m.len()).unwrap().clone();
                match rng.chance(5) {
                    true => m.remove(&key),
                    false => m.insert(key, rng.pick(&values()).clone()),
                };
            }
            _ => r.args = b.args.clone(),
        },
        9 => r.ip = b.ip,
        10 => r.tls = b.tls.clone(),
        11 => r.session = b.session.clone(),
        12 => r.process = b.process.clone(),
        13 => r.rate = b.rate,
        14 => r.at = b.at,
        15 => r.listing = !r.listing,
        16 => r.integrity = b.integrity.clone(),
        17 => r.behaviour = b.behaviour,
        18 => r.content = b.content.clone(),
        _ => r.server = "other".into(),
    }
    r
}

fn differential(e: &Engine, file: &Path, seed: u64, bases: usize) {
    let mut rng = Rng(seed);
    // A few requests (half of them the bench's with a few things changed, so that many
    // policies decide them), each followed by requests that differ from it in one input.
    let mut requests = Vec::new();
    for i in 0..bases {
        let mut base = random_request(&mut rng);
        // Mostly calls many policies decide: the bench's, a deploy by on-call and by an SRE,
        // the metrics (by department), a contractor's session.
        let call = |tool: &str, groups: Value| {
            let mut r = Req::echo().claim("groups", groups);
            r.target = Some((Target::Tool, tool.into()));
            r
        };
        let template = match i % 6 {
            0 => Some(Req::echo()),
            1 => Some(call("deploy", json!(["oncall"]))),
            2 => Some(call("deploy", json!(["sre"]))),
            3 => Some(call("get_metrics", json!([]))),
            4 => Some(Req {
                action: "initialize",
                target: None,
                ..call("", json!(["contractors"]))
            }),
            _ => None,
        };
        if let Some(t) = template {
            base = t;
            base.at = *rng.pick(&TIMES);
            for _ in 0..rng.next() % 4 {
                let other = random_request(&mut rng);
                base = vary(&base, &other, &mut rng);
            }
        }
        requests.push(base.clone());
        for _ in 0..40 {
            let other = random_request(&mut rng);
            requests.push(vary(&base, &other, &mut rng));
        }
        // Every time and every address, each once.
        requests.extend(TIMES.iter().map(|&at| Req { at, ..base.clone() }));
        requests.extend(ADDRESSES.iter().map(|ip| Req {
            ip: ip.parse().unwrap(),
            ..base.clone()
        }));
    }
    let (mut allowed, mut denied, mut hits) = (0, 0, 0);
    let mut fresh = Vec::with_capacity(requests.len());
    for r in &requests {
        let before = e.cache.len();
        let cached = e.decide(&r.input());
        let d = e.decide_uncached(&r.input());
        assert_eq!(cached, d, "{}: {r:?}", file.display());
        allowed += usize::from(d.allowed());
        denied += usize::from(!d.allowed());
        hits += usize::from(e.cache.len() == before);
        fresh.push(d);
    }
    // Again, all from the cache.
    for (r, d) in requests.iter().zip(&fresh) {
        let before = e.cache.len();
        assert_eq!(&e.decide(&r.input()), d, "{}: again: {r:?}", file.display());
        assert_eq!(e.cache.len(), before, "{}: found: {r:?}", file.display());
    }
    let name = file.display();
    assert!(
        allowed > 0 && denied > 0,
        "{name}: {allowed} allowed, {denied} denied"
    );
    // Requests that differ from one decided before in what the policies do not read.
    assert!(
        hits > requests.len() / 4,
        "{name}: {hits} found the first time"
    );
}

#[test]
fn cached_and_fresh_decisions_agree_on_random_requests() {
    let full = repo("xtask/src/bench/proxy/full.cedar");
    differential(&load_file(full.clone()), &full, 0x9e37_79b9_7f4a_7c15, 40);
    for entry in std::fs::read_dir(repo("config/policies")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "cedar") {
            differential(&load_file(path.clone()), &path, 0x2545_f491_4f6c_dd1d, 18);
        }
    }
}
