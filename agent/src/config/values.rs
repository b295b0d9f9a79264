//! Values several sections read: absolute paths, lists of strings, the parts of a URL.
use std::path::PathBuf;

use super::yaml::{Node, Report};

/// A path, which must be absolute.
pub fn absolute_path(v: &Node<'_>, r: &mut Report) -> Option<PathBuf> {
    let s = v.string(r)?;
    let p = PathBuf::from(&s);
    if !p.is_absolute() {
        r.add(v, format!("expected an absolute path, found {s:?}"));
        return None;
    }
    Some(p)
}

/// A list of strings; an absent one is empty.
pub fn string_list(v: Option<&Node<'_>>, r: &mut Report) -> Option<Vec<String>> {
    let Some(v) = v else { return Some(Vec::new()) };
    let mut out = Vec::new();
    let mut ok = true;
    for item in v.sequence(r) {
        match item.string(r) {
            Some(s) => out.push(s),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// The path of an absolute http(s) URL.
pub fn url_path(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let (authority, path) = rest
        .find('/')
        .map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
    (!authority.is_empty() && !path.contains(['?', '#'])).then_some(path)
}

/// The `host[:port]` of an absolute http(s) URL.
pub fn url_authority(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    Some(rest.split('/').next().unwrap_or(rest))
}
