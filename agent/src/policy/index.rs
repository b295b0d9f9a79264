//! Policies by what they can apply to: for each action, the policies whose scope names that
//! action (or any), and among them those whose scope names one resource (`resource ==
//! Tool::"x"`) only for that resource. A request is decided by its own small set, which gives
//! the same decision as the whole set (a policy whose scope does not match cannot decide) at
//! a cost that does not grow with policies about other tools. Each set comes with what its
//! policies read of a request ([`Reads`]), for the decision cache.
use std::collections::HashMap;

use cedar_policy::{ActionConstraint, EntityUid, Policy, PolicySet, ResourceConstraint};

use super::reads::Reads;

/// More policy copies than this across the per-resource sets and the index stops splitting by
/// resource (each action's set holds all its policies: slower, same decisions).
const MAX_COPIES: usize = 200_000;

pub struct Index {
    /// By action id: the policies for any resource of it.
    general: HashMap<String, Set>,
    /// By action id and resource: general plus the policies naming that resource.
    specific: HashMap<String, HashMap<EntityUid, Set>>,
}

/// Policies, and what they read (`None`: their decisions are not to be cached).
struct Set {
    policies: PolicySet,
    reads: Option<Reads>,
}

impl Index {
    pub fn new(set: &PolicySet, actions: &[&str]) -> Result<Self, String> {
        let mut general: HashMap<String, Vec<Policy>> = HashMap::new();
        let mut by_resource: HashMap<(String, EntityUid), Vec<Policy>> = HashMap::new();
        for p in set.policies() {
            for a in actions.iter().copied().filter(|a| applies(p, a)) {
                match p.resource_constraint() {
                    ResourceConstraint::Eq(r) => by_resource
                        .entry((a.to_string(), r))
                        .or_default()
                        .push(p.clone()),
                    _ => general.entry(a.to_string()).or_default().push(p.clone()),
                }
            }
        }
        let copies: usize = by_resource
            .keys()
            .map(|(a, _)| general.get(a).map_or(0, Vec::len))
            .sum();
        let split = copies <= MAX_COPIES;
        // Each policy is walked once, however many sets it is in.
        let mut reads: HashMap<String, Option<Reads>> = HashMap::new();
        for p in set.policies() {
            reads.insert(p.id().to_string(), Reads::of_policy(p));
        }
        let set_of = |ps: &[Policy]| -> Result<Set, String> {
            let mut all = Some(Reads::default());
            for p in ps {
                all = match (all, reads.get(&p.id().to_string()).and_then(Option::as_ref)) {
                    (Some(mut a), Some(r)) => {
                        a.add(r);
                        Some(a)
                    }
                    _ => None,
                };
            }
            Ok(Set {
                policies: PolicySet::from_policies(ps.iter().cloned())
                    .map_err(|e| e.to_string())?,
                reads: all,
            })
        };
        let mut specific: HashMap<String, HashMap<EntityUid, Set>> = HashMap::new();
        if split {
            for ((a, r), ps) in &by_resource {
                let mut all = general.get(a).cloned().unwrap_or_default();
                all.extend(ps.iter().cloned());
                specific
                    .entry(a.clone())
                    .or_default()
                    .insert(r.clone(), set_of(&all)?);
            }
        } else {
            for ((a, _), ps) in by_resource {
                general.entry(a).or_default().extend(ps);
            }
        }
        Ok(Self {
            general: general
                .iter()
                .map(|(a, ps)| Ok((a.clone(), set_of(ps)?)))
                .collect::<Result<_, String>>()?,
            specific,
        })
    }

    /// The policies that can decide `action` on `resource`, and what they read.
    pub fn for_request(&self, action: &str, resource: &EntityUid) -> (&PolicySet, Option<&Reads>) {
        let set = match self.specific.get(action).and_then(|r| r.get(resource)) {
            Some(s) => s,
            None => self.general.get(action).unwrap_or_else(|| empty()),
        };
        (&set.policies, set.reads.as_ref())
    }
}

/// Whether the policy's action scope admits `action`.
fn applies(p: &Policy, action: &str) -> bool {
    let is =
        |uid: &EntityUid| uid.type_name().to_string() == "Action" && uid.id().unescaped() == action;
    match p.action_constraint() {
        ActionConstraint::Any => true,
        ActionConstraint::Eq(uid) => is(&uid),
        ActionConstraint::In(uids) => uids.iter().any(is),
    }
}

fn empty() -> &'static Set {
    static EMPTY: std::sync::OnceLock<Set> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| Set {
        policies: PolicySet::new(),
        reads: Some(Reads::default()),
    })
}
