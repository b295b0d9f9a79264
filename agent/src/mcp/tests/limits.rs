//! Limits (size, batch, depth), error codes and bodies, revisions, and `tool_names`.
use serde_json::json;

use super::{dec, one};
use crate::mcp::{DecodeError, Limits, MAX_DEPTH_CAP, Revision, decode, error_body, tool_names};

const PING: &str = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;

#[test]
fn body_size_is_checked_before_parsing() {
    let limits = Limits {
        max_body: PING.len(),
        ..Limits::default()
    };
    assert!(decode(PING.as_bytes(), Revision::V2025_06_18, &limits).is_ok());
    let limits = Limits {
        max_body: PING.len() - 1,
        ..Limits::default()
    };
    let r = decode(PING.as_bytes(), Revision::V2025_06_18, &limits);
    assert_eq!(
        r,
        Err(DecodeError::TooLarge {
            size: PING.len(),
            limit: PING.len() - 1,
            unit: "bytes"
        })
    );
    // Even garbage is refused for its size, not its syntax.
    let r = decode(
        &[0xff; 100],
        Revision::V2025_06_18,
        &Limits {
            max_body: 10,
            ..Limits::default()
        },
    );
    assert!(matches!(r, Err(DecodeError::TooLarge { .. })), "{r:?}");
    assert_eq!(
        Limits::default(),
        Limits {
            max_body: 4 << 20,
            max_batch: 100,
            max_depth: 64
        }
    );
}

#[test]
fn batch_length() {
    let limits = Limits {
        max_batch: 3,
        ..Limits::default()
    };
    let batch = |n: usize| format!("[{}]", vec![PING; n].join(","));
    let d = decode(batch(3).as_bytes(), Revision::V2025_03_26, &limits).unwrap();
    assert_eq!(d.messages.len(), 3);
    let r = decode(batch(4).as_bytes(), Revision::V2025_03_26, &limits);
    assert!(
        matches!(
            r,
            Err(DecodeError::TooLarge {
                size: 4,
                limit: 3,
                ..
            })
        ),
        "{r:?}"
    );
}

fn nested(depth: usize) -> String {
    // A message whose arguments nest so that the whole body is `depth` levels deep.
    let inner = depth - 3; // message object, params, arguments
    let value = format!("{}{}", "[".repeat(inner), "]".repeat(inner));
    format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"t","arguments":{{"v":{value}}}}}}}"#
    )
}

#[test]
fn depth_limit() {
    let limits = Limits {
        max_depth: 10,
        ..Limits::default()
    };
    assert!(decode(nested(10).as_bytes(), Revision::V2025_06_18, &limits).is_ok());
    let r = decode(nested(11).as_bytes(), Revision::V2025_06_18, &limits);
    assert_eq!(r, Err(DecodeError::TooDeep { limit: 10 }));
    assert!(dec(&nested(64)).is_ok());
    assert_eq!(dec(&nested(65)), Err(DecodeError::TooDeep { limit: 64 }));
    // The cap applies whatever the caller asks for.
    let huge = Limits {
        max_depth: usize::MAX,
        ..Limits::default()
    };
    assert!(
        decode(
            nested(MAX_DEPTH_CAP).as_bytes(),
            Revision::V2025_06_18,
            &huge
        )
        .is_ok()
    );
    let r = decode(
        nested(MAX_DEPTH_CAP + 1).as_bytes(),
        Revision::V2025_06_18,
        &huge,
    );
    assert_eq!(
        r,
        Err(DecodeError::TooDeep {
            limit: MAX_DEPTH_CAP
        })
    );
}

