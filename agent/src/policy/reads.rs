//! What a set of policies can read of a request, found once when the policies load by walking
//! each policy's JSON form (Cedar's EST): which `context` attributes, and which tags (of any
//! entity) by a literal key. Conservative: a node the walker does not know, or `context` used
//! other than as `context.attr` / `context has attr`, counts as reading all of it; a tag key
//! that is not a literal counts as reading every tag. The principal and the resource are not
//! tracked: a decision's cache key always holds all of both.
use std::collections::BTreeSet;

use cedar_policy::Policy;
use serde_json::{Map, Value};

/// A context attribute Moat builds (see `context_pairs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attr {
    Time,
    Hour,
    Weekday,
    SourceIp,
    Tls,
    Scopes,
    Client,
    Session,
    Rate,
    Listing,
    Process,
    Integrity,
    Behaviour,
    Content,
}

/// The context attributes by name, in the order a cache key holds them.
pub const CONTEXT: [(&str, Attr); 14] = [
    ("time", Attr::Time),
    ("hour", Attr::Hour),
    ("weekday", Attr::Weekday),
    ("source_ip", Attr::SourceIp),
    ("tls", Attr::Tls),
    ("scopes", Attr::Scopes),
    ("client", Attr::Client),
    ("session", Attr::Session),
    ("rate", Attr::Rate),
    ("listing", Attr::Listing),
    ("process", Attr::Process),
    ("integrity", Attr::Integrity),
    ("behaviour", Attr::Behaviour),
    ("content", Attr::Content),
];

const ALL_CONTEXT: u16 = (1 << CONTEXT.len()) - 1;

/// Cedar's extension functions (and methods): pure functions of their arguments.
const EXTENSIONS: [&str; 22] = [
    "ip",
    "isIpv4",
    "isIpv6",
    "isLoopback",
    "isMulticast",
    "isInRange",
    "decimal",
    "lessThan",
    "lessThanOrEqual",
    "greaterThan",
    "greaterThanOrEqual",
    "datetime",
    "duration",
    "offset",
    "durationSince",
    "toDate",
    "toTime",
    "toDays",
    "toHours",
    "toMinutes",
    "toSeconds",
    "toMilliseconds",
];

/// What a policy (or a set of them) reads besides the principal, action and resource.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reads {
    /// Bit `i` set: the context attribute `CONTEXT[i]` is read.
    context: u16,
    pub tags: Tags,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tags {
    /// The tags of these keys (none: no tag is read).
    Keys(BTreeSet<String>),
    /// Any tag: a key is computed.
    All,
}

impl Default for Tags {
    fn default() -> Self {
        Self::Keys(BTreeSet::new())
    }
}

impl Reads {
    /// Everything: the whole context, every tag.
    pub fn all() -> Self {
        Self {
            context: ALL_CONTEXT,
            tags: Tags::All,
        }
    }

