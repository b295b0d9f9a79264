//! Why a request's credentials were refused, in the terms of RFC 6750's challenges.

/// Why a request's credentials were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    #[error("no access token")]
    Missing,
    /// RFC 6750 `invalid_request`: a token in the URL, or more than one way of sending it.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("invalid token: {0}")]
    Invalid(Invalid),
    #[error("token lacks scope {}", missing.join(" "))]
    InsufficientScope {
        granted: Vec<String>,
        missing: Vec<String>,
    },
    /// The issuer's keys (or its introspection endpoint) cannot be used: fail closed.
    #[error("cannot validate tokens: {0}")]
    Unavailable(String),
}

/// The ways a token can be invalid, for the audit record and the `error_description`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Invalid {
    #[error("malformed")]
    Malformed,
    #[error("algorithm {0} is not accepted")]
    Algorithm(String),
    #[error("unknown signing key")]
    UnknownKey,
    #[error("bad signature")]
    Signature,
    #[error("wrong issuer")]
    Issuer,
    #[error("issued for another audience")]
    Audience,
    #[error("expired")]
    Expired,
    #[error("not valid yet")]
    NotYetValid,
    #[error("missing claim {0}")]
    MissingClaim(String),
    #[error("not active")]
    Inactive,
    /// Its grant was revoked (`moat grants revoke`) after it was issued.
    #[error("revoked")]
    Revoked,
}

impl AuthError {
    /// The RFC 6750 error code, if the challenge carries one.
    pub fn code(&self) -> Option<&'static str> {
        match self {
            Self::Missing | Self::Unavailable(_) => None,
            Self::BadRequest(_) => Some("invalid_request"),
            Self::Invalid(_) => Some("invalid_token"),
            Self::InsufficientScope { .. } => Some("insufficient_scope"),
        }
    }
}
