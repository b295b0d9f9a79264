//! Refresh-token families: one per authorization (a user, a client, what was granted), each
//! with its current refresh token. Rotation replaces the current token; presenting a rotated
//! one is reuse (the token was copied), and revokes the whole family in the same transaction.
//!
//! Only tokens' SHA-256 is kept ([`TokenHash`]); every token ever issued keeps its row, so a
//! rotated token is recognised as reuse, never mistaken for an unknown one.
use std::collections::BTreeMap;

use redb::{
    MultimapTableDefinition, ReadableMultimapTable as _, ReadableTable as _, TableDefinition,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    clients,
    db::{Db as _, Records, Store, Write, check_key, get, put},
    error::StoreError,
    record::{self, Record, Timestamp, TokenHash},
};

const FAMILIES: Records = Records::new("families");
/// subject -> its families' ids.
const BY_SUBJECT: MultimapTableDefinition<&str, &str> =
    MultimapTableDefinition::new("families_by_subject");
/// client id -> its families' ids.
const BY_CLIENT: MultimapTableDefinition<&str, &str> =
    MultimapTableDefinition::new("families_by_client");
/// SHA-256 of a refresh token -> [`TokenRecord`].
const TOKENS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("refresh_tokens");

/// What a new family is granted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewFamily {
    pub sub: String,
    pub client_id: String,
    pub scopes: Vec<String>,
    /// The protected server (by name) its access tokens are for.
    pub resource: String,
    /// Claims its access tokens carry (groups, ...), as the login gave them.
    pub claims: BTreeMap<String, Value>,
}

/// A refresh-token family.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Family {
    pub id: String,
    pub sub: String,
    pub client_id: String,
    pub scopes: Vec<String>,
    pub resource: String,
    #[serde(default)]
    pub claims: BTreeMap<String, Value>,
    pub created: Timestamp,
    /// The hash of the one token that may be presented next.
    pub current: TokenHash,
    /// When the current token replaced the one before, if it did.
    #[serde(default)]
    pub rotated: Option<Timestamp>,
    #[serde(default)]
    pub revoked: Option<Revocation>,
}

impl Record for Family {
    const TABLE: &'static str = "families";
    const VERSION: u32 = 1;
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub reason: RevokeReason,
    pub at: Timestamp,
}

/// Why a family was revoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevokeReason {
    /// A rotated token was presented again.
    Reuse,
    /// Its token was presented by another client.
    WrongClient,
    /// Revoked on its own (the user or an administrator).
    Revoked,
    /// Every grant of its subject was revoked.
    Subject,
    ClientRevoked,
    ClientDeleted,
    ConsentWithdrawn,
}

impl std::fmt::Display for RevokeReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Reuse => "a rotated refresh token was reused",
            Self::WrongClient => "its refresh token was presented by another client",
            Self::Revoked => "revoked",
            Self::Subject => "the user's grants were revoked",
            Self::ClientRevoked => "the client was revoked",
            Self::ClientDeleted => "the client was deleted",
            Self::ConsentWithdrawn => "the consent was withdrawn",
        })
    }
}

/// A refresh token's row: its family, and when it was rotated (`None`: it is the current one).
#[derive(Serialize, Deserialize)]
struct TokenRecord {
    family: String,
    #[serde(default)]
    rotated_at: Option<Timestamp>,
}

impl Record for TokenRecord {
    const TABLE: &'static str = "refresh_tokens";
    const VERSION: u32 = 1;
}

