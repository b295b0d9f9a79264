//! Results read for the pins besides the lists: on a server with `integrity` on, an
//! `initialize` result and a `resources/templates/list` result (a JSON body, or an event of a
//! POST's stream) are read as they pass, the server's `instructions` and each resource
//! template checked against their pins. In `enforce` mode what the pins do not vouch for (or
//! what is flagged, with `hide_flagged`) is removed from the result; the client gets the result
//! as Moat rebuilt it from what it judged. The audit record says how each stood.
use std::{collections::VecDeque, sync::Arc};

use bytes::Bytes;
use serde_json::Value;

use super::{
    body::Reader,
    filter::{MAX, rewrite_events},
};
use crate::{audit::RequestRecord, integrity::Guard, mcp::SseParser};

/// The result read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Judged {
    /// `initialize`: its `instructions`.
    Instructions,
    /// `resources/templates/list`: each of its `resourceTemplates`.
    Templates,
}

impl Judged {
    pub fn method(self) -> &'static str {
        match self {
            Judged::Instructions => "initialize",
            Judged::Templates => "resources/templates/list",
        }
    }
}

/// Checks one message (a result), removing what the pins hide.
fn judge(what: Judged, guard: &Guard, message: &mut Value, record: &mut RequestRecord) {
    let Some(result) = message.get_mut("result").and_then(Value::as_object_mut) else {
        return;
    };
    match what {
        Judged::Instructions => {
            let Some(text) = result.get("instructions").and_then(Value::as_str) else {
                return;
            };
            let check = guard.instructions(text);
            if check.hidden {
                result.remove("instructions");
            }
            record.pin_checked(check);
        }
        Judged::Templates => {
            let Some(entries) = result
                .get_mut("resourceTemplates")
                .and_then(Value::as_array_mut)
            else {
                return;
            };
            entries.retain(|e| {
                // A template without a string `uriTemplate` is not passed on.
                let Some(check) = guard.template(e) else {
                    return false;
                };
                let keep = !check.hidden;
                if check.notable() {
                    record.pin_checked(check);
                }
                keep
            });
        }
    }
}

/// A JSON body (one message, or a batch): the bytes the client gets.
pub fn read_json(
    what: Judged,
    guard: &Guard,
    body: &[u8],
    record: &mut RequestRecord,
) -> Result<Bytes, String> {
    let mut v: Value = serde_json::from_slice(body)
        .map_err(|e| format!("the {} result is not JSON: {e}", what.method()))?;
    match &mut v {
        Value::Array(messages) => messages
            .iter_mut()
            .for_each(|m| judge(what, guard, m, record)),
        one => judge(what, guard, one, record),
    }
    Ok(Bytes::from(v.to_string()))
}

/// A POST's event stream that carries such a result: each event's message read as it passes
/// (and rebuilt); comments, ids and events without data pass unchanged. An event that cannot
/// be read ends the stream.
pub struct JudgedStream {
    what: Judged,
    guard: Arc<Guard>,
    parser: SseParser,
}

impl JudgedStream {
    pub fn new(what: Judged, guard: Arc<Guard>) -> Self {
        Self {
            what,
            guard,
            parser: SseParser::with_blocks(MAX),
        }
    }
}

impl Reader for JudgedStream {
    fn chunk(
        &mut self,
        data: Bytes,
        record: &mut RequestRecord,
        out: &mut VecDeque<Bytes>,
    ) -> Result<(), String> {
        let (what, guard) = (self.what, &self.guard);
        // Always rebuilt: the client reads what was judged.
        rewrite_events(&mut self.parser, &data, what.method(), out, |v| {
            judge(what, guard, v, record);
            true
        })
    }
}
