//! A server's `policy:`: the Cedar policy file that decides each request, and how.
use std::path::PathBuf;

use super::{
    values::{absolute_path, string_list},
    yaml::{Node, Report},
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Cedar policies, validated against `config/moat.cedarschema`.
    pub file: PathBuf,
    pub mode: PolicyMode,
    /// The token claim that lists the user's groups.
    pub groups_claim: String,
    /// Token claims given to policies as the user's tags.
    pub claims: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyMode {
    /// A denied request is refused.
    Enforce,
    /// Every decision is made and audited, but denied requests go through.
    Shadow,
}

pub(super) fn read_policy(n: &Node<'_>, r: &mut Report) -> Option<Policy> {
    let m = n.mapping(&["file", "mode", "groups_claim", "claims"], r)?;
    let file = m.require("file", r).and_then(|v| absolute_path(v, r));
    let mode = match m.get("mode") {
        None => Some(PolicyMode::Enforce),
        Some(v) => match v.string(r)?.as_str() {
            "enforce" => Some(PolicyMode::Enforce),
            "shadow" => Some(PolicyMode::Shadow),
            other => {
                r.add(
                    v,
                    format!("expected `enforce` or `shadow`, found {other:?}"),
                );
                None
            }
        },
    };
    let groups_claim = match m.get("groups_claim") {
        Some(v) => v.string(r),
        None => Some("groups".to_string()),
    };
    let claims = string_list(m.get("claims"), r);
    Some(Policy {
        file: file?,
        mode: mode?,
        groups_claim: groups_claim?,
        claims: claims?,
    })
}
