//! JSON-RPC 2.0 / MCP message decoding: what a POST body is, and what the proxy decides on.
use serde_json::{Map, Value};

use super::{
    Limits, Method, Param, Revision, Target,
    error::{DecodeError, excerpt},
    strict::{self, StrictError},
};

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Has a `method` and an `id`.
    Request,
    /// Has a `method` and no `id`.
    Notification,
    /// A client's reply to a server request: an `id` and a `result` or an `error`.
    Response,
}

/// One decoded message: its kind and the fields policy and audit need.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub kind: Kind,
    /// A string or an integer, as sent; `None` for notifications.
    pub id: Option<Value>,
    /// `None` for responses.
    pub method: Option<String>,
    /// `tools/call`: `params.name`.
    pub tool: Option<String>,
    /// `tools/call`: `params.arguments` (an object) when present.
    pub arguments: Option<Value>,
    /// `resources/read`, `resources/subscribe`, `resources/unsubscribe`: `params.uri`.
    pub resource: Option<String>,
    /// `prompts/get`: `params.name`.
    pub prompt: Option<String>,
    /// `initialize`: `params.protocolVersion`.
    pub protocol_version: Option<String>,
    /// `initialize`: the client declared the elicitation capability
    /// (`params.capabilities.elicitation`, an object).
    pub elicits: bool,
    /// `initialize`: ... and its URL mode (`params.capabilities.elicitation.url`, MCP
    /// 2025-11-25).
    pub elicits_url: bool,
    /// `notifications/cancelled`: `params.requestId`, the request it cancels.
    pub cancels: Option<Value>,
}

impl Message {
    /// The method, as the table knows it (None for a response).
    pub fn call(&self) -> Option<Method> {
        self.method.as_deref().map(Method::of)
    }

    /// What the method is about: the tool, resource URI or prompt name.
    pub fn target(&self) -> Option<&str> {
        self.tool
            .as_deref()
            .or(self.resource.as_deref())
            .or(self.prompt.as_deref())
    }

    /// A message of `kind` with `id` and nothing read from it yet.
    fn bare(kind: Kind, id: Option<Value>) -> Self {
        Self {
            kind,
            id,
            method: None,
            tool: None,
            arguments: None,
            resource: None,
            prompt: None,
            protocol_version: None,
            elicits: false,
            elicits_url: false,
            cancels: None,
        }
    }
}

/// A decoded POST body.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// In body order; exactly one unless `batch`.
    pub messages: Vec<Message>,
    /// The body was a JSON array (even of one message).
    pub batch: bool,
    /// What the upstream gets: the JSON that was decoded (and decided on), encoded by Moat,
    /// never the client's bytes. A server that parses JSON differently from Moat (numbers
    /// beyond 64 bits, escapes, whitespace) still reads exactly the values Moat read.
    pub body: bytes::Bytes,
}

