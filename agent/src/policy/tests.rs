//! The example policies, decided for requests that each should allow or deny.
use std::{
    path::{Path, PathBuf},
    time::{Duration, UNIX_EPOCH},
};

use serde_json::json;

use super::*;
use crate::{
    config::{Policy, PolicyMode},
    vocab::{Method, Principal, Process},
};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config/policies")
        .join(name)
}

fn engine(name: &str) -> Engine {
    load(&Policy {
        file: example(name),
        mode: PolicyMode::Enforce,
        groups_claim: "groups".into(),
        claims: vec!["department".into()],
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

fn alice(groups: &[&str]) -> Principal {
    Principal {
        sub: "alice".into(),
        client_id: Some("cli".into()),
        iss: "https://idp".into(),
        scopes: vec!["mcp:tools".into()],
        claims: json!({"groups": groups, "department": "eng"})
            .as_object()
            .unwrap()
            .clone(),
    }
}

/// Saturday 2026-11-28 12:00 UTC.
const SAT_NOON: u64 = 1_795_867_200;
/// Monday 2026-11-30 10:00 UTC.
const MON_TEN: u64 = 1_796_032_800;

struct Ask<'a> {
    method: &'a str,
    target: Option<&'a str>,
    args: Option<Value>,
    ip: &'a str,
    at: u64,
    rate: u64,
    process: Option<Process>,
}

impl Default for Ask<'_> {
    fn default() -> Self {
        Self {
            method: "tools/call",
            target: Some("echo"),
            args: None,
            ip: "127.0.0.1",
            at: SAT_NOON,
            rate: 1,
            process: None,
        }
    }
}

fn decide(e: &Engine, p: &Principal, a: Ask<'_>) -> Decision {
    e.decide(&Input {
        server: "files",
        action: Method::of(a.method).action(),
        target: Method::of(a.method).target().zip(a.target),
        arguments: a.args.as_ref(),
        principal: p,
        source_ip: a.ip.parse().unwrap(),
        tls: Some("TLSv1_3"),
        session: None,
        process: a.process.as_ref(),
        rate: a.rate,
        now: UNIX_EPOCH + Duration::from_secs(a.at),
        listing: false,
        integrity: None,
        behaviour: None,
        content: None,
    })
}

#[test]
fn the_weekday_and_hour_are_right() {
    assert_eq!(
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(SAT_NOON)).to_string(),
        "2026-11-28T12:00:00Z"
    );
    let e = engine("deploy-in-working-hours.cedar");
    let deploy = |at| {
        decide(
            &e,
            &alice(&[]),
            Ask {
                target: Some("deploy"),
                at,
                ..Ask::default()
            },
        )
    };
    assert!(!deploy(SAT_NOON).allowed(), "Saturday");
    assert!(deploy(MON_TEN).allowed(), "Monday 10:00");
    assert!(!deploy(MON_TEN + 8 * 3600).allowed(), "Monday 18:00");
    let d = deploy(SAT_NOON);
    assert_eq!(d.policies, ["deploy-working-hours"], "{d:?}");
    assert_eq!(d.reason, "forbidden by deploy-working-hours");
    assert!(
        decide(
            &e,
            &alice(&[]),
            Ask {
                target: Some("echo"),
                ..Ask::default()
            }
        )
        .allowed()
    );
}

#[test]
fn read_only_tools_for_a_group() {
    let e = engine("read-only-for-readers.cedar");
    let reader = alice(&["readers"]);
    let call = |p: &Principal, tool| {
        decide(
            &e,
            p,
            Ask {
                target: Some(tool),
                ..Ask::default()
            },
        )
    };
    assert!(call(&reader, "read_file").allowed());
    assert!(call(&reader, "list_dir").allowed());
    assert!(!call(&reader, "delete_file").allowed());
    let d = call(&alice(&["writers"]), "read_file");
    assert!(!d.allowed());
    assert_eq!(d.reason, "no policy permits it (default deny)");
    assert!(
        decide(
            &e,
            &alice(&[]),
            Ask {
                method: "tools/list",
                target: None,
                ..Ask::default()
            }
        )
        .allowed()
    );
    // Methods no policy names are denied.
    assert!(
        !decide(
            &e,
            &reader,
            Ask {
                method: "resources/read",
                target: Some("file:///etc/passwd"),
                ..Ask::default()
            }
        )
        .allowed()
    );
    assert!(
        !decide(
            &e,
            &reader,
            Ask {
                method: "made/up",
                target: None,
                ..Ask::default()
            }
        )
        .allowed()
    );
}

