//! Consents: what each user allowed each client (scopes, protected servers), listed by user or
//! by client; withdrawing one ends that client's refresh tokens for that user.
use redb::{MultimapTableDefinition, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{
    clients,
    db::{Db as _, Store, Write, check_key},
    error::StoreError,
    grants::{self, Of, RevokeReason},
    record::{self, Record, Timestamp},
};

/// (subject, client id) -> [`Consent`].
const CONSENTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("consents");
/// client id -> the subjects with a consent for it.
const BY_CLIENT: MultimapTableDefinition<&str, &str> =
    MultimapTableDefinition::new("consents_by_client");

/// What a user allowed a client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    pub scopes: Vec<String>,
    /// The protected servers (by name) the client may reach for the user.
    pub resources: Vec<String>,
    pub granted_at: Timestamp,
}

impl Record for Consent {
    const TABLE: &'static str = "consents";
    const VERSION: u32 = 1;
}

pub(super) fn init(w: &Write<'_>) -> Result<(), StoreError> {
    w.table(CONSENTS)?;
    w.multimap(BY_CLIENT).map(drop)
}

/// Shown in errors: the consent of `sub` for `client`.
fn key(sub: &str, client: &str) -> String {
    format!("{sub} / {client}")
}

/// Removes every consent given to client `id`; how many there were.
pub(super) fn remove_client(w: &Write<'_>, id: &str) -> Result<usize, StoreError> {
    let mut consents = w.table(CONSENTS)?;
    let mut index = w.multimap(BY_CLIENT)?;
    let mut n = 0;
    for sub in index.remove_all(id).db(w.path)? {
        let sub = sub.db(w.path)?;
        n += usize::from(consents.remove((sub.value(), id)).db(w.path)?.is_some());
    }
    Ok(n)
}

/// The consents table.
pub struct Consents<'a>(&'a Store);

impl Store {
    pub fn consents(&self) -> Consents<'_> {
        Consents(self)
    }
}

impl Consents<'_> {
    /// Records that `sub` allowed the live client `client` these scopes and servers, replacing
    /// what it allowed before.
    pub fn grant(
        &self,
        sub: &str,
        client: &str,
        scopes: Vec<String>,
        resources: Vec<String>,
    ) -> Result<Consent, StoreError> {
        check_key("subject", sub)?;
        let consent = Consent {
            scopes,
            resources,
            granted_at: Timestamp::now(),
        };
        self.0.write(|w| {
            clients::live(w, client)?;
            let bytes = record::encode(&key(sub, client), &consent)?;
            w.table(CONSENTS)?
                .insert((sub, client), bytes.as_slice())
                .db(w.path)?;
            w.multimap(BY_CLIENT)?.insert(client, sub).db(w.path)?;
            Ok(consent.clone())
        })
    }

    pub fn get(&self, sub: &str, client: &str) -> Result<Option<Consent>, StoreError> {
        self.0.read(|r| {
            let table = r.table(CONSENTS)?;
            let found = table.get((sub, client)).db(r.path)?;
            found
                .map(|g| record::decode(&key(sub, client), g.value()))
                .transpose()
        })
    }

    /// The consents `sub` gave, with their client ids, by client id.
    pub fn by_subject(&self, sub: &str) -> Result<Vec<(String, Consent)>, StoreError> {
        self.0.read(|r| {
            let table = r.table(CONSENTS)?;
            let mut out = Vec::new();
            for item in table.range((sub, "")..).db(r.path)? {
                let (k, v) = item.db(r.path)?;
                let (s, client) = k.value();
                if s != sub {
                    break;
                }
                out.push((
                    client.to_string(),
                    record::decode(&key(s, client), v.value())?,
                ));
            }
            Ok(out)
        })
    }

    /// The consents given to `client`, with their subjects, by subject.
    pub fn by_client(&self, client: &str) -> Result<Vec<(String, Consent)>, StoreError> {
        self.0.read(|r| {
            let table = r.table(CONSENTS)?;
            let index = r.multimap(BY_CLIENT)?;
            let mut out = Vec::new();
            for sub in index.get(client).db(r.path)? {
                let sub = sub.db(r.path)?;
                let sub = sub.value();
                let Some(v) = table.get((sub, client)).db(r.path)? else {
                    continue;
                };
                out.push((
                    sub.to_string(),
                    record::decode(&key(sub, client), v.value())?,
                ));
            }
            Ok(out)
        })
    }

    /// Withdraws the consent of `sub` for `client`, and revokes that client's refresh-token
    /// families for `sub`. `false` if there was none.
    pub fn withdraw(&self, sub: &str, client: &str) -> Result<bool, StoreError> {
        let now = Timestamp::now();
        self.0.write(|w| {
            let removed = w
                .table(CONSENTS)?
                .remove((sub, client))
                .db(w.path)?
                .is_some();
            w.multimap(BY_CLIENT)?.remove(client, sub).db(w.path)?;
            grants::revoke_families(
                w,
                Of::Pair { sub, client },
                RevokeReason::ConsentWithdrawn,
                now,
            )?;
            Ok(removed)
        })
    }
}
