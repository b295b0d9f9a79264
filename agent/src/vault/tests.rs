use std::{os::unix::fs::PermissionsExt as _, sync::Arc};

use super::*;
use crate::store::{sealed::Sealed, tests::Dir};

fn shown() -> UpstreamToken {
    UpstreamToken {
        provider: "https://github.example".into(),
        sealed: Sealed {
            kek: String::new(),
            ciphertext: Vec::new(),
        },
        scope: "repo".into(),
        obtained: 1,
        refreshed: None,
        expires: Some(3600),
        refreshable: false,
    }
}

fn secret(n: u32) -> Secret {
    Secret {
        access_token: format!("gho_access_token_of_user_{n}"),
        refresh_token: Some(format!("refresh_token_of_user_{n}")),
    }
}

/// Every file of `dir`, as bytes.
fn files(dir: &std::path::Path) -> Vec<u8> {
    let mut all = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            all.extend(std::fs::read(p).unwrap());
        }
    }
    all
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn tokens_are_sealed_at_rest_and_open_only_for_their_owner() {
    let dir = Dir::new("vault-sealed");
    let state = dir.state();
    let store = Arc::new(Store::open(&state).unwrap());
    let v = Vault::open(&state, store.clone()).unwrap();
    let mode = std::fs::metadata(state.join(KEYS_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    v.put("github", "alice", &secret(1), shown()).unwrap();
    v.put("github", "bob", &secret(2), shown()).unwrap();
    let (s, record) = v.get("github", "alice").unwrap().unwrap();
    assert_eq!(s, secret(1));
    assert!(record.refreshable);
    assert!(v.get("github", "carol").unwrap().is_none());
    // Nothing in the state directory holds a token in the clear.
    drop(v);
    drop(store);
    let bytes = files(&state);
    for t in ["gho_access_token_of_user_1", "refresh_token_of_user_2"] {
        assert!(!contains(&bytes, t), "{t} in the clear");
    }
    // Bob's sealed value copied into alice's record does not open there.
    let store = Arc::new(Store::open(&state).unwrap());
    let mut bobs = store
        .upstream_tokens()
        .get("github", "bob")
        .unwrap()
        .unwrap();
    bobs.provider = "copied".into();
    store
        .upstream_tokens()
        .put("github", "alice", &bobs)
        .unwrap();
    let v = Vault::open(&state, store).unwrap();
    assert!(
        v.get("github", "alice").is_err(),
        "a copied value is refused"
    );
    assert_eq!(
        v.get("github", "bob").unwrap().unwrap().0,
        secret(2),
        "after a restart"
    );
}

#[test]
fn a_rotation_reseals_everything_and_drops_the_old_key() {
    let dir = Dir::new("vault-rotate");
    let state = dir.state();
    let store = Arc::new(Store::open(&state).unwrap());
    let v = Vault::open(&state, store.clone()).unwrap();
    for n in 0..3 {
        v.put("github", &format!("u{n}"), &secret(n), shown())
            .unwrap();
    }
    let old_keys = std::fs::read_to_string(state.join(KEYS_FILE)).unwrap();
    let old_kek = store
        .upstream_tokens()
        .get("github", "u0")
        .unwrap()
        .unwrap()
        .sealed
        .kek;
    assert_eq!(v.rotate().unwrap(), 3);
    let new_kek = store
        .upstream_tokens()
        .get("github", "u0")
        .unwrap()
        .unwrap()
        .sealed
        .kek;
    assert_ne!(old_kek, new_kek);
    let keys = std::fs::read_to_string(state.join(KEYS_FILE)).unwrap();
    assert!(
        !keys.contains(&old_kek) && keys.contains(&new_kek),
        "the old key is gone"
    );
    for n in 0..3 {
        assert_eq!(
            v.get("github", &format!("u{n}")).unwrap().unwrap().0,
            secret(n)
        );
    }
    // With the old keys file put back, nothing opens: the data moved on.
    std::fs::write(state.join(KEYS_FILE), old_keys).unwrap();
    let v = Vault::open(&state, store).unwrap();
    assert!(v.get("github", "u0").is_err());
}

#[test]
fn a_keys_file_others_can_read_is_refused() {
    let dir = Dir::new("vault-mode");
    let state = dir.state();
    let store = Arc::new(Store::open(&state).unwrap());
    drop(Vault::open(&state, store.clone()).unwrap());
    let path = state.join(KEYS_FILE);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = Vault::open(&state, store.clone())
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("chmod 600"), "{err}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&path, "{\"keys\": []}").unwrap();
    assert!(Vault::open(&state, store).is_err(), "no key");
}

#[test]
fn deleting_a_subject_gives_its_tokens_for_revocation() {
    let dir = Dir::new("vault-delete");
    let state = dir.state();
    let store = Arc::new(Store::open(&state).unwrap());
    let v = Vault::open(&state, store).unwrap();
    v.put("github", "alice", &secret(1), shown()).unwrap();
    v.put("salesforce", "alice", &secret(3), shown()).unwrap();
    v.put("github", "bob", &secret(2), shown()).unwrap();
    let connected: Vec<String> = v
        .connected("alice")
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(connected, ["github", "salesforce"]);
    let gone = v.delete_sub("alice").unwrap();
    assert_eq!(gone.len(), 2);
    assert_eq!(gone[0].1.as_ref(), Some(&secret(1)));
    assert!(v.connected("alice").unwrap().is_empty());
    assert_eq!(v.connected("bob").unwrap().len(), 1);
}