#[test]
fn a_network_and_a_local_user() {
    let e = engine("office-network-only.cedar");
    let from = |ip| {
        decide(
            &e,
            &alice(&[]),
            Ask {
                ip,
                ..Ask::default()
            },
        )
    };
    assert!(from("10.1.2.3").allowed());
    assert!(
        from("::ffff:10.1.2.3").allowed(),
        "v4-mapped addresses are v4"
    );
    assert!(from("127.0.0.1").allowed());
    assert!(!from("192.0.2.7").allowed());
    assert!(!from("2001:db8::1").allowed());

    let e = engine("one-local-user.cedar");
    let by = |uid: Option<u32>| {
        let process = uid.map(|uid| Process {
            pid: 4242,
            uid,
            gid: uid,
            comm: "python3".into(),
            cgroup_id: 1,
        });
        decide(
            &e,
            &alice(&[]),
            Ask {
                process,
                ..Ask::default()
            },
        )
    };
    assert!(by(Some(1000)).allowed());
    assert!(!by(Some(0)).allowed());
    assert!(!by(None).allowed(), "remote: no process");
}

#[test]
fn argument_constraints_and_rate_caps() {
    let e = engine("paths-under-srv-data.cedar");
    let read = |path: Value| {
        decide(
            &e,
            &alice(&[]),
            Ask {
                target: Some("read_file"),
                args: Some(json!({"path": path})),
                ..Ask::default()
            },
        )
    };
    assert!(read(json!("/srv/data/report.csv")).allowed());
    assert!(!read(json!("/etc/shadow")).allowed());
    assert!(!read(json!("/srv/data/../../etc/shadow")).allowed());
    assert!(
        !read(json!(["/srv/data/x"])).allowed(),
        "a list is not a path"
    );
    assert!(
        !decide(
            &e,
            &alice(&[]),
            Ask {
                target: Some("read_file"),
                ..Ask::default()
            }
        )
        .allowed(),
        "no path"
    );

    let e = engine("rate-cap.cedar");
    let at = |rate| {
        decide(
            &e,
            &alice(&[]),
            Ask {
                rate,
                ..Ask::default()
            },
        )
    };
    assert!(at(10).allowed());
    let d = at(11);
    assert!(!d.allowed());
    assert_eq!(d.policies, ["ten-a-minute"]);
}

#[test]
fn every_example_loads() {
    let dir = example("");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "cedar") {
            engine(path.file_name().unwrap().to_str().unwrap());
            n += 1;
        }
    }
    assert!(n >= 6, "{n} examples in {}", dir.display());
}

