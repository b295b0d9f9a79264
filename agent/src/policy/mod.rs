//! Per-request authorization: Cedar policies, validated against Moat's published schema, decide
//! each MCP request (default deny); every decision names the policies that made it.
pub mod explain;
mod live;
mod load;
mod rate;
#[cfg(test)]
mod tests;

use std::{
    collections::HashSet,
    net::IpAddr,
    str::FromStr as _,
    time::{SystemTime, UNIX_EPOCH},
};

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityId, EntityTypeName,
    EntityUid, PolicySet, Request, RestrictedExpression, Schema,
};
use serde::Serialize;
use serde_json::{Value, json};

pub use self::{
    live::{Live, Reloaded},
    load::load,
    rate::Rates,
};
use crate::{auth::Principal, config::PolicyMode};

/// The schema policies are written against (also published as `config/moat.cedarschema`).
pub const SCHEMA: &str = include_str!("../../../config/moat.cedarschema");

/// The methods that are actions of their own; any other request is `Action::"other"`.
const ACTIONS: &[&str] = &[
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "subscriptions/listen",
];

/// One server's policies.
pub struct Engine {
    policies: PolicySet,
    schema: Schema,
    pub mode: PolicyMode,
    groups_claim: String,
    claims: Vec<String>,
    authorizer: Authorizer,
}

/// The local process behind a connection from this host.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    pub comm: String,
}

/// What is asked, by whom, from where.
pub struct Input<'a> {
    pub server: &'a str,
    pub method: &'a str,
    /// The tool, resource URI or prompt name the method is about.
    pub target: Option<&'a str>,
    pub arguments: Option<&'a Value>,
    pub principal: &'a Principal,
    pub source_ip: IpAddr,
    pub tls: Option<&'a str>,
    pub session: Option<&'a str>,
    pub process: Option<&'a Process>,
    /// Calls in the last minute by this principal to this tool (or method), this one included.
    pub rate: u64,
    pub now: SystemTime,
    /// Deciding whether to show an entry of a list result (no arguments), not a call.
    pub listing: bool,
}

/// A decision and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub effect: &'static str,
    /// The ids of the policies that decided it (`@id` annotations, else `policyN`).
    pub policies: Vec<String>,
    pub reason: String,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.effect == "allow"
    }
}

impl Engine {
    pub fn decide(&self, input: &Input<'_>) -> Decision {
        match self.evaluate(input) {
            Ok(d) => d,
            Err(e) => Decision {
                effect: "deny",
                policies: Vec::new(),
                reason: format!("the request could not be evaluated: {e}"),
            },
        }
    }

    fn evaluate(&self, input: &Input<'_>) -> Result<Decision, String> {
        let p = input.principal;
        let server = uid("Server", input.server)?;
        let action_name = if ACTIONS.contains(&input.method) {
            input.method
        } else {
            "other"
        };
        let action = uid("Action", action_name)?;
        let mut entities = vec![Entity::with_uid(server.clone())];

        let claims = &p.claims;
        let groups: Vec<String> = match claims.get(&self.groups_claim) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|g| g.as_str().map(str::to_string))
                .collect(),
            Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
            _ => Vec::new(),
        };
        let mut parents = HashSet::new();
        for g in &groups {
            let g = uid("Group", g)?;
            entities.push(Entity::with_uid(g.clone()));
            parents.insert(g);
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
        entities.push(Entity::with_uid(client.clone()));

        let target = input.target.unwrap_or("");
        let resource = match action_name {
            "tools/call" => {
                let tool = uid("Tool", target)?;
                let args: Vec<(String, RestrictedExpression)> = match input.arguments {
                    Some(Value::Object(m)) => m
                        .iter()
                        .map(|(k, v)| (k.clone(), RestrictedExpression::new_string(text_of(v))))
                        .collect(),
                    _ => Vec::new(),
                };
                let name = [(
                    "name".to_string(),
                    RestrictedExpression::new_string(target.into()),
                )];
                entities.push(
                    Entity::new_with_tags(tool.clone(), name, [server.clone()], args)
                        .map_err(|e| e.to_string())?,
                );
                tool
            }
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                let r = uid("Resource", target)?;
                entities.push(with_attr(&r, "uri", target, &server)?);
                r
            }
            "prompts/get" => {
                let r = uid("Prompt", target)?;
                entities.push(with_attr(&r, "name", target, &server)?);
                r
            }
            _ => server.clone(),
        };

        let secs = input
            .now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // 1970-01-01 was a Thursday.
        let weekday =
            ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][((secs / 86_400) % 7) as usize];
        let mut context = json!({
            "time": {"__extn": {"fn": "datetime", "arg": humantime::format_rfc3339_seconds(input.now).to_string()}},
            "hour": (secs % 86_400) / 3_600,
            "weekday": weekday,
            "source_ip": {"__extn": {"fn": "ip", "arg": input.source_ip.to_canonical().to_string()}},
            "tls": input.tls.unwrap_or("none"),
            "scopes": p.scopes,
            "client": {"__entity": {"type": "Client", "id": p.client_id.as_deref().unwrap_or("")}},
            "session": input.session.unwrap_or(""),
            "rate": input.rate,
            "listing": input.listing,
        });
        if let Some(proc_) = input.process {
            context["process"] = json!(proc_);
        }
        let context = Context::from_json_value(context, Some((&self.schema, &action)))
            .map_err(|e| e.to_string())?;
        let request = Request::new(user, action, resource, context, Some(&self.schema))
            .map_err(|e| e.to_string())?;
        let entities =
            Entities::from_entities(entities, Some(&self.schema)).map_err(|e| e.to_string())?;
        let response = self
            .authorizer
            .is_authorized(&request, &self.policies, &entities);
        let policies: Vec<String> = response
            .diagnostics()
            .reason()
            .map(|id| id.to_string())
            .collect();
        let errors: Vec<String> = response
            .diagnostics()
            .errors()
            .map(|e| e.to_string())
            .collect();
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
            effect: if allow { "allow" } else { "deny" },
            policies,
            reason,
        })
    }
}

/// An entity of `server` with one string attribute.
fn with_attr(e: &EntityUid, key: &str, value: &str, server: &EntityUid) -> Result<Entity, String> {
    let attrs = [(
        key.to_string(),
        RestrictedExpression::new_string(value.into()),
    )];
    Entity::new_with_tags(e.clone(), attrs, [server.clone()], []).map_err(|e| e.to_string())
}

fn uid(ty: &str, id: &str) -> Result<EntityUid, String> {
    let ty = EntityTypeName::from_str(ty).map_err(|e| e.to_string())?;
    Ok(EntityUid::from_type_name_and_id(ty, EntityId::new(id)))
}

/// A JSON value as a tag: strings as they are, anything else as its JSON text.
fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