/// Decodes a whole POST body under `revision`'s rules, or says why it is refused.
pub fn decode(body: &[u8], revision: Revision, limits: &Limits) -> Result<Decoded, DecodeError> {
    if body.len() > limits.max_body {
        return Err(DecodeError::TooLarge {
            size: body.len(),
            limit: limits.max_body,
            unit: "bytes",
        });
    }
    let mut value = strict::parse(body, limits.max_depth).map_err(|e| match e {
        StrictError::Parse(m) => DecodeError::Parse(m),
        StrictError::TooDeep(limit) => DecodeError::TooDeep { limit },
    })?;
    let (mut messages, batch): (Vec<Message>, bool) = match &mut value {
        Value::Array(items) => {
            if !revision.allows_batch() {
                return Err(DecodeError::BatchNotAllowed { revision });
            }
            if items.is_empty() {
                return Err(invalid_request(None, "empty batch"));
            }
            if items.len() > limits.max_batch {
                return Err(DecodeError::TooLarge {
                    size: items.len(),
                    limit: limits.max_batch,
                    unit: "messages in the batch",
                });
            }
            let messages: Vec<Message> = items.iter_mut().map(message).collect::<Result<_, _>>()?;
            // Each list result is read (checked and filtered) as the list it answers: one a
            // batch.
            let lists = messages
                .iter()
                .filter(|m| m.call().and_then(|c| c.list()).is_some())
                .count();
            if lists > 1 {
                return Err(invalid_request(
                    None,
                    "a batch may hold one list request (tools/list, resources/list, \
                     prompts/list) at most",
                ));
            }
            (messages, true)
        }
        other => (vec![message(other)?], false),
    };
    let body = serde_json::to_vec(&value)
        .map_err(|e| DecodeError::Parse(format!("re-encoding the body: {e}")))?;
    // Once the body is encoded, the calls' arguments are moved out of what was decoded rather
    // than copied.
    match value {
        Value::Array(items) => {
            for (msg, item) in messages.iter_mut().zip(items) {
                take_arguments(msg, item);
            }
        }
        other => take_arguments(&mut messages[0], other),
    }
    Ok(Decoded {
        messages,
        batch,
        body: body.into(),
    })
}

/// The tool names of a `tools/list` result message (`{"result":{"tools":[{"name":..},..]}}`), in
/// order; `None` when it has another shape or any tool lacks a string name.
pub fn tool_names(result_message: &Value) -> Option<Vec<String>> {
    if result_message.get("jsonrpc")? != "2.0" || result_message.get("error").is_some() {
        return None;
    }
    let tools = result_message.get("result")?.get("tools")?.as_array()?;
    tools
        .iter()
        .map(|tool| tool.get("name")?.as_str().map(str::to_owned))
        .collect()
}

fn message(value: &mut Value) -> Result<Message, DecodeError> {
    let Value::Object(object) = value else {
        return Err(invalid_request(None, "a message must be a JSON object"));
    };
    let raw_id = object.get("id");
    let id = raw_id.filter(|v| valid_id(v)).cloned();
    // Errors name the id only when it is a request's: responses and notifications get no reply.
    let request_id = || id.clone().filter(|_| object.contains_key("method"));
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(invalid_request(request_id(), "\"jsonrpc\" must be \"2.0\""));
    }
    let has_result = object.contains_key("result");
    let has_error = object.contains_key("error");
    match object.get("method") {
        Some(Value::String(method)) => {
            let method = method.clone();
            if has_result || has_error {
                return Err(invalid_request(
                    id,
                    "a message with a method has no result or error",
                ));
            }
            let kind = match raw_id {
                None => Kind::Notification,
                Some(_) if id.is_some() => Kind::Request,
                Some(_) => {
                    return Err(invalid_request(
                        None,
                        "a request id must be a string or an integer",
                    ));
                }
            };
            // A request method sent without an id would reach the server undecided by the
            // rules for that method: every notification must be one.
            if kind == Kind::Notification && !Method::of(&method).is_notification() {
                return Err(invalid_request(
                    None,
                    format!(
                        "{} is not a notification method (notifications/...): a request needs an id",
                        excerpt(&method)
                    ),
                ));
            }
            let params = match object.get_mut("params") {
                None => None,
                Some(Value::Object(params)) => Some(params),
                Some(_) => return Err(invalid_params(id, "params must be an object")),
            };
            let mut msg = Message::bare(kind, id);
            read_params(&mut msg, &method, params)?;
            msg.method = Some(method);
            Ok(msg)
        }
        Some(_) => Err(invalid_request(id, "\"method\" must be a string")),
        None => {
            let Some(id) = id else {
                return Err(invalid_request(
                    None,
                    if raw_id.is_some() {
                        "a response id must be a string or an integer"
                    } else {
                        "a message needs a method, or an id with a result or an error"
                    },
                ));
            };
            check_response(object)?;
            Ok(Message::bare(Kind::Response, Some(id)))
        }
    }
}

