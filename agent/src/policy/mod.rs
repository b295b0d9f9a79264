//! Per-request authorization: Cedar policies, validated against Moat's published schema, decide
//! each MCP request (default deny); every decision names the policies that made it.
mod cache;
#[cfg(test)]
mod cache_tests;
pub mod explain;
mod index;
mod input;
mod live;
mod load;
mod prehashed;
mod rate;
mod reads;
#[cfg(test)]
mod tests;

use std::{collections::HashSet, net::IpAddr, str::FromStr as _, time::UNIX_EPOCH};

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityId, EntityTypeName,
    EntityUid, Request, RestrictedExpression,
};
use serde_json::Value;

use self::input::{hour, seconds, text_of, weekday};
pub use self::{
    input::{Input, Standing},
    live::{Live, Reloaded},
    load::load,
    rate::Rates,
};
use crate::{
    config::PolicyMode,
    vocab::{self, Decision, Effect, Target},
};

/// The schema policies are written against (also published as `config/moat.cedarschema`).
pub const SCHEMA: &str = include_str!("../../../config/moat.cedarschema");

/// Every action of the schema, from the method table.
pub fn actions() -> Vec<&'static str> {
    vocab::actions().collect()
}

/// One server's policies.
pub struct Engine {
    /// The policies, by the actions and resources their scopes name.
    index: index::Index,
    pub mode: PolicyMode,
    groups_claim: String,
    claims: Vec<String>,
    authorizer: Authorizer,
    /// The decisions made, for the requests that come again (a reload makes a new engine,
    /// so a new cache).
    cache: cache::Cache,
    /// The SHA-256 (hex) of the file the policies were read from, for the audit log.
    pub source_sha256: String,
    /// The `forbid` policies annotated `@lockdown`, by id: what their denial locks down.
    locks: Vec<(String, LocksDown)>,
    /// The `permit` policies annotated `@approval`, by id.
    approvals: Vec<(String, Approval)>,
}

/// What a `@approval` policy asks: a person's approval before what it permits is forwarded;
/// with `@approval("MINUTES")`, an approval also covers the same call for that long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Approval {
    /// Zero: each call is approved once.
    pub reuse: std::time::Duration,
}

/// What a `@lockdown` policy's denial locks down: the user (`@lockdown`,
/// `@lockdown("sub")`) or its OAuth client (`@lockdown("client")`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocksDown {
    Sub,
    Client,
}