/// Why a refresh token was refused; every refusal but `Unknown` concerns a family, and those
/// of `Reuse` and `WrongClient` revoked it.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error("unknown refresh token")]
    Unknown,
    #[error("refresh token reused: family {family} revoked")]
    Reuse { family: String },
    #[error("refresh token of family {family} presented by another client: family revoked")]
    WrongClient { family: String },
    #[error("refresh token family {family} was revoked: {reason}")]
    Revoked {
        family: String,
        reason: RevokeReason,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub(super) fn init(w: &Write<'_>) -> Result<(), StoreError> {
    w.table(FAMILIES)?;
    w.table(TOKENS)?;
    w.multimap(BY_SUBJECT)?;
    w.multimap(BY_CLIENT).map(drop)
}

/// Revokes family `id` if it is live; whether it was.
fn revoke_one(
    w: &Write<'_>,
    id: &str,
    reason: RevokeReason,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let mut families = w.table(FAMILIES)?;
    let Some(mut family) = get::<Family>(&families, id, w.path)? else {
        return Ok(false);
    };
    if family.revoked.is_some() {
        return Ok(false);
    }
    family.revoked = Some(Revocation { reason, at: now });
    put(&mut families, id, &family, w.path)?;
    Ok(true)
}

/// Whose families to revoke.
#[derive(Clone, Copy)]
pub(super) enum Of<'a> {
    Subject(&'a str),
    Client(&'a str),
    /// A subject's with one client.
    Pair {
        sub: &'a str,
        client: &'a str,
    },
}

/// Revokes every live family of `of`; how many.
pub(super) fn revoke_families(
    w: &Write<'_>,
    of: Of<'_>,
    reason: RevokeReason,
    now: Timestamp,
) -> Result<usize, StoreError> {
    let (index, key, client) = match of {
        Of::Subject(sub) => (BY_SUBJECT, sub, None),
        Of::Client(id) => (BY_CLIENT, id, None),
        Of::Pair { sub, client } => (BY_SUBJECT, sub, Some(client)),
    };
    let mut ids = Vec::new();
    for id in w.multimap(index)?.get(key).db(w.path)? {
        ids.push(id.db(w.path)?.value().to_string());
    }
    let mut n = 0;
    for id in ids {
        if let Some(client) = client {
            let family = get::<Family>(&w.table(FAMILIES)?, &id, w.path)?;
            if family.is_none_or(|f| f.client_id != client) {
                continue;
            }
        }
        n += usize::from(revoke_one(w, &id, reason, now)?);
    }
    Ok(n)
}

/// The refresh-token families and their tokens.
pub struct Grants<'a>(&'a Store);

impl Store {
    pub fn grants(&self) -> Grants<'_> {
        Grants(self)
    }
}

