//! A server's `inspect:`: which rules of content inspection look at its calls' arguments and
//! its results, what each does (`block`, `redact`, `flag` or `off`), the operator's own
//! patterns, values known not to be findings, and the same per tool.
use std::collections::BTreeMap;

use super::yaml::{Node, Report};
use crate::vocab::{ContentAction, ContentKind, RULES};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspect {
    /// Tool calls' arguments are inspected before they are forwarded.
    pub arguments: bool,
    /// Results (of `tools/call`, `resources/read`, `prompts/get`) are inspected before the
    /// client gets them.
    pub results: bool,
    /// The largest JSON result or event inspected; a larger one is withheld (fail closed).
    pub max_size: usize,
    /// Per rule id or kind (`secret`, `personal`, `injection`).
    pub rules: Settings,
    pub custom: Vec<Custom>,
    /// Matched values that are not findings (test keys, the support address).
    pub allow: Vec<String>,
    /// Per tool: its own settings and allowed values, over the server's.
    pub tools: BTreeMap<String, ToolInspect>,
}

/// What the config says about one rule, or a kind of rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    Off,
    On(ContentAction),
}

pub type Settings = BTreeMap<String, Setting>;

/// An operator's pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Custom {
    pub id: String,
    /// A `regex` pattern (group 1, when there is one, is the finding).
    pub pattern: String,
    pub kind: ContentKind,
    pub action: ContentAction,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolInspect {
    pub rules: Settings,
    pub allow: Vec<String>,
}

/// The largest result inspected when `max_size_kib` is not given: 4 MiB.
const MAX_SIZE: usize = 4 * 1024 * 1024;
/// The most a custom pattern may compile to.
pub const PATTERN_SIZE: usize = 1 << 20;

pub(super) fn read_inspect(n: &Node<'_>, r: &mut Report) -> Option<Inspect> {
    let m = n.mapping(
        &[
            "arguments",
            "results",
            "max_size_kib",
            "rules",
            "custom",
            "allow",
            "tools",
        ],
        r,
    )?;
    let flag = |key: &str, r: &mut Report| match m.get(key) {
        None => Some(true),
        Some(v) => v.boolean(r),
    };
    let arguments = flag("arguments", r);
    let results = flag("results", r);
    let max_size = match m.get("max_size_kib") {
        None => Some(MAX_SIZE),
        Some(v) => match v.integer(r)? {
            i @ 1..=65_536 => Some(i as usize * 1024),
            i => {
                r.add(v, format!("expected 1 to 65536 (KiB), found {i}"));
                None
            }
        },
    };
    let custom = match m.get("custom") {
        None => Some(Vec::new()),
        Some(v) => read_custom(v, r),
    };
    let known: Vec<String> = RULES
        .iter()
        .map(|r| r.id.to_string())
        .chain(custom.iter().flatten().map(|c| c.id.clone()))
        .collect();
    let settings = match m.get("rules") {
        None => Some(Settings::new()),
        Some(v) => read_settings(v, &known, r),
    };
    let allow = match m.get("allow") {
        None => Some(Vec::new()),
        Some(v) => strings(v, r),
    };
    let tools = match m.get("tools") {
        None => Some(BTreeMap::new()),
        Some(v) => {
            let mut ok = true;
            let mut tools = BTreeMap::new();
            for (name, t) in v.entries(r) {
                match read_tool(&t, &known, r) {
                    Some(t) => {
                        tools.insert(name, t);
                    }
                    None => ok = false,
                }
            }
            ok.then_some(tools)
        }
    };
    Some(Inspect {
        arguments: arguments?,
        results: results?,
        max_size: max_size?,
        rules: settings?,
        custom: custom?,
        allow: allow?,
        tools: tools?,
    })
}

