//! `decode`: message kinds, ids, params of the methods the proxy decides on, duplicate keys.
use serde_json::json;

use super::{call, dec, is_invalid_params, is_invalid_request, one};
use crate::mcp::{DecodeError, Kind, Limits, Revision, decode};

#[test]
fn request_notification_response() {
    let m = one(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
    assert_eq!(
        (m.kind, m.id, m.method.as_deref()),
        (Kind::Request, Some(json!(1)), Some("tools/list"))
    );
    assert_eq!(
        (
            m.tool,
            m.arguments,
            m.resource,
            m.prompt,
            m.protocol_version
        ),
        (None, None, None, None, None)
    );

    let m = one(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    assert_eq!(
        (m.kind, m.id, m.method.as_deref()),
        (Kind::Notification, None, Some("notifications/initialized"))
    );

    let m = one(r#"{"jsonrpc":"2.0","id":"s-1","result":{}}"#);
    assert_eq!(
        (m.kind, m.id, m.method),
        (Kind::Response, Some(json!("s-1")), None)
    );

    let m = one(r#"{"jsonrpc":"2.0","id":3,"error":{"code":-1,"message":"no"}}"#);
    assert_eq!((m.kind, m.id), (Kind::Response, Some(json!(3))));
}

#[test]
fn ids_are_strings_or_integers() {
    for id in [
        r#""""#,
        r#""abc""#,
        "0",
        "-5",
        "18446744073709551615",
        "-9223372036854775808",
    ] {
        let m = one(&format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#));
        assert_eq!(m.id, Some(serde_json::from_str(id).unwrap()), "{id}");
    }
    for id in [
        "null",
        "1.5",
        "1.0",
        "1e3",
        "-0",
        "18446744073709551616",
        "{}",
        "[1]",
        "true",
    ] {
        let r = dec(&format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#));
        assert!(is_invalid_request(&r), "request id {id}: {r:?}");
        let r = dec(&format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{}}}}"#));
        assert!(is_invalid_request(&r), "response id {id}: {r:?}");
    }
}

#[test]
fn envelope_rules() {
    let cases = [
        r#"{"id":1,"method":"ping"}"#,
        r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
        r#"{"jsonrpc":2.0,"id":1,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":7}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":null}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping","result":{}}"#,
        r#"{"jsonrpc":"2.0","method":"ping","error":{"code":1,"message":"x"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{},"error":{"code":1,"message":"x"}}"#,
        r#"{"jsonrpc":"2.0","id":1}"#,
        r#"{"jsonrpc":"2.0"}"#,
        r#"{"jsonrpc":"2.0","result":{}}"#,
        r#"{"jsonrpc":"2.0","id":null,"error":{"code":1,"message":"x"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":[]}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":null}"#,
        r#"{"jsonrpc":"2.0","id":1,"error":"bad"}"#,
        r#"{"jsonrpc":"2.0","id":1,"error":{"code":1.5,"message":"x"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"error":{"code":1}}"#,
        r#"{"jsonrpc":"2.0","id":1,"error":{"message":"x"}}"#,
        "42",
        r#""tools/call""#,
        "null",
        "true",
    ];
    for body in cases {
        let r = dec(body);
        assert!(is_invalid_request(&r), "{body}: {r:?}");
    }
}

#[test]
fn invalid_request_carries_a_requests_id_only() {
    let e = dec(r#"{"jsonrpc":"1.0","id":9,"method":"ping"}"#).unwrap_err();
    assert_eq!(e.id(), Some(&json!(9)));
    let e = dec(r#"{"jsonrpc":"1.0","id":9,"result":{}}"#).unwrap_err();
    assert_eq!(e.id(), None);
    let e = dec(r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#).unwrap_err();
    assert_eq!(e.id(), None);
}

#[test]
fn tools_call() {
    let m = one(&call(
        r#"{"name":"read_file","arguments":{"path":"/etc/passwd","n":[1,{"x":null}]}}"#,
    ));
    assert_eq!(
        (m.kind, m.method.as_deref(), m.tool.as_deref()),
        (Kind::Request, Some("tools/call"), Some("read_file"))
    );
    assert_eq!(
        m.arguments,
        Some(json!({"path":"/etc/passwd","n":[1,{"x":null}]}))
    );

    let m = one(&call(r#"{"name":"t","_meta":{"progressToken":1}}"#));
    assert_eq!((m.tool.as_deref(), m.arguments), (Some("t"), None));

    let m = one(&call(r#"{"name":"t","arguments":{}}"#));
    assert_eq!(m.arguments, Some(json!({})));
}

#[test]
fn a_request_method_without_an_id_is_refused() {
    // A "notification" named tools/call would reach the server without being decided as a call.
    for body in [
        r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"rm"}}"#,
        r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":1}}"#,
        r#"{"jsonrpc":"2.0","method":"ping"}"#,
        r#"{"jsonrpc":"2.0","method":"notifications"}"#,
        r#"{"jsonrpc":"2.0","method":"Notifications/initialized"}"#,
    ] {
        let r = dec(body);
        assert!(is_invalid_request(&r), "{body}: {r:?}");
        assert_eq!(r.unwrap_err().jsonrpc_code(), -32600);
    }
    // In a batch too: the whole message is refused.
    let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"tools/call","params":{"name":"rm"}}]"#;
    let r = decode(batch.as_bytes(), Revision::V2025_03_26, &Limits::default());
    assert!(is_invalid_request(&r), "{r:?}");
    for ok in [
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":3}}"#,
    ] {
        assert_eq!(one(ok).kind, Kind::Notification, "{ok}");
    }
    assert_eq!(
        one(r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"a"}}"#)
            .cancels,
        Some(json!("a"))
    );
}

#[test]
fn the_body_forwarded_is_the_decoded_json_encoded_again() {
    // Whatever the client's spelling (escapes, whitespace, numbers beyond 64 bits), the server
    // gets the values Moat decided on.
    let d = dec(
        "{ \"jsonrpc\":\"2.0\", \"id\":1,\"method\":\"tools/call\",\"params\":{\"na\\u006de\":\"e\\u0063ho\",\"arguments\":{\"n\":123456789012345678901234567890}}}\n",
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&d.body).unwrap();
    assert_eq!(v["params"]["name"], "echo");
    assert_eq!(d.messages[0].tool.as_deref(), Some("echo"));
    let n = &v["params"]["arguments"]["n"];
    assert_eq!(n, &d.messages[0].arguments.as_ref().unwrap()["n"]);
    assert!(n.is_f64(), "{n}");
    assert!(!String::from_utf8_lossy(&d.body).contains("\\u"));
}

#[test]
fn tools_call_invalid_params() {
    let id = json!(7);
    for params in [
        "[]",
        r#""read_file""#,
        "null",
        "{}",
        r#"{"name":null}"#,
        r#"{"name":1}"#,
        r#"{"name":["a"]}"#,
        r#"{"arguments":{}}"#,
        r#"{"name":"t","arguments":[]}"#,
        r#"{"name":"t","arguments":"{}"}"#,
        r#"{"name":"t","arguments":null}"#,
        r#"{"name":"t","arguments":1}"#,
    ] {
        let r = dec(&call(params));
        assert!(is_invalid_params(&r, Some(&id)), "{params}: {r:?}");
    }
    let r = dec(r#"{"jsonrpc":"2.0","id":7,"method":"tools/call"}"#);
    assert!(is_invalid_params(&r, Some(&id)), "{r:?}");
    // Any method: params, when present, is an object.
    let r = dec(r#"{"jsonrpc":"2.0","id":7,"method":"ping","params":[1]}"#);
    assert!(is_invalid_params(&r, Some(&id)), "{r:?}");
}

#[test]
fn name_after_large_arguments() {
    // A peer passes only a prefix of the body to its policy: the name must come from the whole body.
    let filler = "x".repeat(3 * 1024 * 1024);
    let body = call(&format!(
        r#"{{"arguments":{{"pad":"{filler}","name":"decoy"}},"name":"delete_everything"}}"#
    ));
    let m = one(&body);
    assert_eq!(m.tool.as_deref(), Some("delete_everything"));
    assert_eq!(
        m.arguments.as_ref().and_then(|a| a.get("name")),
        Some(&json!("decoy"))
    );

    let big: Vec<String> = (0..20_000)
        .map(|i| format!(r#""k{i}":[{i},{{"name":"no"}}]"#))
        .collect();
    let body = call(&format!(
        r#"{{"arguments":{{{}}},"name":"real"}}"#,
        big.join(",")
    ));
    assert_eq!(one(&body).tool.as_deref(), Some("real"));
}

#[test]
fn duplicate_keys_are_parse_errors() {
    let cases = [
        call(r#"{"name":"allowed","name":"denied"}"#),
        call(r#"{"name":"allowed","arguments":{},"name":"denied"}"#),
        call(r#"{"name":"allowed","na\u006de":"denied"}"#),
        call(r#"{"name":"t","arguments":{"path":"/tmp","path":"/etc"}}"#),
        call(r#"{"name":"t","arguments":{"a":[{"b":1,"b":2}]}}"#),
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call","params":{"name":"x"}}"#.into(),
        r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}"#.into(),
        r#"{"jsonrpc":"2.0","jsonrpc":"2.0","id":1,"method":"ping"}"#.into(),
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"},"params":{"name":"b"}}"#.into(),
    ];
    for body in cases {
        let r = dec(&body);
        assert!(
            matches!(&r, Err(DecodeError::Parse(m)) if m.contains("duplicate key")),
            "{body}: {r:?}"
        );
    }
}

#[test]
fn resources_prompts_initialize() {
    for method in [
        "resources/read",
        "resources/subscribe",
        "resources/unsubscribe",
    ] {
        let m = one(&format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{{"uri":"file:///etc/hosts"}}}}"#
        ));
        assert_eq!(m.resource.as_deref(), Some("file:///etc/hosts"), "{method}");
        for params in [
            "{}",
            r#"{"uri":5}"#,
            r#"{"uri":null}"#,
            r#"{"name":"file:///x"}"#,
        ] {
            let r = dec(&format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{params}}}"#
            ));
            assert!(
                is_invalid_params(&r, Some(&json!(1))),
                "{method} {params}: {r:?}"
            );
        }
    }
    let m = one(
        r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"review","arguments":{"a":"b"}}}"#,
    );
    assert_eq!(
        (m.prompt.as_deref(), m.tool, m.arguments),
        (Some("review"), None, None)
    );
    let r = dec(r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":{}}}"#);
    assert!(is_invalid_params(&r, Some(&json!(1))), "{r:?}");

    let m = one(
        r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}"#,
    );
    assert_eq!(m.protocol_version.as_deref(), Some("2025-06-18"));
    let r = dec(
        r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":20250618}}"#,
    );
    assert!(is_invalid_params(&r, Some(&json!(0))), "{r:?}");
    // Methods the proxy does not read keep their params to themselves.
    let m =
        one(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"cursor":"c","name":"x"}}"#);
    assert_eq!((m.tool, m.prompt), (None, None));
}

#[test]
fn batches() {
    let body = r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}},
                   {"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":0}},
                   {"jsonrpc":"2.0","id":"s1","result":{}}]"#;
    for revision in [Revision::V2025_03_26, Revision::V2024_11_05] {
        let d = decode(body.as_bytes(), revision, &Limits::default()).unwrap();
        assert!(d.batch);
        let kinds: Vec<Kind> = d.messages.iter().map(|m| m.kind).collect();
        assert_eq!(kinds, [Kind::Request, Kind::Notification, Kind::Response]);
        assert_eq!(d.messages[0].tool.as_deref(), Some("a"));
    }
    for revision in [
        Revision::V2025_06_18,
        Revision::V2025_11_25,
        Revision::V2026_07_28,
    ] {
        for body in [body, "[]", r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#] {
            let r = decode(body.as_bytes(), revision, &Limits::default());
            assert_eq!(r, Err(DecodeError::BatchNotAllowed { revision }));
        }
    }
    let old = |b: &str| decode(b.as_bytes(), Revision::V2025_03_26, &Limits::default());
    let d = old(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#).unwrap();
    assert!(d.batch && d.messages.len() == 1);
    // One list request a batch, so that each list result is read as the list it answers.
    assert!(
        old(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"tools/list"}]"#)
            .is_ok()
    );
    assert!(is_invalid_request(&old(
        r#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","id":2,"method":"prompts/list"}]"#
    )));
    assert!(is_invalid_request(&old("[]")));
    assert!(is_invalid_request(&old(
        r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},5]"#
    )));
    assert!(is_invalid_request(&old(
        r#"[[{"jsonrpc":"2.0","id":1,"method":"ping"}]]"#
    )));
    let r = old(
        r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"tools/call"}]"#,
    );
    assert!(is_invalid_params(&r, Some(&json!(2))), "{r:?}");
}

