//! Who a `client_id` is: a client named in the config, one registered dynamically, or one
//! described by its client ID metadata document (an https URL, fetched behind the SSRF guard);
//! and what the consent page says about where it came from.
use crate::{
    config::ConfiguredClient,
    store::{
        Store,
        clients::{Client, ClientKind},
        record::Timestamp,
    },
};

use super::{cimd, error::OAuthError};

/// A client the server may talk to.
#[derive(Clone, Debug)]
pub struct ClientInfo {
    pub id: String,
    pub name: String,
    pub redirect_uris: Vec<String>,
    /// For the consent page: where the client's description came from.
    pub origin: String,
    /// Described by a metadata document: kept in the store only once a user consents (so
    /// documents nobody consented to never fill it).
    pub document: bool,
}

/// Writes the configured clients into the store (their grants and consents refer to them).
pub fn sync_configured(store: &Store, clients: &[ConfiguredClient]) -> Result<(), OAuthError> {
    for c in clients {
        let record = Client {
            id: c.id.clone(),
            kind: ClientKind::Configured,
            name: c.name.clone(),
            redirect_uris: c.redirect_uris.clone(),
            created: Timestamp::now(),
            revoked_at: None,
            registration_token: None,
        };
        match store.clients().get(&c.id)? {
            Some(old) if old.kind == ClientKind::Configured => store.clients().update(&record)?,
            Some(_) => {
                return Err(OAuthError::Server(format!(
                    "configured client {:?} has the id of a client registered earlier",
                    c.id
                )));
            }
            None => store.clients().insert(&record)?,
        }
    }
    Ok(())
}

/// The client `id`, if it is known and not revoked.
pub async fn resolve(
    store: &Store,
    fetcher: Option<&cimd::Fetcher>,
    id: &str,
) -> Result<ClientInfo, OAuthError> {
    let unknown = || OAuthError::InvalidClient(format!("unknown client {id:?}"));
    let stored = store.clients().get(id)?;
    if let Some(c) = &stored
        && c.revoked_at.is_some()
    {
        return Err(OAuthError::InvalidClient(format!(
            "client {id:?} was revoked"
        )));
    }
    if id.starts_with("https://") {
        let Some(fetcher) = fetcher else {
            return Err(OAuthError::InvalidClient(
                "client ID metadata documents are not accepted here".into(),
            ));
        };
        let doc = fetcher.get(id).await.map_err(|e| {
            OAuthError::InvalidClient(format!("client ID metadata document {id}: {e}"))
        })?;
        let host = doc
            .client_id
            .url()
            .host_str()
            .unwrap_or_default()
            .to_string();
        let info = ClientInfo {
            id: id.to_string(),
            name: doc.client_name.clone().unwrap_or_else(|| host.clone()),
            redirect_uris: doc.redirect_uris.iter().map(|u| u.to_string()).collect(),
            origin: format!("Described by its metadata document at {host}"),
            document: true,
        };
        return Ok(info);
    }
    let c = stored.ok_or_else(unknown)?;
    let origin = match &c.kind {
        ClientKind::Configured => "Configured by the administrator of this server".to_string(),
        ClientKind::Registered => format!(
            "Registered itself; its name is its own claim. It redirects to {}",
            redirect_hosts(&c.redirect_uris)
        ),
        ClientKind::MetadataDocument { url } => format!("Described by its metadata document {url}"),
    };
    Ok(ClientInfo {
        id: c.id,
        name: c.name,
        redirect_uris: c.redirect_uris,
        origin,
        document: false,
    })
}

/// Keeps (or refreshes) the record of a client described by a metadata document, as its
/// document said when the user consented.
pub fn keep_document_client(store: &Store, info: &ClientInfo) -> Result<(), OAuthError> {
    let record = Client {
        id: info.id.clone(),
        kind: ClientKind::MetadataDocument {
            url: info.id.clone(),
        },
        name: info.name.clone(),
        redirect_uris: info.redirect_uris.clone(),
        created: Timestamp::now(),
        revoked_at: None,
        registration_token: None,
    };
    match store.clients().get(&info.id)? {
        Some(old) if old.name == record.name && old.redirect_uris == record.redirect_uris => {}
        Some(_) => store.clients().update(&record)?,
        None => store.clients().insert(&record)?,
    }
    Ok(())
}

/// The hosts (or schemes) of redirect URIs, for people to read.
pub fn redirect_hosts(uris: &[String]) -> String {
    let mut hosts: Vec<String> = uris.iter().map(|u| redirect_host(u)).collect();
    hosts.dedup();
    hosts.join(", ")
}

pub fn redirect_host(uri: &str) -> String {
    match url::Url::parse(uri) {
        Ok(u) => match u.host_str() {
            Some(h) => h.to_string(),
            None => format!("{}: (an application on your device)", u.scheme()),
        },
        Err(_) => uri.to_string(),
    }
}