impl Grants<'_> {
    /// Starts a family for the live client `new.client_id`, with `first` (the hash of the first
    /// refresh token) as its current token.
    pub fn create(&self, new: NewFamily, first: &TokenHash) -> Result<Family, StoreError> {
        check_key("subject", &new.sub)?;
        let family = Family {
            id: record::random_id()?,
            sub: new.sub,
            client_id: new.client_id,
            scopes: new.scopes,
            resource: new.resource,
            claims: new.claims,
            created: Timestamp::now(),
            current: *first,
            rotated: None,
            revoked: None,
        };
        self.0.write(|w| {
            clients::live(w, &family.client_id)?;
            let mut tokens = w.table(TOKENS)?;
            if tokens.get(&first.0).db(w.path)?.is_some() {
                return Err(StoreError::Exists {
                    table: TokenRecord::TABLE,
                    key: first.to_string(),
                });
            }
            let row = TokenRecord {
                family: family.id.clone(),
                rotated_at: None,
            };
            tokens
                .insert(&first.0, record::encode(first, &row)?.as_slice())
                .db(w.path)?;
            let mut families = w.table(FAMILIES)?;
            if families.get(family.id.as_str()).db(w.path)?.is_some() {
                return Err(StoreError::Exists {
                    table: Family::TABLE,
                    key: family.id.clone(),
                });
            }
            put(&mut families, &family.id, &family, w.path)?;
            let id = family.id.as_str();
            w.multimap(BY_SUBJECT)?
                .insert(family.sub.as_str(), id)
                .db(w.path)?;
            w.multimap(BY_CLIENT)?
                .insert(family.client_id.as_str(), id)
                .db(w.path)?;
            Ok(family.clone())
        })
    }

    pub fn get(&self, id: &str) -> Result<Option<Family>, StoreError> {
        self.0.read(|r| get(&r.table(FAMILIES)?, id, r.path))
    }

    /// The family a refresh token (current or rotated) belongs to.
    pub fn family_of(&self, token: &TokenHash) -> Result<Option<Family>, StoreError> {
        self.0.read(|r| {
            let Some(row) = r.table(TOKENS)?.get(&token.0).db(r.path)? else {
                return Ok(None);
            };
            let row: TokenRecord = record::decode(token, row.value())?;
            get(&r.table(FAMILIES)?, &row.family, r.path)
        })
    }

    /// Exchanges the current token `presented`, shown by client `client_id`, for `new`.
    ///
    /// A rotated token, or a token shown by a client other than its family's, revokes the
    /// family (committed, though the call fails); a token of a revoked family is refused.
    /// Concurrent rotations of one token are serialised: the first wins, the next is reuse
    /// (and revokes the family, the winner's new token with it), any later one finds it revoked.
    pub fn rotate(
        &self,
        presented: &TokenHash,
        new: &TokenHash,
        client_id: &str,
    ) -> Result<Family, RotateError> {
        let now = Timestamp::now();
        self.0.write(|w| {
            let mut tokens = w.table(TOKENS)?;
            let row: TokenRecord = match tokens.get(&presented.0).db(w.path)? {
                Some(g) => record::decode(presented, g.value())?,
                None => return Ok(Err(RotateError::Unknown)),
            };
            let Some(mut family) = get::<Family>(&w.table(FAMILIES)?, &row.family, w.path)? else {
                return Err(StoreError::record(
                    TokenRecord::TABLE,
                    presented,
                    format!("its family {} is missing", row.family),
                ));
            };
            let id = family.id.clone();
            if let Some(r) = &family.revoked {
                return Ok(Err(RotateError::Revoked {
                    family: id,
                    reason: r.reason,
                }));
            }
            if family.client_id != client_id {
                revoke_one(w, &id, RevokeReason::WrongClient, now)?;
                return Ok(Err(RotateError::WrongClient { family: id }));
            }
            if row.rotated_at.is_some() || family.current != *presented {
                revoke_one(w, &id, RevokeReason::Reuse, now)?;
                return Ok(Err(RotateError::Reuse { family: id }));
            }
            if tokens.get(&new.0).db(w.path)?.is_some() {
                // Never overwrite another token's row (nor this one's): nothing is changed.
                return Err(StoreError::Exists {
                    table: TokenRecord::TABLE,
                    key: new.to_string(),
                });
            }
            let old = TokenRecord {
                family: id.clone(),
                rotated_at: Some(now),
            };
            let next = TokenRecord {
                family: id.clone(),
                rotated_at: None,
            };
            tokens
                .insert(&presented.0, record::encode(presented, &old)?.as_slice())
                .db(w.path)?;
            tokens
                .insert(&new.0, record::encode(new, &next)?.as_slice())
                .db(w.path)?;
            family.current = *new;
            family.rotated = Some(now);
            put(&mut w.table(FAMILIES)?, &id, &family, w.path)?;
            Ok(Ok(family))
        })?
    }

    /// Revokes one family; `false` if it was revoked already or there is none.
    pub fn revoke(&self, id: &str) -> Result<bool, StoreError> {
        let now = Timestamp::now();
        self.0
            .write(|w| revoke_one(w, id, RevokeReason::Revoked, now))
    }

    /// The families of `sub`, revoked ones included.
    pub fn by_subject(&self, sub: &str) -> Result<Vec<Family>, StoreError> {
        self.listed(BY_SUBJECT, sub)
    }

    /// The families of client `id`, revoked ones included.
    pub fn by_client(&self, id: &str) -> Result<Vec<Family>, StoreError> {
        self.listed(BY_CLIENT, id)
    }

    fn listed(
        &self,
        index: MultimapTableDefinition<&str, &str>,
        key: &str,
    ) -> Result<Vec<Family>, StoreError> {
        self.0.read(|r| {
            let families = r.table(FAMILIES)?;
            let mut out = Vec::new();
            for id in r.multimap(index)?.get(key).db(r.path)? {
                let id = id.db(r.path)?;
                if let Some(f) = get(&families, id.value(), r.path)? {
                    out.push(f);
                }
            }
            Ok(out)
        })
    }
}
