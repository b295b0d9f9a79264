//! Log lines name the request they were written for, and only that one.
use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll, Waker},
};

use serde_json::Value;
use tracing_subscriber::{EnvFilter, fmt::MakeWriter};

use super::{Tag, subscriber};
use crate::audit::RequestId;

/// Collects what the subscriber writes.
#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl io::Write for Buf {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'w> MakeWriter<'w> for Buf {
    type Writer = Buf;
    fn make_writer(&'w self) -> Buf {
        self.clone()
    }
}

impl Buf {
    fn lines(&self) -> Vec<String> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_string).collect()
    }
}

fn tag(server: &str) -> Tag {
    Tag {
        request_id: RequestId::next(),
        server: server.into(),
    }
}

/// Pending on its first poll, ready on its second; logs on each.
struct TwoPolls(u8);

impl Future for TwoPolls {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        self.0 += 1;
        tracing::warn!(poll = self.0, "inside");
        if self.0 == 1 {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }
}

/// Polls `f` once with a waker that does nothing.
fn poll_once<F: Future>(f: Pin<&mut F>) -> Poll<F::Output> {
    f.poll(&mut Context::from_waker(Waker::noop()))
}

/// A tagged future's lines carry its tag on every poll; lines between its polls, after it, and
/// of another request's future carry theirs or none.
fn run(json: bool) -> (Buf, Tag, Tag) {
    let buf = Buf::default();
    let sub = subscriber(json, false, EnvFilter::new("info"), buf.clone());
    let (a, b) = (tag("files"), tag("wiki"));
    tracing::subscriber::with_default(sub, || {
        tracing::info!("before");
        let mut first = Box::pin(a.clone().tag(TwoPolls(0)));
        assert!(poll_once(first.as_mut()).is_pending());
        tracing::info!("between");
        let mut other = Box::pin(b.clone().tag(async {
            tracing::warn!("other");
        }));
        assert!(poll_once(other.as_mut()).is_ready());
        assert!(poll_once(first.as_mut()).is_ready());
        a.in_scope(|| tracing::error!("refused"));
        tracing::info!("after");
    });
    (buf, a, b)
}

#[test]
fn human_lines_name_their_request() {
    let (buf, a, b) = run(false);
    let lines = buf.lines();
    let of = |text: &str| lines.iter().find(|l| l.contains(text)).unwrap().clone();
    let span = |t: &Tag| {
        format!(
            "request{{request_id={} server={}}}: ",
            t.request_id, t.server
        )
    };
    assert_eq!(lines.len(), 7, "{lines:#?}");
    for line in lines.iter().filter(|l| l.contains("inside")) {
        assert!(line.contains(&span(&a)), "{line}");
        assert!(line.contains(" WARN "), "{line}");
    }
    assert!(of("other").contains(&span(&b)));
    assert!(of("refused").contains(&span(&a)));
    for text in ["before", "between", "after"] {
        let line = of(text);
        assert!(!line.contains("request{"), "{line}");
        // The layout of tracing's own format: time, level, target, message.
        let (time, rest) = line.split_once(' ').unwrap();
        assert!(time.ends_with('Z') && time.contains('T'), "{line}");
        assert!(rest.starts_with(" INFO moat::log_lines::tests: "), "{line}");
    }
    let inside = of("inside");
    assert!(
        inside.contains(&format!(
            "{}moat::log_lines::tests: inside poll=1",
            span(&a)
        )),
        "{inside}"
    );
}

#[test]
fn json_lines_name_their_request_as_their_span() {
    let (buf, a, b) = run(true);
    let lines: Vec<Value> = buf
        .lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 7);
    let of = |text: &str| {
        lines
            .iter()
            .find(|l| l["fields"]["message"] == text)
            .unwrap()
            .clone()
    };
    let span = |t: &Tag| {
        serde_json::json!({
            "request_id": t.request_id.to_string(),
            "server": &*t.server,
            "name": "request",
        })
    };
    let inside: Vec<&Value> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "inside")
        .collect();
    assert_eq!(inside.len(), 2);
    for line in inside {
        assert_eq!(line["span"], span(&a), "{line}");
        assert_eq!(line["level"], "WARN");
        assert!(line["fields"]["poll"].is_u64(), "{line}");
    }
    assert_eq!(of("other")["span"], span(&b));
    assert_eq!(of("refused")["span"], span(&a));
    for text in ["before", "between", "after"] {
        let line = of(text);
        assert!(line.get("span").is_none(), "{line}");
        assert_eq!(line["target"], "moat::log_lines::tests");
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'), "{line}");
    }
}

/// A panic inside a tagged future leaves no tag behind on the thread.
#[test]
fn a_panic_does_not_leave_the_tag_current() {
    let a = tag("files");
    let caught = std::panic::catch_unwind(|| {
        let mut f = Box::pin(a.tag(async { panic!("in the request") }));
        let _ = poll_once(f.as_mut());
    });
    assert!(caught.is_err());
    assert!(Tag::current().is_none());
}