fn read_tool(n: &Node<'_>, known: &[String], r: &mut Report) -> Option<ToolInspect> {
    let m = n.mapping(&["rules", "allow"], r)?;
    let rules = match m.get("rules") {
        None => Some(Settings::new()),
        Some(v) => read_settings(v, known, r),
    };
    let allow = match m.get("allow") {
        None => Some(Vec::new()),
        Some(v) => strings(v, r),
    };
    Some(ToolInspect {
        rules: rules?,
        allow: allow?,
    })
}

/// `{ RULE_OR_KIND: block | redact | flag | off }`.
fn read_settings(n: &Node<'_>, known: &[String], r: &mut Report) -> Option<Settings> {
    let mut ok = true;
    let mut out = Settings::new();
    for (key, v) in n.entries(r) {
        if !known.contains(&key) && ContentKind::by_name(&key).is_none() {
            r.add(
                &v,
                format!(
                    "unknown rule {key:?} (expected a kind: secret, personal, injection; or a rule: {})",
                    known.join(", ")
                ),
            );
            ok = false;
            continue;
        }
        match setting(&v, r) {
            Some(s) => {
                out.insert(key, s);
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn setting(v: &Node<'_>, r: &mut Report) -> Option<Setting> {
    let s = v.string(r)?;
    if s == "off" {
        return Some(Setting::Off);
    }
    action(v, &s, r).map(Setting::On)
}

fn action(v: &Node<'_>, s: &str, r: &mut Report) -> Option<ContentAction> {
    let a = ContentAction::by_name(s);
    if a.is_none() {
        r.add(
            v,
            format!("expected `block`, `redact`, `flag` or `off`, found {s:?}"),
        );
    }
    a
}

fn read_custom(n: &Node<'_>, r: &mut Report) -> Option<Vec<Custom>> {
    let mut ok = true;
    let mut out: Vec<Custom> = Vec::new();
    let built_in: Vec<&str> = RULES.iter().map(|r| r.id).collect();
    for item in n.sequence(r) {
        let Some(m) = item.mapping(&["id", "pattern", "kind", "action"], r) else {
            ok = false;
            continue;
        };
        let id = m.require("id", r).and_then(|v| {
            let id = v.string(r)?;
            let valid = !id.is_empty()
                && id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !valid {
                r.add(v, "expected a name of lower-case letters, digits and _");
                return None;
            }
            if built_in.contains(&id.as_str())
                || ContentKind::by_name(&id).is_some()
                || out.iter().any(|c| c.id == id)
            {
                r.add(v, format!("rule {id:?} is already defined"));
                return None;
            }
            Some(id)
        });
        let pattern = m.require("pattern", r).and_then(|v| {
            let p = v.string(r)?;
            match regex::RegexBuilder::new(&p)
                .size_limit(PATTERN_SIZE)
                .build()
            {
                Ok(re) if re.is_match("") => {
                    r.add(v, "the pattern matches the empty text");
                    None
                }
                Ok(_) => Some(p),
                Err(e) => {
                    r.add(v, format!("not a valid pattern: {e}"));
                    None
                }
            }
        });
        let kind = match m.get("kind") {
            None => Some(ContentKind::Secret),
            Some(v) => {
                let s = v.string(r);
                let k = s.as_deref().and_then(ContentKind::by_name);
                if k.is_none() && s.is_some() {
                    r.add(v, "expected `secret`, `personal` or `injection`");
                }
                k
            }
        };
        let action = match m.get("action") {
            None => Some(ContentAction::Redact),
            Some(v) => v.string(r).and_then(|s| action(v, &s, r)),
        };
        match (id, pattern, kind, action) {
            (Some(id), Some(pattern), Some(kind), Some(action)) => out.push(Custom {
                id,
                pattern,
                kind,
                action,
            }),
            _ => ok = false,
        }
    }
    ok.then_some(out)
}

fn strings(n: &Node<'_>, r: &mut Report) -> Option<Vec<String>> {
    let items: Vec<Option<String>> = n.sequence(r).iter().map(|v| v.string(r)).collect();
    items.into_iter().collect()
}
