use super::*;
use crate::vocab::{ContentAction, ContentKind};

fn problems(text: &str) -> Vec<Problem> {
    Config::parse("moat.yaml", text)
        .expect_err("config should be rejected")
        .problems
}

#[test]
fn minimal_config_gets_safe_defaults() {
    let c = Config::parse(
        "moat.yaml",
        "servers:\n  - name: files\n    port: 8000\n    public_url: https://f.example/mcp\n    tls: {cert: /c.pem, key: /k.pem}\n    auth: {issuer: local}\nauthorization_server:\n  issuer: https://auth.f.example:8443\n  tls: {cert: /c.pem, key: /k.pem}\n",
    )
    .unwrap();
    assert_eq!(c.agent, Agent::default());
    let s = &c.servers[0];
    assert_eq!(
        (s.endpoint.as_str(), s.legacy_sse.as_deref(), s.plaintext),
        ("/mcp", None, false)
    );
    assert_eq!(
        s.tls.certs,
        [TlsCert {
            cert: "/c.pem".into(),
            key: "/k.pem".into()
        }]
    );
    assert_eq!(s.limits, Limits::default());
    assert!(s.allowed_origins.is_empty());
    assert_eq!(
        c.audit.sink,
        AuditSink::File(FileSink {
            path: "/var/log/moat/audit.jsonl".into(),
            fsync: Fsync::Batch,
            max_bytes: Some(100 * 1024 * 1024),
            max_age: None,
        }),
        "a file, forced to disk after each batch, rotated at 100 MiB"
    );
    assert_eq!(c.servers[0].upstream, "127.0.0.1:8000".parse().unwrap());
    let a = s.auth.as_ref().unwrap();
    assert_eq!(
        a.issuer,
        Issuer::Local("https://auth.f.example:8443".into())
    );
    assert_eq!(
        a.audience, "https://f.example/mcp",
        "the audience is the public URL"
    );
    assert_eq!(
        a.authorization_servers,
        ["https://auth.f.example:8443"],
        "the metadata names Moat's authorization server"
    );
    assert!(a.required_scopes.is_empty());
    let authz = c.authorization_server.as_ref().unwrap();
    assert_eq!(authz.listen, "0.0.0.0:8443".parse().unwrap());
    assert_eq!(authz.login, Login::Local);
    assert_eq!(authz.registration.dynamic, Dynamic::Open);
    assert!(authz.registration.metadata_documents && authz.clients.is_empty());
    assert_eq!(authz.access_token_ttl, std::time::Duration::from_secs(300));
    assert_eq!(a.leeway, std::time::Duration::from_secs(30));
    assert!(!a.algorithms.is_empty());
    assert!(
        a.algorithms
            .iter()
            .all(|a| a.family() != jsonwebtoken::AlgorithmFamily::Hmac)
    );
    assert_eq!(s.upstream_auth, UpstreamAuth::None);
}

