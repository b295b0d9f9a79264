//! Connection limits: at most `agent.max_connections` connections open at once, and at most
//! `agent.max_connections_per_source` from one address (IPv4-mapped IPv6 addresses are
//! counted as the IPv4 address they carry). A connection holds a [`Permit`] from when it is
//! accepted until it ends, however it ends (its task finishes, fails, panics or is dropped
//! with its worker). Connections beyond a limit are closed at once (reset), counted in
//! `moat_connections_refused_total`, and recorded at most once a minute per source (and once a
//! minute in all for the total limit): a flood cannot flood the audit log.
use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use serde_json::json;

use crate::{admin::ConnectionMetrics, audit::AuditLog};

/// How often a refused connection is recorded, at most: per source, and for the total limit.
pub const RECORD_EVERY: Duration = Duration::from_secs(60);

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `agent.max_connections` are open.
    Total,
    /// `agent.max_connections_per_source` are open from its address.
    PerSource,
}

impl Refused {
    pub fn label(self) -> &'static str {
        match self {
            Self::Total => "total",
            Self::PerSource => "per_source",
        }
    }
}

/// The connections open, in all and per source.
pub struct Limiter {
    max: usize,
    per_source: usize,
    state: Mutex<State>,
    metrics: ConnectionMetrics,
    audit: Option<AuditLog>,
}

#[derive(Default)]
struct State {
    open: usize,
    /// Sources with connections open (an entry goes with its last connection).
    sources: HashMap<IpAddr, Source>,
    /// When a refusal for the total limit was last recorded, and those not recorded since.
    total_recorded: Option<Instant>,
    total_unrecorded: u64,
}

struct Source {
    open: usize,
    /// When a refusal of this source was last recorded, and those not recorded since.
    recorded: Option<Instant>,
    unrecorded: u64,
}

/// One open connection; dropping it closes its place.
pub struct Permit {
    limiter: Arc<Limiter>,
    source: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limiter.release(self.source);
    }
}

