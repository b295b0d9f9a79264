//! List results filtered by the same policies as calls: a `tools/list`, `resources/list` or
//! `prompts/list` result only names what the caller may use (each entry decided as a call,
//! with `context.listing` true and no arguments). A JSON body is read whole (up to MAX) and
//! rewritten; SSE events are rewritten one at a time. What cannot be filtered is not passed on.
use std::{
    collections::VecDeque,
    net::IpAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::SystemTime,
};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use serde_json::Value;

use crate::{
    auth::Principal,
    mcp::{SseEvent, SseParser},
    policy::{Engine, Input, Process},
};

/// The largest list result (a JSON body, or one SSE event) that is filtered.
const MAX: usize = 16 * 1024 * 1024;

/// Which list, and how its entries are decided.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum List {
    Tools,
    Resources,
    Prompts,
}

impl List {
    pub fn of_method(method: &str) -> Option<Self> {
        match method {
            "tools/list" => Some(Self::Tools),
            "resources/list" => Some(Self::Resources),
            "prompts/list" => Some(Self::Prompts),
            _ => None,
        }
    }

    /// The result's array, the entry's name key, and the call it stands for.
    fn parts(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Self::Tools => ("tools", "name", "tools/call"),
            Self::Resources => ("resources", "uri", "resources/read"),
            Self::Prompts => ("prompts", "name", "prompts/get"),
        }
    }
}

/// Who is listing, to decide each entry for.
pub struct Lister {
    pub list: List,
    pub engine: Arc<Engine>,
    pub server: Arc<str>,
    pub principal: Arc<Principal>,
    pub source_ip: IpAddr,
    pub tls: Option<Arc<str>>,
    pub session: Option<String>,
    pub process: Option<Arc<Process>>,
}

impl Lister {
    fn may(&self, name: &str) -> bool {
        let (_, _, call) = self.list.parts();
        self.engine
            .decide(&Input {
                server: &self.server,
                method: call,
                target: Some(name),
                arguments: None,
                principal: &self.principal,
                source_ip: self.source_ip,
                tls: self.tls.as_deref(),
                session: self.session.as_deref(),
                process: self.process.as_deref(),
                rate: 0,
                now: SystemTime::now(),
                listing: true,
            })
            .allowed()
    }

    /// Removes the entries the caller may not use from a result message; true if it changed.
    pub fn filter(&self, message: &mut Value) -> bool {
        let (array, key, _) = self.list.parts();
        let Some(entries) = message
            .get_mut("result")
            .and_then(|r| r.get_mut(array))
            .and_then(Value::as_array_mut)
        else {
            return false;
        };
        let before = entries.len();
        entries.retain(|e| {
            e.get(key)
                .and_then(Value::as_str)
                .is_some_and(|n| self.may(n))
        });
        entries.len() != before
    }
}

enum State {
    /// Collecting a JSON body.
    Json(BytesMut),
    Sse(SseParser),
    /// Everything has been sent.
    Done,
}

pub struct Filtered<B> {
    inner: B,
    lister: Lister,
    state: State,
    /// Rewritten bytes waiting to be sent.
    out: VecDeque<Bytes>,
}

impl<B> Filtered<B> {
    /// Filters a response of `content_type`; None when it is neither JSON nor SSE.
    pub fn new(inner: B, lister: Lister, content_type: Option<&str>) -> Option<Self> {
        let ct = content_type?.split(';').next()?.trim().to_ascii_lowercase();
        let state = match ct.as_str() {
            "application/json" => State::Json(BytesMut::new()),
            "text/event-stream" => State::Sse(SseParser::new(MAX)),
            _ => return None,
        };
        Some(Self {
            inner,
            lister,
            state,
            out: VecDeque::new(),
        })
    }

    /// The whole JSON body, filtered (unchanged if it is not JSON; an error if it is too big
    /// to be read).
    fn finish_json(&mut self, buf: &[u8]) -> Bytes {
        match serde_json::from_slice::<Value>(buf) {
            Ok(mut v) => {
                if self.lister.filter(&mut v) {
                    Bytes::from(v.to_string())
                } else {
                    Bytes::copy_from_slice(buf)
                }
            }
            Err(_) => Bytes::copy_from_slice(buf),
        }
    }

    fn sse_event(&self, e: SseEvent) -> Bytes {
        let mut data = e.data;
        if let Ok(mut v) = serde_json::from_str::<Value>(&data)
            && self.lister.filter(&mut v)
        {
            data = v.to_string();
        }
        let mut s = String::new();
        if let Some(id) = &e.id {
            s.push_str(&format!("id: {id}\n"));
        }
        if let Some(ev) = &e.event {
            s.push_str(&format!("event: {ev}\n"));
        }
        if let Some(r) = e.retry {
            s.push_str(&format!("retry: {r}\n"));
        }
        for line in data.split('\n') {
            s.push_str(&format!("data: {line}\n"));
        }
        s.push('\n');
        Bytes::from(s)
    }
}

fn too_large() -> Bytes {
    Bytes::from_static(
        br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"list result too large to filter"}}"#,
    )
}

impl<B> Body for Filtered<B>
where
    B: Body<Data = Bytes, Error = hyper::Error> + Unpin,
{
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        loop {
            if let Some(b) = this.out.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
            if let State::Done = this.state {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue; // trailers: not part of a list result
                    };
                    match &mut this.state {
                        State::Json(buf) if buf.len() + data.len() > MAX => {
                            this.state = State::Done;
                            this.out.push_back(too_large());
                        }
                        State::Json(buf) => buf.extend_from_slice(&data),
                        State::Sse(parser) => match parser.push(&data) {
                            Ok(events) => {
                                for e in events {
                                    let b = this.sse_event(e);
                                    this.out.push_back(b);
                                }
                            }
                            // An event too large to read is not passed on: the stream ends.
                            Err(_) => this.state = State::Done,
                        },
                        State::Done => {}
                    }
                }
                Poll::Ready(None) => {
                    if let State::Json(buf) = std::mem::replace(&mut this.state, State::Done) {
                        let b = this.finish_json(&buf);
                        this.out.push_back(b);
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done) && self.out.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
