//! The capacity probe of the stream client: N connections more, all at once, from loopback
//! addresses of their own (127.2.x.y, within the limit per source), each sending `initialize`
//! and waiting up to WAIT for what comes back. With Moat at `max_connections` each must be
//! refused at once (reset or closed before anything is read); one that gets no answer within
//! WAIT hangs.
use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tokio::task::JoinSet;

use super::client::{PER_SOURCE, Target, brief};
use crate::bench::stats::{percentile, round2};

const WAIT: Duration = Duration::from_secs(5);

/// What became of one probing connection.
enum Outcome {
    /// Closed or reset by the server (at connect, in the TLS handshake, or before an answer).
    Refused(String),
    /// Answered with this status.
    Answered(u16),
    Hung,
}

pub async fn run(target: &std::sync::Arc<Target>, n: usize) -> Value {
    let mut each = JoinSet::new();
    for i in 0..n {
        let s = i / PER_SOURCE + 1;
        let src = Ipv4Addr::new(127, 2, (s / 256) as u8, (s % 256) as u8);
        let target = target.clone();
        each.spawn(async move {
            let t = Instant::now();
            let outcome = match tokio::time::timeout(WAIT, one(&target, src)).await {
                Ok(o) => o,
                Err(_) => Outcome::Hung,
            };
            (outcome, t.elapsed())
        });
    }
    let (mut refused, mut answered, mut hung) = (0u64, BTreeMap::<u16, u64>::new(), 0u64);
    let mut why = BTreeMap::<String, u64>::new();
    let mut refused_ms = Vec::new();
    while let Some(r) = each.join_next().await {
        let Ok((outcome, took)) = r else { continue };
        match outcome {
            Outcome::Refused(w) => {
                refused += 1;
                refused_ms.push(took.as_secs_f64() * 1e3);
                *why.entry(w).or_default() += 1;
            }
            Outcome::Answered(s) => *answered.entry(s).or_default() += 1,
            Outcome::Hung => hung += 1,
        }
    }
    json!({
        "probed": n,
        "refused": refused,
        "refused_how": why,
        "refused_p50_ms": round2(percentile(&refused_ms, 0.5)),
        "refused_max_ms": round2(percentile(&refused_ms, 1.0)),
        "answered": answered,
        "hung": hung,
    })
}

async fn one(target: &Target, src: Ipv4Addr) -> Outcome {
    let mut c = match target.connect(src).await {
        Ok(c) => c,
        Err(e) => return Outcome::Refused(format!("connect: {}", brief(&e))),
    };
    if let Err(e) = c.send(&target.initialize()).await {
        return Outcome::Refused(format!("send: {}", brief(&e)));
    }
    match c.head().await {
        Ok(h) => Outcome::Answered(h.status),
        Err(e) => Outcome::Refused(format!("read: {}", brief(&e))),
    }
}