impl Limiter {
    pub fn new(
        max: usize,
        per_source: usize,
        metrics: ConnectionMetrics,
        audit: Option<AuditLog>,
    ) -> Arc<Self> {
        Arc::new(Self {
            max,
            per_source,
            state: Mutex::default(),
            metrics,
            audit,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Counts stay consistent whatever a panicking holder left.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A connection closed at once because the process was out of descriptors: counted as
    /// beyond the total.
    pub fn refused_at_capacity(&self) {
        self.metrics.refused(false);
    }

    /// A place for a connection from `peer` to `dst`, or why there is none (counted, and
    /// recorded unless one was recorded lately).
    pub fn admit(
        self: &Arc<Self>,
        peer: SocketAddr,
        dst: impl FnOnce() -> Option<SocketAddr>,
    ) -> Result<Permit, Refused> {
        let peer = crate::listen::canonical(peer);
        let (why, record) = match self.admit_at(peer.ip(), Instant::now()) {
            Ok(permit) => return Ok(permit),
            Err(refusal) => refusal,
        };
        let Some(unrecorded) = record else {
            return Err(why);
        };
        let limit = match why {
            Refused::Total => format!("{} connections open (agent.max_connections)", self.max),
            Refused::PerSource => format!(
                "{} connections open from {} (agent.max_connections_per_source)",
                self.per_source,
                peer.ip()
            ),
        };
        tracing::warn!(%peer, "connection refused: {limit}; for a minute, more are only counted (moat_connections_refused_total)");
        if let Some(audit) = &self.audit {
            let dst = dst().map(|d| crate::listen::canonical(d).to_string());
            let record = json!({
                "event": "refused",
                "conn": {"peer": peer.to_string(), "dst": dst},
                "limit": why.label(),
                "error": format!("too many connections: {limit}"),
                "unrecorded": unrecorded,
            });
            audit.record_serialized("connection", record.to_string().into_bytes());
        }
        Err(why)
    }

    /// A place for a connection from `source` at `now`, or why there is none, and whether to
    /// record it: Some(the refusals for the same reason, of the same source for the limit per
    /// source, not recorded since the last record).
    fn admit_at(
        self: &Arc<Self>,
        source: IpAddr,
        now: Instant,
    ) -> Result<Permit, (Refused, Option<u64>)> {
        let mut guard = self.state();
        let s = &mut *guard;
        let why = if s.open >= self.max {
            Refused::Total
        } else {
            let e = s.sources.entry(source).or_insert(Source {
                open: 0,
                recorded: None,
                unrecorded: 0,
            });
            if e.open < self.per_source {
                e.open += 1;
                s.open += 1;
                self.metrics.opened();
                return Ok(Permit {
                    limiter: self.clone(),
                    source,
                });
            }
            Refused::PerSource
        };
        self.metrics.refused(why == Refused::PerSource);
        let (recorded, unrecorded) = match why {
            Refused::Total => (&mut s.total_recorded, &mut s.total_unrecorded),
            Refused::PerSource => match s.sources.get_mut(&source) {
                Some(e) => (&mut e.recorded, &mut e.unrecorded),
                None => return Err((why, None)),
            },
        };
        if recorded.is_some_and(|t| now.saturating_duration_since(t) < RECORD_EVERY) {
            *unrecorded += 1;
            return Err((why, None));
        }
        *recorded = Some(now);
        Err((why, Some(std::mem::take(unrecorded))))
    }

    fn release(&self, source: IpAddr) {
        let mut s = self.state();
        s.open = s.open.saturating_sub(1);
        if let Some(e) = s.sources.get_mut(&source) {
            e.open = e.open.saturating_sub(1);
            if e.open == 0 {
                s.sources.remove(&source);
            }
        }
        drop(s);
        self.metrics.closed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(max: usize, per_source: usize) -> Arc<Limiter> {
        Limiter::new(max, per_source, ConnectionMetrics::default(), None)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// (open in all, open from `source`, sources tracked).
    fn counts(l: &Limiter, source: &str) -> (usize, usize, usize) {
        let s = l.state();
        let from = s.sources.get(&ip(source)).map_or(0, |e| e.open);
        (s.open, from, s.sources.len())
    }

    #[test]
    fn one_source_gets_its_share_and_others_still_get_in() {
        let l = limiter(10, 3);
        let now = Instant::now();
        let a: Vec<Permit> = (0..3)
            .map(|_| l.admit_at(ip("10.0.0.1"), now).ok().unwrap())
            .collect();
        // The same client through a dual-stack socket: one source.
        let mapped: SocketAddr = "[::ffff:10.0.0.1]:5000".parse().unwrap();
        assert_eq!(l.admit(mapped, || None).err(), Some(Refused::PerSource));
        assert_eq!(
            l.admit_at(ip("10.0.0.1"), now).err().map(|e| e.0),
            Some(Refused::PerSource)
        );
        let b = l.admit_at(ip("10.0.0.2"), now).ok().unwrap();
        let c = l.admit_at(ip("fd00::2"), now).ok().unwrap();
        assert_eq!(counts(&l, "10.0.0.1"), (5, 3, 3));
        // However a connection ends, its place is given back; a source's entry goes with its
        // last connection.
        drop(a);
        assert_eq!(counts(&l, "10.0.0.1"), (2, 0, 2));
        assert!(l.admit_at(ip("10.0.0.1"), now).is_ok());
        drop((b, c));
        assert_eq!(counts(&l, "10.0.0.1"), (0, 0, 0));
    }

    #[test]
    fn beyond_the_total_nobody_gets_in_until_one_ends() {
        let l = limiter(4, 3);
        let now = Instant::now();
        let mut held: Vec<Permit> = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]
            .iter()
            .map(|s| l.admit_at(ip(s), now).ok().unwrap())
            .collect();
        assert_eq!(
            l.admit_at(ip("10.0.0.5"), now).err().map(|e| e.0),
            Some(Refused::Total)
        );
        assert_eq!(
            counts(&l, "10.0.0.5"),
            (4, 0, 4),
            "a refused source is not kept"
        );
        held.pop();
        assert!(l.admit_at(ip("10.0.0.5"), now).is_ok());
    }

    #[test]
    fn refusals_are_recorded_at_most_once_a_minute_per_source() {
        let l = limiter(100, 1);
        let t0 = Instant::now();
        let _a = l.admit_at(ip("10.0.0.1"), t0).ok().unwrap();
        let _b = l.admit_at(ip("10.0.0.2"), t0).ok().unwrap();
        let refuse = |s: &str, t: Instant| l.admit_at(ip(s), t).err().unwrap();
        assert_eq!(refuse("10.0.0.1", t0), (Refused::PerSource, Some(0)));
        for _ in 0..1000 {
            assert_eq!(refuse("10.0.0.1", t0 + RECORD_EVERY / 2).1, None);
        }
        // Another source has its own record.
        assert_eq!(refuse("10.0.0.2", t0).1, Some(0));
        // A minute on: recorded again, with how many went unrecorded.
        assert_eq!(refuse("10.0.0.1", t0 + RECORD_EVERY).1, Some(1000));
        assert_eq!(refuse("10.0.0.1", t0 + RECORD_EVERY).1, None);
    }
}
