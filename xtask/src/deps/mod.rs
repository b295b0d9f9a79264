//! `cargo xtask deps`: the dependency graph of the agent's modules, read from the source (`use`
//! trees and the paths in code and macro calls), and the check that it has no cycle between
//! top-level modules and keeps the layering rules below. `cargo xtask test` runs the check first.
//!
//! A module depends on the modules its paths name explicitly (`crate::a::b`, `super::b`,
//! `self::b`, or `b` when `b` is a child module), in `use` items and in code; a file depends on
//! the files that define the names its code uses (through the `use` items that import or
//! re-export them). Code under `#[cfg(test)]` is left out: tests may reach across.
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    path::{Path, PathBuf},
};

use crate::Result;

mod cycles;
mod read;

use cycles::cycles;

/// Top-level modules that may name only the modules listed (and std and crates).
const ONLY: &[(&str, &[&str])] = &[
    // The shared words of the crate: everyone may use them, they use nothing.
    ("vocab", &[]),
    // The audit trail sits under everything that is audited.
    ("audit", &["vocab", "config"]),
    // The embedded store keeps records for the modules above it, and knows none of them.
    ("store", &["vocab", "config"]),
];

/// Top-level modules that must not name the modules listed: what the audit log records is
/// handed to it, the config and the policies do not reach for it.
const NEVER: &[(&str, &[&str])] = &[("config", &["audit"]), ("policy", &["audit"])];

/// The agent's source, from the workspace root.
const SRC: &str = "agent/src";

pub fn run(args: &[String]) -> Result {
    if !args.is_empty() {
        return Err("usage: cargo xtask deps".into());
    }
    let graph = Graph::read(&workspace().join(SRC))?;
    print!("{}", graph.describe());
    graph.check()
}

/// The check alone (for `cargo xtask test`): silent when it passes.
pub fn check() -> Result {
    let graph = Graph::read(&workspace().join(SRC))?;
    graph
        .check()
        .map_err(|e| format!("{e}\n(the whole graph: cargo xtask deps)"))
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// A place in the source that names a module of the crate.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Site {
    file: PathBuf,
    line: usize,
    /// The path as written, `::`-joined.
    path: String,
}

/// A path as found, before it is resolved against the crate's modules.
struct Found {
    /// The module it appears in (inline modules included).
    scope: Vec<String>,
    segments: Vec<String>,
    line: usize,
    /// In code (a type, an expression, a macro call), not in a `use` item.
    code: bool,
}

/// The names a `use` item brings into a module: module -> name -> path as written.
type Imports = BTreeMap<Vec<String>, BTreeMap<String, Vec<String>>>;

struct File {
    path: PathBuf,
    found: Vec<Found>,
}

/// The crate's files and who names whom.
pub struct Graph {
    /// Module path -> the file that holds it.
    modules: BTreeMap<Vec<String>, PathBuf>,
    imports: Imports,
    /// Top-level module -> top-level module -> the sites (one edge per pair).
    edges: BTreeMap<String, BTreeMap<String, Vec<Site>>>,
    /// File -> file it names -> sites (files of different modules and of the same one).
    file_edges: BTreeMap<PathBuf, BTreeMap<PathBuf, Vec<Site>>>,
}

impl Graph {
    /// Reads the crate whose root is `src/lib.rs`, following `mod` declarations.
    pub fn read(src: &Path) -> Result<Graph> {
        let mut files = Vec::new();
        let mut modules = BTreeMap::new();
        let mut imports = Imports::new();
        read::load(
            src,
            &src.join("lib.rs"),
            src,
            Vec::new(),
            &mut files,
            &mut modules,
            &mut imports,
        )?;
        let mut graph = Graph {
            modules,
            imports,
            edges: BTreeMap::new(),
            file_edges: BTreeMap::new(),
        };
        for file in &files {
            for found in &file.found {
                graph.add(file, found);
            }
        }
        Ok(graph)
    }

    /// A module edge for a path that names a module of the crate explicitly (`crate::`,
    /// `super::`, `self::`, a child module), in a `use` item or in code; a file edge for a name
    /// used in code, to the file that defines it (through the `use` items that import it).
    fn add(&mut self, file: &File, found: &Found) {
        let site = Site {
            file: file.path.clone(),
            line: found.line,
            path: found.segments.join("::"),
        };
        let explicit = self.resolve(&found.scope, &found.segments, 0);
        if let Some(target) = explicit.as_ref().filter(|_| found.segments.len() > 1)
            && let (Some(from), Some(to)) = (found.scope.first(), target.first())
            && from != to
            && self.modules.contains_key(&target[..1])
        {
            self.edges
                .entry(from.clone())
                .or_default()
                .entry(to.clone())
                .or_default()
                .push(site.clone());
        }
        if !found.code {
            return;
        }
        let Some(to) = self
            .resolve(&found.scope, &found.segments, 1)
            .and_then(|target| self.locate(&target, 1))
            .filter(|to| **to != file.path)
            .cloned()
        else {
            return;
        };
        self.file_edges
            .entry(file.path.clone())
            .or_default()
            .entry(to)
            .or_default()
            .push(site);
    }

    /// Hops through `use` items at most (a cycle of them would not compile, but the walk
    /// does not count on it).
    const HOPS: usize = 8;

