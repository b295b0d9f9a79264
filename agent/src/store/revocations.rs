//! Revocation: what revoking a subject or a client (or deleting a client) cuts, in one
//! transaction; and per subject and per client, a moment before which every access token
//! issued (by its `iat`) is refused, though still within its lifetime.
use super::{
    clients, consents,
    db::{Records, Store, Write, all, check_key, get, put},
    error::StoreError,
    grants::{self, Of, RevokeReason},
    record::{Record, Timestamp},
};

const SUBJECTS: Records = Records::new("revoked_subjects");
const CLIENTS: Records = Records::new("revoked_clients");

/// A revocation: access tokens issued before `before` are refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Revoked {
    /// Tokens whose `iat` is earlier are refused. One second after the (last) revocation, so
    /// that a token issued in the same second as the revocation is refused too.
    pub before: Timestamp,
    /// When it was (last) revoked.
    pub at: Timestamp,
}

impl Record for Revoked {
    const TABLE: &'static str = "revoked_subjects, revoked_clients";
    const VERSION: u32 = 1;
}

pub(super) fn init(w: &Write<'_>) -> Result<(), StoreError> {
    w.table(SUBJECTS)?;
    w.table(CLIENTS).map(drop)
}

/// Refuses the access tokens issued to `key` in `table` until `now`. The moment only moves
/// forward: a clock set back cannot bring earlier tokens back.
fn raise(w: &Write<'_>, table: Records, key: &str, now: Timestamp) -> Result<Revoked, StoreError> {
    let mut t = w.table(table)?;
    let old = get::<Revoked>(&t, key, w.path)?;
    let before = now.plus(1).max(old.map_or(Timestamp(0), |r| r.before));
    let new = Revoked { before, at: now };
    put(&mut t, key, &new, w.path)?;
    Ok(new)
}

/// Ends everything granted to client `id`: its families, its consents, and its access tokens
/// issued until `now`.
fn cut_client(
    w: &Write<'_>,
    id: &str,
    reason: RevokeReason,
    now: Timestamp,
) -> Result<(), StoreError> {
    grants::revoke_families(w, Of::Client(id), reason, now)?;
    consents::remove_client(w, id)?;
    raise(w, CLIENTS, id, now)?;
    Ok(())
}

/// The revocations.
pub struct Revocations<'a>(&'a Store);

impl Store {
    pub fn revocations(&self) -> Revocations<'_> {
        Revocations(self)
    }
}

impl Revocations<'_> {
    /// Ends every grant of `sub` at once: its refresh-token families are revoked and its access
    /// tokens issued so far refused.
    pub fn revoke_subject(&self, sub: &str) -> Result<Revoked, StoreError> {
        check_key("subject", sub)?;
        self.revoke_subject_at(sub, Timestamp::now())
    }

    /// [`Self::revoke_subject`] with the clock at `now`.
    pub(super) fn revoke_subject_at(
        &self,
        sub: &str,
        now: Timestamp,
    ) -> Result<Revoked, StoreError> {
        self.0.write(|w| {
            grants::revoke_families(w, Of::Subject(sub), RevokeReason::Subject, now)?;
            raise(w, SUBJECTS, sub, now)
        })
    }

    /// Revokes the client `id`: it keeps its record (marked revoked, so that its id is not
    /// taken again) and loses its refresh-token families, its consents and the access tokens
    /// issued to it so far. `false` if it was revoked already.
    pub fn revoke_client(&self, id: &str) -> Result<bool, StoreError> {
        let now = Timestamp::now();
        self.0.write(|w| {
            let revoked = clients::mark_revoked(w, id, now)?;
            if revoked {
                cut_client(w, id, RevokeReason::ClientRevoked, now)?;
            }
            Ok(revoked)
        })
    }

    /// Deletes the client `id`, cutting what [`Self::revoke_client`] cuts. `false` if there was
    /// none.
    pub fn delete_client(&self, id: &str) -> Result<bool, StoreError> {
        let now = Timestamp::now();
        self.0.write(|w| {
            let removed = clients::remove(w, id)?;
            if removed {
                cut_client(w, id, RevokeReason::ClientDeleted, now)?;
            }
            Ok(removed)
        })
    }

    /// Refuses the access tokens issued to client `id` so far (without touching its record;
    /// revoking or deleting a client does this too).
    pub fn revoke_client_tokens(&self, id: &str) -> Result<Revoked, StoreError> {
        check_key("client id", id)?;
        let now = Timestamp::now();
        self.0.write(|w| raise(w, CLIENTS, id, now))
    }

    pub fn subject(&self, sub: &str) -> Result<Option<Revoked>, StoreError> {
        self.0.read(|r| get(&r.table(SUBJECTS)?, sub, r.path))
    }

    pub fn client(&self, id: &str) -> Result<Option<Revoked>, StoreError> {
        self.0.read(|r| get(&r.table(CLIENTS)?, id, r.path))
    }

    /// Every subject revocation, by subject.
    pub fn subjects(&self) -> Result<Vec<(String, Revoked)>, StoreError> {
        self.0.read(|r| all(&r.table(SUBJECTS)?, r.path))
    }

    /// Every client revocation, by client id.
    pub fn clients(&self) -> Result<Vec<(String, Revoked)>, StoreError> {
        self.0.read(|r| all(&r.table(CLIENTS)?, r.path))
    }

    /// Whether an access token of `sub` for `client`, issued at `iat`, is refused.
    pub fn refuses(&self, sub: &str, client: &str, iat: Timestamp) -> Result<bool, StoreError> {
        self.0.read(|r| {
            let by_sub = get::<Revoked>(&r.table(SUBJECTS)?, sub, r.path)?;
            let by_client = get::<Revoked>(&r.table(CLIENTS)?, client, r.path)?;
            Ok([by_sub, by_client]
                .iter()
                .flatten()
                .any(|rev| iat < rev.before))
        })
    }
}
