//! Signs of tool poisoning in what a server offers: text a model reads as instructions but a
//! person reviewing the server does not see (invisible or reordering Unicode, terminal
//! escapes), names that imitate other names, pseudo-markup and phrases that address the model,
//! pointers to local secrets, and unusual length. Each marker is named; none is proof, all are
//! reasons for a person to look.
use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::Value;

use crate::vocab::List;

/// One sign of poisoning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Marker {
    /// Characters that render as nothing: Unicode tag characters (U+E0000-E007F, which can
    /// spell a hidden ASCII message), zero-width characters, invisible operators.
    InvisibleUnicode,
    /// Bidirectional controls that reorder what is shown (U+202A-202E, U+2066-2069, ...).
    BidiControl,
    /// Terminal escape sequences (ESC, CSI) or other control characters.
    ControlCharacters,
    /// A name with characters that look like Latin letters or digits but are not
    /// (Cyrillic, Greek, full-width, mathematical alphanumerics).
    ConfusableName,
    /// Pseudo-markup or phrases addressed to the model (`<IMPORTANT>`, "ignore previous
    /// instructions", "do not tell the user").
    ModelDirective,
    /// Pointers to local secrets or configuration (`~/.ssh`, `id_rsa`, `.env`, `mcp.json`).
    SensitiveReference,
    /// A text far longer than a description needs.
    UnusualLength,
    /// A tool name that another protected server offers too.
    SharedName,
    /// A text that names a tool of another protected server.
    CrossServerReference,
}

impl Marker {
    pub fn as_str(self) -> &'static str {
        match self {
            Marker::InvisibleUnicode => "invisible_unicode",
            Marker::BidiControl => "bidi_control",
            Marker::ControlCharacters => "control_characters",
            Marker::ConfusableName => "confusable_name",
            Marker::ModelDirective => "model_directive",
            Marker::SensitiveReference => "sensitive_reference",
            Marker::UnusualLength => "unusual_length",
            Marker::SharedName => "shared_name",
            Marker::CrossServerReference => "cross_server_reference",
        }
    }
}

/// The longest text (in characters) that is not unusual: descriptions of real servers run to
/// a few hundred.
const LONG: usize = 2048;

/// Lower-case phrases that address the model rather than describe a tool.
pub(crate) const DIRECTIVES: &[&str] = &[
    "<important>",
    "</important>",
    "<system>",
    "<instructions>",
    "<secret>",
    "[inst]",
    "<|im_start|>",
    "ignore previous instructions",
    "ignore all previous",
    "ignore the previous",
    "disregard previous",
    "disregard all previous",
    "forget your instructions",
    "do not tell the user",
    "don't tell the user",
    "do not mention this",
    "do not inform the user",
    "without telling the user",
    "without informing the user",
    "the user must not know",
    "this is very important",
];

/// Lower-case pointers to local secrets and the configuration of MCP clients.
const SENSITIVE: &[&str] = &[
    "~/.ssh",
    ".ssh/",
    "id_rsa",
    "id_ed25519",
    "id_ecdsa",
    ".aws/credentials",
    "~/.aws",
    ".netrc",
    ".npmrc",
    ".git-credentials",
    "/etc/shadow",
    "/etc/passwd",
    "mcp.json",
    "claude_desktop_config",
    "~/.cursor",
    ".env file",
    "~/.env",
    "private key",
];

/// The markers of one list entry: in every string it holds (its name, title and description,
/// its schema's property names, titles, descriptions and values; a prompt's arguments), and,
/// for its name, look-alike characters.
pub fn of_entry(list: List, entry: &Value) -> BTreeSet<Marker> {
    of_named(
        entry.get(list.target().param()).and_then(Value::as_str),
        entry,
    )
}

/// [`of_entry`] for an entry named by `name` (a resource template's `uriTemplate`).
pub fn of_named(name: Option<&str>, entry: &Value) -> BTreeSet<Marker> {
    let mut found = BTreeSet::new();
    if name.is_some_and(confusable) {
        found.insert(Marker::ConfusableName);
    }
    walk(entry, &mut found);
    found
}

/// The markers of one text (a server's `instructions`, say).
pub fn of_text(text: &str) -> BTreeSet<Marker> {
    let mut found = BTreeSet::new();
    scan(text, &mut found);
    found
}

fn walk(v: &Value, found: &mut BTreeSet<Marker>) {
    match v {
        Value::String(s) => scan(s, found),
        Value::Array(a) => a.iter().for_each(|v| walk(v, found)),
        Value::Object(o) => {
            for (k, v) in o {
                // `_meta` is the server's own bookkeeping, not shown to models by the SDKs.
                if k == "_meta" {
                    continue;
                }
                scan(k, found);
                walk(v, found);
            }
        }
        _ => {}
    }
}

