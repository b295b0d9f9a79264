//! Idle connections: a connection with no request in flight for the idle limit, since its last
//! request ended or since it opened, is closed (a silent client, a keep-alive connection nobody
//! uses, an HTTP/2 connection kept up by pings only). Bytes that move without a request (pings,
//! headers that never finish) do not keep a connection.
use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

/// What one connection is doing.
pub struct Activity {
    start: Instant,
    /// Milliseconds since `start` when the last request ended.
    last: AtomicU64,
    in_flight: AtomicUsize,
    /// Requests begun so far.
    begun: AtomicU64,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            last: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            begun: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        self.last
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// How long the connection has been idle; zero while a request is in flight.
    pub fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }

    /// Whether a request (its headers read) has begun on the connection.
    pub fn any_request(&self) -> bool {
        self.begun.load(Ordering::Relaxed) > 0
    }

    /// Marks a request in flight until the guard is dropped (with its response body).
    pub fn request(self: &Arc<Self>) -> InFlight {
        self.begun.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

pub struct InFlight(Arc<Activity>);

impl InFlight {
    /// One more in flight for the same request (a part of it that outlives another).
    pub fn also(&self) -> InFlight {
        self.0.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.0.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_counts_from_the_last_request_and_not_while_one_is_in_flight() {
        let a = Activity::new();
        assert!(!a.any_request());
        std::thread::sleep(Duration::from_millis(30));
        assert!(
            a.idle_for() >= Duration::from_millis(30),
            "idle since it opened"
        );
        let r = a.request();
        assert!(a.any_request());
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(a.idle_for(), Duration::ZERO, "a request in flight");
        drop(r);
        assert!(
            a.idle_for() < Duration::from_millis(20),
            "idle from its end"
        );
    }
}