    /// The context attributes read, in key order.
    pub fn context(&self) -> impl Iterator<Item = Attr> + '_ {
        CONTEXT
            .iter()
            .enumerate()
            .filter(|(i, _)| self.context & (1 << i) != 0)
            .map(|(_, (_, attr))| *attr)
    }

    /// Their names.
    #[cfg(test)]
    pub fn context_names(&self) -> Vec<&'static str> {
        CONTEXT
            .iter()
            .enumerate()
            .filter(|(i, _)| self.context & (1 << i) != 0)
            .map(|(_, (name, _))| *name)
            .collect()
    }

    pub fn add(&mut self, other: &Reads) {
        self.context |= other.context;
        match (&mut self.tags, &other.tags) {
            (Tags::All, _) => {}
            (t, Tags::All) => *t = Tags::All,
            (Tags::Keys(a), Tags::Keys(b)) => a.extend(b.iter().cloned()),
        }
    }

    /// What a policy reads; `None` when its decisions must not be cached (a template-linked
    /// policy, or one whose JSON form cannot be had).
    pub fn of_policy(p: &Policy) -> Option<Reads> {
        if !p.is_static() {
            return None;
        }
        Some(Self::of_est(&p.to_json().ok()?))
    }

    /// What a policy in its JSON form (EST) reads.
    pub fn of_est(json: &Value) -> Reads {
        let mut reads = Reads::default();
        match json.get("conditions") {
            Some(Value::Array(clauses)) => {
                for c in clauses {
                    match shape(c, &["kind", "body"], &[]) {
                        Some(m) => reads.expr(&m["body"]),
                        None => reads.everything(),
                    }
                }
            }
            _ => reads.everything(),
        }
        reads
    }

    fn everything(&mut self) {
        *self = Reads::all();
    }

    fn context_attr(&mut self, attr: &str) {
        match CONTEXT.iter().position(|(name, _)| *name == attr) {
            Some(i) => self.context |= 1 << i,
            None => self.context = ALL_CONTEXT,
        }
    }

    /// Walks one expression.
    fn expr(&mut self, e: &Value) {
        let Some((op, v)) = single(e) else {
            return self.everything();
        };
        // Walks the named children of `v`, which must have exactly these fields.
        let children = |reads: &mut Reads, names: &[&str]| match shape(v, names, &[]) {
            Some(m) => names.iter().for_each(|n| reads.expr(&m[*n])),
            None => reads.everything(),
        };
        match op {
            // Literals (entity references and extension values included) read nothing.
            "Value" => {}
            "Var" => match v.as_str() {
                Some("principal" | "action" | "resource") => {}
                // `context` whole (passed, compared, ...): all of it.
                Some("context") => self.context = ALL_CONTEXT,
                _ => self.everything(),
            },
            "!" | "neg" | "isEmpty" => children(self, &["arg"]),
            "==" | "!=" | "in" | "<" | "<=" | ">" | ">=" | "&&" | "||" | "+" | "-" | "*"
            | "contains" | "containsAll" | "containsAny" => children(self, &["left", "right"]),
            "if-then-else" => children(self, &["if", "then", "else"]),
            "getTag" | "hasTag" => match shape(v, &["left", "right"], &[]) {
                Some(m) => {
                    self.expr(&m["left"]);
                    match single(&m["right"]) {
                        Some(("Value", Value::String(key))) => {
                            if let Tags::Keys(keys) = &mut self.tags {
                                keys.insert(key.clone());
                            }
                        }
                        _ => {
                            self.tags = Tags::All;
                            self.expr(&m["right"]);
                        }
                    }
                }
                None => self.everything(),
            },
            "." | "has" => match shape(v, &["left", "attr"], &[]) {
                Some(m) => {
                    // `has` may test a path (`context has a.b`): its first step is the
                    // context attribute.
                    let first = match &m["attr"] {
                        Value::String(a) => Some(a.as_str()),
                        Value::Array(path) if op == "has" => path.first().and_then(Value::as_str),
                        _ => None,
                    };
                    match (single(&m["left"]), first) {
                        (Some(("Var", Value::String(var))), Some(a)) if var == "context" => {
                            self.context_attr(a)
                        }
                        (_, Some(_)) => self.expr(&m["left"]),
                        (_, None) => self.everything(),
                    }
                }
                None => self.everything(),
            },
            // The pattern is a literal.
            "like" => match shape(v, &["left", "pattern"], &[]) {
                Some(m) => self.expr(&m["left"]),
                None => self.everything(),
            },
            // The entity type is a name.
            "is" => match shape(v, &["left", "entity_type"], &["in"]) {
                Some(m) => {
                    self.expr(&m["left"]);
                    if let Some(i) = m.get("in") {
                        self.expr(i);
                    }
                }
                None => self.everything(),
            },
            "Set" => match v {
                Value::Array(items) => items.iter().for_each(|i| self.expr(i)),
                _ => self.everything(),
            },
            "Record" => match v {
                Value::Object(m) => m.values().for_each(|i| self.expr(i)),
                _ => self.everything(),
            },
            f if EXTENSIONS.contains(&f) => match v {
                Value::Array(args) => args.iter().for_each(|a| self.expr(a)),
                _ => self.everything(),
            },
            _ => self.everything(),
        }
    }
}

/// The one key of a node and its value.
fn single(e: &Value) -> Option<(&str, &Value)> {
    match e {
        Value::Object(m) if m.len() == 1 => m.iter().next().map(|(k, v)| (k.as_str(), v)),
        _ => None,
    }
}