#[test]
fn bad_policies_are_located() {
    let dir = std::env::temp_dir().join(format!("moat-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.cedar");
    let config = Policy {
        file: file.clone(),
        mode: PolicyMode::Enforce,
        groups_claim: "groups".into(),
        claims: vec![],
    };
    // A syntax error, on line 3.
    std::fs::write(
        &file,
        "permit (principal, action, resource);\n\npermit (principal action, resource);\n",
    )
    .unwrap();
    let e = load(&config).err().unwrap();
    assert!(e.contains("bad.cedar:3:"), "{e}");
    // A type error against the schema: no such attribute, and an unknown entity type.
    std::fs::write(
        &file,
        "permit (principal, action, resource)\nwhen { context.colour == \"red\" };\npermit (principal == Usr::\"a\", action, resource);\n",
    )
    .unwrap();
    let e = load(&config).err().unwrap();
    assert!(e.contains("bad.cedar:2:"), "{e}");
    assert!(e.contains("bad.cedar:3:"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_method_table_and_the_schema_name_the_same_actions() {
    let (schema, _) = cedar_policy::Schema::from_cedarschema_str(super::SCHEMA).unwrap();
    let mut in_schema: Vec<String> = schema
        .actions()
        .map(|a| a.id().unescaped().to_string())
        .collect();
    let mut in_table: Vec<String> = super::actions().iter().map(|a| a.to_string()).collect();
    in_schema.sort();
    in_table.sort();
    assert_eq!(in_schema, in_table);
    // And each method's resource is what its row names.
    for spec in crate::vocab::method::METHODS {
        let action: cedar_policy::EntityUid = format!("Action::{:?}", spec.action).parse().unwrap();
        let resources: Vec<String> = schema
            .resources_for_action(&action)
            .unwrap()
            .map(|t| t.to_string())
            .collect();
        let expected = spec.target().map_or("Server", |t| t.entity());
        if spec.action == crate::vocab::NOTIFICATION {
            assert_eq!(resources, ["Server"]);
        } else {
            assert_eq!(resources, [expected], "{}", spec.name);
        }
    }
}

#[test]
fn each_task_method_is_decided_by_its_own_action() {
    let dir = std::env::temp_dir().join(format!("moat-policy-tasks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tasks.cedar");
    std::fs::write(
        &file,
        r#"permit(principal, action in [Action::"tasks/get", Action::"tasks/result"], resource);"#,
    )
    .unwrap();
    let e = load(&Policy {
        file,
        mode: PolicyMode::Enforce,
        groups_claim: "groups".into(),
        claims: Vec::new(),
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let ask = |method| {
        decide(
            &e,
            &alice(&[]),
            Ask {
                method,
                target: None,
                ..Ask::default()
            },
        )
        .allowed()
    };
    assert!(ask("tasks/get") && ask("tasks/result"));
    assert!(!ask("tasks/cancel") && !ask("tasks/list") && !ask("tasks/delete"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_deciding_policies_are_named_in_order() {
    let dir = std::env::temp_dir().join(format!("moat-policy-order-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("order.cedar");
    let ids = ["m", "c", "x", "a", "q"];
    let text: String = ids
        .iter()
        .map(|id| format!("@id(\"{id}\") permit (principal, action, resource);\n"))
        .collect();
    std::fs::write(&file, text).unwrap();
    let e = load(&Policy {
        file,
        mode: PolicyMode::Enforce,
        groups_claim: "groups".into(),
        claims: Vec::new(),
    })
    .unwrap_or_else(|e| panic!("{e}"));
    // Cedar names them as a set, in an order that changes from one decision to the next.
    for _ in 0..20 {
        let d = decide(&e, &alice(&[]), Ask::default());
        assert_eq!(d.policies, ["a", "c", "m", "q", "x"]);
        assert_eq!(d.reason, "permitted by a, c, m, q, x");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_time_is_the_second_the_hour_and_weekday_are_made_from() {
    let dir = std::env::temp_dir().join(format!("moat-policy-time-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("epoch.cedar");
    std::fs::write(
        &file,
        r#"permit (principal, action, resource) when {
            context.time == datetime("1970-01-01T00:00:00Z") && context.hour == 0 &&
            context.weekday == "Thu"
        };"#,
    )
    .unwrap();
    let e = load(&Policy {
        file,
        mode: PolicyMode::Enforce,
        groups_claim: "groups".into(),
        claims: Vec::new(),
    })
    .unwrap_or_else(|e| panic!("{e}"));
    // A clock before 1970 is 1970 for all three alike.
    let d = e.decide(&Input {
        server: "files",
        action: "tools/call",
        target: Some((Target::Tool, "deploy")),
        arguments: None,
        principal: &alice(&[]),
        source_ip: "127.0.0.1".parse().unwrap(),
        tls: Some("TLSv1_3"),
        session: None,
        process: None,
        rate: 1,
        now: UNIX_EPOCH - Duration::from_secs(5),
        listing: false,
        integrity: None,
        behaviour: None,
        content: None,
    });
    assert!(d.allowed(), "{d:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Alice's call of `tool` on Saturday noon, as a server with `integrity` and `behaviour` sees it.
fn call_with(
    e: &Engine,
    tool: &str,
    integrity: Option<Standing<'_>>,
    behaviour: Option<&crate::vocab::Assessment>,
) -> Decision {
    e.decide(&Input {
        server: "files",
        action: Method::ToolsCall.action(),
        target: Some((Target::Tool, tool)),
        arguments: None,
        principal: &alice(&[]),
        source_ip: "127.0.0.1".parse().unwrap(),
        tls: None,
        session: None,
        process: None,
        rate: 1,
        now: UNIX_EPOCH + Duration::from_secs(SAT_NOON),
        listing: false,
        integrity,
        behaviour,
        content: None,
    })
}

#[test]
fn a_policy_reads_how_a_tool_stands_against_its_pin() {
    let e = engine("no-flagged-tools.cedar");
    let call = |integrity: Option<Standing<'_>>| call_with(&e, "add", integrity, None);
    let clean = Standing {
        state: "pinned",
        markers: &[],
    };
    assert!(call(None).allowed(), "a server without integrity");
    assert!(call(Some(clean)).allowed());
    for (state, markers) in [
        ("pinned", &["model_directive"][..]),
        ("changed", &[][..]),
        ("unpinned", &[][..]),
    ] {
        let d = call(Some(Standing { state, markers }));
        assert!(!d.allowed(), "{state} {markers:?}");
        assert_eq!(d.policies, ["no-flagged-tools"]);
    }
    // The decision cache tells them apart (the policy reads `context.integrity`).
    assert!(call(Some(clean)).allowed());
}

#[test]
fn a_described_request_carries_its_pin_standing() {
    let e = engine("no-flagged-tools.cedar");
    let described = |integrity: Value| -> explain::Described {
        serde_json::from_value(
            json!({"principal": {"sub": "alice"}, "method": "tools/call",
            "name": "add", "integrity": integrity}),
        )
        .unwrap()
    };
    let d = |v| explain::decide(&e, "files", &described(v)).unwrap();
    assert!(d(Value::Null).allowed());
    assert!(d(json!({"state": "pinned"})).allowed());
    assert!(!d(json!({"state": "pinned", "markers": ["bidi_control"]})).allowed());
    assert!(!d(json!({"state": "changed"})).allowed());
}

#[test]
fn a_policy_reads_the_behaviour_signals_and_may_lock_down() {
    let e = engine("unusual-behaviour.cedar");
    let call = |tool: &str, behaviour: Option<&crate::vocab::Assessment>| {
        call_with(&e, tool, None, behaviour)
    };
    use crate::vocab::{Assessment, Signal};
    let judged = |s: &[Signal]| Assessment::new(s.iter().copied().collect(), false, false);
    assert!(call("deploy", None).allowed(), "a server without behaviour");
    assert!(call("deploy", Some(&judged(&[]))).allowed());
    let new_address = judged(&[Signal::NewAddress]);
    let d = call("deploy", Some(&new_address));
    assert_eq!(d.policies, ["no-sensitive-tools-when-unusual"]);
    assert_eq!(e.locks_down(&d), None, "this policy locks nothing down");
    assert!(call("read_file", Some(&new_address)).allowed());
    let attack = judged(&[Signal::Enumeration, Signal::NewAddress, Signal::OffHours]);
    let d = call("read_file", Some(&attack));
    assert_eq!(d.policies, ["lock-down-attacks"]);
    assert_eq!(
        e.locks_down(&d),
        Some(("lock-down-attacks", super::LocksDown::Sub))
    );
    // A learning baseline scores 0.
    assert!(
        call(
            "deploy",
            Some(&Assessment::new(Default::default(), true, false))
        )
        .allowed()
    );
}

/// `context.content`: what inspection found in the arguments, by rule and kind; the cache
/// keeps calls with different findings apart.
#[test]
fn a_policy_reads_what_content_inspection_found() {
    let e = engine("no-secrets-out.cedar");
    let d = |tool: &str, content: Value| {
        let mut r = json!({"principal": {"sub": "alice"}, "method": "tools/call", "name": tool});
        if !content.is_null() {
            r["content"] = content;
        }
        explain::decide(&e, "files", &serde_json::from_value(r).unwrap()).unwrap()
    };
    assert!(d("search", Value::Null).allowed(), "nothing inspected");
    assert!(d("search", json!({})).allowed(), "nothing found");
    let secret = d("search", json!({"rules": ["aws_access_key_id"]}));
    assert_eq!(secret.policies, ["no-secrets-in-arguments"]);
    assert!(!d("search", json!({"rules": ["email"]})).allowed());
    assert!(d("crm_add", json!({"rules": ["email"]})).allowed());
    let custom = d(
        "crm_add",
        json!({"rules": ["employee_id"], "kinds": ["personal"]}),
    );
    assert!(custom.allowed(), "{custom:?}");
    assert!(
        !d("crm_add", json!({"rules": ["employee_id"]})).allowed(),
        "a secret unless said"
    );
    assert!(d("search", json!({})).allowed(), "cached apart");
}

#[test]
fn approval_annotations_are_checked_and_read() {
    let (schema, _) = cedar_policy::Schema::from_cedarschema_str(SCHEMA).unwrap();
    let parse = |text: &str| super::load::parse("p.cedar", text, &schema);
    let errors = parse(
        r#"@id("f") @approval forbid (principal, action, resource);
           @id("m") @approval("0") permit (principal, action, resource);
           @id("n") @approval("1441") permit (principal, action, resource);
           @id("o") @approval("ten") permit (principal, action, resource);"#,
    )
    .unwrap_err();
    assert!(
        errors.contains("policy `f`: `@approval` is for `permit` policies"),
        "{errors}"
    );
    for id in ["m", "n", "o"] {
        assert!(
            errors.contains(&format!("policy `{id}`: `@approval(")),
            "{id}: {errors}"
        );
    }
    for ok in ["@approval", r#"@approval("1")"#, r#"@approval("1440")"#] {
        let text = format!("@id(\"p\") {ok} permit (principal, action, resource);");
        assert!(parse(&text).is_ok(), "{ok}");
    }
    // Read: a permission by an annotated policy asks; a denial, or another policy's
    // permission, does not.
    let dir = std::env::temp_dir().join(format!("moat-approval-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("p.cedar");
    std::fs::write(
        &file,
        r#"@id("all") permit (principal, action, resource);
           @id("ask") @approval("5") permit (principal, action == Action::"tools/call", resource == Tool::"deploy");
           @id("no-drop") forbid (principal, action == Action::"tools/call", resource == Tool::"drop");"#,
    )
    .unwrap();
    let e = load(&Policy {
        file,
        mode: PolicyMode::Enforce,
        groups_claim: "groups".into(),
        claims: vec![],
    })
    .unwrap();
    let asks = |tool: &str| {
        let d = call_with(&e, tool, None, None);
        e.needs_approval(&d)
            .map(|(id, a)| (id.to_string(), a.reuse.as_secs()))
    };
    assert_eq!(asks("deploy"), Some(("ask".to_string(), 300)));
    assert_eq!(asks("read"), None);
    assert_eq!(asks("drop"), None, "a denial asks nothing");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_example_holds_deploys_for_approval() {
    let e = engine("approve-deploys.cedar");
    let d = |tool: &str, rate: u64| {
        let r = json!({"principal": {"sub": "alice"}, "method": "tools/call", "name": tool, "rate": rate});
        explain::decide(&e, "files", &serde_json::from_value(r).unwrap()).unwrap()
    };
    let deploy = d("deploy", 1);
    assert!(deploy.allowed());
    let (id, a) = e.needs_approval(&deploy).expect("held for approval");
    assert_eq!((id, a.reuse.as_secs()), ("deploys-need-approval", 900));
    assert!(e.needs_approval(&d("read_file", 1)).is_none());
    let fast = d("deploy", 4);
    assert_eq!(fast.policies, ["deploys-at-most-3-a-minute"]);
    assert!(e.needs_approval(&fast).is_none(), "refused, not held");
    // In shadow mode nothing is enforced, nor held.
    let shadow = load(&Policy {
        file: example("approve-deploys.cedar"),
        mode: PolicyMode::Shadow,
        groups_claim: "groups".into(),
        claims: vec![],
    })
    .unwrap();
    assert!(shadow.needs_approval(&deploy).is_none());
}

#[test]
fn lockdown_annotations_are_checked_when_the_policies_load() {
    let (schema, _) = cedar_policy::Schema::from_cedarschema_str(SCHEMA).unwrap();
    let parse = |text: &str| super::load::parse("p.cedar", text, &schema);
    let errors = parse(
        r#"@id("p") @lockdown permit (principal, action, resource);
           @id("f") @lockdown("everyone") forbid (principal, action, resource);"#,
    )
    .unwrap_err();
    assert!(
        errors.contains("policy `p`: `@lockdown` is for `forbid` policies"),
        "{errors}"
    );
    assert!(
        errors.contains(r#"policy `f`: `@lockdown("everyone")`: expected"#),
        "{errors}"
    );
    for ok in ["@lockdown", r#"@lockdown("sub")"#, r#"@lockdown("client")"#] {
        let text = format!("@id(\"f\") {ok} forbid (principal, action, resource);");
        assert!(parse(&text).is_ok(), "{ok}");
    }
}
