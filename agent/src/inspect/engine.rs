//! A server's rules compiled: the settings of each rule for the server and each tool, one
//! pass that tells whether any rule matches a text, and each match found with its check passed
//! and not allowed.
use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};

use super::rules::{self, Check};
use crate::{
    config::{Inspect, PATTERN_SIZE, Setting, Settings},
    vocab::{ContentAction, ContentKind},
};

/// One server's rules, compiled.
pub struct Inspector {
    /// Any rule matches (one pass over a text that matches none).
    set: RegexSet,
    pub(super) rules: Vec<Compiled>,
    base: Table,
    tools: HashMap<String, Table>,
    pub arguments: bool,
    pub results: bool,
    pub max_size: usize,
}

pub(super) struct Compiled {
    pub(super) id: Arc<str>,
    pub(super) kind: ContentKind,
    re: Regex,
    /// The finding is group 1.
    group: bool,
    check: Check,
}

/// What each rule does (None: off) and the values allowed, for the server or one tool.
pub(super) struct Table {
    pub(super) actions: Vec<Option<ContentAction>>,
    allow: HashSet<String>,
}

/// A rule that failed to compile (checked when the config is read; here if the combined set is
/// too large).
#[derive(Debug, thiserror::Error)]
#[error("content inspection: {0}")]
pub struct InspectError(String);

impl Inspector {
    pub fn new(config: &Inspect) -> Result<Self, InspectError> {
        let mut all: Vec<(Arc<str>, ContentKind, ContentAction, String, Check)> = rules::built_in()
            .into_iter()
            .map(|r| {
                // ASCII word boundaries: the fast engines give up on Unicode ones in
                // non-ASCII text.
                let p = r.pattern.replace(r"\b", r"(?-u:\b)");
                (r.id.into(), r.kind, r.action, p, r.check)
            })
            .collect();
        let built_in = all.len();
        all.extend(config.custom.iter().map(|c| {
            (
                c.id.as_str().into(),
                c.kind,
                c.action,
                c.pattern.clone(),
                Check::None,
            )
        }));
        let action = |settings: &Settings, id: &str, kind: ContentKind| {
            settings
                .get(id)
                .or_else(|| settings.get(kind.name()))
                .copied()
        };
        let table = |over: Option<&Settings>, allow: HashSet<String>| Table {
            actions: all
                .iter()
                .enumerate()
                .map(|(i, (id, kind, default, _, _))| {
                    // A custom rule's own action is said of it by name: over its kind's.
                    let own = (i >= built_in).then_some(Setting::On(*default));
                    let server = config.rules.get(&**id).copied().or(own);
                    let s = over
                        .and_then(|o| action(o, id, *kind))
                        .or(server)
                        .or_else(|| action(&config.rules, id, *kind))
                        .unwrap_or(Setting::On(*default));
                    match s {
                        Setting::Off => None,
                        Setting::On(a) => Some(a),
                    }
                })
                .collect(),
            allow,
        };
        let base = table(None, config.allow.iter().cloned().collect());
        let tools: HashMap<String, Table> = config
            .tools
            .iter()
            .map(|(name, t)| {
                let allow = config.allow.iter().chain(&t.allow).cloned().collect();
                (name.clone(), table(Some(&t.rules), allow))
            })
            .collect();
        // Only rules on somewhere are compiled.
        let on: Vec<usize> = (0..all.len())
            .filter(|&i| {
                base.actions[i].is_some() || tools.values().any(|t| t.actions[i].is_some())
            })
            .collect();
        let keep = |t: Table| Table {
            actions: on.iter().map(|&i| t.actions[i]).collect(),
            allow: t.allow,
        };
        let set = RegexSetBuilder::new(on.iter().map(|&i| &all[i].3))
            .size_limit(PATTERN_SIZE * 8)
            .build()
            .map_err(|e| InspectError(e.to_string()))?;
        let rules = on
            .iter()
            .map(|&i| {
                let (id, kind, _, pattern, check) = &all[i];
                let re = RegexBuilder::new(pattern)
                    .size_limit(PATTERN_SIZE)
                    .build()
                    .map_err(|e| InspectError(format!("rule {id}: {e}")))?;
                Ok(Compiled {
                    id: id.clone(),
                    kind: *kind,
                    group: re.captures_len() > 1,
                    re,
                    check: *check,
                })
            })
            .collect::<Result<Vec<_>, InspectError>>()?;
        Ok(Self {
            set,
            rules,
            base: keep(base),
            tools: tools.into_iter().map(|(k, t)| (k, keep(t))).collect(),
            arguments: config.arguments,
            results: config.results,
            max_size: config.max_size,
        })
    }

    pub(super) fn table(&self, tool: Option<&str>) -> &Table {
        tool.and_then(|t| self.tools.get(t)).unwrap_or(&self.base)
    }

    /// Every match of a rule that is on in `table`, its check passed and not allowed: (rule
    /// index, byte range of the finding).
    pub(super) fn find(&self, table: &Table, text: &str, out: &mut Vec<(usize, usize, usize)>) {
        let hits = self.set.matches(text);
        if !hits.matched_any() {
            return;
        }
        for i in hits.iter() {
            if table.actions[i].is_none() {
                continue;
            }
            let r = &self.rules[i];
            let mut push = |m: regex::Match<'_>| {
                if rules::passes(r.check, m.as_str()) && !table.allow.contains(m.as_str()) {
                    out.push((i, m.start(), m.end()));
                }
            };
            if r.group {
                for c in r.re.captures_iter(text) {
                    if let Some(m) = c.get(1).or_else(|| c.get(0)) {
                        push(m);
                    }
                }
            } else {
                r.re.find_iter(text).for_each(push);
            }
        }
    }
}
