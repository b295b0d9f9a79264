//! The fuzz targets' entry points (`cargo xtask fuzz`): each takes arbitrary bytes, runs one
//! reader of what the network or the operator hands Moat, and checks what must hold for any
//! input. Built only for the fuzzer and for the tests that replay the seeds and every crash.
use std::{
    net::IpAddr,
    sync::{Arc, OnceLock},
    time::{Duration, UNIX_EPOCH},
};

use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use serde_json::Value;

use crate::{
    auth::{self, Authenticator},
    config::{Auth, Issuer, Policy, PolicyMode},
    http::{
        fields::Fields,
        filter::{ListRead, Lister, judge_whole},
    },
    mcp::{Limits, Revision, SseParser, check_headers, decode},
    policy::{Engine, Input},
    vocab::{List, Method, Principal, Process},
};

/// A fuzz target's entry point.
pub type Target = fn(&[u8]);

/// Every target, by name (the directory of its seeds and regressions).
pub const TARGETS: [(&str, Target); 8] = [
    ("mcp_decode", mcp_decode),
    ("headers", headers),
    ("sse", sse),
    ("list_filter", list_filter),
    ("jwt", jwt),
    ("jwks", jwks),
    ("config", config),
    ("cedar", cedar),
];

const REVISIONS: [Revision; 5] = Revision::ALL;

const LIMITS: Limits = Limits {
    max_body: 1 << 20,
    max_batch: 64,
    max_depth: 32,
};

/// The first byte picks a choice among `n`; the rest is the input.
fn split(data: &[u8], n: usize) -> (usize, &[u8]) {
    match data.split_first() {
        Some((b, rest)) => (usize::from(*b) % n, rest),
        None => (0, data),
    }
}

/// A POST body, under the revision the first byte picks. What Moat forwards (its own encoding
/// of what it decoded) must decode to the same messages: the server reads what Moat decided on.
pub fn mcp_decode(data: &[u8]) {
    let (r, body) = split(data, REVISIONS.len());
    let Ok(decoded) = decode(body, REVISIONS[r], &LIMITS) else {
        return;
    };
    let unbounded = Limits {
        max_body: usize::MAX,
        ..LIMITS
    };
    let again = decode(&decoded.body, REVISIONS[r], &unbounded)
        .expect("Moat's own encoding of a body it accepted decodes");
    assert_eq!(again.messages, decoded.messages);
    assert_eq!(again.body, decoded.body);
}

/// Header lines (`name: value`), a blank line, then a body: the MCP header fields, the bearer
/// token, and the `Mcp-Method` / `Mcp-Name` checks against the body's messages.
pub fn headers(data: &[u8]) {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[][..]),
    };
    let mut map = HeaderMap::new();
    for line in head.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let value = line[colon + 1..].trim_ascii_start();
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(value),
        ) {
            map.append(n, v);
        }
    }
    let _ = auth::bearer_token(&map, &Uri::from_static("/mcp"));
    let Ok(fields) = Fields::read(&map) else {
        return;
    };
    let revision = fields
        .protocol_version
        .as_deref()
        .map_or(Some(Revision::WITHOUT_HEADER), Revision::from_header);
    let (Some(revision), Ok(decoded)) = (revision, std::str::from_utf8(body)) else {
        return;
    };
    let Ok(decoded) = decode(decoded.as_bytes(), revision, &LIMITS) else {
        return;
    };
    for m in &decoded.messages {
        let _ = check_headers(
            m,
            fields.mcp_method.as_deref(),
            fields.mcp_name.as_deref(),
            revision,
        );
    }
}

