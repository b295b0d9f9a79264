//! Normalises MCP resource URIs to the one spelling the servers act on, so that policies decide on exactly that.
//!
//! MCP servers do not look resources up by the string a client sends: the Python SDK parses
//! `params.uri` as a pydantic `AnyUrl` (pydantic-core, built on the `url` crate) and looks up
//! `str(uri)`; the TypeScript SDK's `McpServer` looks up `new URL(uri).toString()`. Both follow
//! the WHATWG URL standard, so `FILE:///secret`, `file:///./secret`, `file:///x/../secret`,
//! `file://localhost/secret`, `file:/secret` and `" file:///secret"` all read `file:///secret`.
//! [`normalise`] gives the spelling a policy decides on, and Moat forwards that spelling, so the
//! server acts on exactly the URI that was decided. It is:
//!
//! - the WHATWG parse (the `url` crate, as in pydantic-core): leading and trailing C0 controls and
//!   spaces stripped, tabs and newlines removed anywhere; scheme lower-cased; for the special
//!   schemes (`http`, `https`, `ws`, `wss`, `ftp`, `file`) the host lower-cased, IPv4 and IPv6
//!   addresses in canonical form, `\` read as `/`, the default port dropped and an empty path
//!   made `/`; `file://localhost/x`, `file:/x` and `file:x` made `file:///x`; dot segments
//!   (`.`, `..`, also `%2e`) removed; characters outside the URL code points percent-encoded
//!   (UTF-8). Hosts of other schemes (`memo://Notes/x`) keep their case, as the servers do.
//! - then RFC 3986 section 6.2.2 percent-encoding normalisation: percent-encoded unreserved
//!   characters (`A-Z a-z 0-9 - . _ ~`) decoded, the hex digits of every other escape
//!   upper-cased (`%2f` becomes `%2F`: an encoded slash stays encoded), and a `%` that starts no
//!   escape written `%25`.
//!
//! So a policy names a resource by that form: `Resource::"file:///secret"`, `Resource::"memo://notes"`,
//! `Resource::"https://example.com/"` (lower-case scheme and special host, `/` as the empty path,
//! no default port, `%2F` upper-case, `~` rather than `%7E`). The form is idempotent, ASCII, and
//! both SDKs' parsers keep it as it is.
//!
//! Refused (an error for a JSON-RPC `-32602` answer): what the servers refuse (not an absolute
//! URI, bad host or port, ...), and the few spellings that the Python and Node parsers read as
//! different resources, since Moat cannot know which one the server will act on ([`UriError`]).
use std::cell::Cell;

use url::{Host, SyntaxViolation, Url};

/// Why a resource URI was refused; the message is meant for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UriError {
    /// The servers refuse it too.
    #[error("resource URI is not a valid absolute URI: {0}")]
    Invalid(#[from] url::ParseError),
    /// URL parsers in MCP servers read it as different resources.
    #[error("resource URI is ambiguous: {why}")]
    Ambiguous {
        why: &'static str,
        /// The spelling the parsers disagree on (the URI as sent, or its normalised form).
        spelling: String,
    },
    /// Parsers convert international host names differently (IDNA and Unicode versions).
    #[error(
        "resource URI has an internationalised host name, which URL parsers convert differently; \
         use a plain ASCII host name"
    )]
    InternationalHost,
}

const FILE_HOST_AND_DRIVE: &str = "a file URI with both a host and a drive letter \
    (file://host/c:/...) is read differently by URL parsers";
const DRIVE_PIPE: &str =
    "a drive letter spelt with '|' (file:///c|/...) is read differently by URL parsers; write 'c:'";
const DRIVE_AND_DOTS: &str =
    "'..' next to a drive letter (/c:/..) is read differently by URL parsers";
const DRIVE_AND_TABS: &str =
    "a tab or newline after a drive letter (file:///c:<TAB>x) is read differently by URL parsers";
const PORT_BACKSLASH: &str = "a backslash after the host is read differently by URL parsers";
const EMPTY_HOST: &str = "an authority without a host is read differently by URL parsers";
const DOTDOT_AT_ROOT: &str =
    "a last '..' above the root (memo://host/..) is read differently by URL parsers";
const NOT_STABLE: &str = "it has no spelling that URL parsers keep as it is";

