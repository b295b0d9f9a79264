//! The store as a whole: the file (its mode, its lock, a restart, a damaged or foreign file)
//! and the records' format (versions written by hand, as an older release wrote them).
use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use redb::TableDefinition;

use super::{
    FILE, Store, StoreError,
    clients::Client,
    clients::ClientKind,
    grants::NewFamily,
    record::{Timestamp, TokenHash, random_token},
};

mod clients;
mod grants;
mod keys;
mod users;

/// A state directory of its own for one test, removed when it ends.
pub(crate) struct Dir(PathBuf);

impl Dir {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("moat-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Self(dir)
    }

    /// The state directory (not created yet: the store creates it).
    pub fn state(&self) -> PathBuf {
        self.0.join("state")
    }

    pub fn file(&self) -> PathBuf {
        self.state().join(FILE)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(super) fn client(id: &str) -> Client {
    Client {
        id: id.into(),
        kind: ClientKind::Registered,
        name: format!("client {id}"),
        redirect_uris: vec![format!("https://{id}.example/cb")],
        created: Timestamp::now(),
        revoked_at: None,
        registration_token: None,
    }
}

pub(super) fn grant(sub: &str, client: &str) -> NewFamily {
    NewFamily {
        sub: sub.into(),
        client_id: client.into(),
        scopes: vec!["mcp:tools".into()],
        resource: "files".into(),
        claims: [("groups".to_string(), serde_json::json!(["readers"]))].into(),
    }
}

/// A new refresh token and its hash.
pub(super) fn token() -> (String, TokenHash) {
    let t = random_token().unwrap();
    let h = TokenHash::of(&t);
    (t, h)
}

/// Writes `json` under `key` in the string-keyed `table` of the store file at `path`, as
/// another release (or a hand) would have: straight into the database.
fn write_raw(path: &Path, table: &str, key: &str, json: &str) {
    let db = redb::Database::create(path).unwrap();
    let w = db.begin_write().unwrap();
    {
        let def: TableDefinition<&str, &[u8]> = TableDefinition::new(table);
        w.open_table(def)
            .unwrap()
            .insert(key, json.as_bytes())
            .unwrap();
    }
    w.commit().unwrap();
}

#[test]
fn creates_a_private_file_in_a_private_directory() {
    let dir = Dir::new("mode");
    let store = Store::open(&dir.state()).unwrap();
    assert_eq!(store.path(), dir.file());
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.file()), 0o600);
    assert_eq!(mode(&dir.state()), 0o700);
}

#[test]
fn everything_survives_a_restart() {
    let dir = Dir::new("restart");
    let (t1, h1) = token();
    let (_, h2) = token();
    let pem = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let far = Timestamp::now().plus(3600);
    let c1 = client("c1");
    let (family, consent, key, revoked) = {
        let s = Store::open(&dir.state()).unwrap();
        s.clients().insert(&c1).unwrap();
        let consent = s
            .consents()
            .grant(
                "alice",
                "c1",
                vec!["mcp:tools".into()],
                vec!["files".into()],
            )
            .unwrap();
        s.grants().create(grant("alice", "c1"), &h1).unwrap();
        let f = s.grants().rotate(&h1, &h2, "c1").unwrap();
        let revoked = s.revocations().revoke_subject("bob").unwrap();
        s.users().set_password("carol", "correct horse").unwrap();
        let key = s.keys().add("k1", &pem, far).unwrap();
        (f, consent, key, revoked)
    };
    let s = Store::open(&dir.state()).unwrap();
    assert_eq!(s.clients().get("c1").unwrap(), Some(c1));
    assert_eq!(s.consents().get("alice", "c1").unwrap(), Some(consent));
    assert_eq!(s.grants().get(&family.id).unwrap(), Some(family.clone()));
    assert_eq!(s.revocations().subject("bob").unwrap(), Some(revoked));
    assert!(s.users().verify_password("carol", "correct horse").unwrap());
    assert_eq!(s.keys().current(Timestamp::now()).unwrap(), Some(key));
    // The rotation is remembered: the old token is reuse, after the restart too.
    let (_, h3) = token();
    assert!(matches!(
        s.grants().rotate(&TokenHash::of(&t1), &h3, "c1"),
        Err(super::grants::RotateError::Reuse { .. })
    ));
}

