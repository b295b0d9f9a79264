//! The legacy (2024-11-05) HTTP+SSE transport. The GET stream announces a message URL in its
//! `endpoint` event; POSTs are accepted only to a URL that a live stream announced, and the
//! server answers them (202) on the stream. So the stream is where answers are decided: each
//! response on it must answer a request Moat forwarded on that session (matched by JSON-RPC
//! id), list results are filtered for whoever asked, and Moat's own answers (denials) are sent
//! as events on it, where clients read answers.
use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;

use super::{
    body::Reader,
    error::ProxyError,
    filter::{self, ListRead},
};
use crate::{audit::RequestRecord, auth::sessions::Owner, mcp::SseParser, vocab::Listing};

/// The largest event read on a stream.
const MAX_EVENT: usize = filter::MAX;
/// Requests in flight (forwarded, not yet answered) on one session.
const MAX_PENDING: usize = 1024;
/// Moat's own answers waiting to be sent on one stream.
const MAX_ADDED: usize = 64;

/// The live legacy sessions of one server, by message URL (path and query).
#[derive(Default)]
pub struct Sessions {
    live: Mutex<HashMap<String, Arc<Session>>>,
}

/// One live stream and what it must carry.
pub struct Session {
    /// Who opened the stream (None on a server without `auth`).
    pub owner: Option<Owner>,
    added: mpsc::Sender<Bytes>,
    pending: Mutex<HashMap<String, Pending>>,
}

/// A request forwarded on a session, waiting for its answer on the stream.
#[derive(Default)]
struct Pending {
    /// A list request: its result is read, and filtered when there is a lister.
    list: Option<ListRead>,
    /// The request's record, when its POST ended before the answer came: written with what
    /// the answer listed.
    record: Option<RequestRecord>,
    /// The answer passed before the POST ended: what it listed.
    answered: Option<Listing>,
}

/// A JSON-RPC id as a key: its JSON text, so that `1` and `"1"` stay apart.
fn key(id: &Value) -> String {
    id.to_string()
}

impl Sessions {
    /// The live session whose stream announced `target`.
    pub fn get(&self, target: &str) -> Option<Arc<Session>> {
        self.live
            .lock()
            .expect("sessions lock")
            .get(target)
            .cloned()
    }

    pub fn is_live(&self, target: &str) -> bool {
        self.live
            .lock()
            .expect("sessions lock")
            .contains_key(target)
    }

    /// The reader of one GET stream opened by `owner`: the URL it announces lives as long as
    /// the stream.
    pub fn stream(self: &Arc<Self>, owner: Option<Owner>) -> Box<dyn Reader> {
        let (tx, rx) = mpsc::channel(MAX_ADDED);
        Box::new(Stream {
            sessions: self.clone(),
            parser: SseParser::with_blocks(MAX_EVENT),
            announced: None,
            session: Arc::new(Session {
                owner,
                added: tx,
                pending: Mutex::default(),
            }),
            added: rx,
        })
    }
}

impl Session {
    /// Notes requests about to be forwarded (ids with the list each one asks for, if any).
    /// Refused when an id is already in flight on this session (its answer could not be told
    /// apart) or too many are.
    pub fn expect(&self, requests: Vec<(&Value, Option<ListRead>)>) -> Result<(), ProxyError> {
        let mut pending = self.pending.lock().expect("pending lock");
        if pending.len() + requests.len() > MAX_PENDING {
            return Err(ProxyError::TooManyPending);
        }
        let keys: Vec<String> = requests.iter().map(|(id, _)| key(id)).collect();
        for (i, k) in keys.iter().enumerate() {
            if pending.contains_key(k) || keys[..i].contains(k) {
                return Err(ProxyError::Decode(
                    crate::mcp::DecodeError::InvalidRequest {
                        id: Some(requests[i].0.clone()),
                        reason: "a request with this id is already in flight on this session"
                            .into(),
                    },
                ));
            }
        }
        for (k, (_, list)) in keys.into_iter().zip(requests) {
            pending.insert(
                k,
                Pending {
                    list,
                    ..Pending::default()
                },
            );
        }
        Ok(())
    }

