//! Local users: a name and an argon2id password hash (PHC string), checked by the argon2
//! crate. The password itself is never stored.
use std::sync::OnceLock;

use argon2::{
    Argon2,
    password_hash::{PasswordHasher as _, PasswordVerifier as _},
};
use serde::{Deserialize, Serialize};

use super::{
    db::{Db as _, Records, Store, Write, all, check_key, get, put},
    error::StoreError,
    record::{Record, Timestamp},
};

const USERS: Records = Records::new("users");

/// The longest password accepted (argon2 takes any length; this only bounds the work one
/// login attempt can ask for).
const MAX_PASSWORD: usize = 1024;

#[derive(Serialize, Deserialize)]
struct UserRecord {
    /// `$argon2id$v=19$m=...,t=...,p=...$salt$hash`.
    phc: String,
    created: Timestamp,
    updated: Timestamp,
}

impl Record for UserRecord {
    const TABLE: &'static str = "users";
    const VERSION: u32 = 1;
}

/// A local user, as listed (without the hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub created: Timestamp,
    /// When the password was last set.
    pub updated: Timestamp,
}

pub(super) fn init(w: &Write<'_>) -> Result<(), StoreError> {
    w.table(USERS).map(drop)
}

/// An argon2id hash of `password` with a new random salt, at the crate's default cost
/// (argon2id v19, 19 MiB, 2 passes, 1 lane: OWASP's recommendation).
fn hash(password: &str) -> Result<String, StoreError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| StoreError::Password(e.to_string()))
}

/// Whether `password` matches `phc` (of user `name`, for errors).
fn verify(name: &str, phc: &str, password: &str) -> Result<bool, StoreError> {
    match Argon2::default().verify_password(password.as_bytes(), phc) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::PasswordInvalid) => Ok(false),
        Err(e) => Err(StoreError::record(UserRecord::TABLE, name, e)),
    }
}

/// A hash to check passwords against when the user does not exist, so that an unknown name
/// takes as long as a wrong password (the names of users are not given away by timing).
fn decoy() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash("decoy").unwrap_or_default())
}

fn check_password(password: &str) -> Result<(), StoreError> {
    if password.is_empty() || password.len() > MAX_PASSWORD {
        return Err(StoreError::Invalid {
            what: "password",
            why: format!("must be 1 to {MAX_PASSWORD} bytes"),
        });
    }
    Ok(())
}

/// The local users.
pub struct Users<'a>(&'a Store);

impl Store {
    pub fn users(&self) -> Users<'_> {
        Users(self)
    }
}

impl Users<'_> {
    /// Sets the password of `name`, adding the user if there is none.
    pub fn set_password(&self, name: &str, password: &str) -> Result<(), StoreError> {
        check_key("user name", name)?;
        check_password(password)?;
        // Hashed before the transaction: the write lock is not held for the hashing's time.
        let phc = hash(password)?;
        let now = Timestamp::now();
        self.0.write(|w| {
            let mut table = w.table(USERS)?;
            let created = get::<UserRecord>(&table, name, w.path)?.map_or(now, |u| u.created);
            let user = UserRecord {
                phc: phc.clone(),
                created,
                updated: now,
            };
            put(&mut table, name, &user, w.path)
        })
    }

    /// Whether `password` is the password of `name`; `false` for an unknown user too (after
    /// the same work as for a known one).
    pub fn verify_password(&self, name: &str, password: &str) -> Result<bool, StoreError> {
        if password.len() > MAX_PASSWORD {
            return Ok(false);
        }
        let user = self
            .0
            .read(|r| get::<UserRecord>(&r.table(USERS)?, name, r.path))?;
        match user {
            Some(u) => verify(name, &u.phc, password),
            None => {
                let _ = verify(name, decoy(), password);
                Ok(false)
            }
        }
    }

    /// Removes `name`; `false` if there was no such user.
    pub fn remove(&self, name: &str) -> Result<bool, StoreError> {
        self.0
            .write(|w| Ok(w.table(USERS)?.remove(name).db(w.path)?.is_some()))
    }

    /// Every user, by name.
    pub fn list(&self) -> Result<Vec<User>, StoreError> {
        let users = self
            .0
            .read(|r| all::<UserRecord>(&r.table(USERS)?, r.path))?;
        Ok(users
            .into_iter()
            .map(|(name, u)| User {
                name,
                created: u.created,
                updated: u.updated,
            })
            .collect())
    }
}
