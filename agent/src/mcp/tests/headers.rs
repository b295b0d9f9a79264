//! `check_headers`: `Mcp-Method` and `Mcp-Name` against the body, plain and base64-wrapped.
use serde_json::json;

use super::one;
use crate::mcp::{DecodeError, Revision, check_headers, jsonrpc::Message};

const NEW: Revision = Revision::V2026_07_28;
const OLD: Revision = Revision::V2025_06_18;

fn call(name: &str) -> Message {
    one(&json!({"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":name}}).to_string())
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    format!(
        "=?base64?{}?=",
        base64::engine::general_purpose::STANDARD.encode(s)
    )
}

fn mismatch(r: Result<(), DecodeError>) -> String {
    match r {
        Err(DecodeError::HeaderMismatch { reason, .. }) => reason,
        other => panic!("expected a header mismatch, got {other:?}"),
    }
}

#[test]
fn matching_headers_pass() {
    let m = call("get_weather");
    for revision in [NEW, OLD, Revision::V2025_03_26] {
        assert_eq!(
            check_headers(&m, Some("tools/call"), Some("get_weather"), revision),
            Ok(())
        );
    }
    let m = one(
        r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///a b.txt"}}"#,
    );
    assert_eq!(
        check_headers(&m, Some("resources/read"), Some("file:///a b.txt"), NEW),
        Ok(())
    );
    let m = one(r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"review"}}"#);
    assert_eq!(
        check_headers(&m, Some("prompts/get"), Some("review"), NEW),
        Ok(())
    );
    let m = one(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
    assert_eq!(check_headers(&m, Some("tools/list"), None, NEW), Ok(()));
}

#[test]
fn required_from_2026_07_28_on_requests() {
    let m = call("t");
    assert!(
        mismatch(check_headers(&m, None, Some("t"), NEW)).contains("Mcp-Method header is missing")
    );
    assert!(
        mismatch(check_headers(&m, Some("tools/call"), None, NEW))
            .contains("Mcp-Name header is missing")
    );
    let m =
        one(r#"{"jsonrpc":"2.0","id":1,"method":"resources/subscribe","params":{"uri":"x:y"}}"#);
    assert!(
        mismatch(check_headers(&m, Some("resources/subscribe"), None, NEW)).contains("Mcp-Name")
    );
    let m = one(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#);
    assert!(mismatch(check_headers(&m, None, None, NEW)).contains("Mcp-Method"));
    // Older revisions: optional.
    assert_eq!(check_headers(&call("t"), None, None, OLD), Ok(()));
    assert_eq!(
        check_headers(&call("t"), Some("tools/call"), None, OLD),
        Ok(())
    );
    // Notifications: the spec leaves their headers open, so only present ones are checked.
    let n = one(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    assert_eq!(check_headers(&n, None, None, NEW), Ok(()));
    assert_eq!(
        check_headers(&n, Some("notifications/initialized"), None, NEW),
        Ok(())
    );
    mismatch(check_headers(
        &n,
        Some("notifications/cancelled"),
        None,
        NEW,
    ));
}

#[test]
fn present_headers_must_match_in_every_revision() {
    let m = call("read_file");
    for revision in [NEW, OLD, Revision::V2024_11_05] {
        let reason = mismatch(check_headers(
            &m,
            Some("tools/list"),
            Some("read_file"),
            revision,
        ));
        assert!(
            reason.contains("Mcp-Method") && reason.contains("tools/list"),
            "{reason}"
        );
        let reason = mismatch(check_headers(
            &m,
            Some("tools/call"),
            Some("list_files"),
            revision,
        ));
        assert!(
            reason.contains("Mcp-Name") && reason.contains("list_files"),
            "{reason}"
        );
        // Exact comparison: no case folding, no trimming.
        mismatch(check_headers(
            &m,
            Some("Tools/Call"),
            Some("read_file"),
            revision,
        ));
        mismatch(check_headers(
            &m,
            Some("tools/call"),
            Some("READ_FILE"),
            revision,
        ));
        mismatch(check_headers(
            &m,
            Some("tools/call"),
            Some(" read_file"),
            revision,
        ));
    }
    // A name header where the body names nothing, and a method header on a response.
    let m = one(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
    mismatch(check_headers(&m, Some("tools/list"), Some("x"), NEW));
    let r = one(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#);
    assert_eq!(check_headers(&r, None, None, NEW), Ok(()));
    mismatch(check_headers(&r, Some("tools/call"), None, OLD));
}

#[test]
fn mismatch_carries_the_request_id() {
    let e = check_headers(&call("t"), Some("ping"), Some("t"), NEW).unwrap_err();
    assert_eq!((e.id(), e.jsonrpc_code()), (Some(&json!(5)), -32020));
    let n = one(r#"{"jsonrpc":"2.0","method":"notifications/cancelled"}"#);
    let e = check_headers(&n, Some("ping"), None, NEW).unwrap_err();
    assert_eq!(e.id(), None);
}

#[test]
fn base64_values() {
    let name = "weather/東京";
    let m = call(name);
    assert_eq!(
        check_headers(&m, Some("tools/call"), Some(&b64(name)), NEW),
        Ok(())
    );
    // An ASCII value may be wrapped too; padding is optional.
    assert_eq!(
        check_headers(
            &call("ab"),
            Some(&b64("tools/call")),
            Some("=?base64?YWI?="),
            NEW
        ),
        Ok(())
    );
    assert_eq!(
        check_headers(
            &call(" padded "),
            Some("tools/call"),
            Some(&b64(" padded ")),
            NEW
        ),
        Ok(())
    );
    // Wrapping a different value, broken base64, or bytes that are not UTF-8.
    mismatch(check_headers(
        &m,
        Some("tools/call"),
        Some(&b64("weather/大阪")),
        NEW,
    ));
    let reason = mismatch(check_headers(
        &m,
        Some("tools/call"),
        Some("=?base64?!!!?="),
        NEW,
    ));
    assert!(reason.contains("base64"), "{reason}");
    let reason = mismatch(check_headers(
        &m,
        Some("tools/call"),
        Some("=?base64?/w==?="),
        NEW,
    ));
    assert!(reason.contains("UTF-8"), "{reason}");
    // The markers are case-sensitive: anything else is a literal value.
    let upper = b64(name).replace("base64", "BASE64");
    mismatch(check_headers(&m, Some("tools/call"), Some(&upper), NEW));
    let literal = "=?BASE64?eA==?=";
    assert_eq!(
        check_headers(&call(literal), Some("tools/call"), Some(literal), NEW),
        Ok(())
    );
    // A raw non-ASCII header value is refused even when it equals the body.
    let reason = mismatch(check_headers(&m, Some("tools/call"), Some(name), NEW));
    assert!(reason.contains("not visible ASCII"), "{reason}");
    mismatch(check_headers(
        &call("a\nb"),
        Some("tools/call"),
        Some("a\nb"),
        OLD,
    ));
    assert_eq!(
        check_headers(&call("a\nb"), Some("tools/call"), Some(&b64("a\nb")), OLD),
        Ok(())
    );
}

#[test]
fn encoded_values_decode_to_themselves() {
    use crate::mcp::{encode_value, headers::decode_value};
    for v in [
        "echo",
        "a b",
        "weather/東京",
        " padded ",
        "",
        "tab\there",
        "file:///x",
    ] {
        let e = encode_value(v);
        assert_eq!(decode_value(&e).unwrap(), v, "{v} -> {e}");
        assert!(e.bytes().all(|b| (0x20..0x7f).contains(&b)), "{e}");
    }
    assert_eq!(encode_value("echo"), "echo");
}
