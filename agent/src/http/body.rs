//! Response bodies: streamed through unchanged, with the request's audit record finished when
//! the stream ends (completed) or is dropped early (the client went away).
use std::{
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

/// Sees each data chunk as it passes (e.g. to read SSE events); must not change it.
pub trait Observer: Send + Sync + 'static {
    fn chunk(&mut self, data: &Bytes, record: &mut RequestRecord);
    /// The response ended normally.
    fn finish(&mut self, _record: &mut RequestRecord) {}
}

pub struct Audited<B> {
    inner: B,
    record: Option<RequestRecord>,
    observer: Option<Box<dyn Observer>>,
    /// Keeps the connection from counting as idle while the response streams.
    _in_flight: InFlight,
}

impl<B> Audited<B> {
    pub fn new(
        inner: B,
        record: RequestRecord,
        observer: Option<Box<dyn Observer>>,
        in_flight: InFlight,
    ) -> Self {
        Self {
            inner,
            record: Some(record),
            observer,
            _in_flight: in_flight,
        }
    }
}

impl<B> Audited<B> {
    fn finish(&mut self) {
        if let Some(mut rec) = self.record.take() {
            if let Some(obs) = self.observer.as_mut() {
                obs.finish(&mut rec);
            }
            rec.complete();
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
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(obs), Some(rec)) = (
                    frame.data_ref(),
                    this.observer.as_mut(),
                    this.record.as_mut(),
                ) {
                    obs.chunk(data, rec);
                }
                // With a known length the server stops polling after the last byte.
                if this.inner.is_end_stream() {
                    this.finish();
                }
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(mut rec) = this.record.take() {
                    rec.broken(&format!("upstream response: {e}"));
                }
            }
            Poll::Ready(None) => this.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        // Until the record is finished, make the server poll once more to see the end.
        self.record.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