#[test]
fn full_config_is_read() {
    let text = "\
agent:
  state_dir: /tmp/s
  bpffs: /sys/fs/bpf/t
  cgroup: /sys/fs/cgroup/unified/t
  upstream_ports: 50000-50099
audit:
  path: /tmp/a.jsonl
servers:
  - name: files
    port: 8000
    upstream: http://127.0.0.1:9000
    public_url: https://files.example.com:8000/files/mcp
    legacy_sse: /sse
    tls:
      - {cert: /a.crt, key: /a.key}
      - {cert: /b.crt, key: /b.key}
    allowed_origins: [https://claude.ai]
    allowed_hosts: [files.internal]
    limits: {max_body: 65536, header_timeout_ms: 500, idle_timeout_ms: 2500}
    auth:
      issuer: https://idp.example.com
      jwks_uri: https://idp.example.com/jwks
      scopes_supported: [mcp:tools, mcp:admin]
      required_scopes: [mcp:tools]
      algorithms: [ES256]
      leeway_s: 5
      jwks_max_stale_s: 60
    upstream_auth: {header: X-Api-Key, secret_file: /etc/moat/key}
  - name: v6
    port: 8001
    upstream: http://[::1]:8001
    endpoint: /
    dangerous: {plaintext: true, unauthenticated: true}
";
    let c = Config::parse("moat.yaml", text).unwrap();
    assert_eq!(
        c.agent.cgroup,
        Cgroup::Path("/sys/fs/cgroup/unified/t".into())
    );
    assert_eq!(
        c.agent.upstream_ports,
        PortRange {
            lo: 50000,
            hi: 50099
        }
    );
    assert_eq!(c.servers[0].upstream, "127.0.0.1:9000".parse().unwrap());
    assert_eq!(c.servers[1].upstream, "[::1]:8001".parse().unwrap());
    assert_eq!(c.server_by_port(8001).unwrap().name, "v6");
    let (files, v6) = (&c.servers[0], &c.servers[1]);
    assert_eq!(
        files.endpoint, "/files/mcp",
        "defaults to the path of public_url"
    );
    assert_eq!(files.legacy_sse.as_deref(), Some("/sse"));
    assert_eq!(files.tls.certs.len(), 2);
    assert_eq!(files.allowed_origins, ["https://claude.ai"]);
    assert_eq!(files.allowed_hosts, ["files.internal"]);
    assert_eq!(files.limits.max_body, 65536);
    assert_eq!(
        files.limits.header_timeout,
        std::time::Duration::from_millis(500)
    );
    assert_eq!(files.limits.body_timeout, Limits::default().body_timeout);
    assert_eq!(
        files.limits.idle_timeout,
        std::time::Duration::from_millis(2500)
    );
    assert!(!files.plaintext && v6.plaintext && v6.tls.certs.is_empty());
    assert_eq!(v6.endpoint, "/");
    let a = files.auth.as_ref().unwrap();
    assert_eq!(
        a.issuer,
        Issuer::Remote {
            issuer: "https://idp.example.com".into(),
            jwks_uri: Some("https://idp.example.com/jwks".into())
        }
    );
    assert_eq!(a.audience, "https://files.example.com:8000/files/mcp");
    assert_eq!(a.authorization_servers, ["https://idp.example.com"]);
    assert_eq!(a.required_scopes, ["mcp:tools"]);
    assert_eq!(a.algorithms, [jsonwebtoken::Algorithm::ES256]);
    assert_eq!(a.leeway.as_secs(), 5);
    assert_eq!(a.jwks_max_stale.as_secs(), 60);
    assert_eq!(
        files.upstream_auth,
        UpstreamAuth::Header {
            name: http::HeaderName::from_static("x-api-key"),
            secret_file: "/etc/moat/key".into()
        }
    );
    assert!(v6.auth.is_none(), "unauthenticated, by name");
}

#[test]
fn authentication_is_required_unless_refused_by_name() {
    let p = problems("servers:\n  - {name: a, port: 8000, dangerous: {plaintext: true}}\n");
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].message.contains("missing `auth`"), "{}", p[0].message);
    // auth needs public_url (the resource), and excludes `unauthenticated`.
    let p = problems(
        "servers:\n  - {name: a, port: 8000, auth: {issuer: local}, dangerous: {plaintext: true, unauthenticated: true}}\n",
    );
    let msgs: Vec<&str> = p.iter().map(|p| p.message.as_str()).collect();
    assert!(
        msgs.iter().any(|m| m.contains("exclude each other")),
        "{msgs:?}"
    );
    assert!(msgs.iter().any(|m| m.contains("public_url")), "{msgs:?}");
}

#[test]
fn weak_auth_settings_are_refused() {
    let text = "\
servers:
  - name: a
    port: 8000
    public_url: https://a.example/mcp
    dangerous: {plaintext: true}
    auth:
      issuer: https://idp.example.com
      jwks_uri: http://idp.example.com/jwks
      algorithms: [HS256, none, RS256]
      leeway_s: 3600
      required_scopes: ['bad\"scope']
      colour: red
  - name: b
    port: 8001
    public_url: https://b.example/mcp
    dangerous: {plaintext: true}
    auth: {issuer: https://idp.example.com}
    upstream_auth: {header: 'bad header', jwt: {}}
";
    let p = problems(text);
    let has = |key: &str, words: &str| {
        assert!(
            p.iter().any(|p| p.key == key && p.message.contains(words)),
            "{key}: {words}: {p:#?}"
        )
    };
    has("servers[0].auth.jwks_uri", "https://");
    has("servers[0].auth.algorithms[0]", "shared-secret");
    has("servers[0].auth.algorithms[1]", "unknown algorithm");
    has("servers[0].auth.leeway_s", "0 to 300");
    has("servers[0].auth.required_scopes", "not a valid scope");
    has("servers[0].auth.colour", "unknown key");
    has("servers[1].auth", "jwks_uri");
    has("servers[1].upstream_auth", "not both");
    // Plain HTTP to a loopback issuer is allowed (an issuer on the same host).
    Config::parse(
        "moat.yaml",
        "servers:\n  - name: a\n    port: 8000\n    public_url: https://a.example/mcp\n    dangerous: {plaintext: true}\n    auth: {issuer: http://127.0.0.1:9400, jwks_uri: http://127.0.0.1:9400/jwks}\n    upstream_auth: {jwt: {}}\n",
    )
    .unwrap();
}

#[test]
fn unknown_key_is_named_with_its_line() {
    let p = problems(
        "servers:\n  - name: files\n    port: 8000\n    prot: 9\n    dangerous: {plaintext: true, unauthenticated: true}\n",
    );
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].key, "servers[0].prot");
    assert_eq!(p[0].line, 4);
    assert!(p[0].message.contains("unknown key"), "{}", p[0].message);
}

