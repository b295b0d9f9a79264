//! Reads a crate's source from its root, following `mod` declarations: the paths each file
//! writes (in `use` items, code and macro input), the names its `use` items import, and which
//! file holds which module. Items under `#[cfg(test)]` are left out.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use proc_macro2::{TokenStream, TokenTree};
use syn::{Attribute, Item, UseTree, visit::Visit};

use super::{File, Found, Imports, SRC};
use crate::Result;

/// Reads the module `module` from `file` and the files of its `mod` declarations; `dir` is
/// where they are.
pub fn load(
    src: &Path,
    file: &Path,
    dir: &Path,
    module: Vec<String>,
    files: &mut Vec<File>,
    modules: &mut BTreeMap<Vec<String>, PathBuf>,
    imports: &mut Imports,
) -> Result {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let ast = syn::parse_file(&text).map_err(|e| {
        let at = e.span().start();
        format!("{}:{}: {e}", file.display(), at.line)
    })?;
    // Named as in the workspace, whatever directory the crate was read from.
    let rel = Path::new(SRC).join(file.strip_prefix(src).unwrap_or(file));
    modules.insert(module.clone(), rel.clone());
    let mut walker = Walker {
        scope: module.clone(),
        found: Vec::new(),
        children: Vec::new(),
        inline: Vec::new(),
        imports,
    };
    walker.items(&ast.items, dir);
    for path in &walker.inline {
        modules.insert(path.clone(), rel.clone());
    }
    let children = std::mem::take(&mut walker.children);
    files.push(File {
        path: rel,
        found: walker.found,
    });
    for (child, child_dir) in children {
        let name = child.last().expect("a child has a name");
        let flat = child_dir.join(format!("{name}.rs"));
        let nested = child_dir.join(name).join("mod.rs");
        let (path, next_dir) = if flat.exists() {
            (flat, child_dir.join(name))
        } else if nested.exists() {
            (nested, child_dir.join(name))
        } else {
            return Err(format!(
                "{}: module {name} has no file ({} or {})",
                file.display(),
                flat.display(),
                nested.display()
            ));
        };
        load(src, &path, &next_dir, child, files, modules, imports)?;
    }
    Ok(())
}

/// Walks one file, collecting the paths it writes, the names it imports and the modules it
/// declares.
struct Walker<'i> {
    scope: Vec<String>,
    found: Vec<Found>,
    /// Modules declared with a file of their own: path, and the directory their file is in.
    children: Vec<(Vec<String>, PathBuf)>,
    /// Inline modules: path.
    inline: Vec<Vec<String>>,
    imports: &'i mut Imports,
}

fn cfg_test(attrs: &[Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Meta>()
                .is_ok_and(|m| m.path().is_ident("test"))
    })
}

fn item_attrs(item: &Item) -> &[Attribute] {
    match item {
        Item::Const(i) => &i.attrs,
        Item::Enum(i) => &i.attrs,
        Item::ExternCrate(i) => &i.attrs,
        Item::Fn(i) => &i.attrs,
        Item::ForeignMod(i) => &i.attrs,
        Item::Impl(i) => &i.attrs,
        Item::Macro(i) => &i.attrs,
        Item::Mod(i) => &i.attrs,
        Item::Static(i) => &i.attrs,
        Item::Struct(i) => &i.attrs,
        Item::Trait(i) => &i.attrs,
        Item::TraitAlias(i) => &i.attrs,
        Item::Type(i) => &i.attrs,
        Item::Union(i) => &i.attrs,
        Item::Use(i) => &i.attrs,
        _ => &[],
    }
}

