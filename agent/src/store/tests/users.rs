//! Local users' passwords: argon2id, checked by the crate, never stored.
use super::Dir;
use crate::store::{Store, StoreError};

#[test]
fn passwords_verify_and_wrong_ones_do_not() {
    let dir = Dir::new("users");
    let s = Store::open(&dir.state()).unwrap();
    let u = s.users();
    u.set_password("alice", "correct horse").unwrap();
    assert!(u.verify_password("alice", "correct horse").unwrap());
    for wrong in ["correct hors", "Correct horse", "correct horse ", "", "bob"] {
        assert!(!u.verify_password("alice", wrong).unwrap(), "{wrong:?}");
    }
    // An unknown user is a plain `false`, like a wrong password.
    assert!(!u.verify_password("bob", "correct horse").unwrap());
    // A new password replaces the old one.
    u.set_password("alice", "battery staple").unwrap();
    assert!(u.verify_password("alice", "battery staple").unwrap());
    assert!(!u.verify_password("alice", "correct horse").unwrap());
    u.set_password("bob", "another").unwrap();
    let names: Vec<_> = u.list().unwrap().into_iter().map(|u| u.name).collect();
    assert_eq!(names, ["alice", "bob"]);
    assert!(u.remove("alice").unwrap());
    assert!(!u.remove("alice").unwrap());
    assert!(!u.verify_password("alice", "battery staple").unwrap());
    assert!(u.verify_password("bob", "another").unwrap());
}

#[test]
fn passwords_are_stored_as_argon2id_with_a_salt_of_their_own() {
    let dir = Dir::new("phc");
    let s = Store::open(&dir.state()).unwrap();
    s.users().set_password("alice", "same password").unwrap();
    s.users().set_password("bob", "same password").unwrap();
    drop(s);
    let db = redb::Database::create(dir.file()).unwrap();
    let r = redb::ReadableDatabase::begin_read(&db).unwrap();
    let t = r
        .open_table(redb::TableDefinition::<&str, &[u8]>::new("users"))
        .unwrap();
    let phc = |name: &str| {
        let v: serde_json::Value =
            serde_json::from_slice(t.get(name).unwrap().unwrap().value()).unwrap();
        v["phc"].as_str().unwrap().to_string()
    };
    let (a, b) = (phc("alice"), phc("bob"));
    assert!(a.starts_with("$argon2id$v=19$"), "{a}");
    assert_ne!(a, b, "the same password hashes differently for each user");
}

#[test]
fn bad_names_and_passwords_are_refused() {
    let dir = Dir::new("users-bad");
    let s = Store::open(&dir.state()).unwrap();
    let long = "p".repeat(1025);
    for (name, password) in [
        ("", "pw"),
        ("a\u{7}b", "pw"),
        ("alice", ""),
        ("alice", long.as_str()),
    ] {
        let err = s.users().set_password(name, password).unwrap_err();
        assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
    }
    assert!(s.users().list().unwrap().is_empty());
    assert!(!s.users().verify_password("alice", &long).unwrap());
}