/// Normalises a resource URI (see the module documentation); the result is what Moat decides on
/// and forwards.
pub fn normalise(raw: &str) -> Result<String, UriError> {
    let input = cleaned(raw);
    let file_host_and_drive = Cell::new(false);
    let violation = |v| {
        if v == SyntaxViolation::FileWithHostAndWindowsDrive {
            file_host_and_drive.set(true);
        }
    };
    let url = Url::options()
        .syntax_violation_callback(Some(&violation))
        .parse(&input)?;
    let kind = match url.scheme() {
        "file" => Kind::File,
        _ if url.is_special() => Kind::Special,
        _ => Kind::Other,
    };
    let written = Written::split(&input, kind);
    if file_host_and_drive.get() {
        return Err(ambiguous(FILE_HOST_AND_DRIVE, raw));
    }
    check_dots(&written, kind, raw)?;
    match kind {
        Kind::File | Kind::Special => check_special_host(&written, &url)?,
        Kind::Other => check_other_authority(&written, &url, raw)?,
    }
    let has_host = url.host_str().is_some_and(|h| !h.is_empty());
    if kind == Kind::File && tab_after_drive_letter(raw, has_host) {
        return Err(ambiguous(DRIVE_AND_TABS, raw));
    }
    let normal = percent_normalise(url.as_str());
    if kind == Kind::File {
        let first = Written::split(&normal, kind).segments(kind).next();
        if first.is_some_and(|s| is_drive_letter(s) && s.ends_with('|')) {
            return Err(ambiguous(DRIVE_PIPE, &normal));
        }
    }
    // Decoding an escape can change how the URI parses (`file://h/%63:/x` gains a drive letter).
    match Url::parse(&normal) {
        Ok(again) if again.as_str() == normal => Ok(normal),
        _ => Err(ambiguous(NOT_STABLE, &normal)),
    }
}

fn ambiguous(why: &'static str, spelling: &str) -> UriError {
    UriError::Ambiguous {
        why,
        spelling: spelling.to_owned(),
    }
}

/// What the URL standard parses: leading and trailing C0 controls and spaces stripped, tabs and
/// newlines removed. (The `url` crate splits a segment after a drive letter at a tab, unlike
/// the standard: Moat parses the cleaned input and refuses what that quirk changes.)
fn cleaned(raw: &str) -> String {
    trimmed(raw)
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect()
}

fn trimmed(raw: &str) -> &str {
    raw.trim_matches(|c| c <= ' ')
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    /// http, https, ws, wss, ftp.
    Special,
    Other,
}

/// The authority and path of a URI as written (cleaned), found the way the URL standard finds them.
struct Written<'a> {
    authority: Option<&'a str>,
    path: &'a str,
}

impl<'a> Written<'a> {
    fn split(input: &'a str, kind: Kind) -> Self {
        let rest = input.split_once(':').map_or("", |(_, rest)| rest);
        let slash = |c: char| c == '/' || (c == '\\' && kind != Kind::Other);
        let with_authority = |s: &'a str| {
            let end = s
                .find(|c| slash(c) || c == '?' || c == '#')
                .unwrap_or(s.len());
            (Some(&s[..end]), &s[end..])
        };
        let mut chars = rest.chars();
        let two_slashes =
            matches!((chars.next(), chars.next()), (Some(a), Some(b)) if slash(a) && slash(b));
        let (authority, rest) = match kind {
            // Any number of slashes or backslashes may come before the host.
            Kind::Special => with_authority(rest.trim_start_matches(slash)),
            Kind::File | Kind::Other if two_slashes => with_authority(chars.as_str()),
            _ => (None, rest),
        };
        let path = &rest[..rest.find(['?', '#']).unwrap_or(rest.len())];
        Written { authority, path }
    }

    /// The path's segments (none for an opaque path such as `urn:a:b`), with a file URI's
    /// drive-letter "host" (`file://c:/x`) first.
    fn segments(&self, kind: Kind) -> impl Iterator<Item = &'a str> + Clone {
        let sep = move |c: char| c == '/' || (c == '\\' && kind != Kind::Other);
        let hierarchical =
            kind != Kind::Other || self.authority.is_some() || self.path.starts_with('/');
        let path = if hierarchical { self.path } else { "" };
        let path = path.strip_prefix(sep).unwrap_or(path);
        let drive_host = self
            .authority
            .filter(|a| kind == Kind::File && is_drive_letter(a));
        let segments = (!path.is_empty() || drive_host.is_some()).then(|| path.split(sep));
        drive_host.into_iter().chain(segments.into_iter().flatten())
    }
}

/// `c:` or `c|`.
fn is_drive_letter(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 2 && b[0].is_ascii_alphabetic() && matches!(b[1], b':' | b'|')
}

/// `c:x`: a drive letter with `:` and more after it.
fn starts_with_drive_colon(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() > 2 && b[0].is_ascii_alphabetic() && b[1] == b':'
}

fn is_single_dot(s: &str) -> bool {
    s == "." || s.eq_ignore_ascii_case("%2e")
}

fn is_double_dot(s: &str) -> bool {
    matches!(s.len(), 2 | 4 | 6) && s.to_ascii_lowercase().replace("%2e", ".") == ".."
}

/// Refuses dot segments that URL parsers resolve differently: `..` after a drive letter
/// (`/c:/..`: the `url` crate keeps the drive letter in every scheme, the standard only as a file
/// URI's first segment), `..` after a file URI's first segment `c:x` (kept by Node's parser,
/// removed by the others), and a last `..` above the root of another scheme's path
/// (`memo://h/..`: `memo://h/` or `memo://h`).
fn check_dots(written: &Written, kind: Kind, raw: &str) -> Result<(), UriError> {
    let mut stack: Vec<&str> = Vec::new();
    let mut segments = written.segments(kind).peekable();
    while let Some(segment) = segments.next() {
        if is_single_dot(segment) {
            continue;
        }
        if !is_double_dot(segment) {
            stack.push(segment);
            continue;
        }
        if kind == Kind::Other && stack.is_empty() && segments.peek().is_none() {
            return Err(ambiguous(DOTDOT_AT_ROOT, raw));
        }
        let first_of_file = kind == Kind::File && stack.len() == 1;
        match stack.last() {
            // A file URI's drive letter stays, for every parser.
            Some(top) if first_of_file && is_drive_letter(top) => continue,
            Some(top) if is_drive_letter(top) => return Err(ambiguous(DRIVE_AND_DOTS, raw)),
            Some(top) if first_of_file && starts_with_drive_colon(top) => {
                return Err(ambiguous(DRIVE_AND_DOTS, raw));
            }
            _ => {}
        }
        stack.pop();
    }
    Ok(())
}