#[test]
fn every_error_is_reported_at_once() {
    let text = "\
agent:
  upstream_ports: 10-20
  colour: blue
servers:
  - name: files
    port: 70000
    tls: {cert: /c, key: /k}
  - name: 'bad name'
    port: 8001
    upstream: https://127.0.0.1:1
    dangerous: {plaintext: true, unauthenticated: true}
";
    let p = problems(text);
    let keys: Vec<_> = p.iter().map(|p| (p.key.as_str(), p.line)).collect();
    assert!(keys.contains(&("agent.upstream_ports", 2)), "{keys:?}");
    assert!(keys.contains(&("agent.colour", 3)), "{keys:?}");
    assert!(keys.contains(&("servers[0].port", 6)), "{keys:?}");
    assert!(keys.contains(&("servers[1].name", 8)), "{keys:?}");
    assert!(keys.contains(&("servers[1].upstream", 10)), "{keys:?}");
    assert!(keys.contains(&("servers[0]", 5)), "missing auth: {keys:?}");
    assert_eq!(p.len(), 6, "{p:?}");
    let shown = Config::parse("moat.yaml", text).unwrap_err().to_string();
    assert!(
        shown.contains("moat.yaml:6:11: servers[0].port: expected a port"),
        "{shown}"
    );
}

#[test]
fn duplicate_ports_and_names_are_rejected() {
    let p = problems(
        "servers:\n  - {name: a, port: 8000, dangerous: {plaintext: true, unauthenticated: true}}\n  - {name: a, port: 8000, dangerous: {plaintext: true, unauthenticated: true}}\n",
    );
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p.iter().all(|p| p.key == "servers[1]"));
}

#[test]
fn protected_port_inside_the_reserved_range_is_rejected() {
    let p = problems(
        "agent: {upstream_ports: 8000-8100}\nservers:\n  - {name: a, port: 8050, dangerous: {plaintext: true, unauthenticated: true}}\n",
    );
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].message.contains("inside agent.upstream_ports"));
}

#[test]
fn missing_and_mistyped_values_are_errors() {
    let p = problems(
        "servers:\n  - port: '8000'\n    dangerous: {plaintext: true, unauthenticated: true}\n",
    );
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(
        p.iter()
            .any(|p| p.message.contains("missing required key `name`"))
    );
    assert!(
        p.iter()
            .any(|p| p.key == "servers[0].port" && p.message.contains("integer"))
    );
    assert_eq!(
        problems("servers: []\n")[0].message,
        "list at least one server to protect"
    );
    assert_eq!(
        problems("agent: {}\n")[0].message,
        "missing required key `servers`"
    );
    assert!(
        problems("agent: {bpffs: relative/dir}\nservers: [{name: a, port: 1}]\n")[0]
            .message
            .contains("absolute path")
    );
}

#[test]
fn tls_is_required_unless_plaintext_is_asked_for_by_name() {
    let p = problems("servers:\n  - {name: a, port: 8000, dangerous: {unauthenticated: true}}\n");
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].message.contains("missing `tls`"), "{}", p[0].message);
    let p = problems("servers:\n  - {name: a, port: 8000, dangerous: {plaintext: yes}}\n");
    assert!(
        p.iter().any(|p| p.key == "servers[0].dangerous.plaintext"),
        "{p:?}"
    );
    let p = problems("servers:\n  - {name: a, port: 8000, tls: {cert: c.pem}}\n");
    assert!(
        p.iter()
            .any(|p| p.message.contains("missing required key `key`")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|p| p.key == "servers[0].tls.cert" && p.message.contains("absolute")),
        "{p:?}"
    );
}

#[test]
fn paths_urls_and_limits_are_checked() {
    let p = problems(
        "servers:\n  - name: a\n    port: 8000\n    dangerous: {plaintext: true, unauthenticated: true}\n    endpoint: mcp\n    public_url: files.example.com/mcp\n    limits: {max_body: 10, body_timeout_ms: x}\n",
    );
    let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "servers[0].public_url",
            "servers[0].endpoint",
            "servers[0].limits.max_body",
            "servers[0].limits.body_timeout_ms"
        ],
        "{p:?}"
    );
}

#[test]
fn syntax_errors_and_empty_files_are_located() {
    let p = problems("servers:\n  - name: [unclosed\n");
    assert_eq!(p.len(), 1);
    assert!(p[0].message.starts_with("invalid YAML"), "{}", p[0].message);
    assert!(p[0].line >= 2);
    assert_eq!(problems("")[0].message, "the file is empty");
}

#[test]
fn every_example_config_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            // Their upstreams are on loopback: valid on any host.
            Config::load_on(&path, &HostAddrs::default()).unwrap_or_else(|e| panic!("{e}"));
            seen += 1;
        }
    }
    assert!(seen > 0, "no example configs in {}", dir.display());
}

