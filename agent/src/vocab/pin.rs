//! What the pins said about one entry a server offered, or one call: the audit's and the
//! policies' view of tool integrity.
use serde::Serialize;

/// How an entry stands against its pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PinState {
    /// Its definition is the pinned one.
    Pinned,
    /// It has a pin, and its definition differs.
    Changed,
    /// It has no pin (new, or renamed).
    Unpinned,
}

impl PinState {
    pub fn as_str(self) -> &'static str {
        match self {
            PinState::Pinned => "pinned",
            PinState::Changed => "changed",
            PinState::Unpinned => "unpinned",
        }
    }
}

/// One entry (or a call's target) checked against the pins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PinCheck {
    /// `tool`, `prompt` or `resource`.
    pub kind: &'static str,
    pub name: String,
    pub state: PinState,
    /// The SHA-256 of the definition seen (for a call: the last one listed, else the pin's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// The markers of poisoning found in the definition seen.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub markers: Vec<&'static str>,
    /// Kept from the client (`enforce` mode).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub hidden: bool,
}

impl PinCheck {
    /// Whether the audit needs to hear of it: anything but a clean, pinned entry.
    pub fn notable(&self) -> bool {
        self.state != PinState::Pinned || !self.markers.is_empty() || self.hidden
    }
}
