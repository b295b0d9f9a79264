//! Incremental `text/event-stream` parsing (WHATWG HTML, "Parsing an event stream") with bounded memory.
//!
//! The proxy streams server responses through unchanged and reads the events on the side, so the
//! parser takes chunks as they come: split anywhere, inside a CRLF pair or a UTF-8 sequence. Lines
//! end at CRLF, LF or CR; they are split on bytes (a terminator never occurs inside a UTF-8
//! sequence) and each is decoded with replacement characters, as the standard's decoder does.
use std::mem;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The last event id in force at dispatch (it persists across events, as in the standard);
    /// `None` while it is empty.
    pub id: Option<String>,
    /// The `event` type; `None` means the default, `message`.
    pub event: Option<String>,
    /// The `data` lines joined with `\n`.
    pub data: String,
    /// The last valid `retry` (milliseconds) seen since the previous dispatched event.
    pub retry: Option<u64>,
}

/// One block of an event stream (the lines up to a blank line), as read, and the event it
/// dispatched, if any (comment-only blocks and blocks without data dispatch none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseBlock {
    /// The block's lines, each ending in `\n`, and the blank line that ended it.
    pub raw: Vec<u8>,
    pub event: Option<SseEvent>,
}

impl SseBlock {
    /// The block with its data replaced by `data` (its other lines kept: id, event, retry,
    /// comments).
    pub fn with_data(&self, data: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.raw.len() + data.len());
        for line in self.raw.split(|&b| b == b'\n') {
            let field = line.split(|&b| b == b':').next().unwrap_or_default();
            if line.is_empty() || field == b"data" {
                continue;
            }
            out.extend_from_slice(line);
            out.push(b'\n');
        }
        for line in data.split('\n') {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        out.push(b'\n');
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("server-sent event larger than {limit} bytes")]
    TooLarge { limit: usize },
}

const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];

#[derive(Debug)]
enum Bom {
    /// At the start of the stream, this many bytes of a BOM seen (and held back).
    Matching(usize),
    Done,
}

/// Parses an event stream pushed in chunks of any size.
#[derive(Debug)]
pub struct SseParser {
    max_event_bytes: usize,
    bom: Bom,
    /// The current line so far, without its terminator.
    line: Vec<u8>,
    /// The previous chunk ended in CR: an LF starting the next one belongs to it.
    after_cr: bool,
    data: String,
    event: String,
    last_id: String,
    retry: Option<u64>,
    failed: bool,
    /// Whether the raw lines of each block are kept ([`SseParser::push_blocks`]).
    capture: bool,
    /// The current block's lines so far.
    raw: Vec<u8>,
    blocks: Vec<SseBlock>,
}

impl SseParser {
    /// A parser that fails once the event being read (its data and type, plus the current line)
    /// would exceed `max_event_bytes`.
    pub fn new(max_event_bytes: usize) -> Self {
        SseParser {
            max_event_bytes,
            bom: Bom::Matching(0),
            line: Vec::new(),
            after_cr: false,
            data: String::new(),
            event: String::new(),
            last_id: String::new(),
            retry: None,
            failed: false,
            capture: false,
            raw: Vec::new(),
            blocks: Vec::new(),
        }
    }

    /// A parser for [`SseParser::push_blocks`]: the bound also covers the block's raw lines.
    pub fn with_blocks(max_event_bytes: usize) -> Self {
        SseParser {
            capture: true,
            ..Self::new(max_event_bytes)
        }
    }

    /// Like [`SseParser::push`], for a parser made by [`SseParser::with_blocks`]: every
    /// complete block, with the event it dispatched. What a stream needs to pass on unchanged
    /// (comments, ids of blocks without data) is in the blocks.
    pub fn push_blocks(&mut self, chunk: &[u8]) -> Result<Vec<SseBlock>, SseError> {
        debug_assert!(self.capture);
        self.push(chunk)?;
        Ok(mem::take(&mut self.blocks))
    }