#[test]
fn upstream_ports_that_are_not_protected_are_sealed() {
    let plain = "dangerous: {plaintext: true, unauthenticated: true}";
    let c = Config::parse(
        "moat.yaml",
        &format!(
            "servers:\n  - {{name: a, port: 9002, upstream: 'http://127.0.0.1:9003', {plain}}}\n  \
             - {{name: b, port: 8000, {plain}}}\n  \
             - {{name: c, port: 8001, upstream: 'http://[::1]:9003', {plain}}}\n  \
             - {{name: d, port: 8002, upstream: 'http://127.0.0.1:8000', {plain}}}\n  \
             - {{name: e, port: 8003, upstream: 'http://127.0.0.1:7000', {plain}}}\n"
        ),
    )
    .unwrap();
    // b's upstream is its own protected port, d's is b's: steered, not sealed. 9003 is a's
    // (first) and c's.
    assert_eq!(c.sealed_ports(), [(7000, 4), (9003, 0)]);
    assert_eq!(c.server_by_upstream_port(9003).unwrap().name, "a");
    assert!(c.server_by_upstream_port(9002).is_none());
}

#[test]
fn policy_and_rate_limits_are_read_and_checked() {
    let c = Config::parse(
        "moat.yaml",
        "servers:\n  - name: a\n    port: 8000\n    public_url: https://a.example/mcp\n    dangerous: {plaintext: true}\n    auth: {issuer: local}\n    policy: {file: /etc/moat/a.cedar, mode: shadow, claims: [department]}\n    rate_limits: {per_tool: 60, per_server: 1000}\nauthorization_server: {issuer: 'http://127.0.0.1:9443', dangerous: {plaintext: true}}\n",
    )
    .unwrap();
    let s = &c.servers[0];
    let p = s.policy.as_ref().unwrap();
    assert_eq!(p.file, PathBuf::from("/etc/moat/a.cedar"));
    assert_eq!(p.mode, PolicyMode::Shadow);
    assert_eq!(p.groups_claim, "groups");
    assert_eq!(p.claims, ["department"]);
    assert_eq!(
        s.rate_limits,
        RateLimits {
            per_tool: Some(60),
            per_principal: None,
            per_server: Some(1000)
        }
    );
    let p = problems(
        "servers:\n  - name: a\n    port: 8000\n    dangerous: {plaintext: true, unauthenticated: true}\n    policy: {file: rel.cedar, mode: lax}\n    rate_limits: {per_tool: 0, burst: 3}\n",
    );
    let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
    for key in [
        "servers[0].policy",
        "servers[0].policy.file",
        "servers[0].policy.mode",
        "servers[0].rate_limits.per_tool",
        "servers[0].rate_limits.burst",
    ] {
        assert!(keys.contains(&key), "{key}: {p:#?}");
    }
}

const SERVERS: &str =
    "servers: [{name: f, port: 8000, dangerous: {plaintext: true, unauthenticated: true}}]\n";

#[test]
fn audit_sinks_are_read() {
    let audit = |text: &str| {
        Config::parse("moat.yaml", &format!("{text}\n{SERVERS}"))
            .unwrap()
            .audit
    };
    let a = audit("audit: {path: /l/a.jsonl, fsync: off, rotate: {max_age_s: 3600}}");
    assert_eq!(
        a.sink,
        AuditSink::File(FileSink {
            path: "/l/a.jsonl".into(),
            fsync: Fsync::Off,
            max_bytes: None,
            max_age: Some(std::time::Duration::from_secs(3600)),
        }),
        "a rotate section says exactly when to rotate"
    );
    assert_eq!(
        audit("audit: {sink: stdout, on_failure: drop}").sink,
        AuditSink::Stdout
    );
    assert_eq!(
        audit("audit: {sink: syslog}").sink,
        AuditSink::Syslog {
            socket: "/dev/log".into(),
            facility: 16
        }
    );
    assert_eq!(
        audit("audit: {sink: syslog, syslog: {socket: /run/v.sock, facility: local3}}").sink,
        AuditSink::Syslog {
            socket: "/run/v.sock".into(),
            facility: 19
        }
    );
}

#[test]
fn audit_sink_mistakes_are_all_reported() {
    let p = problems(&format!(
        "audit:\n  sink: stdout\n  path: /l/a.jsonl\n  rotate: {{max_bytes: 10}}\n  syslog: {{socket: /dev/log}}\n{SERVERS}"
    ));
    let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        ["audit.path", "audit.rotate", "audit.syslog"],
        "{p:?}"
    );
    assert!(p[0].message.contains("only for `sink: file`"), "{p:?}");
    assert_eq!(p[0].line, 3);

    let p = problems(&format!(
        "audit: {{rotate: {{max_bytes: 10, max_age_s: 0}}, fsync: always}}\n{SERVERS}"
    ));
    let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "audit.fsync",
            "audit.rotate.max_bytes",
            "audit.rotate.max_age_s"
        ],
        "{p:?}"
    );
    let p = problems(&format!(
        "audit: {{sink: syslog, syslog: {{socket: log, facility: local9}}}}\n{SERVERS}"
    ));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].message.contains("absolute path"), "{p:?}");
    let p = problems(&format!(
        "audit: {{sink: syslog, syslog: {{facility: kern}}}}\n{SERVERS}"
    ));
    assert!(p[0].message.contains("syslog facility"), "{p:?}");
    let p = problems(&format!("audit: {{sink: kafka}}\n{SERVERS}"));
    assert!(
        p[0].message.contains("`file`, `stdout` or `syslog`"),
        "{p:?}"
    );
}

