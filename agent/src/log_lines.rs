//! The agent's log lines, human-readable or JSON, each naming the request it was written for.
//!
//! A request's lines carry its audit record's id and its server, as a `request` span would,
//! but without a `tracing` span per request: creating one formats its fields and takes a slot
//! in the registry, and entering and leaving it runs on every poll, about 6% of the proxy's
//! time. Instead the request's future carries a [`Tag`] and puts it in a thread-local while it
//! is polled; a line is formatted with the tag that is current then. Lines look the same as
//! with a span: `request{request_id=.. server=..}:` in human lines, `"span":{"request_id":..,
//! "server":..,"name":"request"}` in JSON.
use std::{
    cell::Cell,
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use serde_json::{Map, Value};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::{
    EnvFilter,
    fmt::{
        FmtContext, FormatEvent, FormatFields, MakeWriter,
        format::{self, Writer},
        time::{FormatTime, SystemTime},
    },
    registry::LookupSpan,
};

use crate::audit::RequestId;

thread_local! {
    /// The tag of the request being polled on this thread, if any.
    static CURRENT: Cell<Option<Tag>> = const { Cell::new(None) };
}

/// Which request a log line is written for.
#[derive(Clone, Debug)]
pub struct Tag {
    pub request_id: RequestId,
    pub server: Arc<str>,
}

impl Tag {
    /// Runs `f` with this tag current.
    pub fn in_scope<R>(&self, f: impl FnOnce() -> R) -> R {
        let mut slot = Some(self.clone());
        let _current = Current::enter(&mut slot);
        f()
    }

    /// `fut`, with this tag current whenever it is polled.
    pub fn tag<F: Future>(self, fut: F) -> Tagged<F> {
        Tagged {
            inner: fut,
            tag: Some(self),
        }
    }

    /// The tag current on this thread, if any (a copy).
    fn current() -> Option<Tag> {
        CURRENT.with(|c| {
            let tag = c.take();
            c.set(tag.clone());
            tag
        })
    }
}

/// Makes a tag current until dropped, then puts back the one before (also on a panic).
struct Current<'a> {
    slot: &'a mut Option<Tag>,
    before: Option<Tag>,
}

impl<'a> Current<'a> {
    fn enter(slot: &'a mut Option<Tag>) -> Self {
        let before = CURRENT.replace(slot.take());
        Self { slot, before }
    }
}

impl Drop for Current<'_> {
    fn drop(&mut self) {
        *self.slot = CURRENT.replace(self.before.take());
    }
}

pin_project_lite::pin_project! {
    /// A future whose log lines name its request.
    pub struct Tagged<F> {
        #[pin]
        inner: F,
        tag: Option<Tag>,
    }
}

impl<F: Future> Future for Tagged<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _current = Current::enter(this.tag);
        this.inner.poll(cx)
    }
}

/// The agent's subscriber: lines to `writer`, JSON or human (with colours if `ansi`), those
/// `filter` lets through.
pub fn subscriber<W>(
    json: bool,
    ansi: bool,
    filter: EnvFilter,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    if json {
        Box::new(builder.json().event_format(Lines::new(true)).finish())
    } else {
        Box::new(builder.event_format(Lines::new(false)).finish())
    }
}

/// Formats an event as `tracing`'s full human format or its JSON format would, with the
/// current request's tag as the innermost span.
pub struct Lines {
    json: bool,
    human: format::Format<format::Full, ()>,
    json_format: format::Format<format::Json, ()>,
}

impl Lines {
    pub fn new(json: bool) -> Self {
        Self {
            json,
            // The timestamp, level and tag are written here; the rest (the spans of the
            // libraries, if any, the target and the fields) by tracing's own format.
            human: format::format().without_time().with_level(false),
            json_format: format::format()
                .json()
                .without_time()
                .with_current_span(true)
                .with_span_list(false),
        }
    }
}

impl<S, N> FormatEvent<S, N> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let tag = Tag::current();
        if self.json {
            let mut line = String::new();
            self.json_format
                .format_event(ctx, Writer::new(&mut line), event)?;
            return writer.write_str(&json_line(&line, tag.as_ref()));
        }
        let ansi = writer.has_ansi_escapes();
        if ansi {
            writer.write_str("\x1b[2m")?;
        }
        SystemTime.format_time(&mut writer)?;
        if ansi {
            writer.write_str("\x1b[0m")?;
        }
        let level = *event.metadata().level();
        match (ansi, colour(level)) {
            (true, c) => write!(writer, " \x1b[{c}m{level:>5}\x1b[0m ")?,
            (false, _) => write!(writer, " {level:>5} ")?,
        }
        if let Some(t) = &tag {
            let (b, e) = if ansi {
                ("\x1b[1m", "\x1b[0m")
            } else {
                ("", "")
            };
            write!(
                writer,
                "{b}request{{{e}request_id={} server={}{b}}}{e}:",
                t.request_id, t.server
            )?;
            // tracing's format puts one space after the spans it writes; with none, it is ours.
            if ctx.lookup_current().is_none() {
                writer.write_char(' ')?;
            }
        }
        self.human.format_event(ctx, writer, event)
    }
}

/// `line` (one JSON object and a newline, as tracing's JSON format writes it, without a
/// timestamp) with the timestamp first and the tag as its `span`.
fn json_line(line: &str, tag: Option<&Tag>) -> String {
    let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(line) else {
        return line.to_string();
    };
    let mut out = Map::with_capacity(fields.len() + 2);
    let mut now = String::new();
    let _ = SystemTime.format_time(&mut Writer::new(&mut now));
    out.insert("timestamp".into(), now.into());
    out.extend(fields);
    if let Some(t) = tag {
        let span = serde_json::json!({
            "request_id": t.request_id.to_string(),
            "server": &*t.server,
            "name": "request",
        });
        out.insert("span".into(), span);
    }
    let mut text = Value::Object(out).to_string();
    text.push('\n');
    text
}

/// The ANSI colour of a level's name, as tracing's format colours it.
fn colour(level: Level) -> u8 {
    match level {
        Level::ERROR => 31,
        Level::WARN => 33,
        Level::INFO => 32,
        Level::DEBUG => 34,
        Level::TRACE => 35,
    }
}

#[cfg(test)]
mod tests;
