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
    /// Of those, the ones answered with an event stream (which has no end to wait for).
    streams: AtomicUsize,
    /// Requests begun so far.
    begun: AtomicU64,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            last: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            streams: AtomicUsize::new(0),
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

    /// Whether every request in flight (if any) is an event stream: a stopping agent cuts
    /// those rather than wait for an end they may not have.
    pub fn only_streams(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) <= self.streams.load(Ordering::Relaxed)
    }

    /// Marks a request in flight until the guard is dropped (with its response body).
    pub fn request(self: &Arc<Self>) -> InFlight {
        self.begun.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            activity: self.clone(),
            stream: false,
        }
    }
}

pub struct InFlight {
    activity: Arc<Activity>,
    stream: bool,
}

impl InFlight {
    /// One more in flight for the same request (a part of it that outlives another).
    pub fn also(&self) -> InFlight {
        self.activity.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            activity: self.activity.clone(),
            stream: false,
        }
    }

    /// The request is answered with an event stream.
    pub fn into_stream(mut self) -> InFlight {
        if !self.stream {
            self.activity.streams.fetch_add(1, Ordering::Relaxed);
            self.stream = true;
        }
        self
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.activity.touch();
        if self.stream {
            self.activity.streams.fetch_sub(1, Ordering::Relaxed);
        }
        self.activity.in_flight.fetch_sub(1, Ordering::Relaxed);
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

    #[test]
    fn only_event_streams_in_flight_is_told_apart_from_a_request_in_flight() {
        let a = Activity::new();
        assert!(a.only_streams(), "nothing in flight");
        let r = a.request();
        assert!(!a.only_streams());
        let s = a.request().into_stream();
        assert!(!a.only_streams(), "a plain request is still in flight");
        drop(r);
        assert!(a.only_streams());
        let part = s.also();
        assert!(!a.only_streams(), "a part of it that is no stream");
        drop(part);
        drop(s);
        assert!(a.only_streams());
        assert_eq!(a.in_flight.load(Ordering::Relaxed), 0);
        assert_eq!(a.streams.load(Ordering::Relaxed), 0);
    }
}