impl Walker<'_> {
    /// The items of the module `self.scope`, whose child files are in `dir`.
    fn items(&mut self, items: &[Item], dir: &Path) {
        for item in items {
            if cfg_test(item_attrs(item)) {
                continue;
            }
            match item {
                Item::Mod(m) => {
                    let path = [self.scope.clone(), vec![m.ident.to_string()]].concat();
                    match &m.content {
                        None => self.children.push((path, dir.to_path_buf())),
                        Some((_, inner)) => {
                            self.inline.push(path.clone());
                            let outer = std::mem::replace(&mut self.scope, path);
                            self.items(inner, &dir.join(m.ident.to_string()));
                            self.scope = outer;
                        }
                    }
                }
                other => self.visit_item(other),
            }
        }
    }

    fn push(&mut self, segments: Vec<String>, line: usize, code: bool) {
        self.found.push(Found {
            scope: self.scope.clone(),
            segments,
            line,
            code,
        });
    }

    fn use_item(&mut self, u: &syn::ItemUse) {
        if u.leading_colon.is_some() {
            return;
        }
        let mut paths = Vec::new();
        flatten(&u.tree, &mut Vec::new(), &mut paths);
        for (segments, line, name) in paths {
            if let Some(name) = name {
                self.imports
                    .entry(self.scope.clone())
                    .or_default()
                    .insert(name, segments.clone());
            }
            self.push(segments, line, false);
        }
    }

    /// `crate::a::b`, `super::b`, `self::b` and `b::c` sequences in macro input.
    fn tokens(&mut self, tokens: TokenStream) {
        let trees: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < trees.len() {
            match &trees[i] {
                TokenTree::Group(g) => {
                    self.tokens(g.stream());
                    i += 1;
                }
                TokenTree::Ident(first) => {
                    let line = first.span().start().line;
                    let mut segments = vec![first.to_string()];
                    let mut j = i + 1;
                    while let (
                        Some(TokenTree::Punct(a)),
                        Some(TokenTree::Punct(b)),
                        Some(TokenTree::Ident(id)),
                    ) = (trees.get(j), trees.get(j + 1), trees.get(j + 2))
                    {
                        if a.as_char() != ':' || b.as_char() != ':' {
                            break;
                        }
                        segments.push(id.to_string());
                        j += 3;
                    }
                    self.push(segments, line, true);
                    i = j;
                }
                TokenTree::Punct(_) | TokenTree::Literal(_) => i += 1,
            }
        }
    }
}

/// The paths of a `use` tree (a group's `self` names the group's prefix), each with the name it
/// brings into scope (none for a glob).
type UsePath = (Vec<String>, usize, Option<String>);

fn flatten(tree: &UseTree, prefix: &mut Vec<String>, out: &mut Vec<UsePath>) {
    let mut named = |ident: &syn::Ident, name: &syn::Ident| {
        let line = ident.span().start().line;
        let path = if ident == "self" {
            prefix.clone()
        } else {
            [prefix.clone(), vec![ident.to_string()]].concat()
        };
        let name = if name == "self" {
            prefix.last().cloned()
        } else {
            Some(name.to_string())
        };
        out.push((path, line, name));
    };
    match tree {
        UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            flatten(&p.tree, prefix, out);
            prefix.pop();
        }
        UseTree::Name(n) => named(&n.ident, &n.ident),
        UseTree::Rename(r) => named(&r.ident, &r.rename),
        UseTree::Glob(g) => out.push((prefix.clone(), g.star_token.span.start().line, None)),
        UseTree::Group(g) => {
            for tree in &g.items {
                flatten(tree, prefix, out);
            }
        }
    }
}

impl<'ast> Visit<'ast> for Walker<'_> {
    fn visit_path(&mut self, path: &'ast syn::Path) {
        if path.leading_colon.is_none() {
            let segments = path.segments.iter().map(|s| s.ident.to_string()).collect();
            let line = path.segments[0].ident.span().start().line;
            self.push(segments, line, true);
        }
        syn::visit::visit_path(self, path);
    }

    // `pub(super)`, `pub(in crate::a)`: who may see an item, not what it uses.
    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {}

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.visit_path(&mac.path);
        self.tokens(mac.tokens.clone());
    }

    // Items nested in functions and impls: skip those only tests see, and walk `use` trees.
    fn visit_item(&mut self, item: &'ast Item) {
        if cfg_test(item_attrs(item)) {
            return;
        }
        match item {
            Item::Use(u) => self.use_item(u),
            _ => syn::visit::visit_item(self, item),
        }
    }

    fn visit_impl_item(&mut self, item: &'ast syn::ImplItem) {
        let attrs = match item {
            syn::ImplItem::Fn(f) => &f.attrs[..],
            syn::ImplItem::Const(c) => &c.attrs[..],
            syn::ImplItem::Type(t) => &t.attrs[..],
            _ => &[],
        };
        if !cfg_test(attrs) {
            syn::visit::visit_impl_item(self, item);
        }
    }
}