/// Refuses a special URI's host written with non-ASCII characters (also percent-encoded) or with
/// IDNA labels (`xn--`): parsers implement different IDNA and Unicode versions.
fn check_special_host(written: &Written, url: &Url) -> Result<(), UriError> {
    let idn = match url.host() {
        Some(Host::Domain(domain)) => domain.split('.').any(|label| label.starts_with("xn--")),
        _ => false,
    };
    let host = written
        .authority
        .unwrap_or("")
        .rsplit('@')
        .next()
        .unwrap_or("");
    let b = host.as_bytes();
    let encoded_non_ascii = (0..b.len()).any(|i| {
        b[i] == b'%'
            && b.get(i + 1).is_some_and(|&h| hex(h) >= Some(8))
            && b.get(i + 2).is_some_and(|&l| hex(l).is_some())
    });
    if idn || !host.is_ascii() || encoded_non_ascii {
        return Err(UriError::InternationalHost);
    }
    Ok(())
}

/// Refuses authorities of other schemes that Node's parser refuses and the `url` crate accepts:
/// a backslash in the port (`memo://h:1\x`) and credentials without a host (`memo://@`).
fn check_other_authority(written: &Written, url: &Url, raw: &str) -> Result<(), UriError> {
    let Some(authority) = written.authority else {
        return Ok(());
    };
    let host_port = authority.rsplit('@').next().unwrap_or("");
    if host_port.contains('\\') {
        return Err(ambiguous(PORT_BACKSLASH, raw));
    }
    if !authority.is_empty() && url.host_str().is_none_or(str::is_empty) {
        return Err(ambiguous(EMPTY_HOST, raw));
    }
    Ok(())
}

/// Whether a file URI's first path segment is a drive letter, then a tab or newline, then more
/// (`file:c:<TAB>x`, `file://host/c:<TAB>x`, not `file:///c:<TAB>x`): there the `url` crate (and
/// so pydantic) splits the segment after the drive letter, while the standard drops the tab.
fn tab_after_drive_letter(raw: &str, has_host: bool) -> bool {
    // Each character with whether a tab or newline came right before it.
    let mut chars: Vec<(char, bool)> = Vec::new();
    let mut tab = false;
    for c in trimmed(raw).chars() {
        if matches!(c, '\t' | '\n' | '\r') {
            tab = true;
        } else {
            chars.push((c, tab));
            tab = false;
        }
    }
    let slash = |c: char| matches!(c, '/' | '\\');
    let delimiter = |c: char| slash(c) || matches!(c, '?' | '#');
    let Some(colon) = chars.iter().position(|&(c, _)| c == ':') else {
        return false;
    };
    let rest = &chars[colon + 1..];
    let start = match rest {
        [(a, _), (b, _), ..] if slash(*a) && slash(*b) => {
            if !has_host {
                return false;
            }
            let host_end = rest[2..]
                .iter()
                .position(|&(c, _)| delimiter(c))
                .map_or(rest.len(), |p| p + 2);
            match rest.get(host_end) {
                Some(&(c, _)) if slash(c) => host_end + 1,
                _ => return false,
            }
        }
        [(a, _), ..] if slash(*a) => 1,
        _ => 0,
    };
    matches!(
        rest.get(start..start + 3),
        Some(&[(d, _), (':', _), (c, true)]) if d.is_ascii_alphabetic() && !delimiter(c)
    )
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// RFC 3986 6.2.2.1 and 6.2.2.2: escapes of unreserved characters decoded, the others upper-cased;
/// a `%` that starts no escape becomes `%25`.
fn percent_normalise(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut copied = 0;
    let mut i = 0;
    while let Some(p) = s[i..].find('%') {
        let at = i + p;
        out.push_str(&s[copied..at]);
        let escape = match (
            b.get(at + 1).copied().and_then(hex),
            b.get(at + 2).copied().and_then(hex),
        ) {
            (Some(h), Some(l)) => Some(h << 4 | l),
            _ => None,
        };
        match escape {
            Some(v) if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') => {
                out.push(v as char);
                i = at + 3;
            }
            Some(v) => {
                out.push_str(&format!("%{v:02X}"));
                i = at + 3;
            }
            None => {
                out.push_str("%25");
                i = at + 1;
            }
        }
        copied = i;
    }
    out.push_str(&s[copied..]);
    out
}

#[cfg(test)]
mod tests;