#[test]
fn parse_errors() {
    let cases: [&[u8]; 12] = [
        b"",
        b"   ",
        b"{",
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"",
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}x",
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}{}",
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"},",
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"p\xffing\"}",
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\xff",
        b"\xef\xbb\xbf{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}",
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\\ud800\"}",
        b"{'jsonrpc':'2.0'}",
    ];
    for body in cases {
        let r = decode(body, Revision::V2025_06_18, &Limits::default());
        assert!(
            matches!(r, Err(DecodeError::Parse(_))),
            "{}: {r:?}",
            String::from_utf8_lossy(body)
        );
    }
    let m = one(" \n\t{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\r\n ");
    assert_eq!(m.method.as_deref(), Some("ping"));
}

#[test]
fn resource_uris_are_decided_and_forwarded_normalised() {
    for method in [
        "resources/read",
        "resources/subscribe",
        "resources/unsubscribe",
    ] {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{{"uri":" FILE://localhost/x/../secret"}}}}"#
        );
        let d = dec(&body).unwrap();
        assert_eq!(d.messages[0].resource.as_deref(), Some("file:///secret"));
        let sent: serde_json::Value = serde_json::from_slice(&d.body).unwrap();
        assert_eq!(sent["params"]["uri"], "file:///secret", "{method}");
        let r = dec(&body.replace(" FILE://localhost/x/../secret", "secret"));
        assert!(is_invalid_params(&r, Some(&json!(1))), "{r:?}");
    }
}

/// Each call of a batch is decided on its own arguments, and the body the upstream gets still
/// carries them all (they are taken out of what was decoded only once it is encoded).
#[test]
fn each_call_of_a_batch_keeps_its_arguments() {
    let body = r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"x":1}}},
                   {"jsonrpc":"2.0","id":2,"method":"tools/list","params":{"arguments":{"y":2}}},
                   {"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"b"}},
                   {"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"c","arguments":{"z":[3]}}}]"#;
    let d = decode(body.as_bytes(), Revision::V2025_03_26, &Limits::default()).unwrap();
    let args: Vec<_> = d.messages.iter().map(|m| m.arguments.clone()).collect();
    assert_eq!(
        args,
        [Some(json!({"x": 1})), None, None, Some(json!({"z": [3]}))]
    );
    let sent: serde_json::Value = serde_json::from_slice(&d.body).unwrap();
    assert_eq!(
        sent,
        serde_json::from_str::<serde_json::Value>(body).unwrap()
    );
}
