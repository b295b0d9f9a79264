//! The correctness checks of `bench proxy`, which make it fail (its numbers never do): the
//! `full` server's policy lets the bench's call through and refuses a tool it denies, and
//! every request of the load is answered, forwarded and audited.
use std::path::Path;

use serde_json::{Value, json};

use super::{FULL, client};
use crate::host::Lab;

pub struct Check {
    /// The namespace (site) checked.
    pub site: String,
    pub what: String,
    pub ok: bool,
    pub detail: String,
}

impl Check {
    pub fn json(&self) -> Value {
        json!({"site": self.site, "check": self.what, "ok": self.ok, "detail": self.detail})
    }
}

/// The `full` server's policy, before the load: `echo` (the bench's call) is forwarded,
/// `delete_repository` is refused as an unknown tool; both with `token`, over TLS (`ca`).
pub fn policy(lab: &Lab, ca: &Path, token: &str) -> Vec<Check> {
    let call = |tool: &str| {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"{tool}","arguments":{{"text":"hi"}}}}}}"#
        );
        let (ca, headers) = (ca.to_owned(), format!("Authorization: Bearer {token}\r\n"));
        lab.in_ns(move || client::exchange(&ca, &format!("https:{FULL}"), &headers, &body))
    };
    let check =
        |what: &str, answer: crate::Result<(String, String)>, ok: &dyn Fn(&Value) -> bool| {
            let (passed, detail) = match answer {
                Ok((status, body)) => {
                    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                    (
                        status == "200" && ok(&v),
                        format!("{status} {}", body.trim()),
                    )
                }
                Err(e) => (false, e),
            };
            Check {
                site: lab.name.clone(),
                what: what.into(),
                ok: passed,
                detail,
            }
        };
    vec![
        check(
            "the policy permits the bench's call (full)",
            call("echo"),
            &|v| v.get("result").is_some(),
        ),
        check(
            "the policy refuses a denied tool (full)",
            call("delete_repository"),
            &|v| v["error"]["code"] == -32602,
        ),
    ]
}

/// What a site's clients, upstream and audit log counted over the load.
pub struct Counts {
    /// Requests through Moat the clients counted as answered (measured runs).
    pub answered: u64,
    /// Non-2xx answers, connection errors (wrk), failed calls (latency client).
    pub bad_status: u64,
    pub errors: u64,
    pub failed: u64,
    /// Requests the upstream served from Moat (warm-up and cut-off ones too).
    pub served: u64,
    /// `kind: request` records in the audit log.
    pub audited: u64,
}

/// Every request answered 2xx, every answered one forwarded, every forwarded one audited.
pub fn after_load(site: &str, c: &Counts) -> Vec<Check> {
    let check = |what: &str, ok: bool, detail: String| Check {
        site: site.into(),
        what: what.into(),
        ok,
        detail,
    };
    vec![
        check(
            "every request answered with 2xx",
            c.bad_status + c.errors + c.failed == 0,
            format!(
                "{} answered through Moat; non-2xx {}, connection errors {}, failed calls {}",
                c.answered, c.bad_status, c.errors, c.failed
            ),
        ),
        check(
            "every answered request forwarded",
            c.served >= c.answered,
            format!(
                "the upstream served {} from Moat (warm-up included), the clients counted {}",
                c.served, c.answered
            ),
        ),
        check(
            "every forwarded request audited",
            c.audited >= c.served,
            format!("{} request records for {} forwarded", c.audited, c.served),
        ),
    ]
}
