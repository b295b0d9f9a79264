//! Reads a policy file: parsed, given the ids of their `@id` annotations, and validated against
//! the schema; every error with the file, line and column.
use std::str::FromStr as _;

use cedar_policy::{Authorizer, PolicyId, PolicySet, Schema, ValidationMode, Validator};
use miette::Diagnostic;

use super::{Approval, Engine, LocksDown, SCHEMA};

/// The annotation of a `forbid` policy whose denial locks the caller down.
const LOCKDOWN: &str = "lockdown";
/// The annotation of a `permit` policy whose permission waits for a person's approval.
const APPROVAL: &str = "approval";
/// The longest an approval may stay valid for the same call, in minutes (a day).
const APPROVAL_MAX_MINUTES: u64 = 1440;
use crate::config::Policy;

/// The engine for `config`, or every problem found, one per line.
pub fn load(config: &Policy) -> Result<Engine, String> {
    let path = config.file.display().to_string();
    let text = std::fs::read_to_string(&config.file).map_err(|e| format!("{path}: {e}"))?;
    let (schema, _) =
        Schema::from_cedarschema_str(SCHEMA).map_err(|e| format!("the built-in schema: {e}"))?;
    let policies = parse(&path, &text, &schema)?;
    let locks = policies
        .policies()
        .filter_map(|p| {
            let who = match p.annotation(LOCKDOWN)? {
                "client" => LocksDown::Client,
                _ => LocksDown::Sub,
            };
            Some((p.id().to_string(), who))
        })
        .collect();
    let approvals = policies
        .policies()
        .filter_map(|p| {
            let minutes: u64 = match p.annotation(APPROVAL)? {
                "" => 0,
                m => m.parse().ok()?,
            };
            let approval = Approval {
                reuse: std::time::Duration::from_secs(minutes * 60),
            };
            Some((p.id().to_string(), approval))
        })
        .collect();
    Ok(Engine {
        locks,
        approvals,
        index: super::index::Index::new(&policies, &super::actions())?,
        mode: config.mode,
        groups_claim: config.groups_claim.clone(),
        claims: config.claims.clone(),
        authorizer: Authorizer::new(),
        cache: super::cache::Cache::default(),
        source_sha256: crate::vocab::sha256_hex(text.as_bytes()),
    })
}

/// Parses and validates `text` (from `path`).
pub fn parse(path: &str, text: &str, schema: &Schema) -> Result<PolicySet, String> {
    let parsed = PolicySet::from_str(text).map_err(|errors| {
        errors
            .iter()
            .map(|e| located(path, text, e, &e.to_string()))
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    // Name each policy by its `@id`, so decisions say which one decided.
    let mut set = PolicySet::new();
    let mut problems = Vec::new();
    for p in parsed.policies() {
        let p = match p.annotation("id") {
            Some(id) => p.new_id(PolicyId::new(id)),
            None => p.clone(),
        };
        if let Some(v) = p.annotation(LOCKDOWN) {
            if p.effect() != cedar_policy::Effect::Forbid {
                problems.push(format!(
                    "{path}: policy `{}`: `@{LOCKDOWN}` is for `forbid` policies (what a permit \
                     decides locks nothing down)",
                    p.id()
                ));
            }
            if !["", "sub", "client"].contains(&v) {
                problems.push(format!(
                    "{path}: policy `{}`: `@{LOCKDOWN}({v:?})`: expected `@{LOCKDOWN}` or \
                     `@{LOCKDOWN}(\"sub\")` (the user) or `@{LOCKDOWN}(\"client\")` (the OAuth client)",
                    p.id()
                ));
            }
        }
        if let Some(v) = p.annotation(APPROVAL) {
            if p.effect() != cedar_policy::Effect::Permit {
                problems.push(format!(
                    "{path}: policy `{}`: `@{APPROVAL}` is for `permit` policies (what it permits \
                     waits for a person's approval)",
                    p.id()
                ));
            }
            let minutes_ok = v
                .parse::<u64>()
                .is_ok_and(|m| (1..=APPROVAL_MAX_MINUTES).contains(&m) && !v.starts_with('+'));
            if !(v.is_empty() || minutes_ok) {
                problems.push(format!(
                    "{path}: policy `{}`: `@{APPROVAL}({v:?})`: expected `@{APPROVAL}` (each call \
                     approved once) or `@{APPROVAL}(\"MINUTES\")`, 1 to {APPROVAL_MAX_MINUTES} \
                     (an approval also covers the same call for that long)",
                    p.id()
                ));
            }
        }
        if let Err(e) = set.add(p) {
            problems.push(format!("{path}: {e}"));
        }
    }
    let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
    for e in result.validation_errors() {
        // The validator repeats an error for every action a policy applies to; once is enough.
        let message = without_action(&e.to_string());
        let line = located(path, text, e, &message);
        if !problems.contains(&line) {
            problems.push(line);
        }
    }
    if problems.is_empty() {
        Ok(set)
    } else {
        Err(problems.join("\n"))
    }
}

/// A validation message without its ` for Action::"..."` part.
fn without_action(message: &str) -> String {
    const MARK: &str = " for Action::\"";
    match message.find(MARK) {
        Some(i) => {
            let rest = &message[i + MARK.len()..];
            let end = rest.find('"').map_or(rest.len(), |j| j + 1);
            format!("{}{}", &message[..i], &rest[end..])
        }
        None => message.to_string(),
    }
}

/// `path:line:col: message`, the position from the diagnostic's first label.
fn located(path: &str, text: &str, d: &dyn Diagnostic, message: &str) -> String {
    let offset = d.labels().and_then(|mut l| l.next()).map(|l| l.offset());
    let help = d.help().map(|h| format!(" ({h})")).unwrap_or_default();
    match offset {
        Some(o) => {
            let before = &text[..o.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("{path}:{line}:{col}: {message}{help}")
        }
        None => format!("{path}: {message}{help}"),
    }
}