impl Engine {
    /// The first policy of the denial `d` annotated `@lockdown`, and what it locks down.
    pub fn locks_down<'d>(&self, d: &'d Decision) -> Option<(&'d str, LocksDown)> {
        if d.allowed() {
            return None;
        }
        d.policies.iter().find_map(|id| {
            let (_, who) = self.locks.iter().find(|(l, _)| l == id)?;
            Some((id.as_str(), *who))
        })
    }

    /// The first policy of the permission `d` annotated `@approval`, and what it asks (None:
    /// a denial, shadow mode, or no such policy among those that permitted).
    pub fn needs_approval<'d>(&self, d: &'d Decision) -> Option<(&'d str, Approval)> {
        // In shadow mode the policies enforce nothing: nothing is held either.
        if !d.allowed() || d.shadow || self.mode == PolicyMode::Shadow {
            return None;
        }
        d.policies.iter().find_map(|id| {
            let (_, a) = self.approvals.iter().find(|(l, _)| l == id)?;
            Some((id.as_str(), *a))
        })
    }

    /// The decision for `input`: made by Cedar, or the one it made for the same request.
    pub fn decide(&self, input: &Input<'_>) -> Decision {
        self.decide_with(input, true)
    }

    /// The decision for `input`, always made by Cedar (to compare the cache against).
    pub fn decide_uncached(&self, input: &Input<'_>) -> Decision {
        self.decide_with(input, false)
    }

    fn decide_with(&self, input: &Input<'_>, cached: bool) -> Decision {
        let groups = groups(&input.principal.claims, &self.groups_claim);
        let secs = seconds(input);
        let resource = match resource_uid(input) {
            Ok(r) => r,
            Err(e) => return unevaluated(e),
        };
        let (policies, reads) = self.index.for_request(input.action, &resource);
        let facts = cache::Facts {
            groups: &groups,
            claims: &self.claims,
            tags: tags(input),
            secs,
        };
        let key = reads
            .filter(|_| cached)
            .and_then(|r| cache::key_bytes(input, &facts, r))
            .map(|k| self.cache.key(k));
        if let Some(d) = key.as_ref().and_then(|k| self.cache.get(k)) {
            return d;
        }
        let d = self
            .evaluate(input, &facts, resource, policies)
            .unwrap_or_else(unevaluated);
        if let Some(k) = key {
            self.cache.insert(k, d.clone());
        }
        d
    }

    /// Cedar's decision. What it makes of `input` is all in the cache key
    /// ([`cache::key_bytes`]): anything it comes to use must be added there too.
    fn evaluate(
        &self,
        input: &Input<'_>,
        facts: &cache::Facts<'_>,
        resource: EntityUid,
        policies: &cedar_policy::PolicySet,
    ) -> Result<Decision, String> {
        let p = input.principal;
        let server = uid("Server", input.server)?;
        let action = uid("Action", input.action)?;
        // Only the entities with attributes, tags or parents are in the store: the server,
        // groups and client need not be (`in` follows the parents named here), and a smaller
        // store is quicker to close transitively on every request.
        let mut entities = Vec::with_capacity(2);

        let claims = &p.claims;
        let mut parents = HashSet::new();
        for g in facts.groups {
            parents.insert(uid("Group", g)?);
        }
        let user = uid("User", &p.sub)?;
        let tags = self.claims.iter().filter_map(|k| {
            claims
                .get(k)
                .map(|v| (k.clone(), RestrictedExpression::new_string(text_of(v))))
        });
        entities.push(
            Entity::new_with_tags(user.clone(), [], parents, tags).map_err(|e| e.to_string())?,
        );
        let client = uid("Client", p.client_id.as_deref().unwrap_or(""))?;

        match input.target {
            Some((Target::Tool, name)) => {
                let args: Vec<(String, RestrictedExpression)> = facts
                    .tags
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), RestrictedExpression::new_string(text_of(v))))
                    .collect();
                let name = [(
                    "name".to_string(),
                    RestrictedExpression::new_string(name.into()),
                )];
                entities.push(
                    Entity::new_with_tags(resource.clone(), name, [server.clone()], args)
                        .map_err(|e| e.to_string())?,
                );
            }
            Some((kind @ (Target::Resource | Target::Prompt), name)) => {
                entities.push(with_attr(&resource, kind.param(), name, &server)?);
            }
            None => {}
        }

        let context = context_pairs(input, facts.secs, client)?;
        // The policies were validated against the schema when they were loaded; the request
        // is built here to the same shape, so it is not validated again on every call.
        let context = Context::from_pairs(context).map_err(|e| e.to_string())?;
        let request =
            Request::new(user, action, resource, context, None).map_err(|e| e.to_string())?;
        let entities = Entities::from_entities(entities, None).map_err(|e| e.to_string())?;
        let response = self.authorizer.is_authorized(&request, policies, &entities);
        // Cedar gives both as sets (in no set order): sorted, a decision is the same each
        // time it is made, and a cached one is the one Cedar makes.
        let mut policies: Vec<String> = response
            .diagnostics()
            .reason()
            .map(|id| id.to_string())
            .collect();
        policies.sort_unstable();
        let mut errors: Vec<String> = response
            .diagnostics()
            .errors()
            .map(|e| e.to_string())
            .collect();
        errors.sort_unstable();
        let allow = response.decision() == CedarDecision::Allow;
        let reason = match (allow, policies.is_empty()) {
            (true, _) => format!("permitted by {}", policies.join(", ")),
            (false, false) => format!("forbidden by {}", policies.join(", ")),
            (false, true) if errors.is_empty() => "no policy permits it (default deny)".into(),
            (false, true) => format!(
                "no policy permits it (default deny); policies in error: {}",
                errors.join("; ")
            ),
        };
        Ok(Decision {
            effect: if allow { Effect::Allow } else { Effect::Deny },
            policies,
            reason,
            shadow: false,
        })
    }
}

/// The request's context, as Cedar gets it (see the schema's `RequestContext`).
fn context_pairs(
    input: &Input<'_>,
    secs: u64,
    client: EntityUid,
) -> Result<Vec<(String, RestrictedExpression)>, String> {
    let str_ = |s: &str| RestrictedExpression::new_string(s.to_string());
    let long = |n: u64| RestrictedExpression::new_long(i64::try_from(n).unwrap_or(i64::MAX));
    let mut context = vec![
        ("time".to_string(), datetime(secs)),
        ("hour".into(), long(hour(secs))),
        ("weekday".into(), str_(weekday(secs))),
        ("source_ip".into(), ip(input.source_ip.to_canonical())),
        ("tls".into(), str_(input.tls.unwrap_or("none"))),
        (
            "scopes".into(),
            RestrictedExpression::new_set(input.principal.scopes.iter().map(|s| str_(s))),
        ),
        (
            "client".into(),
            RestrictedExpression::new_entity_uid(client),
        ),
        ("session".into(), str_(input.session.unwrap_or(""))),
        ("rate".into(), long(input.rate)),
        (
            "listing".into(),
            RestrictedExpression::new_bool(input.listing),
        ),
    ];
    if let Some(pr) = input.process {
        let process = RestrictedExpression::new_record([
            ("pid".to_string(), long(u64::from(pr.pid))),
            ("uid".to_string(), long(u64::from(pr.uid))),
            ("gid".to_string(), long(u64::from(pr.gid))),
            ("comm".to_string(), str_(&pr.comm)),
            ("cgroup_id".to_string(), long(pr.cgroup_id)),
        ])
        .map_err(|e| e.to_string())?;
        context.push(("process".into(), process));
    }
    if let Some(s) = input.integrity {
        let integrity = RestrictedExpression::new_record([
            ("state".to_string(), str_(s.state)),
            (
                "markers".to_string(),
                RestrictedExpression::new_set(s.markers.iter().map(|m| str_(m))),
            ),
        ])
        .map_err(|e| e.to_string())?;
        context.push(("integrity".into(), integrity));
    }
    if let Some(b) = input.behaviour {
        let behaviour = RestrictedExpression::new_record([
            ("score".to_string(), long(u64::from(b.score))),
            (
                "signals".to_string(),
                RestrictedExpression::new_set(b.signals.names().map(str_)),
            ),
            (
                "learning".to_string(),
                RestrictedExpression::new_bool(b.learning),
            ),
        ])
        .map_err(|e| e.to_string())?;
        context.push(("behaviour".into(), behaviour));
    }
    if let Some(c) = input.content {
        let content = RestrictedExpression::new_record([
            (
                "rules".to_string(),
                RestrictedExpression::new_set(c.rules.iter().map(|r| str_(r))),
            ),
            (
                "kinds".to_string(),
                RestrictedExpression::new_set(c.kinds.iter().map(|k| str_(k.name()))),
            ),
        ])
        .map_err(|e| e.to_string())?;
        context.push(("content".into(), content));
    }
    Ok(context)
}