/// `v` as an object with every field of `names`, and no other but those of `optional`.
fn shape<'a>(v: &'a Value, names: &[&str], optional: &[&str]) -> Option<&'a Map<String, Value>> {
    let m = v.as_object()?;
    let known = |k: &String| names.contains(&k.as_str()) || optional.contains(&k.as_str());
    (m.keys().all(known) && names.iter().all(|n| m.contains_key(*n))).then_some(m)
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeSet, str::FromStr as _};

    use cedar_policy::{EntityUid, PolicyId, PolicySet};
    use serde_json::json;

    use super::*;

    fn reads(condition: &str) -> Reads {
        let text = format!("permit (principal, action, resource) when {{ {condition} }};");
        Reads::of_policy(&Policy::from_str(&text).unwrap()).expect("a static policy")
    }

    fn keys(ks: &[&str]) -> Tags {
        Tags::Keys(ks.iter().map(|k| k.to_string()).collect::<BTreeSet<_>>())
    }

    #[test]
    fn the_est_has_the_shapes_the_walker_reads() {
        let p = Policy::from_str(
            r#"permit (principal, action, resource) when {
            context.hour > 3 && context has process.uid && resource.getTag("a") like "x*" &&
            principal.hasTag(context.session) && context.source_ip.isLoopback()
        };"#,
        )
        .unwrap();
        let json = p.to_json().unwrap();
        let body = &json["conditions"][0];
        assert_eq!(body["kind"], "when");
        let text = body["body"].to_string();
        let context = json!({"Var": "context"});
        for node in [
            json!({">": {"left": {".": {"left": context, "attr": "hour"}}, "right": {"Value": 3}}}),
            json!({"has": {"left": context, "attr": ["process", "uid"]}}),
            json!({"getTag": {"left": {"Var": "resource"}, "right": {"Value": "a"}}}),
            json!({"hasTag": {"left": {"Var": "principal"},
                          "right": {".": {"left": context, "attr": "session"}}}}),
            json!({"isLoopback": [{".": {"left": context, "attr": "source_ip"}}]}),
        ] {
            assert!(text.contains(&node.to_string()), "{node} not in {text}");
        }
    }

    #[test]
    fn the_walker_finds_what_is_read() {
        let ctx = |c: &str| reads(c).context_names();
        assert_eq!(ctx("context.hour < 8"), ["hour"]);
        assert_eq!(reads("context.hour < 8").tags, keys(&[]));
        assert_eq!(
            ctx("context has process && context.process.uid == 0"),
            ["process"]
        );
        assert_eq!(ctx("context has process.uid"), ["process"]);
        assert_eq!(
            ctx(r#"context.source_ip.isInRange(ip("10.0.0.0/8")) || context.tls == "none""#),
            ["source_ip", "tls"]
        );
        assert_eq!(
            ctx(r#"context.time < datetime("2027-01-01") && ["Mon"].contains(context.weekday)"#),
            ["time", "weekday"]
        );
        assert_eq!(ctx("true"), Vec::<&str>::new());
        // A tag by a literal key, on any entity (an entity literal too).
        let r = reads(r#"resource.hasTag("path") && resource.getTag("path") like "/srv/*""#);
        assert_eq!((r.context_names().len(), r.tags), (0, keys(&["path"])));
        let r = reads(r#"Tool::"echo".getTag("text") == "x" && principal.getTag("dept") == "a""#);
        assert_eq!(r.tags, keys(&["dept", "text"]));
        // A computed key: every tag, and what computes it.
        let r = reads("resource.hasTag(context.session)");
        assert_eq!((r.context_names(), r.tags), (vec!["session"], Tags::All));
        let r = reads(r#"resource.hasTag(principal.getTag("dept"))"#);
        assert_eq!(r.tags, Tags::All);
        // `context` whole, however it is used: all of it.
        for whole in [
            "context == context",
            r#"{"c": context}.c.rate == 1"#,
            r#"(if true then context else context).rate == 1"#,
            "context.colour == 1",
        ] {
            assert_eq!(ctx(whole).len(), CONTEXT.len(), "{whole}");
        }
        // Nested nodes are walked.
        assert_eq!(
            ctx(
                "(if context.listing then -context.rate else 1) == 1 && principal is User in context.client"
            ),
            ["client", "rate", "listing"]
        );
        assert_eq!(
            ctx(r#"[context.session].containsAny([""]) && !(context.scopes.isEmpty())"#),
            ["scopes", "session"]
        );
    }

    #[test]
    fn what_the_walker_does_not_know_reads_everything() {
        let everything = |body: Value| {
            let policy = json!({
                "effect": "permit",
                "principal": {"op": "All"}, "action": {"op": "All"}, "resource": {"op": "All"},
                "conditions": [{"kind": "when", "body": body}]
            });
            assert_eq!(Reads::of_est(&policy), Reads::all(), "{policy}");
        };
        let context = json!({"Var": "context"});
        everything(json!({"someNewOp": [{"Var": "resource"}]}));
        everything(json!({"someNewOp": {"left": {"Var": "resource"}}}));
        everything(json!({".": {"left": context, "attr": "rate", "default": 1}}));
        everything(json!({"getTag": {"left": {"Var": "resource"}}}));
        everything(json!({"has": {"left": context, "attr": 3}}));
        everything(json!({"Slot": "?principal"}));
        everything(json!({"Var": "somethingNew"}));
        everything(
            json!({"==": {"left": {"Value": 1}, "right": {"Value": 1}}, "!": {"arg": {"Value": true}}}),
        );
        everything(json!("context"));
        assert_eq!(
            Reads::of_est(&json!({"effect": "permit"})),
            Reads::all(),
            "no conditions field"
        );
        assert_eq!(
            Reads::of_est(&json!({"conditions": [{"kind": "when"}]})),
            Reads::all(),
            "a clause without a body"
        );
        // And what it knows, in the same form, reads only what it names.
        let policy = json!({"conditions": [{"kind": "unless",
        "body": {".": {"left": context, "attr": "rate"}}}]});
        assert_eq!(
            (
                Reads::of_est(&policy).context_names(),
                Reads::of_est(&policy).tags
            ),
            (vec!["rate"], keys(&[]))
        );
        // A template-linked policy is not cached at all.
        let mut set = PolicySet::from_str(
        r#"@id("t") permit (principal == ?principal, action, resource) when { context.rate > 1 };"#,
    )
    .unwrap();
        let user: EntityUid = r#"User::"alice""#.parse().unwrap();
        set.link(
            PolicyId::new("policy0"),
            PolicyId::new("linked"),
            [(cedar_policy::SlotId::principal(), user)].into(),
        )
        .unwrap();
        let linked = set.policy(&PolicyId::new("linked")).unwrap();
        assert_eq!(Reads::of_policy(linked), None);
        // (Moat's loading never links one: the index refuses a linked policy outright.)
        assert!(crate::policy::index::Index::new(&set, &crate::policy::actions()).is_err());
    }
}
