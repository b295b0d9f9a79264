//! The event the upstream sends on every stream, and the clock both ends read: an MCP
//! `notifications/message` carrying the moment it was sent (CLOCK_MONOTONIC, the same clock for
//! every process of the machine), from which the client tells how long it took to arrive.
use bytes::Bytes;
use nix::time::{ClockId, clock_gettime};

/// Nanoseconds on the machine's monotonic clock.
pub fn now_ns() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
    })
}

/// What precedes the send time in an event.
const MARK: &[u8] = br#""sent_ns":"#;

/// One SSE event (a JSON-RPC notification in `data:`), sent now.
pub fn event(seq: u64) -> Bytes {
    Bytes::from(format!(
        "event: message\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{{\"level\":\"info\",\"logger\":\"bench\",\"data\":{{\"seq\":{seq},\"sent_ns\":{}}}}}}}\n\n",
        now_ns()
    ))
}

/// The send times of the events in `text` (a stream's bytes, events whole).
pub fn sent_times(text: &[u8]) -> impl Iterator<Item = u64> + '_ {
    let mut rest = text;
    std::iter::from_fn(move || {
        let at = rest.windows(MARK.len()).position(|w| w == MARK)?;
        rest = &rest[at + MARK.len()..];
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let n = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok();
        rest = &rest[digits..];
        n
    })
}

/// Where the first whole event of `buf` ends (after its blank line), if one is whole.
pub fn event_end(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_send_time_is_read_back() {
        let before = now_ns();
        let e = event(7);
        let after = now_ns();
        assert_eq!(event_end(&e), Some(e.len()));
        let t: Vec<u64> = sent_times(&e).collect();
        assert_eq!(t.len(), 1);
        assert!(before <= t[0] && t[0] <= after);
    }

    #[test]
    fn events_are_split_at_blank_lines() {
        let two = [event(1), event(2)].concat();
        let first = event_end(&two).unwrap();
        assert_eq!(sent_times(&two[..first]).count(), 1);
        assert_eq!(sent_times(&two).count(), 2);
        assert_eq!(event_end(&two[..first - 1]), None);
    }
}