    /// Forgets requests that will not be answered on the stream (their POST failed, or the
    /// client cancelled them).
    pub fn forget<'a>(&self, ids: impl IntoIterator<Item = &'a Value>) {
        let mut pending = self.pending.lock().expect("pending lock");
        for id in ids {
            pending.remove(&key(id));
        }
    }

    /// The POST of the request `id` ended: its record waits for the answer, or is written with
    /// it if the answer already passed.
    pub fn park(&self, id: &Value, mut record: RequestRecord) {
        let mut pending = self.pending.lock().expect("pending lock");
        let Some(p) = pending.get_mut(&key(id)) else {
            return;
        };
        match p.answered.take() {
            Some(listing) => {
                pending.remove(&key(id));
                drop(pending);
                record.listed(listing);
            }
            None => p.record = Some(record),
        }
    }

    /// Sends Moat's own answer (a JSON-RPC message) as an event on this session's stream;
    /// false when the stream cannot take it.
    pub fn send(&self, message: &Value) -> bool {
        let event = format!("event: message\ndata: {message}\n\n");
        self.added.try_send(event.into()).is_ok()
    }

    /// Reads an answer on the stream: whether it may pass (it answers a request in flight),
    /// and filters it if it is a list result.
    fn answer(&self, message: &mut Value) -> bool {
        let Some(k) = message.get("id").map(key) else {
            return false;
        };
        let mut pending = self.pending.lock().expect("pending lock");
        let Some(mut p) = pending.remove(&k) else {
            return false;
        };
        let Some(read) = &p.list else {
            return true;
        };
        let listing = filter::read_one(read, message);
        match p.record.take() {
            Some(mut record) => {
                drop(pending);
                record.listed(listing);
            }
            None => {
                p.answered = Some(listing);
                pending.insert(k, p);
            }
        }
        true
    }
}

/// Reads one legacy stream.
struct Stream {
    sessions: Arc<Sessions>,
    parser: SseParser,
    /// The message URL this stream announced.
    announced: Option<String>,
    session: Arc<Session>,
    added: mpsc::Receiver<Bytes>,
}

/// The path and query of a message URL, relative or absolute.
fn target_of(url: &str) -> Option<String> {
    let url = url.trim();
    let rel = match url.find("://") {
        Some(i) => &url[i + 3..][url[i + 3..].find('/')?..],
        None => url,
    };
    rel.starts_with('/').then(|| rel.to_string())
}

/// The session id in a message URL's query (`session_id=` or `sessionId=`).
pub fn session_of(target: &str) -> Option<&str> {
    let query = target.split_once('?')?.1;
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        matches!(k, "session_id" | "sessionId").then_some(v)
    })
}

/// A JSON-RPC response (an id with a result or an error, no method).
fn is_response(m: &Value) -> bool {
    m.get("method").is_none() && (m.get("result").is_some() || m.get("error").is_some())
}

impl Stream {
    fn announce(&mut self, data: &str, record: &mut RequestRecord) {
        if self.announced.is_some() {
            return;
        }
        if let Some(target) = target_of(data) {
            let mcp = record.mcp();
            mcp.session = session_of(&target).map(str::to_string);
            mcp.transport = Some("sse");
            self.sessions
                .live
                .lock()
                .expect("sessions lock")
                .insert(target.clone(), self.session.clone());
            self.announced = Some(target);
        }
    }

    /// A `message` event's data: what of it may pass, or None if nothing may.
    /// A `message` event's data: what of it may pass (None: nothing). A response that
    /// answers no request in flight on this session is dropped: Moat never decided it.
    fn message(&self, data: &str) -> Result<Option<String>, String> {
        let mut v: Value = serde_json::from_str(data)
            .map_err(|e| format!("a message on the stream is not JSON: {e}"))?;
        let passes = |m: &mut Value| {
            let ok = !is_response(m) || self.session.answer(m);
            if !ok {
                tracing::warn!(
                    "a response on a legacy stream answers no request in flight: dropped"
                );
            }
            ok
        };
        let any = match &mut v {
            Value::Array(items) => {
                items.retain_mut(passes);
                !items.is_empty()
            }
            m => passes(m),
        };
        if !any {
            return Ok(None);
        }
        Ok(Some(v.to_string()))
    }
}

impl Reader for Stream {
    fn chunk(
        &mut self,
        data: Bytes,
        record: &mut RequestRecord,
        out: &mut VecDeque<Bytes>,
    ) -> Result<(), String> {
        for block in self.parser.push_blocks(&data).map_err(|e| e.to_string())? {
            let Some(event) = block.event.as_ref().filter(|e| !e.data.is_empty()) else {
                out.push_back(block.raw.into());
                continue;
            };
            match event.event.as_deref() {
                Some("endpoint") => {
                    self.announce(&event.data, record);
                    out.push_back(block.raw.into());
                }
                None | Some("message") => {
                    if let Some(data) = self.message(&event.data)? {
                        out.push_back(block.with_data(&data).into());
                    }
                }
                // Clients ignore event types they do not know.
                Some(_) => out.push_back(block.raw.into()),
            }
        }
        Ok(())
    }

    fn poll_added(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        self.added.poll_recv(cx)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if let Some(t) = self.announced.take() {
            self.sessions.live.lock().expect("sessions lock").remove(&t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_urls_are_reduced_to_path_and_query() {
        assert_eq!(
            target_of("/messages/?session_id=ab").as_deref(),
            Some("/messages/?session_id=ab")
        );
        assert_eq!(
            target_of("http://127.0.0.1:8000/messages?sessionId=x").as_deref(),
            Some("/messages?sessionId=x")
        );
        assert_eq!(target_of("messages"), None);
        assert_eq!(session_of("/messages/?session_id=ab&x=1"), Some("ab"));
        assert_eq!(session_of("/m?sessionId=cd"), Some("cd"));
        assert_eq!(session_of("/m"), None);
    }
}
