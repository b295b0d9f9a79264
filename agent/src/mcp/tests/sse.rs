//! `SseParser`: the WHATWG event-stream rules, chunk splits anywhere, and the size bound.
use crate::mcp::{
    SseParser,
    sse::{SseError, SseEvent},
};

fn ev(id: Option<&str>, event: Option<&str>, data: &str, retry: Option<u64>) -> SseEvent {
    SseEvent {
        id: id.map(str::to_owned),
        event: event.map(str::to_owned),
        data: data.to_owned(),
        retry,
    }
}

fn parse(stream: &[u8]) -> Vec<SseEvent> {
    SseParser::new(1 << 20).push(stream).unwrap()
}

/// Exercises every rule: BOM, all three line endings, comments, fields without a colon, the
/// single stripped space, multi-line data, id persistence, retry, multi-byte UTF-8, invalid UTF-8.
const SAMPLE: &[u8] = b"\xef\xbb\xbf: priming comment\r\nid: 1\r\nretry: 3000\r\ndata:\r\n\r\n\
event: message\ndata: {\"jsonrpc\":\"2.0\",\n\ndata:  two spaces\rdata\rdata:caf\xc3\xa9 \xe6\x9d\xb1\xe4\xba\xac\r\r\
id\nevent:x\ndata:a\n:comment\ndata:b\n\nretry: 12x\nretry: 99999999999999999999999\ndata: \xff\xfe\n\n\
id: 7\n\nid: with\0nul\ndata: last\n\ndata: incomplete";

fn sample_events() -> Vec<SseEvent> {
    vec![
        ev(Some("1"), None, "", Some(3000)),
        ev(Some("1"), Some("message"), "{\"jsonrpc\":\"2.0\",", None),
        ev(
            Some("1"),
            None,
            " two spaces\n\ncaf\u{e9} \u{6771}\u{4eac}",
            None,
        ),
        ev(None, Some("x"), "a\nb", None),
        ev(None, None, "\u{fffd}\u{fffd}", None),
        ev(Some("7"), None, "last", None),
    ]
}

#[test]
fn sample_in_one_push() {
    assert_eq!(parse(SAMPLE), sample_events());
}

#[test]
fn sample_split_at_every_position() {
    for cut in 0..=SAMPLE.len() {
        let mut p = SseParser::new(1 << 20);
        let mut events = p.push(&SAMPLE[..cut]).unwrap();
        events.extend(p.push(&SAMPLE[cut..]).unwrap());
        assert_eq!(events, sample_events(), "split at {cut}");
    }
}

#[test]
fn sample_split_at_every_pair_of_positions() {
    for a in 0..=SAMPLE.len() {
        for b in a..=SAMPLE.len() {
            let mut p = SseParser::new(1 << 20);
            let mut events = Vec::new();
            for chunk in [&SAMPLE[..a], &SAMPLE[a..b], &SAMPLE[b..]] {
                events.extend(p.push(chunk).unwrap());
            }
            assert_eq!(events, sample_events(), "split at {a} and {b}");
        }
    }
}

#[test]
fn sample_byte_by_byte() {
    let mut p = SseParser::new(1 << 20);
    let mut events = Vec::new();
    for byte in SAMPLE {
        events.extend(p.push(std::slice::from_ref(byte)).unwrap());
        events.extend(p.push(&[]).unwrap());
    }
    assert_eq!(events, sample_events());
    assert_eq!(p.last_event_id(), Some("7"));
}

#[test]
fn line_endings() {
    let want = vec![ev(None, None, "a", None), ev(None, None, "b", None)];
    for stream in [
        &b"data:a\n\ndata:b\n\n"[..],
        b"data:a\r\n\r\ndata:b\r\n\r\n",
        b"data:a\r\rdata:b\r\r",
        b"data:a\r\n\rdata:b\n\r\n",
    ] {
        assert_eq!(parse(stream), want, "{}", String::from_utf8_lossy(stream));
    }
    // CR then LF is one line end; LF then CR is two.
    assert_eq!(parse(b"data:a\n\rdata:b\n\n"), want);
    assert_eq!(
        parse(b"data:a\r\ndata:b\n\n"),
        vec![ev(None, None, "a\nb", None)]
    );
}

