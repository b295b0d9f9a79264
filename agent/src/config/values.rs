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

/// A URL Moat fetches keys, token information or tokens from: HTTPS, or plain HTTP to a
/// loopback address (a provider on the same host).
pub fn fetch_url(v: &Node<'_>, r: &mut Report) -> Option<String> {
    let s = v.string(r)?;
    let ok = match s.strip_prefix("http://") {
        Some(rest) => {
            let host = url_authority(&s)
                .map(|a| a.rsplit_once(':').map_or(a, |(h, _)| h))
                .unwrap_or_default();
            !rest.is_empty()
                && (host == "localhost"
                    || host
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback()))
        }
        None => s.strip_prefix("https://").is_some_and(|rest| {
            !rest.is_empty() && !rest.starts_with('/') && !rest.contains(char::is_whitespace)
        }),
    };
    if !ok {
        r.add(
            v,
            format!("expected an https:// URL (http:// only to a loopback address), found {s:?}"),
        );
        return None;
    }
    Some(s)
}

/// A list of OAuth scope tokens.
pub fn scopes(v: Option<&Node<'_>>, r: &mut Report) -> Option<Vec<String>> {
    let list = string_list(v, r)?;
    let mut ok = true;
    if let Some(v) = v {
        for s in &list {
            if !scope_token(s) {
                r.add(v, format!("{s:?} is not a valid scope"));
                ok = false;
            }
        }
    }
    ok.then_some(list)
}

/// RFC 6749 scope-token: printable ASCII except space, `"` and `\\`.
pub fn scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b > 0x20 && b < 0x7f && b != b'"' && b != b'\\')
}