fn check_response(object: &Map<String, Value>) -> Result<(), DecodeError> {
    let reason = match (object.get("result"), object.get("error")) {
        (Some(_), Some(_)) => "a response has a result or an error, not both",
        (None, None) => "a response needs a result or an error",
        (Some(result), None) if result.is_object() => return Ok(()),
        (Some(_), None) => "a response's result must be an object",
        (None, Some(error)) => {
            let code_ok = error.get("code").is_some_and(Value::is_i64);
            let message_ok = error.get("message").is_some_and(Value::is_string);
            if code_ok && message_ok {
                return Ok(());
            }
            "a response's error must be an object with an integer code and a string message"
        }
    };
    Err(invalid_request(None, reason))
}

/// Fills in the fields of the methods the proxy decides on: what the method's row says it
/// names, and the few other params Moat reads.
fn read_params(
    msg: &mut Message,
    method: &str,
    params: Option<&mut Map<String, Value>>,
) -> Result<(), DecodeError> {
    let (key, what, target) = match Method::of(method).spec().param {
        Param::Target(t) => (t.param(), t.noun(), Some(t)),
        Param::ProtocolVersion => ("protocolVersion", "protocol version", None),
        Param::Cancels => {
            msg.cancels = params
                .and_then(|p| p.get("requestId"))
                .filter(|id| valid_id(id))
                .cloned();
            return Ok(());
        }
        Param::None => return Ok(()),
    };
    let Some(params) = params else {
        return Err(invalid_params(
            msg.id.clone(),
            format!("{method} needs params with a string \"{key}\""),
        ));
    };
    if target.is_none() {
        let elicitation = params
            .get("capabilities")
            .and_then(|c| c.get("elicitation"))
            .filter(|e| e.is_object());
        msg.elicits = elicitation.is_some();
        msg.elicits_url = elicitation
            .and_then(|e| e.get("url"))
            .is_some_and(Value::is_object);
    }
    let Some(Value::String(value)) = params.get_mut(key) else {
        return Err(invalid_params(
            msg.id.clone(),
            format!("{method}: the {what} (params.{key}) must be a string"),
        ));
    };
    if target == Some(Target::Resource) {
        // Decided, and forwarded, in the spelling the server acts on.
        *value = super::uri::normalise(value)
            .map_err(|e| invalid_params(msg.id.clone(), format!("{method}: {e}")))?;
    }
    let value = value.clone();
    match target {
        Some(Target::Tool) => {
            // Taken by `take_arguments` once the body is encoded.
            if params.get("arguments").is_some_and(|a| !a.is_object()) {
                return Err(invalid_params(
                    msg.id.clone(),
                    format!("{method}: params.arguments must be an object"),
                ));
            }
            msg.tool = Some(value);
        }
        Some(Target::Prompt) => msg.prompt = Some(value),
        Some(Target::Resource) => msg.resource = Some(value),
        None => msg.protocol_version = Some(value),
    }
    Ok(())
}

/// A tool call's `params.arguments` (an object, checked by `read_params`), out of `message`.
fn take_arguments(msg: &mut Message, message: Value) {
    if msg.tool.is_none() {
        return;
    }
    if let Value::Object(mut message) = message
        && let Some(Value::Object(mut params)) = message.remove("params")
        && let Some(arguments @ Value::Object(_)) = params.remove("arguments")
    {
        msg.arguments = Some(arguments);
    }
}

/// MCP request ids: a string or an integer (not null, not a fraction, not an object).
fn valid_id(id: &Value) -> bool {
    match id {
        Value::String(_) => true,
        Value::Number(n) => n.is_i64() || n.is_u64(),
        _ => false,
    }
}

fn invalid_request(id: Option<Value>, reason: impl Into<String>) -> DecodeError {
    DecodeError::InvalidRequest {
        id,
        reason: reason.into(),
    }
}

fn invalid_params(id: Option<Value>, reason: impl Into<String>) -> DecodeError {
    DecodeError::InvalidParams {
        id,
        reason: reason.into(),
    }
}
