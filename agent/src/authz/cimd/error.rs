//! Why a client's document could not be used, one variant per reason.
use std::{net::IpAddr, time::Duration};

use super::{client_id::UrlError, document::DocumentError, guard::Class};

/// Why a client's document could not be used; shown on the consent page and in the audit record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CimdError {
    #[error(transparent)]
    Url(#[from] UrlError),
    #[error("resolving {host}: {reason}")]
    Resolve { host: String, reason: String },
    #[error("{0} has no address")]
    NoAddress(String),
    #[error("{host} resolves to {addr}, a {class} address, which Moat does not fetch from")]
    Forbidden {
        host: String,
        addr: IpAddr,
        class: Class,
    },
    #[error("fetching the document: {0}")]
    Connect(String),
    #[error("fetching the document took longer than {0:?}")]
    Timeout(Duration),
    #[error("the document's URL redirects ({status}{}), and Moat follows no redirect",
        location.as_deref().map(|l| format!(" to {l}")).unwrap_or_default())]
    Redirect {
        status: u16,
        location: Option<String>,
    },
    #[error("the document's URL answered with status {0}")]
    Status(u16),
    #[error("the document's content type is {}, not JSON",
        .0.as_deref().map(|t| format!("{t:?}")).unwrap_or_else(|| "missing".into()))]
    ContentType(Option<String>),
    #[error("the document is larger than {0} bytes")]
    TooLarge(usize),
    #[error("reading the document: {0}")]
    Body(String),
    #[error(transparent)]
    Document(#[from] DocumentError),
}