#[test]
fn bom_only_at_the_very_start() {
    assert_eq!(
        parse(b"\xef\xbb\xbfdata:x\n\n"),
        vec![ev(None, None, "x", None)]
    );
    // A second BOM is part of the field name, which is then unknown.
    assert_eq!(parse(b"\xef\xbb\xbf\xef\xbb\xbfdata:x\n\n"), vec![]);
    assert_eq!(
        parse(b"data:x\n\n\xef\xbb\xbfdata:y\n\n"),
        vec![ev(None, None, "x", None)]
    );
    // Something that starts like a BOM but is not one is kept (and decoded as replacement characters).
    assert_eq!(
        parse(b"\xef\xbbdata:x\n\ndata:y\n\n"),
        vec![ev(None, None, "y", None)]
    );
    let mut p = SseParser::new(100);
    assert_eq!(p.push(b"\xef").unwrap(), vec![]);
    assert_eq!(p.push(b"\xbb").unwrap(), vec![]);
    assert_eq!(
        p.push(b"\xbfdata: z\n\n").unwrap(),
        vec![ev(None, None, "z", None)]
    );
}

#[test]
fn fields() {
    // Unknown fields, a colon-less "data", a value with colons, an event type that resets per event.
    let got = parse(b"foo: bar\ndata\ndata: a:b: c\nevent: e1\n\ndata: d\n\nevent: e2\n\n");
    assert_eq!(
        got,
        vec![
            ev(None, Some("e1"), "\na:b: c", None),
            ev(None, None, "d", None)
        ]
    );
    // No data: nothing is dispatched, the event type is dropped, the id stays.
    let mut p = SseParser::new(100);
    assert_eq!(p.push(b"id: 42\nevent: x\nretry: 5\n\n").unwrap(), vec![]);
    assert_eq!(p.last_event_id(), Some("42"));
    assert_eq!(
        p.push(b"data: y\n\n").unwrap(),
        vec![ev(Some("42"), None, "y", Some(5))]
    );
    // An empty id clears it; an id with NUL is ignored.
    assert_eq!(
        p.push(b"id\ndata: z\n\n").unwrap(),
        vec![ev(None, None, "z", None)]
    );
    assert_eq!(
        p.push(b"id: 9\nid: a\0b\ndata: w\n\n").unwrap(),
        vec![ev(Some("9"), None, "w", None)]
    );
    // retry: only ASCII digits count.
    for bad in [
        "retry: -1",
        "retry: 1.5",
        "retry:  1",
        "retry: ",
        "retry",
        "retry: \u{661}",
    ] {
        let got = parse(format!("{bad}\ndata: x\n\n").as_bytes());
        assert_eq!(got, vec![ev(None, None, "x", None)], "{bad}");
    }
    assert_eq!(
        parse(b"retry:0\ndata\n\n"),
        vec![ev(None, None, "", Some(0))]
    );
    // Only a single leading space is stripped; tabs are kept.
    assert_eq!(parse(b"data:\tt\n\n"), vec![ev(None, None, "\tt", None)]);
}

#[test]
fn incomplete_event_is_not_dispatched() {
    let mut p = SseParser::new(100);
    assert_eq!(p.push(b"data: a\n").unwrap(), vec![]);
    assert_eq!(p.push(b"data: b").unwrap(), vec![]);
    assert_eq!(p.push(b"\n").unwrap(), vec![]);
    assert_eq!(p.push(b"\r").unwrap(), vec![ev(None, None, "a\nb", None)]);
    // The CR above must not swallow a line: the next LF ends an empty line (nothing to dispatch).
    assert_eq!(
        p.push(b"\ndata: c\n\n").unwrap(),
        vec![ev(None, None, "c", None)]
    );
}

#[test]
fn size_bound() {
    // A long line without an end.
    let mut p = SseParser::new(16);
    assert_eq!(p.push(b"data: 0123456789").unwrap(), vec![]);
    assert_eq!(p.push(b"a"), Err(SseError::TooLarge { limit: 16 }));
    assert_eq!(p.push(b"\n\n"), Err(SseError::TooLarge { limit: 16 }));
    // An event growing over many short lines.
    let mut p = SseParser::new(16);
    assert_eq!(p.push(b"data: 0123\ndata: 4567\n").unwrap(), vec![]);
    assert!(p.push(b"data: 89ab\ndata: cdef\n").is_err());
    // A long comment line counts too.
    assert!(SseParser::new(16).push(&[b':'; 17]).is_err());
    // Many events, each within the bound, never fail.
    let mut p = SseParser::new(16);
    for i in 0..10_000 {
        let events = p
            .push(format!("id: {i}\ndata: 0123456789\n\n").as_bytes())
            .unwrap();
        assert_eq!(events.len(), 1);
    }
    // Exactly at the bound is fine; the line terminator does not count.
    assert_eq!(
        SseParser::new(7).push(b"data: x\n\n").unwrap(),
        vec![ev(None, None, "x", None)]
    );
    assert!(SseParser::new(6).push(b"data: x\n\n").is_err());
}
