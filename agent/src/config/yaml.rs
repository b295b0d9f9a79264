//! Reads a YAML document as a tree of positioned nodes and collects every error with file, line and key.
use std::fmt;

use saphyr::{LoadableYamlNode as _, MarkedYamlOwned, ScalarOwned, YamlDataOwned};

/// One problem in a config file, located by line and column and by the key's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub col: usize,
    pub key: String,
    pub message: String,
}

/// Every problem found in one file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Problems {
    pub file: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "{}: {n} error{}",
            self.file,
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(
                f,
                "\n  {}:{}:{}: {}: {}",
                self.file, p.line, p.col, p.key, p.message
            )?;
        }
        Ok(())
    }
}

/// Collects problems while a document is read.
#[derive(Default)]
pub struct Report {
    pub problems: Vec<Problem>,
}

impl Report {
    pub fn add(&mut self, node: &Node<'_>, message: impl Into<String>) {
        self.problems.push(Problem {
            line: node.raw.span.start.line(),
            col: node.raw.span.start.col() + 1,
            key: node.path.clone(),
            message: message.into(),
        });
    }
}

/// A YAML node with the dotted path of keys that led to it.
pub struct Node<'a> {
    pub raw: &'a MarkedYamlOwned,
    pub path: String,
}

/// Parses `text`; a syntax error is reported as the only problem.
pub fn parse(text: &str) -> Result<MarkedYamlOwned, Problem> {
    let docs = MarkedYamlOwned::load_from_str(text).map_err(|e| Problem {
        line: e.marker().line(),
        col: e.marker().col() + 1,
        key: "(document)".into(),
        message: format!("invalid YAML: {}", e.info()),
    })?;
    match docs.len() {
        0 => Err(Problem {
            line: 1,
            col: 1,
            key: "(document)".into(),
            message: "the file is empty".into(),
        }),
        1 => Ok(docs.into_iter().next().expect("one document")),
        n => Err(Problem {
            line: 1,
            col: 1,
            key: "(document)".into(),
            message: format!("expected one YAML document, found {n}"),
        }),
    }
}

impl<'a> Node<'a> {
    pub fn root(raw: &'a MarkedYamlOwned) -> Self {
        Self {
            raw,
            path: "(root)".into(),
        }
    }

    fn child(&self, raw: &'a MarkedYamlOwned, key: &str) -> Self {
        let path = if self.path == "(root)" {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        };
        Node { raw, path }
    }