    /// Feeds the next chunk; returns the events it completed. After an error (which drops the
    /// events of that chunk) every call fails: the stream can no longer be read.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        if self.failed {
            return Err(self.too_large());
        }
        let mut events = Vec::new();
        match self.feed(chunk, &mut events) {
            Ok(()) => Ok(events),
            Err(e) => {
                self.failed = true;
                self.raw = Vec::new();
                self.blocks = Vec::new();
                self.line = Vec::new();
                self.data = String::new();
                self.event = String::new();
                Err(e)
            }
        }
    }

    /// The last event id in force (also after id-only blocks, which dispatch no event).
    pub fn last_event_id(&self) -> Option<&str> {
        (!self.last_id.is_empty()).then_some(self.last_id.as_str())
    }

    fn too_large(&self) -> SseError {
        SseError::TooLarge {
            limit: self.max_event_bytes,
        }
    }

    fn feed(&mut self, mut chunk: &[u8], events: &mut Vec<SseEvent>) -> Result<(), SseError> {
        while let (Bom::Matching(seen), Some(&byte)) = (&self.bom, chunk.first()) {
            let seen = *seen;
            if byte == BOM[seen] {
                chunk = &chunk[1..];
                self.bom = if seen + 1 == BOM.len() {
                    Bom::Done
                } else {
                    Bom::Matching(seen + 1)
                };
            } else {
                // Not a BOM after all: what was held back starts the first line.
                self.line.extend_from_slice(&BOM[..seen]);
                self.bom = Bom::Done;
            }
        }
        if self.after_cr && !chunk.is_empty() {
            self.after_cr = false;
            if chunk[0] == b'\n' {
                chunk = &chunk[1..];
            }
        }
        while let Some(end) = chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
            let (head, rest) = chunk.split_at(end);
            self.check(head.len())?;
            let mut line = mem::take(&mut self.line);
            line.extend_from_slice(head);
            self.process(&line, events);
            line.clear();
            self.line = line;
            chunk = &rest[1..];
            if rest[0] == b'\r' {
                match chunk.first() {
                    Some(b'\n') => chunk = &chunk[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        self.check(chunk.len())?;
        self.line.extend_from_slice(chunk);
        Ok(())
    }

    /// Whether the event being read stays within bounds once `more` bytes join the current line.
    fn check(&self, more: usize) -> Result<(), SseError> {
        let size = self.line.len() + more + self.data.len() + self.event.len() + self.raw.len();
        if size > self.max_event_bytes {
            return Err(self.too_large());
        }
        Ok(())
    }

    fn process(&mut self, line: &[u8], events: &mut Vec<SseEvent>) {
        if self.capture {
            self.raw.extend_from_slice(line);
            self.raw.push(b'\n');
        }
        if line.is_empty() {
            let before = events.len();
            self.dispatch(events);
            if self.capture {
                let event = if events.len() > before {
                    events.pop()
                } else {
                    None
                };
                let raw = mem::take(&mut self.raw);
                self.blocks.push(SseBlock { raw, event });
            }
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        match field {
            b"event" => self.event = String::from_utf8_lossy(value).into_owned(),
            b"data" => {
                self.data.push_str(&String::from_utf8_lossy(value));
                self.data.push('\n');
            }
            b"id" if !value.contains(&0) => {
                self.last_id = String::from_utf8_lossy(value).into_owned();
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                // All ASCII digits, so only overflow can fail: such a value is ignored.
                if let Some(ms) = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok()) {
                    self.retry = Some(ms);
                }
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, events: &mut Vec<SseEvent>) {
        let event = mem::take(&mut self.event);
        if self.data.is_empty() {
            return;
        }
        let mut data = mem::take(&mut self.data);
        data.pop(); // the "\n" after the last data line
        events.push(SseEvent {
            id: self.last_event_id().map(str::to_owned),
            event: (!event.is_empty()).then_some(event),
            data,
            retry: self.retry.take(),
        });
    }
}
