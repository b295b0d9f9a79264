//! The checker on small crates written for each case, and on the agent itself.
use super::*;

/// A crate in a temporary directory: (relative path, text) pairs.
fn tree(name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xtask-deps-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

fn modules(graph: &Graph) -> BTreeMap<String, Vec<String>> {
    graph
        .edges
        .iter()
        .map(|(m, to)| (m.clone(), to.keys().cloned().collect()))
        .collect()
}

#[test]
fn the_agent_has_no_cycle_and_keeps_its_layers() {
    let graph = Graph::read(&workspace().join(SRC)).unwrap();
    // The walk found the crate (not an empty tree that passes any check).
    assert!(graph.tops().len() > 10, "{:?}", graph.tops());
    if let Err(e) = graph.check() {
        panic!("{e}\n{}", graph.describe());
    }
}

#[test]
fn every_kind_of_path_is_an_edge() {
    let src = tree(
        "kinds",
        &[
            (
                "lib.rs",
                "pub mod a; pub mod b; pub mod c; pub mod d; pub mod e; pub mod f; pub mod g;",
            ),
            // Multi-line group with `self` and a nested group.
            (
                "a/mod.rs",
                "mod x;\nuse crate::{\n    b::{self, B},\n    c::C,\n};",
            ),
            // `super` from a child file names the parent module: same module, no edge;
            // `super::super` names the crate root.
            (
                "a/x.rs",
                "use super::X; fn f() { super::super::d::D::new(); }",
            ),
            ("b.rs", "pub struct B;"),
            ("c.rs", "pub struct C;"),
            // A path in an expression, and one in a macro call.
            ("d.rs", "pub struct D; fn f() { let _ = crate::e::E; }"),
            (
                "e.rs",
                "pub struct E; fn f() { println!(\"{:?}\", crate::f::F); }",
            ),
            // Test code is left out.
            (
                "f.rs",
                "pub struct F;\n#[cfg(test)]\nmod tests { use crate::g::G; }\n#[cfg(test)]\nfn t() { crate::g::G; }",
            ),
            (
                "g.rs",
                "pub struct G; // crate::a::A in a comment\nconst S: &str = \"crate::a\";",
            ),
        ],
    );
    let graph = Graph::read(&src).unwrap();
    let m = modules(&graph);
    assert_eq!(m["a"], ["b", "c", "d"]);
    assert_eq!(m["d"], ["e"]);
    assert_eq!(m["e"], ["f"]);
    assert!(!m.contains_key("f"), "{m:?}");
    assert!(!m.contains_key("g"), "{m:?}");
    assert_eq!(graph.edges["a"]["b"][0].line, 3);
    assert!(graph.check().is_ok());
}

#[test]
fn a_cycle_fails_naming_it_and_where() {
    let src = tree(
        "cycle",
        &[
            ("lib.rs", "mod a; mod b; mod c;"),
            ("a.rs", "use crate::b::B; pub struct A;"),
            ("b.rs", "pub struct B; fn f() { crate::c::C; }"),
            ("c/mod.rs", "mod inner; pub struct C;"),
            ("c/inner.rs", "use crate::a;"),
        ],
    );
    let err = Graph::read(&src).unwrap().check().unwrap_err();
    assert!(
        err.contains("cycle between modules: a -> b -> c -> a"),
        "{err}"
    );
    assert!(err.contains("agent/src/c/inner.rs:1: crate::a"), "{err}");
}

#[test]
fn files_depend_on_the_file_that_defines_a_name() {
    let src = tree(
        "files",
        &[
            ("lib.rs", "mod a; mod b;"),
            // A re-export is not a dependency of its own; code calling a child is.
            (
                "a/mod.rs",
                "mod x; mod y; pub use x::X; pub fn helper() { y::f(); }",
            ),
            // A visibility names who may see, not what is used.
            ("a/x.rs", "pub(super) struct X; pub(in crate::a) fn g() {}"),
            // Through `super`, and through a name imported by `use`.
            ("a/y.rs", "use super::helper;\npub fn f() { helper(); }"),
            ("b.rs", "use crate::a::X;\nfn f(x: X) {}"),
        ],
    );
    let graph = Graph::read(&src).unwrap();
    let edges = |f: &str| -> Vec<String> {
        graph.file_edges[Path::new(f)]
            .keys()
            .map(|p| p.display().to_string())
            .collect()
    };
    assert_eq!(edges("agent/src/b.rs"), ["agent/src/a/x.rs"]);
    assert_eq!(edges("agent/src/a/mod.rs"), ["agent/src/a/y.rs"]);
    assert_eq!(edges("agent/src/a/y.rs"), ["agent/src/a/mod.rs"]);
    assert!(!graph.file_edges.contains_key(Path::new("agent/src/a/x.rs")));
    assert_eq!(
        graph.file_edges[Path::new("agent/src/b.rs")][Path::new("agent/src/a/x.rs")][0].line,
        2
    );
    let described = graph.describe();
    assert!(described.contains("cycles between files: 1\n  agent/src/a/mod.rs -> agent/src/a/y.rs -> agent/src/a/mod.rs"), "{described}");
    // A child module named without a prefix is a module edge, from a file of the module.
    assert_eq!(modules(&graph)["b"], ["a"]);
    assert!(graph.check().is_ok());
}

#[test]
fn the_layer_rules_hold_without_a_cycle() {
    let src = tree(
        "layers",
        &[
            (
                "lib.rs",
                "mod vocab; mod audit; mod config; mod admin; mod policy;",
            ),
            ("vocab.rs", "use crate::config::X;"),
            ("config.rs", "pub struct X;"),
            ("audit.rs", "use crate::{admin::M, vocab::V, config::X};"),
            ("admin.rs", "pub struct M;"),
            ("policy.rs", "fn f() { crate::audit::record(); }"),
        ],
    );
    let err = Graph::read(&src).unwrap().check().unwrap_err();
    assert!(!err.contains("cycle"), "{err}");
    assert!(
        err.contains(
            "policy must not name audit:\n    agent/src/policy.rs:1: crate::audit::record"
        ),
        "{err}"
    );
    assert!(
        err.contains("vocab may name only no module of the crate, but names config"),
        "{err}"
    );
    assert!(
        err.contains("audit may name only vocab, config, but names admin"),
        "{err}"
    );
    assert!(
        err.contains("agent/src/audit.rs:1: crate::admin::M"),
        "{err}"
    );
}
