//! Clients, consents and revocations: what revoking or deleting each cuts, and only that.
use super::{Dir, client, grant, token};
use crate::store::{
    Store, StoreError,
    grants::{RevokeReason, RotateError},
    record::Timestamp,
};

fn reason(s: &Store, family: &str) -> Option<RevokeReason> {
    s.grants()
        .get(family)
        .unwrap()
        .unwrap()
        .revoked
        .map(|r| r.reason)
}

fn scopes(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| s.to_string()).collect()
}

#[test]
fn clients_are_added_updated_and_listed() {
    let dir = Dir::new("clients");
    let s = Store::open(&dir.state()).unwrap();
    let mut c = client("c1");
    s.clients().insert(&c).unwrap();
    let err = s.clients().insert(&client("c1")).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Exists {
                table: "clients",
                ..
            }
        ),
        "{err:?}"
    );
    c.name = "renamed".into();
    s.clients().update(&c).unwrap();
    assert_eq!(s.clients().get("c1").unwrap(), Some(c.clone()));
    // An update cannot revoke (that would skip cutting its grants).
    let mut revoked = c.clone();
    revoked.revoked_at = Some(Timestamp::now());
    s.clients().update(&revoked).unwrap();
    assert_eq!(s.clients().get("c1").unwrap().unwrap().revoked_at, None);
    assert!(matches!(
        s.clients().update(&client("c9")),
        Err(StoreError::NotFound { .. })
    ));
    s.clients().insert(&client("c0")).unwrap();
    let ids: Vec<_> = s
        .clients()
        .list()
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ids, ["c0", "c1"]);
    for bad in ["", "a\nb", &"x".repeat(3000)] {
        let err = s.clients().insert(&client(bad)).unwrap_err();
        assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
    }
}

/// Client `c1` and `c2`; alice and bob consented to both and hold a family with each.
fn populated(dir: &Dir) -> (Store, [String; 4]) {
    let s = Store::open(&dir.state()).unwrap();
    let mut families = Vec::new();
    for c in ["c1", "c2"] {
        s.clients().insert(&client(c)).unwrap();
        for sub in ["alice", "bob"] {
            s.consents()
                .grant(sub, c, scopes(&["mcp:tools"]), scopes(&["files"]))
                .unwrap();
            families.push(s.grants().create(grant(sub, c), &token().1).unwrap().id);
        }
    }
    (s, families.try_into().unwrap())
}

#[test]
fn deleting_a_client_revokes_its_families_consents_and_tokens() {
    let dir = Dir::new("delete");
    let (s, [c1_alice, c1_bob, c2_alice, c2_bob]) = populated(&dir);
    let before = Timestamp::now();
    assert!(s.revocations().delete_client("c1").unwrap());
    assert!(
        !s.revocations().delete_client("c1").unwrap(),
        "gone already"
    );
    assert_eq!(s.clients().get("c1").unwrap(), None);
    for f in [&c1_alice, &c1_bob] {
        assert_eq!(reason(&s, f), Some(RevokeReason::ClientDeleted));
    }
    assert!(s.consents().by_client("c1").unwrap().is_empty());
    assert_eq!(s.consents().get("alice", "c1").unwrap(), None);
    // Its access tokens issued so far are refused.
    assert!(s.revocations().refuses("alice", "c1", before).unwrap());
    // The other client keeps everything.
    for f in [&c2_alice, &c2_bob] {
        assert_eq!(reason(&s, f), None);
    }
    assert_eq!(s.consents().by_client("c2").unwrap().len(), 2);
    let alice: Vec<_> = s
        .consents()
        .by_subject("alice")
        .unwrap()
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    assert_eq!(alice, ["c2"]);
    assert!(!s.revocations().refuses("alice", "c2", before).unwrap());
    // Nothing new for the deleted client.
    let err = s
        .grants()
        .create(grant("alice", "c1"), &token().1)
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    assert!(s.consents().grant("alice", "c1", vec![], vec![]).is_err());
}

#[test]
fn revoking_a_client_keeps_its_record_and_cuts_the_rest() {
    let dir = Dir::new("revoke-client");
    let (s, [c1_alice, _, c2_alice, _]) = populated(&dir);
    let (registration, hash) = token();
    let mut c = s.clients().get("c1").unwrap().unwrap();
    c.registration_token = Some(hash);
    s.clients().update(&c).unwrap();
    assert!(
        s.clients()
            .check_registration_token("c1", &registration)
            .unwrap()
    );
    assert!(s.revocations().revoke_client("c1").unwrap());
    assert!(
        !s.revocations().revoke_client("c1").unwrap(),
        "revoked already"
    );
    let c = s.clients().get("c1").unwrap().unwrap();
    assert!(c.revoked_at.is_some());
    // An update does not bring it back.
    s.clients().update(&client("c1")).unwrap();
    assert!(s.clients().get("c1").unwrap().unwrap().revoked_at.is_some());
    assert!(
        !s.clients()
            .check_registration_token("c1", &registration)
            .unwrap()
    );
    assert_eq!(reason(&s, &c1_alice), Some(RevokeReason::ClientRevoked));
    assert_eq!(reason(&s, &c2_alice), None);
    assert!(s.consents().by_client("c1").unwrap().is_empty());
    assert!(s.revocations().client("c1").unwrap().is_some());
    // Its id is not free for another client.
    assert!(s.clients().insert(&client("c1")).is_err());
}

