use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use serde_json::json;

use super::*;

fn binding(args: serde_json::Value) -> Binding {
    Binding {
        sub: "alice".into(),
        client_id: Some("cli".into()),
        session: Some("s1".into()),
        server: "files".into(),
        method: "tools/call".into(),
        target: Some("deploy".into()),
        arguments_sha256: Binding::arguments_hash(Some(&args)),
    }
}

fn approvals(timeout_ms: u64) -> Arc<Approvals> {
    let config = config::Approvals {
        timeout: Duration::from_millis(timeout_ms),
        ..config::Approvals::default()
    };
    Arc::new(Approvals::new(&config).unwrap())
}

fn by_cli(approve: bool) -> Answer {
    Answer {
        approve,
        via: Via::Cli,
        by: "uid 0".into(),
        at: SystemTime::now(),
    }
}

fn held(a: &Approvals, b: Binding, reuse: Duration) -> Held {
    match a.ask(b, "p", reuse, None) {
        Some(Asked::Held(h)) => h,
        Some(Asked::Reused) => panic!("reused"),
        None => panic!("refused"),
    }
}

#[tokio::test]
async fn an_approval_answers_one_request_once() {
    let a = approvals(5_000);
    let h = held(&a, binding(json!({"env": "prod"})), Duration::ZERO);
    let id = h.id.clone();
    assert_eq!(a.list().len(), 1);
    assert_eq!(a.list()[0]["id"], id.as_str());
    a.answer(&id, by_cli(true), None).unwrap();
    let (verdict, answer) = a.wait(h, std::future::pending()).await;
    assert_eq!(verdict, Verdict::Approved);
    assert_eq!(answer.unwrap().by, "uid 0");
    // Replayed: nothing is pending under that id any more.
    assert_eq!(
        a.answer(&id, by_cli(true), None),
        Err(ApprovalError::NotPending(id.clone()))
    );
    // Single use: the same call asks again.
    assert!(matches!(
        a.ask(binding(json!({"env": "prod"})), "p", Duration::ZERO, None),
        Some(Asked::Held(_))
    ));
}

#[tokio::test]
async fn an_approval_with_minutes_covers_the_same_call_only() {
    let a = approvals(5_000);
    let prod = json!({"env": "prod", "n": 1});
    let h = held(&a, binding(prod.clone()), Duration::from_secs(600));
    a.answer(&h.id.clone(), by_cli(true), None).unwrap();
    assert_eq!(a.wait(h, std::future::pending()).await.0, Verdict::Approved);
    // The same arguments, written in another key order and number form: the same call.
    let same: serde_json::Value = serde_json::from_str(r#"{"n": 1.0e0, "env": "prod"}"#).unwrap();
    assert!(matches!(
        a.ask(binding(same), "p", Duration::from_secs(600), None),
        Some(Asked::Reused)
    ));
    // Other arguments, another session or another principal: asked again.
    assert!(matches!(
        a.ask(
            binding(json!({"env": "staging", "n": 1})),
            "p",
            Duration::ZERO,
            None
        ),
        Some(Asked::Held(_))
    ));
    let mut other = binding(prod.clone());
    other.session = Some("s2".into());
    assert!(matches!(
        a.ask(other, "p", Duration::ZERO, None),
        Some(Asked::Held(_))
    ));
    let mut other = binding(prod);
    other.sub = "mallory".into();
    assert!(matches!(
        a.ask(other, "p", Duration::ZERO, None),
        Some(Asked::Held(_))
    ));
}

#[tokio::test]
async fn no_answer_denies_and_a_late_one_finds_nothing() {
    let a = approvals(50);
    let h = held(&a, binding(json!({})), Duration::ZERO);
    let id = h.id.clone();
    assert_eq!(a.wait(h, std::future::pending()).await.0, Verdict::TimedOut);
    assert!(a.list().is_empty());
    assert!(a.answer(&id, by_cli(true), None).is_err());
    // Denied.
    let h = held(&a, binding(json!({})), Duration::ZERO);
    a.answer(&h.id.clone(), by_cli(false), None).unwrap();
    assert_eq!(a.wait(h, std::future::pending()).await.0, Verdict::Denied);
    // The client went away.
    let h = held(&a, binding(json!({})), Duration::ZERO);
    assert_eq!(a.wait(h, async {}).await.0, Verdict::Abandoned);
    assert!(a.list().is_empty());
}

#[tokio::test]
async fn a_client_answers_only_its_own_approvals() {
    let a = approvals(5_000);
    let h = held(&a, binding(json!({})), Duration::ZERO);
    let id = h.id.clone();
    let from_client = Answer {
        via: Via::Elicitation,
        by: "mallory".into(),
        ..by_cli(true)
    };
    assert_eq!(
        a.answer(&id, from_client.clone(), Some(("mallory", Some("s1")))),
        Err(ApprovalError::Foreign(id.clone()))
    );
    assert_eq!(
        a.answer(&id, from_client.clone(), Some(("alice", Some("s2")))),
        Err(ApprovalError::Foreign(id.clone()))
    );
    a.answer(&id, from_client, Some(("alice", Some("s1"))))
        .unwrap();
    assert_eq!(a.wait(h, std::future::pending()).await.0, Verdict::Approved);
}

#[test]
fn the_admin_token_is_checked() {
    let a = approvals(1_000);
    assert!(
        !a.admin_on() && !a.admits(Some("anything")),
        "off without a token file"
    );
    let dir = crate::store::tests::Dir::new("approvals-token");
    let state = dir.state();
    std::fs::create_dir_all(&state).unwrap();
    let file = state.join("token");
    std::fs::write(&file, "0123456789abcdef0123\n").unwrap();
    let config = config::Approvals {
        token_file: Some(file.clone()),
        ..config::Approvals::default()
    };
    let a = Approvals::new(&config).unwrap();
    assert!(a.admits(Some("0123456789abcdef0123")));
    assert!(!a.admits(Some("0123456789abcdef012")) && !a.admits(None));
    std::fs::write(&file, "short").unwrap();
    let refused = Approvals::new(&config)
        .err()
        .expect("a short token is refused");
    assert!(refused.contains("at least 16"), "{refused}");
}
