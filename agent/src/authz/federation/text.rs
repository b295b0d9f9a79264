//! Text from the provider, or from whoever sent the callback, made fit for an error message.

/// Text from the provider (or from whoever sent the callback), fit for a log line: printable
/// characters only, at most 200 of them.
pub fn printable(text: &str) -> String {
    let mut out: String = text.chars().filter(|c| !c.is_control()).take(200).collect();
    if text.chars().filter(|c| !c.is_control()).nth(200).is_some() {
        out.push('…');
    }
    out
}
