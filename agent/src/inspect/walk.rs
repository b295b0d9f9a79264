//! Walks a JSON message: every string value and key, and every integer long enough to be a
//! card number, is matched against the rules; findings are named by their JSON path (built
//! only when there is one); in a response, redacted text is replaced in place.
use std::fmt::Write as _;

use serde_json::{Map, Value};

use super::engine::{Inspector, Table};
use crate::vocab::{ContentAction, Direction, Finding, Findings};

/// Where a value sits, from the message's root; a chain of borrowed steps, so a walk that finds
/// nothing allocates nothing for it.
pub struct Path<'a> {
    parent: Option<&'a Path<'a>>,
    step: Step<'a>,
}

enum Step<'a> {
    Root(&'static str),
    Key(&'a str),
    Index(usize),
}

impl<'a> Path<'a> {
    pub fn root(name: &'static str) -> Self {
        Path {
            parent: None,
            step: Step::Root(name),
        }
    }

    pub fn key(&'a self, k: &'a str) -> Path<'a> {
        Path {
            parent: Some(self),
            step: Step::Key(k),
        }
    }

    fn index(&'a self, i: usize) -> Path<'a> {
        Path {
            parent: Some(self),
            step: Step::Index(i),
        }
    }

    fn render(&self) -> String {
        let mut steps = vec![self];
        while let Some(p) = steps.last().and_then(|p| p.parent) {
            steps.push(p);
        }
        let mut s = String::new();
        for p in steps.iter().rev() {
            match p.step {
                Step::Root(r) => s.push_str(r),
                Step::Index(i) => {
                    let _ = write!(s, "[{i}]");
                }
                Step::Key(k) if simple(k) => {
                    s.push('.');
                    s.push_str(k);
                }
                Step::Key(k) => {
                    // Quoted as JSON, so a key cannot pass for another path.
                    let _ = write!(s, "[{}]", Value::from(k));
                }
            }
        }
        s
    }
}

fn simple(k: &str) -> bool {
    !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// What inspecting one message found and did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub found: Findings,
    /// A finding's action is `block` (or `redact` where Moat does not rewrite).
    pub blocked: bool,
    /// Text was redacted: the message differs from what came.
    pub changed: bool,
}

impl Outcome {
    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// The first finding that blocks, for the error the client gets.
    pub fn blocking(&self) -> Option<&Finding> {
        self.found.findings.iter().find(|f| {
            f.action == ContentAction::Block
                || (f.action == ContentAction::Redact && f.direction == Direction::Request)
        })
    }
}

/// An integer this long may be a card number written as a number.
const LONG_NUMBER: u64 = 100_000_000_000;

pub struct Scan<'a> {
    inspector: &'a Inspector,
    table: &'a Table,
    direction: Direction,
    hits: Vec<(usize, usize, usize)>,
    /// Every finding is redacted, whatever its action (a copy for the audit record).
    pub all: bool,
    pub outcome: Outcome,
}

impl<'a> Scan<'a> {
    pub fn new(inspector: &'a Inspector, table: &'a Table, direction: Direction) -> Self {
        Self {
            inspector,
            table,
            direction,
            hits: Vec::new(),
            all: false,
            outcome: Outcome::default(),
        }
    }

    /// Reads `v` without changing it.
    pub fn read(&mut self, v: &Value, path: &Path<'_>) {
        match v {
            Value::String(s) => {
                self.text(s, path);
            }
            Value::Number(n) => {
                if let Some(text) = long(n) {
                    self.text(&text, path);
                }
            }
            Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    self.read(v, &path.index(i));
                }
            }
            Value::Object(o) => {
                for (k, v) in o {
                    let p = path.key(k);
                    self.text(k, &p);
                    self.read(v, &p);
                }
            }
            _ => {}
        }
    }

    /// Reads `v`, replacing what is redacted.
    pub fn write(&mut self, v: &mut Value, path: &Path<'_>) {
        match v {
            Value::String(s) => {
                if let Some(r) = self.text(s, path) {
                    *s = r;
                }
            }
            Value::Number(n) => {
                if let Some(text) = long(n)
                    && let Some(r) = self.text(&text, path)
                {
                    *v = Value::String(r);
                }
            }
            Value::Array(a) => {
                for (i, v) in a.iter_mut().enumerate() {
                    self.write(v, &path.index(i));
                }
            }
            Value::Object(o) => self.object(o, path),
            _ => {}
        }
    }

    fn object(&mut self, o: &mut Map<String, Value>, path: &Path<'_>) {
        let mut renamed = Vec::new();
        for (k, v) in o.iter_mut() {
            let p = path.key(k);
            if let Some(r) = self.text(k, &p) {
                if self.all {
                    renamed.push((k.clone(), r));
                } else {
                    // A result's key is not rewritten: what a key would redact, it blocks.
                    self.outcome.blocked = true;
                }
            }
            self.write(v, &p);
        }
        for (old, new) in renamed {
            if let Some(v) = o.remove(&old) {
                o.insert(new, v);
            }
        }
    }

    /// Matches one text; the redacted text when a finding there redacts (in a response).
    fn text(&mut self, text: &str, path: &Path<'_>) -> Option<String> {
        self.hits.clear();
        self.inspector.find(self.table, text, &mut self.hits);
        if self.hits.is_empty() {
            return None;
        }
        let rendered = path.render();
        let mut redact: Vec<(usize, usize, usize)> = Vec::new();
        for &(i, start, end) in &self.hits {
            let Some(action) = self.table.actions[i] else {
                continue;
            };
            let rule = &self.inspector.rules[i];
            match (action, self.direction) {
                _ if self.all => redact.push((i, start, end)),
                (ContentAction::Flag, _) => {}
                (ContentAction::Redact, Direction::Response) => redact.push((i, start, end)),
                _ => self.outcome.blocked = true,
            }
            self.outcome.found.push(Finding {
                rule: rule.id.clone(),
                kind: rule.kind,
                direction: self.direction,
                path: rendered.clone(),
                action,
            });
        }
        if redact.is_empty() {
            return None;
        }
        self.outcome.changed = true;
        redact.sort_by_key(|&(_, s, e)| (s, std::cmp::Reverse(e)));
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (i, start, end) in redact {
            if end <= at {
                continue;
            }
            out.push_str(&text[at..start.max(at)]);
            if start >= at {
                let _ = write!(out, "[REDACTED:{}]", self.inspector.rules[i].id);
            }
            at = end;
        }
        out.push_str(&text[at..]);
        Some(out)
    }
}

fn long(n: &serde_json::Number) -> Option<String> {
    let big = n.as_u64().is_some_and(|u| u >= LONG_NUMBER)
        || n.as_i64().is_some_and(|i| i.unsigned_abs() >= LONG_NUMBER);
    big.then(|| n.to_string())
}