#[test]
fn admin_listen_is_an_address_or_off() {
    let with = |v: &str| {
        format!(
            "agent:\n  admin_listen: {v}\nservers:\n  - {{name: a, port: 8000, dangerous: {{plaintext: true, unauthenticated: true}}}}\n"
        )
    };
    let read = |v: &str| Config::parse("moat.yaml", &with(v)).map(|c| c.agent.admin_listen);
    assert_eq!(
        Agent::default().admin_listen,
        Some("127.0.0.1:9901".parse().unwrap()),
        "on by default, on loopback"
    );
    assert_eq!(read("off"), Ok(None));
    assert_eq!(
        read("0.0.0.0:9100"),
        Ok(Some("0.0.0.0:9100".parse().unwrap()))
    );
    assert_eq!(
        read("'[::1]:9901'"),
        Ok(Some("[::1]:9901".parse().unwrap()))
    );
    for bad in [
        "9901",
        "localhost:9901",
        "127.0.0.1",
        "127.0.0.1:0",
        "on",
        "[::1]",
    ] {
        let p = problems(&with(bad));
        assert_eq!(p.len(), 1, "{bad}: {p:?}");
        assert_eq!(
            (p[0].key.as_str(), p[0].line, p[0].col),
            ("agent.admin_listen", 2, 17),
            "{bad}"
        );
        assert!(p[0].message.contains("IP:PORT"), "{bad}: {}", p[0].message);
    }
    // A protected port is steered to the proxy, and the upstream range is the agent's own.
    for (v, needle) in [
        ("127.0.0.1:8000", "uses the port of server `a`"),
        ("127.0.0.1:50010", "inside agent.upstream_ports 50000-60999"),
    ] {
        let p = problems(&with(v));
        assert_eq!(p.len(), 1, "{v}: {p:?}");
        assert_eq!(
            (p[0].key.as_str(), p[0].line),
            ("agent.admin_listen", 2),
            "{v}"
        );
        assert!(p[0].message.contains(needle), "{v}: {}", p[0].message);
    }
    let shown = Config::parse("moat.yaml", &with("nowhere"))
        .unwrap_err()
        .to_string();
    assert!(
        shown.contains("moat.yaml:2:17: agent.admin_listen: expected an address"),
        "{shown}"
    );
}

#[test]
fn connection_limits_are_read_and_checked() {
    let with = |lines: &str| {
        format!(
            "agent:\n{lines}servers:\n  - {{name: a, port: 8000, dangerous: {{plaintext: true, unauthenticated: true}}}}\n"
        )
    };
    let read = |lines: &str| {
        Config::parse("moat.yaml", &with(lines))
            .map(|c| (c.agent.max_connections, c.agent.max_connections_per_source))
    };
    assert_eq!(read("  state_dir: /s\n"), Ok((10_000, 256)), "the defaults");
    assert_eq!(
        read("  max_connections: 50000\n  max_connections_per_source: 1000\n"),
        Ok((50_000, 1_000))
    );
    assert_eq!(
        read("  max_connections: 100\n"),
        Ok((100, 100)),
        "per source, unless given, is at most the total"
    );
    for (lines, line, col, needle) in [
        (
            "  max_connections: 0\n",
            2,
            20,
            "from 1 to 1000000, found 0",
        ),
        ("  max_connections: 2000000\n", 2, 20, "found 2000000"),
        ("  max_connections: -5\n", 2, 20, "found -5"),
        ("  max_connections: lots\n", 2, 20, "expected an integer"),
        ("  max_connections_per_source: 0\n", 2, 31, "found 0"),
        (
            "  max_connections_per_source: 1.5\n",
            2,
            31,
            "expected an integer",
        ),
        (
            "  max_connections: 100\n  max_connections_per_source: 101\n",
            3,
            31,
            "max_connections_per_source (101) is more than max_connections (100)",
        ),
    ] {
        let p = problems(&with(lines));
        assert_eq!(p.len(), 1, "{lines}: {p:?}");
        let key = if col == 20 {
            "agent.max_connections"
        } else {
            "agent.max_connections_per_source"
        };
        assert_eq!(
            (p[0].key.as_str(), p[0].line, p[0].col),
            (key, line, col),
            "{lines}: {p:?}"
        );
        assert!(p[0].message.contains(needle), "{lines}: {}", p[0].message);
    }
    let shown = Config::parse("moat.yaml", &with("  max_connections_per_source: 0\n"))
        .unwrap_err()
        .to_string();
    assert!(
        shown.contains("moat.yaml:2:31: agent.max_connections_per_source: expected a number"),
        "{shown}"
    );
}

const LOCAL_SERVER: &str = "servers:\n  - name: files\n    port: 8000\n    public_url: https://f.example/mcp\n    tls: {cert: /c.pem, key: /k.pem}\n    auth: {issuer: local}\n";

#[test]
fn a_local_issuer_needs_the_authorization_server() {
    let p = problems(LOCAL_SERVER);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].key, "servers[0].auth.issuer");
    assert!(
        p[0].message.contains("authorization_server"),
        "{}",
        p[0].message
    );
}

