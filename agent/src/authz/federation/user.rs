//! Who logged in: the provider's subject, and the profile, groups and listed claims taken from
//! the ID token, or from userinfo for those the ID token lacks.
use serde_json::{Map, Value};

use super::{error::FederationError, oidc_login::OidcLogin};

/// A user the organisation's provider vouched for. Identify them by (`issuer`, `sub`): the other
/// fields are the provider's current description, and may change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederatedUser {
    pub issuer: String,
    pub sub: String,
    /// `name`, or else `preferred_username`.
    pub name: Option<String>,
    pub email: Option<String>,
    /// Whether the provider says it verified `email` (`email_verified: true`).
    pub email_verified: bool,
    /// The values of the configured groups claim (none when it is not configured or absent).
    pub groups: Vec<String>,
    /// The configured further claims that the provider sent, as it sent them.
    pub claims: Map<String, Value>,
}

/// Whether the ID token lacks a claim Moat was told to carry (so userinfo is asked).
pub fn needs_userinfo(id: &Map<String, Value>, config: &OidcLogin) -> bool {
    let missing = |name: &String| !id.contains_key(name);
    config.groups_claim.as_ref().is_some_and(missing) || config.claims.iter().any(missing)
}

/// The user from the checked ID token's claims and, if asked, userinfo's (whose `sub` was
/// checked); the ID token's win where both have a claim.
pub fn user(
    issuer: &str,
    id: &Map<String, Value>,
    userinfo: Option<&Map<String, Value>>,
    config: &OidcLogin,
) -> Result<FederatedUser, FederationError> {
    let get = |name: &str| id.get(name).or_else(|| userinfo?.get(name));
    let text = |name: &str| get(name).and_then(Value::as_str).map(str::to_string);
    let groups = match &config.groups_claim {
        None => Vec::new(),
        Some(claim) => groups(claim, get(claim))?,
    };
    let claims = config
        .claims
        .iter()
        .filter_map(|c| Some((c.clone(), get(c)?.clone())))
        .collect();
    Ok(FederatedUser {
        issuer: issuer.to_string(),
        sub: text("sub").unwrap_or_default(),
        name: text("name").or_else(|| text("preferred_username")),
        email: text("email"),
        email_verified: matches!(get("email_verified"), Some(Value::Bool(true)))
            || matches!(get("email_verified"), Some(Value::String(s)) if s == "true"),
        groups,
        claims,
    })
}

/// A groups claim: a list of strings, or one string. Anything else is refused rather than read
/// as "no groups", since policies may deny by group.
fn groups(claim: &str, value: Option<&Value>) -> Result<Vec<String>, FederationError> {
    let bad = |reason| FederationError::Claim {
        claim: claim.to_string(),
        reason,
    };
    let mut groups: Vec<String> = match value {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(g)) => vec![g.clone()],
        Some(Value::Array(list)) => list
            .iter()
            .map(|g| {
                g.as_str()
                    .map(str::to_string)
                    .ok_or(bad("a group that is not a string"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad("neither a list of strings nor a string")),
    };
    let mut seen = std::collections::HashSet::new();
    groups.retain(|g| seen.insert(g.clone()));
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn config(groups: Option<&str>, claims: &[&str]) -> OidcLogin {
        OidcLogin {
            groups_claim: groups.map(Into::into),
            claims: claims.iter().map(|c| c.to_string()).collect(),
            ..OidcLogin::new("https://idp.example.com", "moat")
        }
    }

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn claims_come_from_the_id_token_first_then_userinfo() {
        let config = config(Some("groups"), &["department", "level"]);
        let id = map(
            json!({"sub": "alice", "department": "ops", "email": "a@x", "email_verified": true}),
        );
        assert!(needs_userinfo(&id, &config));
        let info = map(json!({
            "sub": "alice", "department": "sales", "level": 3,
            "groups": ["admins", "ops", "admins"], "preferred_username": "alice1",
        }));
        let user = user("https://idp.example.com", &id, Some(&info), &config).unwrap();
        assert_eq!(user.sub, "alice");
        assert_eq!(user.name.as_deref(), Some("alice1"));
        assert_eq!(user.email.as_deref(), Some("a@x"));
        assert!(user.email_verified);
        assert_eq!(user.groups, ["admins", "ops"]);
        assert_eq!(user.claims, map(json!({"department": "ops", "level": 3})));

        let complete = map(json!({"sub": "bob", "groups": "ops", "department": "x", "level": 1}));
        assert!(!needs_userinfo(&complete, &config));
        let bob = super::user("i", &complete, None, &config).unwrap();
        assert_eq!(bob.groups, ["ops"]);
        assert!(!bob.email_verified);
    }

    #[test]
    fn a_groups_claim_of_another_shape_is_refused() {
        let config = config(Some("groups"), &[]);
        for groups in [
            json!(["a", 1]),
            json!({"a": true}),
            json!(7),
            json!([["a"]]),
        ] {
            let id = map(json!({"sub": "alice", "groups": groups}));
            let got = user("i", &id, None, &config);
            assert!(
                matches!(got, Err(FederationError::Claim { .. })),
                "{groups}: {got:?}"
            );
        }
        let id = map(json!({"sub": "alice"}));
        assert_eq!(
            user("i", &id, None, &config).unwrap().groups,
            Vec::<String>::new()
        );
    }
}
