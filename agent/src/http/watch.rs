//! Watches an event stream passing to a client for the server's `list_changed`
//! notifications (`notifications/tools/list_changed` and the others), and has the server's
//! pins check what it offers at once. The bytes are looked at, not parsed: a false alarm costs
//! one check, and a notification spelled so that it is missed is caught by the next scheduled
//! one. The stream passes as the reader inside it lets it.
use std::{
    collections::VecDeque,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;

use super::body::Reader;
use crate::{audit::RequestRecord, integrity::Guard};

const NEEDLE: &[u8] = b"list_changed";

pub struct ListChanged {
    guard: Arc<Guard>,
    inner: Option<Box<dyn Reader>>,
    scan: Scan,
}

impl ListChanged {
    pub fn new(guard: Arc<Guard>, inner: Option<Box<dyn Reader>>) -> Self {
        Self {
            guard,
            inner,
            scan: Scan::default(),
        }
    }
}

/// Looks for the needle in a stream of chunks.
#[derive(Default)]
struct Scan {
    /// The stream's last bytes (fewer than the needle's), where it may have begun.
    tail: Vec<u8>,
}

impl Scan {
    fn seen(&mut self, data: &[u8]) -> bool {
        let keep = NEEDLE.len() - 1;
        self.tail.extend_from_slice(&data[..data.len().min(keep)]);
        let found = contains(&self.tail, NEEDLE) || contains(data, NEEDLE);
        if data.len() >= keep {
            self.tail.clear();
            self.tail.extend_from_slice(&data[data.len() - keep..]);
        } else {
            let excess = self.tail.len().saturating_sub(keep);
            self.tail.drain(..excess);
        }
        found
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

impl Reader for ListChanged {
    fn chunk(
        &mut self,
        data: Bytes,
        record: &mut RequestRecord,
        out: &mut VecDeque<Bytes>,
    ) -> Result<(), String> {
        if self.scan.seen(&data) {
            self.guard.list_changed();
        }
        match &mut self.inner {
            Some(r) => r.chunk(data, record, out),
            None => {
                out.push_back(data);
                Ok(())
            }
        }
    }

    fn finish(&mut self, record: &mut RequestRecord, out: &mut VecDeque<Bytes>) {
        if let Some(r) = &mut self.inner {
            r.finish(record, out);
        }
    }

    fn rewrites(&self) -> bool {
        self.inner.as_ref().is_some_and(|r| r.rewrites())
    }

    fn poll_added(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        match &mut self.inner {
            Some(r) => r.poll_added(cx),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Scan;

    const TEXT: &[u8] = b"data: {\"method\":\"notifications/tools/list_changed\"}\n\n";

    /// The needle cut anywhere, in chunks of any size, is seen; and only where it is.
    #[test]
    fn a_needle_across_chunks_is_seen() {
        for size in 1..TEXT.len() {
            for offset in 0..size {
                let mut scan = Scan::default();
                let mut found = scan.seen(&TEXT[..offset]);
                for chunk in TEXT[offset..].chunks(size) {
                    found |= scan.seen(chunk);
                }
                assert!(found, "chunks of {size} from {offset}");
            }
        }
        let mut scan = Scan::default();
        for chunk in b"data: {\"method\":\"notifications/progress\",\"list\":\"changed\"}".chunks(3)
        {
            assert!(!scan.seen(chunk));
        }
    }
}
