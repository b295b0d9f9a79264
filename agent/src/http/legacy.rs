//! The legacy (2024-11-05) HTTP+SSE transport: the GET stream announces a message URL in its
//! `endpoint` event; POSTs are accepted only to a URL that a live stream announced.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use bytes::Bytes;

use super::body::Observer;
use crate::{audit::RequestRecord, auth::sessions::Owner, mcp::SseParser};

const MAX_EVENT: usize = 1024 * 1024;

/// Message URLs (path and query) of the live legacy streams of one server, with the principal
/// that opened each stream (None on a server without `auth`).
#[derive(Default)]
pub struct Sessions {
    live: Mutex<HashMap<String, Option<Owner>>>,
}

impl Sessions {
    pub fn is_live(&self, target: &str) -> bool {
        self.live
            .lock()
            .expect("sessions lock")
            .contains_key(target)
    }

    /// Who opened the stream that announced `target`.
    pub fn owner(&self, target: &str) -> Option<Option<Owner>> {
        self.live
            .lock()
            .expect("sessions lock")
            .get(target)
            .cloned()
    }

    /// An observer for one GET stream opened by `owner`; the URL it announces lives as long
    /// as the stream.
    pub fn observer(self: &Arc<Self>, owner: Option<Owner>) -> Box<dyn Observer> {
        Box::new(StreamObserver {
            sessions: self.clone(),
            parser: SseParser::new(MAX_EVENT),
            announced: None,
            owner,
        })
    }
}

struct StreamObserver {
    sessions: Arc<Sessions>,
    parser: SseParser,
    announced: Option<String>,
    owner: Option<Owner>,
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

impl Observer for StreamObserver {
    fn chunk(&mut self, data: &Bytes, record: &mut RequestRecord) {
        let Ok(events) = self.parser.push(data) else {
            return;
        };
        for e in events {
            if e.event.as_deref() != Some("endpoint") || self.announced.is_some() {
                continue;
            }
            if let Some(target) = target_of(&e.data) {
                let mcp = record.mcp();
                mcp.session = session_of(&target).map(str::to_string);
                mcp.transport = Some("sse");
                self.sessions
                    .live
                    .lock()
                    .expect("sessions lock")
                    .insert(target.clone(), self.owner.clone());
                self.announced = Some(target);
            }
        }
    }
}

impl Drop for StreamObserver {
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