#[test]
fn a_second_open_is_refused_naming_the_file() {
    let dir = Dir::new("lock");
    let first = Store::open(&dir.state()).unwrap();
    let err = Store::open(&dir.state()).err().expect("the file is locked");
    assert!(
        matches!(&err, StoreError::AlreadyOpen { path } if *path == dir.file()),
        "{err:?}"
    );
    assert!(err.to_string().contains(&dir.file().display().to_string()));
    drop(first);
    Store::open(&dir.state()).expect("free again once the first is closed");
}

/// Opens the store over a file holding `bytes`: an error, never a panic.
fn open_over(dir: &Dir, bytes: &[u8]) -> Result<Store, StoreError> {
    std::fs::create_dir_all(dir.state()).unwrap();
    std::fs::write(dir.file(), bytes).unwrap();
    let state = dir.state();
    std::panic::catch_unwind(move || Store::open(&state)).expect("opening must not panic")
}

#[test]
fn a_foreign_file_is_an_error() {
    let dir = Dir::new("foreign");
    for bytes in [
        b"agent:\n  state_dir: /var/lib/moat\n".to_vec(),
        vec![0xa5; 8192],
        b"\x89PNG\r\n\x1a\n".to_vec(),
    ] {
        let err = open_over(&dir, &bytes).err().expect("not a store");
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        assert!(err.to_string().contains(&dir.file().display().to_string()));
    }
    // A redb database, but another program's.
    std::fs::remove_file(dir.file()).unwrap();
    write_raw(&dir.file(), "sessions", "x", "{}");
    let err = Store::open(&dir.state())
        .err()
        .expect("another program's database");
    assert!(err.to_string().contains("another program"), "{err}");
}

#[test]
fn a_damaged_store_is_an_error_not_a_panic() {
    let dir = Dir::new("damaged");
    {
        let s = Store::open(&dir.state()).unwrap();
        for i in 0..20 {
            s.clients().insert(&client(&format!("client-{i}"))).unwrap();
        }
    }
    let good = std::fs::read(dir.file()).unwrap();
    // Truncated, and single bytes flipped across the file (headers, tree pages, data).
    let mut damaged = vec![good[..good.len() / 2].to_vec(), good[..100].to_vec()];
    for at in (0..good.len()).step_by(good.len() / 64) {
        let mut b = good.clone();
        b[at] ^= 0x5a;
        damaged.push(b);
    }
    let mut refused = 0;
    for bytes in &damaged {
        match open_over(&dir, bytes) {
            // A flip in unused space or a redundant header copy may be harmless: then what the
            // store holds must still read.
            Ok(s) => assert_eq!(s.clients().list().unwrap().len(), 20),
            Err(_) => refused += 1,
        }
    }
    assert!(refused > 0, "no damage was noticed");
}

#[test]
fn a_store_of_a_newer_schema_is_refused() {
    let dir = Dir::new("schema");
    drop(Store::open(&dir.state()).unwrap());
    write_raw(
        &dir.file(),
        "meta",
        "store",
        r#"{"v":1,"app":"moat","schema":2}"#,
    );
    let err = Store::open(&dir.state()).err().expect("newer schema");
    assert!(matches!(err, StoreError::Newer { .. }), "{err:?}");
}