/// An SSE stream, read whole and in chunks of the size the first byte picks: the same events
/// either way (a stream's events must not depend on how the network cut it).
pub fn sse(data: &[u8]) {
    let (size, stream) = split(data, 64);
    let max = 4096;
    let whole = SseParser::new(max).push(stream);
    let mut chunked = SseParser::new(max);
    let mut events = Vec::new();
    let mut failed = false;
    for chunk in stream.chunks(size + 1) {
        match chunked.push(chunk) {
            Ok(mut e) => events.append(&mut e),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    match (whole, failed) {
        (Ok(w), false) => assert_eq!(w, events),
        (Err(_), true) => {}
        (w, failed) => {
            panic!("chunking changed the outcome: whole {w:?}, chunked failed: {failed}")
        }
    }
    let mut blocks = SseParser::with_blocks(max);
    let _ = blocks.push_blocks(stream);
}

/// A list result (the list the first byte picks) filtered by a policy: what the client gets
/// is JSON.
pub fn list_filter(data: &[u8]) {
    let (l, body) = split(data, 3);
    let list = [List::Tools, List::Resources, List::Prompts][l];
    let read = ListRead {
        list,
        lister: Some(Lister {
            list,
            engine: engine().clone(),
            server: "files".into(),
            principal: Arc::new(principal(serde_json::Map::new())),
            source_ip: IpAddr::from([10, 0, 0, 1]),
            tls: None,
            session: None,
            process: None,
        }),
        pins: None,
    };
    if let Ok((bytes, _)) = judge_whole(&read, body) {
        serde_json::from_slice::<Value>(&bytes).expect("a passed list result is JSON");
    }
}

const ISS: &str = "https://auth.example.com";
const AUD: &str = "https://files.example.com/mcp";

struct Tokens {
    runtime: tokio::runtime::Runtime,
    auth: Authenticator,
    key: auth::SigningKey,
}

fn tokens() -> &'static Tokens {
    static T: OnceLock<Tokens> = OnceLock::new();
    T.get_or_init(|| {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("a key");
        let key = auth::SigningKey::from_pem_text(&pair.serialize_pem()).expect("a key");
        let config = Auth {
            issuer: Issuer::Local(ISS.into()),
            audience: AUD.into(),
            authorization_servers: vec![],
            scopes_supported: vec!["mcp:tools".into()],
            required_scopes: vec!["mcp:tools".into()],
            algorithms: vec![
                jsonwebtoken::Algorithm::ES256,
                jsonwebtoken::Algorithm::RS256,
            ],
            leeway: Duration::from_secs(30),
            jwks_refresh: Duration::from_secs(300),
            jwks_max_stale: Duration::from_secs(3600),
            ca_file: None,
            introspection: None,
        };
        let set = auth::KeySet {
            keys: vec![auth::Key {
                kid: Some(key.kid.clone()),
                alg: Some(jsonwebtoken::Algorithm::ES256),
                key: key.decoding.clone(),
            }],
        };
        let keys = auth::KeySource::Static(Arc::new(set));
        Tokens {
            runtime: tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a runtime"),
            auth: Authenticator::new(&config, AUD, "/mcp", keys).expect("an authenticator"),
            key,
        }
    })
}

/// A bearer token: as sent (first byte even), or claims (the rest, as JSON) signed with the
/// issuer's key, so the claims are read past the signature.
pub fn jwt(data: &[u8]) {
    let t = tokens();
    let (mode, rest) = split(data, 2);
    let token = if mode == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        let Ok(claims) = serde_json::from_slice::<Value>(rest) else {
            return;
        };
        t.key.sign("at+jwt", &claims).expect("signing")
    };
    let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) else {
        return;
    };
    let mut h = HeaderMap::new();
    h.insert(http::header::AUTHORIZATION, value);
    let uri = Uri::from_static("/mcp");
    if let Ok((p, _)) = t.runtime.block_on(t.auth.authenticate(&h, &uri)) {
        assert!(!p.sub.is_empty());
        assert!(p.scopes.iter().any(|s| s == "mcp:tools"));
    }
}

/// A JWKS document: the keys Moat would use, and a lookup in them.
pub fn jwks(data: &[u8]) {
    let Ok(set) = serde_json::from_slice::<jsonwebtoken::jwk::JwkSet>(data) else {
        return;
    };
    let (keys, _) = auth::KeySet::from_jwks(&set);
    for k in &keys.keys {
        let _ = keys.find(k.kid.as_deref(), jsonwebtoken::Algorithm::ES256);
        let _ = keys.find(k.kid.as_deref(), jsonwebtoken::Algorithm::RS256);
    }
}

/// A configuration file.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::config::Config::parse("fuzz.yaml", text);
    }
}