#[test]
fn authorization_server_errors_are_all_reported() {
    let p = problems(&format!(
        "{LOCAL_SERVER}authorization_server:\n  issuer: http://auth.example.com/\n  listen: 127.0.0.1:8000\n  login: ldap\n  \
         registration: {{dynamic: sometimes, allow_private_networks: [notanet]}}\n  \
         clients:\n    - {{client_id: a, redirect_uris: ['javascript:alert(1)', 'http://evil.example/cb']}}\n    - {{client_id: a, redirect_uris: []}}\n  \
         access_token_ttl_s: 5\n  colour: red\n"
    ));
    let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
    for k in [
        "authorization_server.issuer",
        "authorization_server.login",
        "authorization_server.registration.dynamic",
        "authorization_server.registration.allow_private_networks[0]",
        "authorization_server.clients[0].redirect_uris",
        "authorization_server.clients[1]",
        "authorization_server.access_token_ttl_s",
        "authorization_server.colour",
    ] {
        assert!(keys.contains(&k), "{k} not in {keys:?}");
    }
    let redirects: Vec<&str> = p
        .iter()
        .filter(|p| p.key == "authorization_server.clients[0].redirect_uris")
        .map(|p| p.message.as_str())
        .collect();
    assert_eq!(redirects.len(), 2, "{redirects:?}");
}

#[test]
fn a_plaintext_authorization_server_is_loopback_only_and_apart_from_servers() {
    let ok = Config::parse(
        "moat.yaml",
        &format!("{LOCAL_SERVER}authorization_server:\n  issuer: http://127.0.0.1:9443\n  dangerous: {{plaintext: true}}\n"),
    )
    .unwrap();
    let a = ok.authorization_server.unwrap();
    assert!(a.plaintext && a.tls.certs.is_empty());
    assert_eq!(a.listen, "0.0.0.0:9443".parse().unwrap());
    for (issuer, listen, needle) in [
        ("http://auth.example.com:9443", "", "loopback"),
        ("https://127.0.0.1:9443", "", "http:// issuer"),
        ("http://127.0.0.1:8000", "", "port of server `files`"),
        (
            "http://127.0.0.1:9443",
            "  listen: 127.0.0.1:50010\n",
            "upstream_ports",
        ),
    ] {
        let p = problems(&format!(
            "{LOCAL_SERVER}authorization_server:\n  issuer: {issuer}\n{listen}  dangerous: {{plaintext: true}}\n"
        ));
        assert!(
            p.iter().any(|p| p.message.contains(needle)),
            "{issuer}: {p:?}"
        );
    }
}

#[test]
fn integrity_is_read_and_its_mistakes_located() {
    let base = "servers:\n  - name: files\n    port: 8000\n    dangerous: {plaintext: true, unauthenticated: true}\n";
    let c = Config::parse("moat.yaml", base).unwrap();
    assert_eq!(
        c.servers[0].integrity.mode,
        IntegrityMode::Off,
        "off unless asked for"
    );
    let c = Config::parse("moat.yaml", &format!("{base}    integrity: {{}}\n")).unwrap();
    assert_eq!(
        c.servers[0].integrity,
        Integrity {
            mode: IntegrityMode::Enforce,
            pin_on_first_use: false,
            hide_flagged: false,
            recheck: Some(std::time::Duration::from_secs(300)),
        },
        "a section turns it on: enforce, pins approved by an operator"
    );
    let c = Config::parse(
        "moat.yaml",
        &format!(
            "{base}    integrity: {{mode: warn, pin: first_use, hide_flagged: true, recheck_s: 0}}\n"
        ),
    )
    .unwrap();
    assert_eq!(
        c.servers[0].integrity,
        Integrity {
            mode: IntegrityMode::Warn,
            pin_on_first_use: true,
            hide_flagged: true,
            recheck: None,
        }
    );
    let p = problems(&format!(
        "{base}    integrity:\n      mode: block\n      pin: always\n      hide_flagged: 1\n      pins: x\n      recheck_s: -1\n"
    ));
    let mut found: Vec<(usize, &str)> = p.iter().map(|p| (p.line, p.key.as_str())).collect();
    found.sort();
    assert_eq!(
        found,
        [
            (6, "servers[0].integrity.mode"),
            (7, "servers[0].integrity.pin"),
            (8, "servers[0].integrity.hide_flagged"),
            (9, "servers[0].integrity.pins"),
            (10, "servers[0].integrity.recheck_s"),
        ],
        "{p:?}"
    );
}