#[test]
fn very_deep_input_does_not_overflow_the_stack() {
    let n = 100_000;
    let bodies = [
        "[".repeat(n),
        format!("{}{}", "[".repeat(n), "]".repeat(n)),
        r#"{"a":"#.repeat(n),
        format!("{}1{}", r#"{"a":"#.repeat(n), "}".repeat(n)),
    ];
    for limits in [
        Limits::default(),
        Limits {
            max_depth: usize::MAX,
            ..Limits::default()
        },
    ] {
        for body in &bodies {
            for revision in [Revision::V2025_03_26, Revision::V2026_07_28] {
                let r = decode(body.as_bytes(), revision, &limits);
                assert!(
                    matches!(
                        r,
                        Err(DecodeError::TooDeep { .. } | DecodeError::BatchNotAllowed { .. })
                    ),
                    "{r:?}"
                );
            }
        }
    }
}

#[test]
fn jsonrpc_codes() {
    let e = |r: Result<_, DecodeError>| r.unwrap_err().jsonrpc_code();
    assert_eq!(e(dec("{")), -32700);
    assert_eq!(
        e(dec(r#"{"jsonrpc":"2.0","id":1,"id":1,"method":"ping"}"#)),
        -32700
    );
    assert_eq!(
        e(dec(r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#)),
        -32600
    );
    assert_eq!(e(dec(&format!("[{PING}]"))), -32600);
    assert_eq!(
        e(dec(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#
        )),
        -32602
    );
    let small = Limits {
        max_body: 1,
        ..Limits::default()
    };
    assert_eq!(
        e(decode(PING.as_bytes(), Revision::V2025_06_18, &small)),
        -32600
    );
    assert_eq!(DecodeError::TooDeep { limit: 1 }.jsonrpc_code(), -32600);
    let mismatch = DecodeError::HeaderMismatch {
        id: None,
        reason: "x".into(),
    };
    assert_eq!(mismatch.jsonrpc_code(), -32020);
    let msg = DecodeError::TooLarge {
        size: 5,
        limit: 4,
        unit: "bytes",
    }
    .to_string();
    assert_eq!(msg, "request too large: 5 bytes, the limit is 4");
    let msg = DecodeError::BatchNotAllowed {
        revision: Revision::V2025_06_18,
    }
    .to_string();
    assert!(
        msg.contains("batches are not allowed in protocol revision 2025-06-18"),
        "{msg}"
    );
}

#[test]
fn error_bodies() {
    let e =
        dec(r#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":3}}"#).unwrap_err();
    let body = error_body(e.id(), e.jsonrpc_code(), &e.to_string());
    assert_eq!(body["jsonrpc"], "2.0");
    assert_eq!(body["id"], "a");
    assert_eq!(body["error"]["code"], -32602);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid params: ")
    );
    assert_eq!(
        error_body(None, -32700, "parse error"),
        json!({"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error"}})
    );
}

#[test]
fn error_messages_quote_keys_briefly() {
    let key = "k".repeat(1000);
    let r = dec(&format!(r#"{{"jsonrpc":"2.0","{key}":1,"{key}":2}}"#));
    let Err(DecodeError::Parse(m)) = r else {
        panic!("{r:?}")
    };
    assert!(m.len() < 200, "{m}");
}

#[test]
fn revisions() {
    for r in Revision::ALL {
        assert_eq!(Revision::from_header(r.as_str()), Some(r));
        assert_eq!(r.to_string(), r.as_str());
    }
    for bad in [
        "",
        "2025-06-18 ",
        "2025-6-18",
        "2024-11-04",
        "latest",
        "2026-07-28\0",
    ] {
        assert_eq!(Revision::from_header(bad), None, "{bad:?}");
    }
    assert_eq!(Revision::WITHOUT_HEADER, Revision::V2025_03_26);
    let batches: Vec<bool> = Revision::ALL.iter().map(|r| r.allows_batch()).collect();
    assert_eq!(batches, [true, true, false, false, false]);
    let headers: Vec<bool> = Revision::ALL
        .iter()
        .map(|r| r.requires_standard_headers())
        .collect();
    assert_eq!(headers, [false, false, false, false, true]);
}

#[test]
fn tool_names_of_a_tools_list_result() {
    let msg = json!({"jsonrpc":"2.0","id":2,"result":{"tools":[
        {"name":"b","inputSchema":{"type":"object"}},{"name":"a","description":"x"}],"nextCursor":"n"}});
    assert_eq!(tool_names(&msg), Some(vec!["b".to_owned(), "a".to_owned()]));
    assert_eq!(
        tool_names(&json!({"jsonrpc":"2.0","id":2,"result":{"tools":[]}})),
        Some(vec![])
    );
    for not in [
        json!({"jsonrpc":"2.0","id":2,"result":{}}),
        json!({"jsonrpc":"2.0","id":2,"result":{"tools":{}}}),
        json!({"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"a"},{"title":"b"}]}}),
        json!({"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":1}]}}),
        json!({"jsonrpc":"2.0","id":2,"result":{"tools":["a"]}}),
        json!({"jsonrpc":"2.0","id":2,"result":{"tools":[]},"error":{"code":1,"message":"x"}}),
        json!({"id":2,"result":{"tools":[]}}),
        json!({"jsonrpc":"2.0","id":2,"error":{"code":1,"message":"x"}}),
        json!([{"jsonrpc":"2.0","id":2,"result":{"tools":[]}}]),
        json!("tools"),
    ] {
        assert_eq!(tool_names(&not), None, "{not}");
    }
    // A decoded request is not a result.
    assert_eq!(one(PING).kind, crate::mcp::Kind::Request);
}