    /// The node's value with tags and unresolved representations looked through.
    fn data(&self) -> &'a YamlDataOwned<MarkedYamlOwned> {
        match &self.raw.data {
            YamlDataOwned::Tagged(_, inner) => &inner.data,
            d => d,
        }
    }

    pub fn is_sequence(&self) -> bool {
        matches!(self.data(), YamlDataOwned::Sequence(_))
    }

    pub fn boolean(&self, report: &mut Report) -> Option<bool> {
        match self.data() {
            YamlDataOwned::Value(ScalarOwned::Boolean(b)) => Some(*b),
            _ => {
                report.add(
                    self,
                    format!("expected true or false, found {}", self.describe()),
                );
                None
            }
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.data(), YamlDataOwned::Value(ScalarOwned::Null))
    }

    /// Reads a mapping whose keys must all be in `allowed`; reports unknown keys.
    /// The value of `key` in this mapping, looked up without checking the other keys (to point
    /// at a key in an error found after reading).
    pub fn lookup(&self, key: &str) -> Option<Node<'a>> {
        let YamlDataOwned::Mapping(m) = self.data() else {
            return None;
        };
        m.iter()
            .find(|(k, _)| scalar_string(k).as_deref() == Some(key))
            .map(|(_, v)| self.child(v, key))
    }

    pub fn mapping(&self, allowed: &[&str], report: &mut Report) -> Option<Mapping<'a>> {
        let YamlDataOwned::Mapping(m) = self.data() else {
            report.add(
                self,
                format!("expected a mapping with keys {}", allowed.join(", ")),
            );
            return None;
        };
        let mut entries = Vec::with_capacity(m.len());
        for (k, v) in m {
            let key_node = self.child(k, "?");
            let Some(name) = scalar_string(k) else {
                report.add(&key_node, "keys must be strings");
                continue;
            };
            let key_node = self.child(k, &name);
            if !allowed.contains(&name.as_str()) {
                report.add(
                    &key_node,
                    format!("unknown key (expected one of: {})", allowed.join(", ")),
                );
                continue;
            }
            entries.push((name.clone(), self.child(v, &name)));
        }
        Some(Mapping {
            entries,
            at: Node {
                raw: self.raw,
                path: self.path.clone(),
            },
        })
    }

    /// A mapping whose keys are names the document defines (rule ids, tool names), in
    /// document order.
    pub fn entries(&self, report: &mut Report) -> Vec<(String, Node<'a>)> {
        let YamlDataOwned::Mapping(m) = self.data() else {
            report.add(self, "expected a mapping");
            return Vec::new();
        };
        let mut out = Vec::with_capacity(m.len());
        for (k, v) in m {
            match scalar_string(k) {
                Some(name) => out.push((name.clone(), self.child(v, &name))),
                None => report.add(&self.child(k, "?"), "keys must be strings"),
            }
        }
        out
    }

    pub fn sequence(&self, report: &mut Report) -> Vec<Node<'a>> {
        match self.data() {
            YamlDataOwned::Sequence(items) => items
                .iter()
                .enumerate()
                .map(|(i, raw)| Node {
                    raw,
                    path: format!("{}[{i}]", self.path),
                })
                .collect(),
            _ => {
                report.add(self, "expected a list");
                Vec::new()
            }
        }
    }

    pub fn string(&self, report: &mut Report) -> Option<String> {
        let s = match self.data() {
            YamlDataOwned::Value(ScalarOwned::String(s)) => Some(s.clone()),
            YamlDataOwned::Representation(s, _, _) => Some(s.clone()),
            _ => None,
        };
        if s.is_none() {
            report.add(
                self,
                format!("expected a string, found {}", self.describe()),
            );
        }
        s
    }

    /// A string or a bare number written as text (e.g. a port range `8000-8010` or `8000`).
    pub fn text(&self, report: &mut Report) -> Option<String> {
        if let YamlDataOwned::Value(ScalarOwned::Integer(i)) = self.data() {
            return Some(i.to_string());
        }
        self.string(report)
    }

    pub fn integer(&self, report: &mut Report) -> Option<i64> {
        match self.data() {
            YamlDataOwned::Value(ScalarOwned::Integer(i)) => Some(*i),
            _ => {
                report.add(
                    self,
                    format!("expected an integer, found {}", self.describe()),
                );
                None
            }
        }
    }

    fn describe(&self) -> String {
        match self.data() {
            YamlDataOwned::Value(ScalarOwned::Null) => "nothing (null)".into(),
            YamlDataOwned::Value(ScalarOwned::Boolean(b)) => format!("the boolean {b}"),
            YamlDataOwned::Value(ScalarOwned::Integer(i)) => format!("the integer {i}"),
            YamlDataOwned::Value(ScalarOwned::FloatingPoint(f)) => format!("the number {f}"),
            YamlDataOwned::Value(ScalarOwned::String(s)) => format!("the string {s:?}"),
            YamlDataOwned::Representation(s, _, _) => format!("{s:?}"),
            YamlDataOwned::Sequence(_) => "a list".into(),
            YamlDataOwned::Mapping(_) => "a mapping".into(),
            YamlDataOwned::Alias(_) => "an alias".into(),
            _ => "an invalid value".into(),
        }
    }
}

fn scalar_string(n: &MarkedYamlOwned) -> Option<String> {
    match &n.data {
        YamlDataOwned::Value(ScalarOwned::String(s)) => Some(s.clone()),
        YamlDataOwned::Value(ScalarOwned::Integer(i)) => Some(i.to_string()),
        YamlDataOwned::Representation(s, _, _) => Some(s.clone()),
        _ => None,
    }
}

/// The known keys of one mapping, in document order.
pub struct Mapping<'a> {
    entries: Vec<(String, Node<'a>)>,
    pub at: Node<'a>,
}

impl<'a> Mapping<'a> {
    pub fn get(&self, key: &str) -> Option<&Node<'a>> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
            .filter(|v| !v.is_null())
    }

    /// Like [`Mapping::get`], and reports the key as missing when absent.
    pub fn require(&self, key: &str, report: &mut Report) -> Option<&Node<'a>> {
        let v = self.get(key);
        if v.is_none() {
            report.add(&self.at, format!("missing required key `{key}`"));
        }
        v
    }
}