fn scan(text: &str, found: &mut BTreeSet<Marker>) {
    let mut chars = 0;
    for c in text.chars() {
        chars += 1;
        if invisible(c) {
            found.insert(Marker::InvisibleUnicode);
        } else if bidi(c) {
            found.insert(Marker::BidiControl);
        } else if c.is_control() && !matches!(c, '\t' | '\n' | '\r') {
            found.insert(Marker::ControlCharacters);
        }
    }
    if chars > LONG {
        found.insert(Marker::UnusualLength);
    }
    if text.len() < 4 {
        return;
    }
    let lower = squeeze(text);
    if DIRECTIVES.iter().any(|d| lower.contains(d)) {
        found.insert(Marker::ModelDirective);
    }
    if SENSITIVE.iter().any(|d| lower.contains(d)) {
        found.insert(Marker::SensitiveReference);
    }
}

/// `text` in lower case with each run of white space made one space, so a phrase split over
/// lines or padded with spaces is still the phrase.
fn squeeze(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut space = false;
    for c in text.chars().flat_map(char::to_lowercase) {
        if c.is_whitespace() {
            space = true;
            continue;
        }
        if space && !out.is_empty() {
            out.push(' ');
        }
        space = false;
        out.push(c);
    }
    out
}

/// Characters that render as nothing: tags, zero-width characters, invisible operators,
/// fillers and variation selectors (inclusive ranges).
pub(crate) const INVISIBLE: &[(char, char)] = &[
    ('\u{E0000}', '\u{E007F}'), // tags
    ('\u{200B}', '\u{200D}'),   // zero-width space, non-joiner, joiner
    ('\u{2060}', '\u{2064}'),   // word joiner, invisible operators
    ('\u{FEFF}', '\u{FEFF}'),   // zero-width no-break space
    ('\u{180E}', '\u{180E}'),   // Mongolian vowel separator
    ('\u{00AD}', '\u{00AD}'),   // soft hyphen
    ('\u{034F}', '\u{034F}'),   // combining grapheme joiner
    ('\u{115F}', '\u{1160}'),   // Hangul fillers
    ('\u{3164}', '\u{3164}'),
    ('\u{FFA0}', '\u{FFA0}'),
    ('\u{FE00}', '\u{FE0F}'), // variation selectors
    ('\u{E0100}', '\u{E01EF}'),
];

/// Bidirectional controls that reorder what is shown (inclusive ranges).
pub(crate) const BIDI: &[(char, char)] = &[
    ('\u{202A}', '\u{202E}'),
    ('\u{2066}', '\u{2069}'),
    ('\u{200E}', '\u{200F}'),
    ('\u{061C}', '\u{061C}'),
];

fn invisible(c: char) -> bool {
    INVISIBLE.iter().any(|&(a, b)| (a..=b).contains(&c))
}

fn bidi(c: char) -> bool {
    BIDI.iter().any(|&(a, b)| (a..=b).contains(&c))
}

/// Whether a name holds a character that passes for a Latin letter or digit: a name of
/// Latin letters and one Cyrillic `а` reads as another tool's name.
fn confusable(name: &str) -> bool {
    name.chars().any(|c| {
        matches!(c,
            // Cyrillic and Cyrillic Supplement letters shaped like Latin ones
            'а' | 'в' | 'е' | 'к' | 'м' | 'н' | 'о' | 'р' | 'с' | 'т' | 'у' | 'х' | 'ѕ' | 'і'
            | 'ї' | 'ј' | 'ԁ' | 'ԛ' | 'ԝ' | 'һ' | 'ɡ' | 'ӏ'
            | 'А' | 'В' | 'Е' | 'К' | 'М' | 'Н' | 'О' | 'Р' | 'С' | 'Т' | 'У' | 'Х' | 'Ѕ'
            | 'І' | 'Ј' | 'Ԁ' | 'Ԛ' | 'Ԝ'
            // Greek
            | 'α' | 'ο' | 'ν' | 'ρ' | 'τ' | 'ι' | 'κ' | 'υ' | 'χ'
            | 'Α' | 'Β' | 'Ε' | 'Ζ' | 'Η' | 'Ι' | 'Κ' | 'Μ' | 'Ν' | 'Ο' | 'Ρ' | 'Τ' | 'Υ' | 'Χ'
            // full-width forms, mathematical alphanumerics, Latin look-alikes
            | '\u{FF01}'..='\u{FF5E}'
            | '\u{1D400}'..='\u{1D7FF}'
            | 'ı' | 'ȷ' | 'ℓ' | '∕' | '‐'..='―'
        )
    })
}

#[cfg(test)]
mod tests;