#[test]
fn behaviour_is_read_and_its_mistakes_located() {
    let authz = "authorization_server:\n  issuer: https://auth.f.example:8443\n  tls: {cert: /c.pem, key: /k.pem}\n";
    let c = Config::parse("moat.yaml", &format!("{LOCAL_SERVER}{authz}")).unwrap();
    assert_eq!(c.servers[0].behaviour, Behaviour::default());
    assert_eq!(
        c.servers[0].behaviour.mode,
        BehaviourMode::Off,
        "off unless asked for"
    );
    let with = |section: &str| format!("{LOCAL_SERVER}    behaviour: {section}\n{authz}");
    let c = Config::parse("moat.yaml", &with("{}")).unwrap();
    assert_eq!(
        c.servers[0].behaviour,
        Behaviour {
            mode: BehaviourMode::Enforce,
            learn_days: 7,
            learn_requests: 100
        },
        "a section turns it on"
    );
    let c = Config::parse(
        "moat.yaml",
        &with("{mode: shadow, learn_days: 0, learn_requests: 5}"),
    )
    .unwrap();
    assert_eq!(
        c.servers[0].behaviour,
        Behaviour {
            mode: BehaviourMode::Shadow,
            learn_days: 0,
            learn_requests: 5
        }
    );
    let p = problems(&with(
        "\n      mode: watch\n      learn_days: 366\n      learn_requests: -1\n      learn: 1",
    ));
    let mut found: Vec<(usize, &str)> = p.iter().map(|p| (p.line, p.key.as_str())).collect();
    found.sort();
    assert_eq!(
        found,
        [
            (8, "servers[0].behaviour.mode"),
            (9, "servers[0].behaviour.learn_days"),
            (10, "servers[0].behaviour.learn_requests"),
            (11, "servers[0].behaviour.learn"),
        ],
        "{p:?}"
    );
    // It is learned per subject: a server without authentication cannot have it.
    let p = problems(
        "servers:\n  - name: files\n    port: 8000\n    dangerous: {plaintext: true, unauthenticated: true}\n    behaviour: {}\n",
    );
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].key, "servers[0].behaviour");
    assert!(p[0].message.contains("needs `auth`"), "{p:?}");
}

#[test]
fn inspect_is_read_and_its_mistakes_located() {
    let authz = "authorization_server:\n  issuer: https://auth.f.example:8443\n  tls: {cert: /c.pem, key: /k.pem}\n";
    let c = Config::parse("moat.yaml", &format!("{LOCAL_SERVER}{authz}")).unwrap();
    assert_eq!(c.servers[0].inspect, None, "off unless asked for");
    let with = |section: &str| format!("{LOCAL_SERVER}    inspect: {section}\n{authz}");
    let c = Config::parse("moat.yaml", &with("{}")).unwrap();
    let i = c.servers[0]
        .inspect
        .as_ref()
        .expect("a section turns it on");
    assert!(i.arguments && i.results && i.rules.is_empty());
    assert_eq!(i.max_size, 4 << 20);
    let c = Config::parse(
        "moat.yaml",
        &with(
            "\n      results: false\n      max_size_kib: 64\n      rules: {secret: block, email: off}\n      custom:\n        - {id: employee_id, pattern: 'EMP-[0-9]{6}', kind: personal}\n      allow: [ops@example.com]\n      tools:\n        crm_add: {rules: {personal: flag, employee_id: off}}",
        ),
    )
    .unwrap();
    let i = c.servers[0].inspect.as_ref().unwrap();
    assert!(i.arguments && !i.results);
    assert_eq!(i.max_size, 64 * 1024);
    assert_eq!(i.rules["secret"], Setting::On(ContentAction::Block));
    assert_eq!(i.rules["email"], Setting::Off);
    assert_eq!(i.custom[0].id, "employee_id");
    assert_eq!(i.custom[0].kind, ContentKind::Personal);
    assert_eq!(i.custom[0].action, ContentAction::Redact, "the default");
    assert_eq!(i.tools["crm_add"].rules["employee_id"], Setting::Off);
    // Every mistake, located.
    let p = problems(&with(
        "\n      results: maybe\n      max_size_kib: 0\n      rules: {emial: block, jwt: hide}\n      custom:\n        - {id: jwt, pattern: 'x'}\n        - {id: bad, pattern: '(unclosed'}\n        - {id: empty, pattern: 'a*'}\n      tools:\n        t: {rules: {nope: off}, deny: []}\n      extra: 1",
    ));
    let mut found: Vec<(usize, &str)> = p.iter().map(|p| (p.line, p.key.as_str())).collect();
    found.sort();
    assert_eq!(
        found,
        [
            (8, "servers[0].inspect.results"),
            (9, "servers[0].inspect.max_size_kib"),
            (10, "servers[0].inspect.rules.emial"),
            (10, "servers[0].inspect.rules.jwt"),
            (12, "servers[0].inspect.custom[0].id"),
            (13, "servers[0].inspect.custom[1].pattern"),
            (14, "servers[0].inspect.custom[2].pattern"),
            (16, "servers[0].inspect.tools.t.deny"),
            (16, "servers[0].inspect.tools.t.rules.nope"),
            (17, "servers[0].inspect.extra"),
        ],
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|p| p.message.contains("unknown rule \"emial\"")),
        "{p:?}"
    );
    assert!(
        p.iter().any(|p| p.message.contains("already defined")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|p| p.message.contains("matches the empty text")),
        "{p:?}"
    );
}

