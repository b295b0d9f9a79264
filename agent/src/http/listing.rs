//! Reads the result of a `tools/list` as it streams back (a JSON body or SSE events), without
//! changing it, and notes the listed tools in the audit record.
use bytes::{Bytes, BytesMut};
use serde_json::Value;

use super::body::Observer;
use crate::{audit::RequestRecord, mcp};

/// Results larger than this are not read (and not noted); the response still passes.
const MAX: usize = 4 * 1024 * 1024;

pub enum ListObserver {
    Json(BytesMut),
    Sse(mcp::SseParser),
    /// Over the size cap: no longer read.
    Skipped,
}

impl ListObserver {
    pub fn for_content_type(content_type: Option<&str>) -> Option<Box<dyn Observer>> {
        let ct = content_type?.split(';').next()?.trim().to_ascii_lowercase();
        match ct.as_str() {
            "application/json" => Some(Box::new(Self::Json(BytesMut::new()))),
            "text/event-stream" => Some(Box::new(Self::Sse(mcp::SseParser::new(MAX)))),
            _ => None,
        }
    }
}

fn note(message: &Value, record: &mut RequestRecord) {
    if let Some(names) = mcp::tool_names(message) {
        record.tools_listed(names);
    }
}

impl Observer for ListObserver {
    fn chunk(&mut self, data: &Bytes, record: &mut RequestRecord) {
        match self {
            Self::Json(buf) => {
                if buf.len() + data.len() <= MAX {
                    buf.extend_from_slice(data);
                } else {
                    *self = Self::Skipped;
                }
            }
            Self::Sse(parser) => {
                let Ok(events) = parser.push(data) else {
                    return;
                };
                for e in events {
                    if let Ok(v) = serde_json::from_str::<Value>(&e.data) {
                        note(&v, record);
                    }
                }
            }
            Self::Skipped => {}
        }
    }

    fn finish(&mut self, record: &mut RequestRecord) {
        if let Self::Json(buf) = self
            && let Ok(v) = serde_json::from_slice::<Value>(buf)
        {
            note(&v, record);
        }
    }
}
