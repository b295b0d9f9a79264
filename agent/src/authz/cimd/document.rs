//! The client ID metadata document: a JSON object naming its own URL as `client_id`, with the
//! redirect URIs the client may use, and no shared secret.
use serde_json::{Map, Value};
use url::Url;

use super::client_id::ClientIdUrl;

/// Why a fetched document is not a client's metadata.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    #[error("the document is not JSON: {0}")]
    Json(String),
    #[error("the document is not a JSON object")]
    NotAnObject,
    #[error("the document has no client_id")]
    ClientIdMissing,
    #[error("the document's client_id is not a string")]
    ClientIdNotString,
    #[error("the document's client_id {found:?} is not its URL")]
    ClientIdMismatch { found: String },
    #[error("the document has no redirect_uris")]
    RedirectUrisMissing,
    #[error("the document's redirect_uris is not an array")]
    RedirectUrisNotArray,
    #[error("the document's redirect_uris is empty")]
    RedirectUrisEmpty,
    #[error("the document's redirect_uris[{index}] is not a string")]
    RedirectUriNotString { index: usize },
    #[error("the document's redirect_uris[{index}] {value:?} is not an absolute URI: {reason}")]
    RedirectUriInvalid {
        index: usize,
        value: String,
        reason: String,
    },
    #[error("the document's redirect_uris[{index}] {value:?} has a fragment")]
    RedirectUriFragment { index: usize, value: String },
    #[error("the document's client_name is not a string")]
    ClientNameNotString,
    #[error("the document has {0}, but a client ID metadata document has no shared secret")]
    Secret(&'static str),
    #[error("the document's token_endpoint_auth_method {0:?} uses a shared secret")]
    SecretAuthMethod(String),
}

/// A checked client ID metadata document.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub client_id: ClientIdUrl,
    pub client_name: Option<String>,
    pub redirect_uris: Vec<Url>,
    /// The whole document, for the metadata not checked here (logo_uri, grant_types, ...).
    pub metadata: Map<String, Value>,
}

/// Token endpoint authentication methods built on a secret the client shares with the server.
const SECRET_METHODS: &[&str] = &[
    "client_secret_basic",
    "client_secret_post",
    "client_secret_jwt",
];

impl Document {
    pub fn parse(url: &ClientIdUrl, body: &[u8]) -> Result<Self, DocumentError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| DocumentError::Json(e.to_string()))?;
        let Value::Object(metadata) = value else {
            return Err(DocumentError::NotAnObject);
        };
        match metadata.get("client_id") {
            None => return Err(DocumentError::ClientIdMissing),
            Some(Value::String(id)) if id == url.as_str() => {}
            Some(Value::String(id)) => {
                return Err(DocumentError::ClientIdMismatch { found: id.clone() });
            }
            Some(_) => return Err(DocumentError::ClientIdNotString),
        }
        let redirect_uris = redirect_uris(metadata.get("redirect_uris"))?;
        let client_name = match metadata.get("client_name") {
            None => None,
            Some(Value::String(name)) => Some(name.clone()),
            Some(_) => return Err(DocumentError::ClientNameNotString),
        };
        for secret in ["client_secret", "client_secret_expires_at"] {
            if metadata.contains_key(secret) {
                return Err(DocumentError::Secret(secret));
            }
        }
        if let Some(method) = metadata.get("token_endpoint_auth_method")
            && let Some(method) = method.as_str()
            && SECRET_METHODS.contains(&method)
        {
            return Err(DocumentError::SecretAuthMethod(method.into()));
        }
        Ok(Self {
            client_id: url.clone(),
            client_name,
            redirect_uris,
            metadata,
        })
    }
}

