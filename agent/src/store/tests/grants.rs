//! Refresh-token families: rotation, reuse detection, revocation, and tokens of one family
//! tried against another.
use std::sync::{Arc, Barrier};

use super::{Dir, client, grant, token};
use crate::store::{
    Store, StoreError,
    grants::{RevokeReason, RotateError},
    record::TokenHash,
};

/// A store with clients `c1` and `c2`.
fn store(dir: &Dir) -> Store {
    let s = Store::open(&dir.state()).unwrap();
    s.clients().insert(&client("c1")).unwrap();
    s.clients().insert(&client("c2")).unwrap();
    s
}

fn reason(s: &Store, family: &str) -> Option<RevokeReason> {
    s.grants()
        .get(family)
        .unwrap()
        .unwrap()
        .revoked
        .map(|r| r.reason)
}

#[test]
fn rotation_replaces_the_current_token() {
    let dir = Dir::new("rotate");
    let s = store(&dir);
    let (_, t1) = token();
    let (_, t2) = token();
    let (_, t3) = token();
    let f = s.grants().create(grant("alice", "c1"), &t1).unwrap();
    assert_eq!((f.current, f.rotated, &f.revoked), (t1, None, &None));
    let f2 = s.grants().rotate(&t1, &t2, "c1").unwrap();
    assert_eq!((f2.id.as_str(), f2.current), (f.id.as_str(), t2));
    assert!(f2.rotated.is_some());
    let f3 = s.grants().rotate(&t2, &t3, "c1").unwrap();
    assert_eq!(f3.current, t3);
    // What was granted is carried along unchanged.
    assert_eq!(
        (&f3.scopes, &f3.resource, &f3.claims),
        (&f.scopes, &f.resource, &f.claims)
    );
    // Every token of the family, old or current, leads to it.
    for t in [t1, t2, t3] {
        assert_eq!(s.grants().family_of(&t).unwrap().unwrap().id, f.id);
    }
}