#[test]
fn consents_are_listed_by_subject_and_by_client() {
    let dir = Dir::new("consents");
    let s = Store::open(&dir.state()).unwrap();
    for c in ["c1", "c2"] {
        s.clients().insert(&client(c)).unwrap();
    }
    // "ali" sorts right before "alice": the listing by subject must not run into it.
    for sub in ["ali", "alice", "alicea"] {
        s.consents()
            .grant(sub, "c1", scopes(&["a"]), scopes(&["files"]))
            .unwrap();
    }
    s.consents()
        .grant("alice", "c2", scopes(&["b"]), scopes(&["mail"]))
        .unwrap();
    let by_alice = s.consents().by_subject("alice").unwrap();
    assert_eq!(by_alice.len(), 2);
    assert_eq!(
        (by_alice[0].0.as_str(), &by_alice[0].1.scopes),
        ("c1", &scopes(&["a"]))
    );
    assert_eq!(
        (by_alice[1].0.as_str(), &by_alice[1].1.resources),
        ("c2", &scopes(&["mail"]))
    );
    let subs: Vec<_> = s
        .consents()
        .by_client("c1")
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(subs, ["ali", "alice", "alicea"]);
    // A new grant replaces the old one.
    s.consents()
        .grant("alice", "c1", scopes(&["a", "c"]), vec![])
        .unwrap();
    assert_eq!(
        s.consents().get("alice", "c1").unwrap().unwrap().scopes,
        scopes(&["a", "c"])
    );
    assert_eq!(s.consents().by_client("c1").unwrap().len(), 3);
}

#[test]
fn withdrawing_a_consent_ends_that_clients_families_for_that_user_only() {
    let dir = Dir::new("withdraw");
    let (s, [c1_alice, c1_bob, c2_alice, _]) = populated(&dir);
    assert!(s.consents().withdraw("alice", "c1").unwrap());
    assert!(!s.consents().withdraw("alice", "c1").unwrap());
    assert_eq!(reason(&s, &c1_alice), Some(RevokeReason::ConsentWithdrawn));
    assert_eq!(reason(&s, &c1_bob), None);
    assert_eq!(reason(&s, &c2_alice), None);
    let subs: Vec<_> = s
        .consents()
        .by_client("c1")
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(subs, ["bob"]);
}

#[test]
fn revoking_a_subject_ends_its_refresh_and_access_tokens() {
    let dir = Dir::new("revoke-sub");
    let (s, [c1_alice, c1_bob, c2_alice, c2_bob]) = populated(&dir);
    let alice_t = s.grants().get(&c1_alice).unwrap().unwrap().current;
    let r = s.revocations().revoke_subject("alice").unwrap();
    assert!(r.before > r.at);
    for f in [&c1_alice, &c2_alice] {
        assert_eq!(reason(&s, f), Some(RevokeReason::Subject));
    }
    for f in [&c1_bob, &c2_bob] {
        assert_eq!(reason(&s, f), None);
    }
    assert!(matches!(
        s.grants().rotate(&alice_t, &token().1, "c1"),
        Err(RotateError::Revoked { .. })
    ));
    // Access tokens: issued before the revocation (or in its second) refused, after it not.
    let rev = s.revocations();
    assert!(rev.refuses("alice", "c1", r.at).unwrap());
    assert!(
        rev.refuses("alice", "c2", Timestamp(r.before.0 - 1))
            .unwrap()
    );
    assert!(!rev.refuses("alice", "c1", r.before).unwrap());
    assert!(!rev.refuses("bob", "c1", r.at).unwrap());
    // Consents stay: a new login needs no new consent.
    assert!(s.consents().get("alice", "c1").unwrap().is_some());
    // A clock set back does not bring tokens back.
    let again = rev
        .revoke_subject_at("alice", Timestamp(r.at.0 - 1000))
        .unwrap();
    assert_eq!(again.before, r.before);
    assert!(rev.refuses("alice", "c1", r.at).unwrap());
    let subjects: Vec<_> = rev
        .subjects()
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(subjects, ["alice"]);
}

#[test]
fn revoking_a_clients_tokens_refuses_them_for_every_subject() {
    let dir = Dir::new("revoke-client-tokens");
    let (s, [_, _, c2_alice, _]) = populated(&dir);
    let rev = s.revocations();
    let r = rev.revoke_client_tokens("c2").unwrap();
    assert!(rev.refuses("alice", "c2", r.at).unwrap());
    assert!(rev.refuses("bob", "c2", r.at).unwrap());
    assert!(!rev.refuses("alice", "c1", r.at).unwrap());
    // Its families and record are left alone.
    assert_eq!(reason(&s, &c2_alice), None);
    assert!(s.clients().get("c2").unwrap().unwrap().revoked_at.is_none());
    let clients: Vec<_> = rev.clients().unwrap().into_iter().map(|(c, _)| c).collect();
    assert_eq!(clients, ["c2"]);
    assert_eq!(rev.client("c2").unwrap(), Some(r));
}
