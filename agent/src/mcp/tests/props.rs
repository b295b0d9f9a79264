//! Property tests: `decode` never panics and finds the real tool name; SSE ignores chunking.
use proptest::prelude::*;
use serde_json::{Map, Value};

use crate::mcp::{Limits, Revision, SseParser, decode, sse::SseEvent};

const REVISIONS: [Revision; 5] = Revision::ALL;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,6}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Bodies made of JSON-RPC-ish tokens, to reach deeper than random bytes do.
fn token_soup() -> impl Strategy<Value = String> {
    const TOKENS: &[&str] = &[
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        " ",
        "1",
        "1.5",
        "null",
        "\"2.0\"",
        "\"jsonrpc\"",
        "\"id\"",
        "\"method\"",
        "\"params\"",
        "\"name\"",
        "\"arguments\"",
        "\"uri\"",
        "\"result\"",
        "\"error\"",
        "\"protocolVersion\"",
        "\"tools/call\"",
        "\"resources/read\"",
        "\"prompts/get\"",
        "\"initialize\"",
    ];
    prop::collection::vec(prop::sample::select(TOKENS), 0..64).prop_map(|t| t.concat())
}

fn push_all(chunks: &[&[u8]], max: usize) -> Result<Vec<SseEvent>, ()> {
    let mut p = SseParser::new(max);
    let mut events = Vec::new();
    for chunk in chunks {
        events.extend(p.push(chunk).map_err(|_| ())?);
    }
    Ok(events)
}

/// Splits `bytes` at the given (sorted, clamped) cut points.
fn split<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    let mut chunks = Vec::new();
    let mut start = 0;
    for cut in cuts {
        chunks.push(&bytes[start..cut]);
        start = cut;
    }
    chunks.push(&bytes[start..]);
    chunks
}

/// Event streams made of the pieces that matter to the parser.
fn sse_stream() -> impl Strategy<Value = Vec<u8>> {
    const PIECES: &[&[u8]] = &[
        b"\n",
        b"\r",
        b"\r\n",
        b":",
        b" ",
        b"data",
        b"event",
        b"id",
        b"retry",
        b"12",
        b"x",
        b"\xef\xbb\xbf",
        b"\xc3\xa9",
        b"\xe6\x9d\xb1",
        b"\xff",
        b"\0",
    ];
    prop::collection::vec(prop::sample::select(PIECES), 0..80).prop_map(|p| p.concat())
}

fn check_chunking(stream: &[u8], cuts: &[usize], max: usize) -> Result<(), TestCaseError> {
    let whole = push_all(&[stream], max);
    let pieces = push_all(&split(stream, cuts), max);
    match whole {
        Ok(events) => prop_assert_eq!(pieces, Ok(events)),
        Err(()) => prop_assert!(pieces.is_err()),
    }
    Ok(())
}

proptest! {
    #[test]
    fn decode_never_panics_on_bytes(body in prop::collection::vec(any::<u8>(), 0..512), r in 0..5usize) {
        let _ = decode(&body, REVISIONS[r], &Limits::default());
    }

    #[test]
    fn decode_never_panics_on_token_soup(body in token_soup(), r in 0..5usize) {
        let _ = decode(body.as_bytes(), REVISIONS[r], &Limits::default());
    }

    #[test]
    fn tools_call_decodes_the_real_name(
        name in ".{0,16}",
        arguments in prop::collection::btree_map(".{0,6}", json_value(), 0..6),
        name_last in any::<bool>(),
    ) {
        let arguments = Value::Object(arguments.into_iter().collect());
        let (n, a) = (Value::from(name.clone()), arguments.to_string());
        let params = if name_last {
            format!(r#"{{"arguments":{a},"name":{n}}}"#)
        } else {
            format!(r#"{{"name":{n},"arguments":{a}}}"#)
        };
        let body = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{params}}}"#);
        let decoded = decode(body.as_bytes(), Revision::V2026_07_28, &Limits::default()).unwrap();
        prop_assert_eq!(decoded.messages[0].tool.as_deref(), Some(name.as_str()));
        // Compared with serde_json's own reading of the same text (its floats need not round-trip).
        let expected: Value = serde_json::from_str(&a).unwrap();
        prop_assert_eq!(decoded.messages[0].arguments.as_ref(), Some(&expected));
    }

    #[test]
    fn sse_chunking_does_not_matter(stream in sse_stream(), cuts in prop::collection::vec(any::<usize>(), 0..8)) {
        check_chunking(&stream, &cuts, 1 << 20)?;
        check_chunking(&stream, &cuts, 24)?;
    }

    #[test]
    fn sse_chunking_does_not_matter_for_bytes(
        stream in prop::collection::vec(any::<u8>(), 0..256),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
        max in 1..64usize,
    ) {
        check_chunking(&stream, &cuts, 1 << 20)?;
        check_chunking(&stream, &cuts, max)?;
    }
}
