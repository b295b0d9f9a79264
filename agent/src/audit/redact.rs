//! Tool-call arguments as the audit record shows them: values under secret-looking keys, and
//! secret-looking values anywhere (cloud keys, bearer tokens, JWTs, private keys, API tokens),
//! are replaced by `[REDACTED]` markers; long strings are cut. Tokens never reach the log.
use regex::{Regex, RegexSet};
use serde_json::Value;

/// Keys (case-insensitive substrings) whose values are never logged.
pub const DEFAULT_KEYS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "apikey",
    "api_key",
    "api-key",
    "authorization",
    "credential",
    "private_key",
    "privatekey",
    "cookie",
];

/// Value detectors: (name, pattern). A match is replaced wherever it appears in a string.
pub const DEFAULT_VALUES: &[(&str, &str)] = &[
    ("aws_access_key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    (
        "private_key",
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)",
    ),
    ("bearer", r"(?i)\bbearer\s+[A-Za-z0-9\-._~+/]+=*"),
    (
        "jwt",
        r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*",
    ),
    ("github_token", r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
    ("slack_token", r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    (
        "aws_secret_key",
        r"(?i)aws.{0,20}?['\x22:=\s][A-Za-z0-9/+]{40}\b",
    ),
];

/// Strings longer than this are cut in the record.
const MAX_STRING: usize = 1024;

pub struct Redactor {
    keys: Vec<String>,
    values: Vec<(String, Regex)>,
    any: RegexSet,
}

impl Redactor {
    /// The default rules plus `keys` and `values` (name, pattern) from the config.
    pub fn new(keys: &[String], values: &[(String, String)]) -> Result<Self, String> {
        let keys: Vec<String> = DEFAULT_KEYS
            .iter()
            .map(|k| k.to_string())
            .chain(keys.iter().map(|k| k.to_ascii_lowercase()))
            .collect();
        let mut all: Vec<(String, String)> = DEFAULT_VALUES
            .iter()
            .map(|(n, p)| (n.to_string(), p.to_string()))
            .collect();
        all.extend(values.iter().cloned());
        let compiled = all
            .iter()
            .map(|(n, p)| {
                Regex::new(p)
                    .map(|r| (n.clone(), r))
                    .map_err(|e| format!("redaction pattern {n}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let any = RegexSet::new(all.iter().map(|(_, p)| p)).map_err(|e| e.to_string())?;
        Ok(Self {
            keys,
            values: compiled,
            any,
        })
    }

    /// `v` with secrets replaced.
    pub fn apply(&self, v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| {
                        let lower = k.to_ascii_lowercase();
                        if self.keys.iter().any(|s| lower.contains(s.as_str())) {
                            (k.clone(), Value::String("[REDACTED]".into()))
                        } else {
                            (k.clone(), self.apply(v))
                        }
                    })
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.apply(x)).collect()),
            Value::String(s) => Value::String(self.string(s)),
            other => other.clone(),
        }
    }

    fn string(&self, s: &str) -> String {
        let mut out = if self.any.is_match(s) {
            let mut t = s.to_string();
            for (name, re) in &self.values {
                t = re
                    .replace_all(&t, format!("[REDACTED:{name}]").as_str())
                    .into_owned();
            }
            t
        } else {
            s.to_string()
        };
        if out.len() > MAX_STRING {
            let mut cut = MAX_STRING;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            let n = out.len();
            out.truncate(cut);
            out.push_str(&format!("…[{n} bytes]"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn planted_secrets_never_survive() {
        let r = Redactor::new(&["ssn".into()], &[("ticket".into(), r"TCK-\d{6}".into())]).unwrap();
        let pem =
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\n-----END RSA PRIVATE KEY-----";
        let jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlX2J5dGVz";
        let args = json!({
            "path": "/srv/data/a.csv",
            "note": "use AKIAIOSFODNN7EXAMPLE with the key",
            "header": format!("Authorization: Bearer {jwt}"),
            "nested": {"deep": [pem, "ghp_0123456789abcdefghijklmnopqrstuvwxyz01"]},
            "Password": "hunter2",
            "db_token": "t0k3n",
            "ssn": "123-45-6789",
            "text": "see TCK-123456",
            "count": 3,
        });
        let out = r.apply(&args).to_string();
        for secret in [
            "AKIAIOSFODNN7EXAMPLE",
            jwt,
            "MIIEowIBAAKCAQEA7",
            "ghp_0123456789",
            "hunter2",
            "t0k3n",
            "123-45-6789",
            "TCK-123456",
        ] {
            assert!(!out.contains(secret), "{secret} in {out}");
        }
        assert!(out.contains("/srv/data/a.csv"), "{out}");
        assert!(out.contains("[REDACTED:aws_access_key]"), "{out}");
        assert!(out.contains("\"count\":3"), "{out}");
        let long = r.apply(&json!("x".repeat(5000))).to_string();
        assert!(long.len() < 1100 && long.contains("[5000 bytes]"), "{long}");
        assert!(Redactor::new(&[], &[("bad".into(), "(".into())]).is_err());
    }
}
