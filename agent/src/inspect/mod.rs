//! Content inspection: secrets, personal data and injected instructions found in what passes
//! through, in a tool call's arguments before they are forwarded and in results before the
//! client gets them. Every string of the message (and every long integer, which a card number
//! can be) is read in its decoded form, the form the receiver acts on, so an escape spelled
//! differently in the JSON text is no way around a rule. Each rule's action, per server and per
//! tool, says what is done: `block`, `redact` (results only; a call is refused), or `flag`.
//! Findings name the rule and a JSON path, never the matched text.
mod engine;
pub mod rules;
mod walk;

#[cfg(test)]
mod tests;

use serde_json::Value;

pub use self::{engine::Inspector, walk::Outcome};
use crate::vocab::Direction;

impl Inspector {
    /// Inspects a tool call's `arguments` (found at `$.params.arguments`). Nothing is changed:
    /// a call is forwarded as it came or refused.
    pub fn arguments(&self, tool: &str, arguments: &Value) -> Outcome {
        let mut scan = walk::Scan::new(self, self.table(Some(tool)), Direction::Request);
        scan.read(arguments, &walk::Path::root("$.params.arguments"));
        scan.outcome
    }

    /// A copy of `arguments` with every finding redacted, whatever its action: what the audit
    /// record keeps of a call's arguments, so that it never holds what was found.
    pub fn redacted(&self, tool: &str, arguments: &Value) -> Value {
        let mut copy = arguments.clone();
        let mut scan = walk::Scan::new(self, self.table(Some(tool)), Direction::Response);
        scan.all = true;
        scan.write(&mut copy, &walk::Path::root("$.params.arguments"));
        copy
    }

    /// Inspects a message the server sent (a result, an error, a notification or request on
    /// its stream), redacting in place what the rules redact. `tool`: the tool whose call it
    /// answers, when known.
    pub fn response(&self, tool: Option<&str>, message: &mut Value) -> Outcome {
        let mut scan = walk::Scan::new(self, self.table(tool), Direction::Response);
        let root = walk::Path::root("$");
        match message {
            Value::Object(o) => {
                for (k, v) in o.iter_mut() {
                    // The envelope is Moat's to read, not content.
                    if matches!(k.as_str(), "jsonrpc" | "id" | "method") {
                        continue;
                    }
                    scan.write(v, &root.key(k));
                }
            }
            other => scan.write(other, &root),
        }
        scan.outcome
    }
}
