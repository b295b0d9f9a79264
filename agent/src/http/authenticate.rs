//! Authentication: the request's access token, validated by the server's resource server (the
//! audience, issuer, scopes and lifetime the config names), gives the principal; a request
//! without a valid one is refused with the challenge that tells the client how to get one.
use std::sync::Arc;

use super::{Site, error::ProxyError};
use crate::{admin::TokenOutcome, vocab::Principal};

/// Who sent the request; None on a server without `auth` (`dangerous.unauthenticated`).
pub async fn authenticate(
    site: &Site,
    parts: &http::request::Parts,
) -> Result<Option<Arc<Principal>>, ProxyError> {
    let Some(auth) = &site.auth else {
        return Ok(None);
    };
    let checked = auth.authenticate(&parts.headers, &parts.uri).await;
    site.metrics.token(match &checked {
        Ok((_, true)) => TokenOutcome::Cached,
        Ok((_, false)) => TokenOutcome::Valid,
        Err(e) => TokenOutcome::of_error(e),
    });
    let (principal, _) = checked.map_err(|error| ProxyError::Auth {
        challenge: auth.challenge(&error),
        error,
    })?;
    Ok(Some(principal))
}