fn redirect_uris(value: Option<&Value>) -> Result<Vec<Url>, DocumentError> {
    let list = match value {
        None => return Err(DocumentError::RedirectUrisMissing),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(DocumentError::RedirectUrisNotArray),
    };
    if list.is_empty() {
        return Err(DocumentError::RedirectUrisEmpty);
    }
    list.iter()
        .enumerate()
        .map(|(index, value)| {
            let Value::String(value) = value else {
                return Err(DocumentError::RedirectUriNotString { index });
            };
            let uri = Url::parse(value).map_err(|e| DocumentError::RedirectUriInvalid {
                index,
                value: value.clone(),
                reason: e.to_string(),
            })?;
            if uri.fragment().is_some() {
                return Err(DocumentError::RedirectUriFragment {
                    index,
                    value: value.clone(),
                });
            }
            Ok(uri)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const ID: &str = "https://client.example/meta.json";

    fn parse(doc: Value) -> Result<Document, DocumentError> {
        let url = ClientIdUrl::parse(ID).unwrap();
        Document::parse(&url, doc.to_string().as_bytes())
    }

    fn good() -> Value {
        json!({
            "client_id": ID,
            "client_name": "Example",
            "redirect_uris": ["https://client.example/cb", "http://127.0.0.1:9/cb"],
            "token_endpoint_auth_method": "none",
        })
    }

    fn with(key: &str, value: Value) -> Value {
        let mut doc = good();
        doc[key] = value;
        doc
    }

    fn without(key: &str) -> Value {
        let mut doc = good();
        doc.as_object_mut().unwrap().remove(key);
        doc
    }

    #[test]
    fn a_good_document_is_read() {
        let doc = parse(good()).unwrap();
        assert_eq!(doc.client_id.as_str(), ID);
        assert_eq!(doc.client_name.as_deref(), Some("Example"));
        assert_eq!(doc.redirect_uris.len(), 2);
        assert_eq!(doc.metadata["token_endpoint_auth_method"], "none");
        assert_eq!(parse(without("client_name")).unwrap().client_name, None);
    }

    #[test]
    fn every_bad_document_is_refused_with_its_reason() {
        use DocumentError::*;
        let url = ClientIdUrl::parse(ID).unwrap();
        assert!(matches!(Document::parse(&url, b"{"), Err(Json(_))));
        assert!(matches!(Document::parse(&url, b"<html>"), Err(Json(_))));
        assert_eq!(parse(json!([ID])), Err(NotAnObject));
        assert_eq!(parse(without("client_id")), Err(ClientIdMissing));
        assert_eq!(parse(with("client_id", json!(1))), Err(ClientIdNotString));
        for other in [
            "https://client.example/other.json",
            "https://client.example/meta.json/",
            "https://CLIENT.example/meta.json",
            "https://client.example:443/meta.json",
            "https://evil.example/meta.json",
        ] {
            assert_eq!(
                parse(with("client_id", json!(other))),
                Err(ClientIdMismatch {
                    found: other.into()
                })
            );
        }
        assert_eq!(parse(without("redirect_uris")), Err(RedirectUrisMissing));
        assert_eq!(
            parse(with("redirect_uris", json!("https://client.example/cb"))),
            Err(RedirectUrisNotArray)
        );
        assert_eq!(
            parse(with("redirect_uris", json!([]))),
            Err(RedirectUrisEmpty)
        );
        assert_eq!(
            parse(with("redirect_uris", json!(["https://c.example/cb", 7]))),
            Err(RedirectUriNotString { index: 1 })
        );
        for relative in ["/cb", "cb", "//client.example/cb", ""] {
            assert!(
                matches!(
                    parse(with("redirect_uris", json!([relative]))),
                    Err(RedirectUriInvalid { index: 0, .. })
                ),
                "{relative:?}"
            );
        }
        assert!(matches!(
            parse(with("redirect_uris", json!(["https://c.example/cb#x"]))),
            Err(RedirectUriFragment { index: 0, .. })
        ));
        assert_eq!(
            parse(with("client_name", json!(["x"]))),
            Err(ClientNameNotString)
        );
        assert_eq!(
            parse(with("client_secret", json!("s"))),
            Err(Secret("client_secret"))
        );
        assert_eq!(
            parse(with(
                "token_endpoint_auth_method",
                json!("client_secret_post")
            )),
            Err(SecretAuthMethod("client_secret_post".into()))
        );
    }
}
