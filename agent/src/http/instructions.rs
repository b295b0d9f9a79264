//! A server's `instructions` on their way to the client: on a server with `integrity` on, an
//! `initialize` result (a JSON body, or an event of a POST's stream) is read as it passes and
//! its `instructions` checked against their pin. In `enforce` mode instructions the pin does
//! not vouch for (or flagged ones, with `hide_flagged`) are removed from the result; the client
//! gets the result as Moat rebuilt it from what it judged. The audit record says how they
//! stood.
use std::{collections::VecDeque, sync::Arc};

use bytes::Bytes;
use serde_json::Value;

use super::{body::Reader, filter::MAX};
use crate::{audit::RequestRecord, integrity::Guard, mcp::SseParser};

/// Checks the instructions of one message (an `initialize` result), removing them when the
/// pins hide them.
fn judge(guard: &Guard, message: &mut Value, record: &mut RequestRecord) {
    let Some(result) = message.get_mut("result").and_then(Value::as_object_mut) else {
        return;
    };
    let Some(text) = result.get("instructions").and_then(Value::as_str) else {
        return;
    };
    let check = guard.instructions(text);
    if check.hidden {
        result.remove("instructions");
    }
    record.pin_checked(check);
}

/// A JSON body (one message, or a batch): the bytes the client gets.
pub fn read_json(guard: &Guard, body: &[u8], record: &mut RequestRecord) -> Result<Bytes, String> {
    let mut v: Value = serde_json::from_slice(body)
        .map_err(|e| format!("the initialize result is not JSON: {e}"))?;
    match &mut v {
        Value::Array(messages) => messages.iter_mut().for_each(|m| judge(guard, m, record)),
        one => judge(guard, one, record),
    }
    Ok(Bytes::from(v.to_string()))
}

/// A POST's event stream that carries an `initialize` result: each event's message read as it
/// passes (and rebuilt); comments, ids and events without data pass unchanged. An event that
/// cannot be read ends the stream.
pub struct InstructionsStream {
    guard: Arc<Guard>,
    parser: SseParser,
}

impl InstructionsStream {
    pub fn new(guard: Arc<Guard>) -> Self {
        Self {
            guard,
            parser: SseParser::with_blocks(MAX),
        }
    }
}

impl Reader for InstructionsStream {
    fn chunk(
        &mut self,
        data: Bytes,
        record: &mut RequestRecord,
        out: &mut VecDeque<Bytes>,
    ) -> Result<(), String> {
        let blocks = self.parser.push_blocks(&data).map_err(|e| e.to_string())?;
        for block in blocks {
            let Some(event) = block.event.as_ref().filter(|e| !e.data.is_empty()) else {
                out.push_back(block.raw.into());
                continue;
            };
            let mut v: Value = serde_json::from_str(&event.data)
                .map_err(|e| format!("an event of the initialize result is not JSON: {e}"))?;
            judge(&self.guard, &mut v, record);
            out.push_back(block.with_data(&v.to_string()).into());
        }
        Ok(())
    }
}