#[test]
fn approvals_are_read_and_their_mistakes_located() {
    let c = Config::parse("moat.yaml", "servers:\n  - name: files\n    port: 8000\n    dangerous: {plaintext: true, unauthenticated: true}\n").unwrap();
    assert_eq!(c.approvals, Approvals::default());
    assert_eq!(c.approvals.timeout, std::time::Duration::from_secs(120));
    let c = Config::parse(
        "moat.yaml",
        "servers:\n  - name: files\n    port: 8000\n    dangerous: {plaintext: true, unauthenticated: true}\napprovals:\n  timeout_s: 30\n  webhook: https://hooks.example.com/moat\n  token_file: /etc/moat/approver.token\n",
    )
    .unwrap();
    assert_eq!(c.approvals.timeout, std::time::Duration::from_secs(30));
    assert_eq!(
        c.approvals.webhook.as_deref(),
        Some("https://hooks.example.com/moat")
    );
    let p = problems(
        "servers:\n  - name: files\n    port: 8000\n    dangerous: {plaintext: true, unauthenticated: true}\napprovals:\n  timeout_s: 0\n  webhook: ftp://x\n  token_file: relative\n  other: 1\n",
    );
    let mut found: Vec<(usize, &str)> = p.iter().map(|p| (p.line, p.key.as_str())).collect();
    found.sort();
    assert_eq!(
        found,
        [
            (6, "approvals.timeout_s"),
            (7, "approvals.webhook"),
            (8, "approvals.token_file"),
            (9, "approvals.other"),
        ],
        "{p:?}"
    );
}

#[test]
fn upstream_oauth2_is_read_and_needs_moats_own_issuer() {
    let authz = "authorization_server:\n  issuer: https://auth.f.example:8443\n  tls: {cert: /c.pem, key: /k.pem}\n";
    let with = |auth: &str, oauth2: &str| {
        format!(
            "servers:\n  - name: files\n    port: 8000\n    public_url: https://f.example/mcp\n    tls: {{cert: /c.pem, key: /k.pem}}\n    auth: {auth}\n    upstream_auth:\n      oauth2: {oauth2}\n{authz}"
        )
    };
    let good = "{authorization_endpoint: https://gh.example/authorize, token_endpoint: https://gh.example/token, client_id: moat, client_secret_file: /etc/moat/gh.secret, scopes: [repo], header: X-Token}";
    let c = Config::parse("moat.yaml", &with("{issuer: local}", good)).unwrap();
    let UpstreamAuth::OAuth2(o) = &c.servers[0].upstream_auth else {
        panic!("{:?}", c.servers[0].upstream_auth)
    };
    assert_eq!(o.client_id, "moat");
    assert_eq!(o.scopes, ["repo"]);
    assert_eq!(o.header.as_str(), "x-token");
    assert_eq!(o.revocation_endpoint, None);
    // Every mistake located; and it needs Moat's own issuer.
    let p = problems(&with(
        "{issuer: https://idp.example, jwks_uri: https://idp.example/jwks}",
        "{authorization_endpoint: http://gh.example/a, client_id: moat, client_secret_file: rel, scopes: [\"a b\"]}",
    ));
    let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
    for k in [
        "servers[0].upstream_auth.oauth2",
        "servers[0].upstream_auth.oauth2.authorization_endpoint",
        "servers[0].upstream_auth.oauth2.client_secret_file",
        "servers[0].upstream_auth.oauth2.scopes",
    ] {
        assert!(keys.contains(&k), "{k} in {p:?}");
    }
    assert!(
        p.iter().any(|p| p.message.contains("token_endpoint")),
        "{p:?}"
    );
    let p = problems(&with(
        "{issuer: https://idp.example, jwks_uri: https://idp.example/jwks}",
        good,
    ));
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].key, "servers[0].upstream_auth");
    assert!(p[0].message.contains("auth: { issuer: local }"), "{p:?}");
}

#[test]
fn the_kernel_log_level_is_read_and_an_unknown_one_located() {
    let with = |lines: &str| {
        format!(
            "agent:\n{lines}servers:\n  - {{name: a, port: 8000, dangerous: {{plaintext: true, unauthenticated: true}}}}\n"
        )
    };
    let level = |lines: &str| Config::parse("moat.yaml", &with(lines)).map(|c| c.agent.kernel_log);
    assert_eq!(level(""), Ok(KernelLog::Off), "off unless asked for");
    assert_eq!(level("  kernel_log: debug\n"), Ok(KernelLog::Debug));
    assert_eq!(KernelLog::Debug.level(), 4, "aya-log's debug");
    assert_eq!(KernelLog::Off.level(), 0);
    let p = problems(&with("  kernel_log: loud\n"));
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(
        (p[0].key.as_str(), p[0].line, p[0].col),
        ("agent.kernel_log", 2, 15)
    );
    assert!(
        p[0].message
            .contains("expected off, error, warn, info, debug or trace, found \"loud\""),
        "{}",
        p[0].message
    );
}