#[test]
fn version_1_records_written_by_hand_still_read() {
    let dir = Dir::new("v1");
    drop(Store::open(&dir.state()).unwrap());
    let file = dir.file();
    let h = TokenHash::of("a refresh token");
    write_raw(
        &file,
        "clients",
        "https://app.example/client.json",
        r#"{"v":1,"id":"https://app.example/client.json","kind":{"metadata_document":{"url":"https://app.example/client.json"}},"name":"App","redirect_uris":["http://127.0.0.1:3000/cb"],"created":1700000000,"revoked_at":null,"registration_token":null}"#,
    );
    write_raw(
        &file,
        "revoked_subjects",
        "alice",
        r#"{"v":1,"before":1700000101,"at":1700000100}"#,
    );
    write_raw(
        &file,
        "families",
        "fam1",
        &format!(
            r#"{{"v":1,"id":"fam1","sub":"alice","client_id":"https://app.example/client.json","scopes":["mcp:tools"],"resource":"files","claims":{{"groups":["readers"]}},"created":1700000000,"current":"{h}","rotated":null,"revoked":{{"reason":"reuse","at":1700000050}}}}"#
        ),
    );
    write_raw(
        &file,
        "users",
        "carol",
        r#"{"v":1,"phc":"$argon2id$v=19$m=19456,t=2,p=1$ONyv5eJqtGpJ8gOdHmfuiA$/Hx4vFQTQFsM4s8+Yhau2Alfw/xnEhR1g0ta0sBu75Y","created":1700000000,"updated":1700000000}"#,
    );
    let s = Store::open(&dir.state()).unwrap();
    let c = s
        .clients()
        .get("https://app.example/client.json")
        .unwrap()
        .unwrap();
    assert_eq!(
        c.kind,
        ClientKind::MetadataDocument {
            url: "https://app.example/client.json".into()
        }
    );
    assert_eq!(
        (c.name.as_str(), c.created),
        ("App", Timestamp(1_700_000_000))
    );
    let r = s.revocations().subject("alice").unwrap().unwrap();
    assert_eq!(
        (r.before, r.at),
        (Timestamp(1_700_000_101), Timestamp(1_700_000_100))
    );
    let f = s.grants().get("fam1").unwrap().unwrap();
    assert_eq!(f.current, h);
    assert_eq!(f.claims["groups"], serde_json::json!(["readers"]));
    assert_eq!(
        f.revoked.unwrap().reason,
        super::grants::RevokeReason::Reuse
    );
    let users = s.users().list().unwrap();
    assert_eq!(
        (users[0].name.as_str(), users[0].updated),
        ("carol", Timestamp(1_700_000_000))
    );
    // A hash made by an earlier release still checks the password it was made of.
    assert!(
        s.users()
            .verify_password("carol", "correct horse battery")
            .unwrap()
    );
    assert!(!s.users().verify_password("carol", "correct horse").unwrap());
}

#[test]
fn a_newer_or_undecodable_record_is_an_error_naming_table_and_key() {
    let dir = Dir::new("newer-record");
    drop(Store::open(&dir.state()).unwrap());
    write_raw(
        &dir.file(),
        "clients",
        "c-new",
        r#"{"v":2,"id":"c-new","whatever":1}"#,
    );
    write_raw(&dir.file(), "clients", "c-bad", r#"{"v":1,"id":"c-bad"}"#);
    write_raw(&dir.file(), "clients", "c-nov", r#"{"id":"c-nov"}"#);
    let s = Store::open(&dir.state()).unwrap();
    let err = s.clients().get("c-new").unwrap_err();
    assert!(
        matches!(&err, StoreError::NewerRecord { table: "clients", key, version: 2, known: 1 } if key == "c-new"),
        "{err:?}"
    );
    for key in ["c-bad", "c-nov"] {
        let err = s.clients().get(key).unwrap_err();
        assert!(
            matches!(&err, StoreError::Record { table: "clients", key: k, .. } if k == key),
            "{err:?}"
        );
    }
    // A listing meets them too: an error, not a list that silently leaves them out.
    assert!(s.clients().list().is_err());
}

#[test]
fn secrets_are_not_in_the_file() {
    let dir = Dir::new("secrets");
    let (refresh, h) = token();
    let (registration, rh) = token();
    let password = "a password nobody may read";
    {
        let s = Store::open(&dir.state()).unwrap();
        let mut c = client("c1");
        c.registration_token = Some(rh);
        s.clients().insert(&c).unwrap();
        s.grants().create(grant("alice", "c1"), &h).unwrap();
        s.users().set_password("alice", password).unwrap();
        assert!(
            s.clients()
                .check_registration_token("c1", &registration)
                .unwrap()
        );
        assert!(
            !s.clients()
                .check_registration_token("c1", &refresh)
                .unwrap()
        );
    }
    let bytes = std::fs::read(dir.file()).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    for secret in [refresh.as_str(), registration.as_str(), password] {
        assert!(!text.contains(secret), "{secret} is in the file");
    }
    // While their hashes are (the test would pass on an empty file otherwise).
    assert!(text.contains(&h.to_string()));
}