#[test]
fn reusing_a_rotated_token_revokes_the_whole_family() {
    let dir = Dir::new("reuse");
    let s = store(&dir);
    let (_, t1) = token();
    let (_, t2) = token();
    let (_, t3) = token();
    let f = s.grants().create(grant("alice", "c1"), &t1).unwrap();
    s.grants().rotate(&t1, &t2, "c1").unwrap();
    // The thief (or the user) shows the old token again.
    let err = s.grants().rotate(&t1, &t3, "c1").unwrap_err();
    assert!(
        matches!(&err, RotateError::Reuse { family } if *family == f.id),
        "{err:?}"
    );
    assert_eq!(reason(&s, &f.id), Some(RevokeReason::Reuse));
    // The current token died with its family; and t3 was never taken.
    let err = s.grants().rotate(&t2, &t3, "c1").unwrap_err();
    assert!(
        matches!(
            err,
            RotateError::Revoked {
                reason: RevokeReason::Reuse,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(s.grants().family_of(&t3).unwrap().is_none());
}

#[test]
fn a_token_of_a_revoked_family_is_refused() {
    let dir = Dir::new("revoked");
    let s = store(&dir);
    let (_, t1) = token();
    let (_, t2) = token();
    let f = s.grants().create(grant("alice", "c1"), &t1).unwrap();
    assert!(s.grants().revoke(&f.id).unwrap());
    assert!(!s.grants().revoke(&f.id).unwrap(), "revoked already");
    let err = s.grants().rotate(&t1, &t2, "c1").unwrap_err();
    assert!(
        matches!(
            err,
            RotateError::Revoked {
                reason: RevokeReason::Revoked,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(s.grants().get(&f.id).unwrap().unwrap().current, t1);
}

#[test]
fn an_unknown_token_changes_nothing() {
    let dir = Dir::new("unknown");
    let s = store(&dir);
    let (_, t1) = token();
    let (_, t2) = token();
    let f = s.grants().create(grant("alice", "c1"), &t1).unwrap();
    let err = s
        .grants()
        .rotate(&TokenHash::of("guessed"), &t2, "c1")
        .unwrap_err();
    assert!(matches!(err, RotateError::Unknown), "{err:?}");
    assert_eq!(s.grants().get(&f.id).unwrap(), Some(f));
}

#[test]
fn concurrent_rotations_of_one_token_exactly_one_wins() {
    let dir = Dir::new("race");
    let s = Arc::new(store(&dir));
    let (_, t1) = token();
    let f = s.grants().create(grant("alice", "c1"), &t1).unwrap();
    let n = 8;
    let start = Arc::new(Barrier::new(n));
    let racers: Vec<_> = (0..n)
        .map(|_| {
            let (s, start) = (s.clone(), start.clone());
            std::thread::spawn(move || {
                let (_, next) = token();
                start.wait();
                (next, s.grants().rotate(&t1, &next, "c1"))
            })
        })
        .collect();
    let results: Vec<_> = racers.into_iter().map(|r| r.join().unwrap()).collect();
    let won: Vec<_> = results.iter().filter(|(_, r)| r.is_ok()).collect();
    assert_eq!(won.len(), 1, "{results:?}");
    // The first loser showed a rotated token (reuse) and revoked the family; those after it
    // found it revoked.
    let lost = |want: fn(&RotateError) -> bool| {
        results
            .iter()
            .filter(|(_, r)| r.as_ref().err().is_some_and(want))
            .count()
    };
    let reuse = lost(|e| matches!(e, RotateError::Reuse { .. }));
    let revoked = lost(|e| {
        matches!(
            e,
            RotateError::Revoked {
                reason: RevokeReason::Reuse,
                ..
            }
        )
    });
    assert_eq!((reuse, revoked), (1, n - 2), "{results:?}");
    // The winner's token went with the family.
    assert_eq!(reason(&s, &f.id), Some(RevokeReason::Reuse));
    let (_, later) = token();
    let winner = won[0].0;
    assert!(matches!(
        s.grants().rotate(&winner, &later, "c1"),
        Err(RotateError::Revoked { .. })
    ));
}

#[test]
fn a_token_of_one_family_cannot_rotate_another() {
    let dir = Dir::new("cross");
    let s = store(&dir);
    let (_, a1) = token();
    let (_, a2) = token();
    let (_, b1) = token();
    let (_, b2) = token();
    let a = s.grants().create(grant("alice", "c1"), &a1).unwrap();
    let b = s.grants().create(grant("bob", "c1"), &b1).unwrap();
    // Rotating a1 into b's current token would hand b's family to a's holder: refused, and
    // nothing changes in either.
    let err = s.grants().rotate(&a1, &b1, "c1").unwrap_err();
    assert!(
        matches!(err, RotateError::Store(StoreError::Exists { .. })),
        "{err:?}"
    );
    // And into its own token (a no-op rotation that would keep a1 alive forever).
    assert!(s.grants().rotate(&a1, &a1, "c1").is_err());
    assert_eq!(s.grants().get(&a.id).unwrap(), Some(a.clone()));
    assert_eq!(s.grants().get(&b.id).unwrap(), Some(b.clone()));
    // Rotating a's token leaves b as it was.
    assert_eq!(s.grants().rotate(&a1, &a2, "c1").unwrap().id, a.id);
    assert_eq!(s.grants().get(&b.id).unwrap(), Some(b.clone()));
    // Reuse in one family revokes that family only.
    assert!(s.grants().rotate(&a1, &TokenHash::of("x"), "c1").is_err());
    assert_eq!(reason(&s, &a.id), Some(RevokeReason::Reuse));
    assert_eq!(s.grants().rotate(&b1, &b2, "c1").unwrap().id, b.id);
    // A new family cannot take a token hash another family holds either.
    let err = s.grants().create(grant("mallory", "c1"), &b2).unwrap_err();
    assert!(matches!(err, StoreError::Exists { .. }), "{err:?}");
}

#[test]
fn a_token_shown_by_another_client_revokes_its_family() {
    let dir = Dir::new("wrong-client");
    let s = store(&dir);
    let (_, t1) = token();
    let (_, t2) = token();
    let f = s.grants().create(grant("alice", "c1"), &t1).unwrap();
    let err = s.grants().rotate(&t1, &t2, "c2").unwrap_err();
    assert!(
        matches!(&err, RotateError::WrongClient { family } if *family == f.id),
        "{err:?}"
    );
    assert_eq!(reason(&s, &f.id), Some(RevokeReason::WrongClient));
    assert!(s.grants().rotate(&t1, &t2, "c1").is_err());
}

#[test]
fn families_need_a_live_client() {
    let dir = Dir::new("live-client");
    let s = store(&dir);
    let (_, t1) = token();
    let err = s
        .grants()
        .create(grant("alice", "nobody"), &t1)
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    s.revocations().revoke_client("c2").unwrap();
    let err = s.grants().create(grant("alice", "c2"), &t1).unwrap_err();
    assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
    // Nothing of the refused families was kept.
    assert!(s.grants().family_of(&t1).unwrap().is_none());
    assert!(s.grants().by_subject("alice").unwrap().is_empty());
}

#[test]
fn families_are_listed_by_subject_and_by_client() {
    let dir = Dir::new("list");
    let s = store(&dir);
    let a = s.grants().create(grant("alice", "c1"), &token().1).unwrap();
    let b = s.grants().create(grant("alice", "c2"), &token().1).unwrap();
    let c = s.grants().create(grant("bob", "c1"), &token().1).unwrap();
    let ids = |v: Vec<crate::store::grants::Family>| {
        let mut ids: Vec<_> = v.into_iter().map(|f| f.id).collect();
        ids.sort();
        ids
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(
        ids(s.grants().by_subject("alice").unwrap()),
        sorted(vec![a.id.clone(), b.id.clone()])
    );
    assert_eq!(
        ids(s.grants().by_subject("bob").unwrap()),
        vec![c.id.clone()]
    );
    assert_eq!(
        ids(s.grants().by_client("c1").unwrap()),
        sorted(vec![a.id, c.id])
    );
    assert_eq!(ids(s.grants().by_client("c2").unwrap()), vec![b.id]);
    assert!(s.grants().by_subject("ali").unwrap().is_empty());
}