/// The policy the Cedar targets decide with: tags from arguments, groups and claims, rate,
/// source address, process and time.
const POLICY: &str = r#"
@id("connect")
permit (principal, action in [Action::"initialize", Action::"tools/list"], resource);
@id("read-under-data")
permit (principal, action == Action::"tools/call", resource)
when {
  resource.name == "read_file" &&
  (context.listing ||
   (resource.hasTag("path") && resource.getTag("path") like "/srv/data/*" &&
    !(resource.getTag("path") like "*..*")))
};
@id("readers")
permit (principal in Group::"readers", action == Action::"tools/call", resource)
when { resource.name like "list_*" && context.hour >= 9 };
@id("rate")
forbid (principal, action, resource) when { context.rate > 10 };
@id("office")
forbid (principal, action, resource)
unless { context.source_ip.isInRange(ip("10.0.0.0/8")) || context.source_ip.isLoopback() };
@id("uid")
forbid (principal, action, resource) when { context has process && context.process.uid == 0 };
"#;

fn engine() -> &'static Arc<Engine> {
    static E: OnceLock<Arc<Engine>> = OnceLock::new();
    E.get_or_init(|| {
        let file = std::env::temp_dir().join(format!("moat-fuzz-{}.cedar", std::process::id()));
        std::fs::write(&file, POLICY).expect("writing the fuzz policy");
        let engine = crate::policy::load(&Policy {
            file: file.clone(),
            mode: PolicyMode::Enforce,
            groups_claim: "groups".into(),
            claims: vec!["department".into()],
        })
        .expect("the fuzz policy loads");
        let _ = std::fs::remove_file(file);
        Arc::new(engine)
    })
}

fn principal(claims: serde_json::Map<String, Value>) -> Principal {
    Principal {
        sub: "alice".into(),
        client_id: Some("cli".into()),
        iss: ISS.into(),
        scopes: vec!["mcp:tools".into()],
        claims,
    }
}

/// A request built from fuzzed parts (`\0`-separated: method, target, arguments JSON, claims
/// JSON, then bytes for the address, rate, time and process): the cached decision equals
/// Cedar's own, and the same input decides the same way twice.
pub fn cedar(data: &[u8]) {
    let mut parts = data.splitn(5, |b| *b == 0);
    let mut text = || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let (method, target, arguments, claims) = (text(), text(), text(), text());
    let tail = parts.next().unwrap_or_default();
    let byte = |i: usize| tail.get(i).copied().unwrap_or(0);
    let arguments = serde_json::from_str::<Value>(&arguments).ok();
    let claims = match serde_json::from_str::<Value>(&claims) {
        Ok(Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    let principal = principal(claims);
    let process = Process {
        pid: 1,
        uid: u32::from(byte(3) & 1),
        gid: 0,
        comm: "python3".into(),
        cgroup_id: 1,
    };
    let m = Method::of(&method);
    let input = Input {
        server: "files",
        action: m.action(),
        target: m.target().map(|t| (t, target.as_str())),
        arguments: arguments.as_ref(),
        principal: &principal,
        source_ip: IpAddr::from([byte(0), 0, byte(1), 1]),
        tls: None,
        session: None,
        process: (byte(3) & 2 != 0).then_some(&process),
        rate: u64::from(byte(2)),
        now: UNIX_EPOCH + Duration::from_secs(1_796_032_800 + u64::from(byte(4)) * 3600),
        listing: byte(3) & 4 != 0,
        integrity: None,
        behaviour: None,
        content: None,
    };
    let e = engine();
    let cached = e.decide(&input);
    assert_eq!(cached, e.decide_uncached(&input));
    assert_eq!(cached, e.decide(&input));
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every seed and every input that once made a target fail, through its target.
    #[test]
    fn seeds_and_regressions_pass() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
        let mut ran = 0;
        for (name, target) in super::TARGETS {
            for kind in ["seeds", "regressions"] {
                let Ok(dir) = std::fs::read_dir(root.join(kind).join(name)) else {
                    continue;
                };
                for f in dir.flatten() {
                    target(&std::fs::read(f.path()).unwrap());
                    ran += 1;
                }
            }
        }
        assert!(ran >= super::TARGETS.len(), "only {ran} inputs found");
    }
}