    /// The absolute module path (under `crate`) a path names, if it names the crate at all;
    /// with `hops` > 0, also a path whose first segment a `use` item of `scope` imports.
    fn resolve(&self, scope: &[String], segments: &[String], hops: usize) -> Option<Vec<String>> {
        let first = segments.first()?;
        match first.as_str() {
            "crate" => Some(segments[1..].to_vec()),
            "self" => Some([scope, &segments[1..]].concat()),
            "super" => {
                let supers = segments.iter().take_while(|s| *s == "super").count();
                let base = scope.len().checked_sub(supers)?;
                Some([&scope[..base], &segments[supers..]].concat())
            }
            _ => {
                let child = [scope, &segments[..1]].concat();
                if self.modules.contains_key(&child) {
                    return Some([scope, segments].concat());
                }
                if hops == 0 || hops > Self::HOPS {
                    return None;
                }
                let imported = self.imports.get(scope)?.get(first)?;
                let target = self.resolve(scope, imported, hops + 1)?;
                Some([&target[..], &segments[1..]].concat())
            }
        }
    }

    /// The file that defines what an absolute path names: the deepest module on the path,
    /// following the `use` items that re-export a name.
    fn locate(&self, path: &[String], hops: usize) -> Option<&PathBuf> {
        let mut module: Vec<String> = Vec::new();
        for (i, segment) in path.iter().enumerate() {
            let child = [&module[..], std::slice::from_ref(segment)].concat();
            if self.modules.contains_key(&child) {
                module = child;
                continue;
            }
            if hops <= Self::HOPS
                && let Some(imported) = self.imports.get(&module).and_then(|m| m.get(segment))
                && let Some(target) = self.resolve(&module, imported, hops + 1)
            {
                return self.locate(&[&target[..], &path[i + 1..]].concat(), hops + 1);
            }
            break;
        }
        self.modules.get(&module)
    }

    /// The top-level modules (those with a file of their own or an inline body).
    fn tops(&self) -> BTreeSet<&String> {
        self.modules
            .keys()
            .filter(|m| m.len() == 1)
            .map(|m| &m[0])
            .collect()
    }

    /// Fails naming every cycle between top-level modules and every broken rule.
    pub fn check(&self) -> Result {
        let mut problems = Vec::new();
        for cycle in self.cycles() {
            problems.push(format!(
                "cycle between modules: {}\n{}",
                cycle.join(" -> "),
                self.evidence(&cycle)
            ));
        }
        for (module, allowed) in ONLY {
            for (to, sites) in self.edges.get(*module).into_iter().flatten() {
                if !allowed.contains(&to.as_str()) {
                    let may = if allowed.is_empty() {
                        "no module of the crate".to_string()
                    } else {
                        allowed.join(", ")
                    };
                    problems.push(format!(
                        "{module} may name only {may}, but names {to}:\n{}",
                        list(sites)
                    ));
                }
            }
        }
        for (module, banned) in NEVER {
            for (to, sites) in self.edges.get(*module).into_iter().flatten() {
                if banned.contains(&to.as_str()) {
                    problems.push(format!("{module} must not name {to}:\n{}", list(sites)));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n"))
        }
    }

    /// One cycle through each strongly connected set of top-level modules, first module
    /// repeated at the end.
    fn cycles(&self) -> Vec<Vec<String>> {
        let nodes: Vec<&String> = self.tops().into_iter().collect();
        let next = |n: &String| -> Vec<&String> {
            self.edges
                .get(n)
                .map(|m| m.keys().collect())
                .unwrap_or_default()
        };
        cycles(&nodes, next)
    }

    fn evidence(&self, cycle: &[String]) -> String {
        let mut out = String::new();
        for pair in cycle.windows(2) {
            let sites = &self.edges[&pair[0]][&pair[1]];
            let _ = writeln!(out, "  {} -> {}:\n{}", pair[0], pair[1], list(sites));
        }
        out.trim_end().to_string()
    }

    /// The graph for people: module edges, then the cycles between files.
    pub fn describe(&self) -> String {
        let mut out = String::from("modules (a -> what a names):\n");
        for top in self.tops() {
            let names: Vec<&str> = self
                .edges
                .get(top)
                .map(|m| m.keys().map(String::as_str).collect())
                .unwrap_or_default();
            let _ = writeln!(out, "  {top} -> {}", names.join(", "));
        }
        let files: Vec<&PathBuf> = self
            .modules
            .values()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let next = |f: &PathBuf| -> Vec<&PathBuf> {
            self.file_edges
                .get(f)
                .map(|m| m.keys().collect())
                .unwrap_or_default()
        };
        let file_cycles = cycles(&files, next);
        let _ = writeln!(out, "cycles between files: {}", file_cycles.len());
        for cycle in file_cycles {
            let names: Vec<String> = cycle.iter().map(|f| f.display().to_string()).collect();
            let _ = writeln!(out, "  {}", names.join(" -> "));
            for pair in cycle.windows(2) {
                let sites = &self.file_edges[&pair[0]][&pair[1]];
                let _ = writeln!(out, "{}", list(&sites[..1]));
            }
        }
        out
    }
}

/// One line per place; of the paths of one `use` line, those that another one extends are left
/// out (`crate::a::{self, B}` shows as `crate::a::B`).
fn list(sites: &[Site]) -> String {
    let mut lines: BTreeMap<(&Path, usize), Vec<&str>> = BTreeMap::new();
    for s in sites {
        lines.entry((&s.file, s.line)).or_default().push(&s.path);
    }
    lines
        .iter()
        .map(|((file, line), paths)| {
            let longest: Vec<&str> = paths
                .iter()
                .copied()
                .filter(|p| {
                    !paths
                        .iter()
                        .any(|q| q.len() > p.len() && q.starts_with(&format!("{p}::")))
                })
                .collect();
            format!("    {}:{line}: {}", file.display(), longest.join(", "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests;
