//! What was decided about a request, and why.
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    Allow,
    Deny,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
        }
    }
}

impl std::fmt::Display for Effect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A decision: its effect, the policies that made it, why; and whether it was only recorded
/// (a denial in shadow mode, let through).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub effect: Effect,
    /// The ids of the policies that decided it (`@id` annotations, else `policyN`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
    pub reason: String,
    /// Shadow mode: a denial that was let through.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub shadow: bool,
}

impl Decision {
    /// A decision no policy made (no policy configured, a credential refused, a rate limit).
    pub fn of(effect: Effect, reason: impl Into<String>) -> Self {
        Self {
            effect,
            policies: Vec::new(),
            reason: reason.into(),
            shadow: false,
        }
    }

    pub fn allowed(&self) -> bool {
        self.effect == Effect::Allow
    }
}

/// An entry of a list result that the caller did not get, and why: the decision that hid it
/// (its policies; none for the default deny), or why it could not be decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hidden {
    pub name: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
    pub reason: String,
}

/// What a list result showed the caller: the tools it listed (a `tools/list` result), the
/// entries it hid, and the entries the pins do not vouch for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    pub tools: Option<Vec<String>>,
    pub hidden: Vec<Hidden>,
    pub pins: Vec<super::PinCheck>,
}
