//! Watches a POST's event stream for the answers to its requests: once each has passed, the
//! exchange is complete, even if the client hangs up before the stream's end (clients close
//! the stream as soon as they have their answer). The stream passes unchanged, chunk by chunk.
use std::collections::VecDeque;

use bytes::Bytes;
use serde_json::Value;

use super::body::Reader;
use crate::{audit::RequestRecord, mcp::SseParser};

/// The largest event read; a larger one is passed on without being read.
const MAX_EVENT: usize = 1024 * 1024;

pub struct Answers {
    /// The ids of the requests not answered yet.
    ids: Vec<Value>,
    /// None once nothing more is read (all answered, or an event too large).
    parser: Option<SseParser>,
}

impl Answers {
    pub fn new(ids: Vec<Value>) -> Self {
        Self {
            ids,
            parser: Some(SseParser::new(MAX_EVENT)),
        }
    }

    fn answered(&mut self, message: &Value) {
        if message.get("method").is_some() {
            return;
        }
        if let Some(id) = message.get("id") {
            self.ids.retain(|i| i != id);
        }
    }
}

impl Reader for Answers {
    fn chunk(
        &mut self,
        data: Bytes,
        record: &mut RequestRecord,
        out: &mut VecDeque<Bytes>,
    ) -> Result<(), String> {
        if let Some(parser) = &mut self.parser {
            match parser.push(&data) {
                Ok(events) => {
                    for e in events {
                        match serde_json::from_str::<Value>(&e.data) {
                            Ok(Value::Array(items)) => items.iter().for_each(|m| self.answered(m)),
                            Ok(m) => self.answered(&m),
                            Err(_) => {}
                        }
                    }
                }
                Err(_) => self.parser = None,
            }
            if self.ids.is_empty() {
                record.complete();
                self.parser = None;
            }
        }
        out.push_back(data);
        Ok(())
    }

    fn rewrites(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answered_once_every_request_has_its_response() {
        let mut a = Answers::new(vec![Value::from(1), Value::from("b")]);
        a.answered(
            &serde_json::json!({"jsonrpc": "2.0", "method": "notifications/progress", "id": 1}),
        );
        assert_eq!(a.ids.len(), 2, "a message with a method answers nothing");
        a.answered(&serde_json::json!({"jsonrpc": "2.0", "id": "1", "result": {}}));
        assert_eq!(a.ids.len(), 2, "ids are compared as JSON values");
        a.answered(&serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": {}}));
        a.answered(
            &serde_json::json!({"jsonrpc": "2.0", "id": "b", "error": {"code": 1, "message": "x"}}),
        );
        assert!(a.ids.is_empty());
    }
}