fn unevaluated(e: String) -> Decision {
    Decision::of(
        Effect::Deny,
        format!("the request could not be evaluated: {e}"),
    )
}

/// The principal's groups, from the configured claim: an array of strings, or one string of
/// space-separated names.
fn groups<'a>(claims: &'a serde_json::Map<String, Value>, claim: &str) -> Vec<&'a str> {
    match claims.get(claim) {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        Some(Value::String(s)) => s.split_whitespace().collect(),
        _ => Vec::new(),
    }
}

/// The call's arguments, when they become the resource's tags (a tools/call's object).
fn tags<'a>(input: &Input<'a>) -> Option<&'a serde_json::Map<String, Value>> {
    match (input.target, input.arguments) {
        (Some((Target::Tool, _)), Some(Value::Object(m))) => Some(m),
        _ => None,
    }
}

/// The resource a request is about: its tool, resource or prompt, else the server.
fn resource_uid(input: &Input<'_>) -> Result<EntityUid, String> {
    match input.target {
        Some((kind, name)) => uid(kind.entity(), name),
        None => uid("Server", input.server),
    }
}

/// The request's time, in whole seconds since 1970 (0 before).
/// An entity of `server` with one string attribute.
fn with_attr(e: &EntityUid, key: &str, value: &str, server: &EntityUid) -> Result<Entity, String> {
    let attrs = [(
        key.to_string(),
        RestrictedExpression::new_string(value.into()),
    )];
    Entity::new_with_tags(e.clone(), attrs, [server.clone()], []).map_err(|e| e.to_string())
}

/// An entity of one of the schema's types (parsed once).
fn uid(ty: &str, id: &str) -> Result<EntityUid, String> {
    static TYPES: std::sync::OnceLock<Vec<(&'static str, EntityTypeName)>> =
        std::sync::OnceLock::new();
    let types = TYPES.get_or_init(|| {
        [
            "Action", "User", "Group", "Client", "Server", "Tool", "Resource", "Prompt",
        ]
        .into_iter()
        .filter_map(|t| Some((t, EntityTypeName::from_str(t).ok()?)))
        .collect()
    });
    let ty = match types.iter().find(|(t, _)| *t == ty) {
        Some((_, n)) => n.clone(),
        None => EntityTypeName::from_str(ty).map_err(|e| e.to_string())?,
    };
    Ok(EntityUid::from_type_name_and_id(ty, EntityId::new(id)))
}

thread_local! {
    /// The last address and second made into Cedar values on this thread: building one parses
    /// the extension's name each time, and most requests repeat both.
    static IP: std::cell::RefCell<Option<(IpAddr, RestrictedExpression)>> = const { std::cell::RefCell::new(None) };
    static TIME: std::cell::RefCell<Option<(u64, RestrictedExpression)>> = const { std::cell::RefCell::new(None) };
}

fn ip(addr: IpAddr) -> RestrictedExpression {
    IP.with_borrow_mut(|last| match last {
        Some((a, e)) if *a == addr => e.clone(),
        _ => {
            let e = RestrictedExpression::new_ip(addr.to_string());
            *last = Some((addr, e.clone()));
            e
        }
    })
}

/// The second `secs`, as the hour and weekday are made from it (a time before 1970 is 1970,
/// for all three alike), and as a cache key holds it.
fn datetime(secs: u64) -> RestrictedExpression {
    TIME.with_borrow_mut(|last| match last {
        Some((s, e)) if *s == secs => e.clone(),
        _ => {
            let at = UNIX_EPOCH + std::time::Duration::from_secs(secs);
            let e = RestrictedExpression::new_datetime(
                humantime::format_rfc3339_seconds(at).to_string(),
            );
            *last = Some((secs, e.clone()));
            e
        }
    })
}
