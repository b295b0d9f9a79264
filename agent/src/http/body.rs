//! Response bodies: streamed through (or through a reader that decides on what passes), with
//! the request's audit record finished when the stream ends (completed) or is dropped early
//! (the client went away).
use std::{
    collections::VecDeque,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt as _, Full, combinators::BoxBody};

use crate::{audit::RequestRecord, idle::InFlight};

/// The body type of every response Moat sends.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

pub fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// Reads a response stream as it passes and decides what the client gets of it: each chunk
/// from the upstream goes in, what may pass comes out (rewritten, held back or dropped).
pub trait Reader: Send + Sync + 'static {
    /// The next chunk from the upstream; what goes on to the client is pushed to `out`. An
    /// error ends the stream: what cannot be read is not passed on.
    fn chunk(
        &mut self,
        data: Bytes,
        record: &mut RequestRecord,
        out: &mut VecDeque<Bytes>,
    ) -> Result<(), String>;

    /// The upstream's stream ended normally.
    fn finish(&mut self, _record: &mut RequestRecord, _out: &mut VecDeque<Bytes>) {}

    /// Whether what passes may differ from what came (else the length stays as it was).
    fn rewrites(&self) -> bool {
        true
    }

    /// What Moat adds to the stream itself (answers on a legacy stream), between chunks.
    fn poll_added(&mut self, _cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        Poll::Pending
    }
}

/// What happens to the record when the response ends (sent to its end, or dropped early):
/// written then, or handed on (a legacy request whose answer comes later on its session's
/// stream).
pub type OnEnd = Box<dyn FnOnce(RequestRecord) + Send + Sync>;

pub struct Audited<B> {
    inner: B,
    record: Option<RequestRecord>,
    reader: Option<Box<dyn Reader>>,
    /// Bytes the reader let through, not yet sent.
    out: VecDeque<Bytes>,
    /// The upstream's stream is over (or the reader ended it).
    ended: bool,
    on_end: Option<OnEnd>,
    /// Keeps the connection from counting as idle while the response streams.
    _in_flight: InFlight,
    /// Ends the stream when it completes: the caller's grant was revoked.
    cut: Option<crate::auth::Revoked>,
}

impl<B> Audited<B> {
    pub fn new(
        inner: B,
        record: RequestRecord,
        reader: Option<Box<dyn Reader>>,
        in_flight: InFlight,
    ) -> Self {
        Self {
            inner,
            record: Some(record),
            reader,
            out: VecDeque::new(),
            ended: false,
            on_end: None,
            _in_flight: in_flight,
            cut: None,
        }
    }

    /// Ends the response (the record says why) when `revoked` completes.
    pub fn cut_when(mut self, revoked: crate::auth::Revoked) -> Self {
        self.cut = Some(revoked);
        self
    }

    /// Hands the record to `f` instead of writing it, once the response ended.
    pub fn on_end(mut self, f: OnEnd) -> Self {
        self.on_end = Some(f);
        self
    }

    fn finish(&mut self) {
        if let Some(mut rec) = self.record.take() {
            rec.complete();
            if let Some(f) = self.on_end.take() {
                f(rec);
            }
        }
    }
}

impl<B> Body for Audited<B>
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
        if let Some(cut) = this.cut.as_mut()
            && cut.as_mut().poll(cx).is_ready()
        {
            this.cut = None;
            if let Some(mut rec) = this.record.take() {
                rec.broken("the caller's grant was revoked: stream closed");
            }
            this.out.clear();
            this.ended = true;
            return Poll::Ready(None);
        }
        let Some(reader) = this.reader.as_mut() else {
            // Streamed through unchanged.
            let polled = Pin::new(&mut this.inner).poll_frame(cx);
            match &polled {
                // With a known length the server stops polling after the last byte.
                Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.finish(),
                Poll::Ready(Some(Err(e))) => {
                    if let Some(mut rec) = this.record.take() {
                        rec.broken(&format!("upstream response: {e}"));
                    }
                }
                Poll::Ready(None) => this.finish(),
                _ => {}
            }
            return polled;
        };
        loop {
            if let Some(b) = this.out.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
            if this.ended {
                this.finish();
                return Poll::Ready(None);
            }
            if let Poll::Ready(Some(b)) = reader.poll_added(cx) {
                this.out.push_back(b);
                continue;
            }
            let Some(rec) = this.record.as_mut() else {
                return Poll::Ready(None);
            };
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => {
                    rec.broken(&format!("upstream response: {e}"));
                    this.record = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    // Trailers are not passed on (nothing Moat reads has them).
                    if let Ok(data) = frame.into_data()
                        && let Err(e) = reader.chunk(data, rec, &mut this.out)
                    {
                        rec.broken(&e);
                        this.record = None;
                        this.ended = true;
                    }
                }
                Poll::Ready(None) => {
                    reader.finish(rec, &mut this.out);
                    this.ended = true;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        // Until the record is finished, make the server poll once more to see the end.
        self.record.is_none() && self.out.is_empty() && (self.ended || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        if self.reader.is_some() {
            SizeHint::default()
        } else {
            self.inner.size_hint()
        }
    }
}

impl<B> Drop for Audited<B> {
    fn drop(&mut self) {
        if let (Some(record), Some(f)) = (self.record.take(), self.on_end.take()) {
            f(record);
        }
    }
}
