//! The OAuth clients Moat knows: registered, from a metadata document, or configured. Revoking
//! or deleting one cuts what it was granted: see [`super::revocations`].
use redb::ReadableTable as _;
use serde::{Deserialize, Serialize};

use super::{
    db::{Db as _, Records, Store, Write, all, check_key, get, put},
    error::StoreError,
    record::{Record, Timestamp, TokenHash},
};

const CLIENTS: Records = Records::new("clients");

/// A client and how Moat came to know it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    pub id: String,
    pub kind: ClientKind,
    pub name: String,
    pub redirect_uris: Vec<String>,
    pub created: Timestamp,
    /// Set when the client was revoked: its record stays, so that its id is not taken again.
    #[serde(default)]
    pub revoked_at: Option<Timestamp>,
    /// The hash of its registration access token (RFC 7592), if it was registered with one.
    #[serde(default)]
    pub registration_token: Option<TokenHash>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientKind {
    /// Dynamic client registration (RFC 7591).
    Registered,
    /// A client ID metadata document: the client id is the document's URL.
    MetadataDocument { url: String },
    /// Named in Moat's configuration.
    Configured,
}

impl Record for Client {
    const TABLE: &'static str = "clients";
    const VERSION: u32 = 1;
}

pub(super) fn init(w: &Write<'_>) -> Result<(), StoreError> {
    w.table(CLIENTS).map(drop)
}

/// The client `id` in `w`, if it exists and is not revoked.
pub(super) fn live(w: &Write<'_>, id: &str) -> Result<Client, StoreError> {
    let table = w.table(CLIENTS)?;
    match get::<Client>(&table, id, w.path)? {
        Some(c) if c.revoked_at.is_none() => Ok(c),
        Some(_) => Err(StoreError::Invalid {
            what: "client",
            why: format!("{id} is revoked"),
        }),
        None => Err(StoreError::NotFound {
            table: Client::TABLE,
            key: id.to_string(),
        }),
    }
}

/// Marks the client `id` revoked at `now`; `false` if it was revoked already.
pub(super) fn mark_revoked(w: &Write<'_>, id: &str, now: Timestamp) -> Result<bool, StoreError> {
    let mut table = w.table(CLIENTS)?;
    let Some(mut client) = get::<Client>(&table, id, w.path)? else {
        return Err(StoreError::NotFound {
            table: Client::TABLE,
            key: id.to_string(),
        });
    };
    if client.revoked_at.is_some() {
        return Ok(false);
    }
    client.revoked_at = Some(now);
    put(&mut table, id, &client, w.path)?;
    Ok(true)
}

/// Removes the client `id`; `false` if there was none.
pub(super) fn remove(w: &Write<'_>, id: &str) -> Result<bool, StoreError> {
    Ok(w.table(CLIENTS)?.remove(id).db(w.path)?.is_some())
}

/// The clients table.
pub struct Clients<'a>(&'a Store);

impl Store {
    pub fn clients(&self) -> Clients<'_> {
        Clients(self)
    }
}

impl Clients<'_> {
    /// Adds a new client; an id already taken (even by a revoked client) is an error.
    pub fn insert(&self, client: &Client) -> Result<(), StoreError> {
        check_key("client id", &client.id)?;
        self.0.write(|w| {
            let mut table = w.table(CLIENTS)?;
            if table.get(client.id.as_str()).db(w.path)?.is_some() {
                return Err(StoreError::Exists {
                    table: Client::TABLE,
                    key: client.id.clone(),
                });
            }
            put(&mut table, &client.id, client, w.path)
        })
    }

    /// Replaces an existing client's record (a metadata document fetched again, a renamed
    /// client). Its revocation is not the caller's to change: a revoked client stays revoked,
    /// and a live one is revoked only through [`super::revocations`], which cuts its grants.
    pub fn update(&self, client: &Client) -> Result<(), StoreError> {
        self.0.write(|w| {
            let mut table = w.table(CLIENTS)?;
            let Some(old) = get::<Client>(&table, &client.id, w.path)? else {
                return Err(StoreError::NotFound {
                    table: Client::TABLE,
                    key: client.id.clone(),
                });
            };
            let mut new = client.clone();
            new.revoked_at = old.revoked_at;
            put(&mut table, &client.id, &new, w.path)
        })
    }

    pub fn get(&self, id: &str) -> Result<Option<Client>, StoreError> {
        self.0.read(|r| get(&r.table(CLIENTS)?, id, r.path))
    }

    /// Every client, revoked ones included, by id.
    pub fn list(&self) -> Result<Vec<Client>, StoreError> {
        self.0
            .read(|r| all(&r.table(CLIENTS)?, r.path))
            .map(|v| v.into_iter().map(|(_, c)| c).collect())
    }

    /// Whether `token` is the registration access token of the live client `id`.
    pub fn check_registration_token(&self, id: &str, token: &str) -> Result<bool, StoreError> {
        Ok(match self.get(id)? {
            Some(Client {
                revoked_at: None,
                registration_token: Some(hash),
                ..
            }) => hash.matches(token),
            _ => false,
        })
    }
}
