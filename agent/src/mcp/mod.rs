//! MCP decoding for the proxy: JSON-RPC POST bodies, the standard MCP headers and SSE streams. Pure: no I/O.
//!
//! The proxy decides on what it decodes here, so every function reads its whole input, refuses
//! what is ambiguous (duplicate keys, wrong id types, batches where a revision forbids them) and
//! never panics on any input.

mod error;
mod headers;
mod jsonrpc;
mod sse;
mod strict;
#[cfg(test)]
mod tests;
pub mod uri;

use std::fmt;

pub use error::{DecodeError, error_body};
pub use headers::{check_headers, encode_value};
pub use jsonrpc::{Decoded, Kind, Message, decode, tool_names};

use crate::vocab::{Method, Param, Target};
pub use sse::SseParser;

/// Which revision's rules apply to a POST body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Revision {
    V2024_11_05,
    V2025_03_26,
    V2025_06_18,
    V2025_11_25,
    V2026_07_28,
}

impl Revision {
    /// Every revision Moat knows, oldest first.
    pub const ALL: [Revision; 5] = [
        Revision::V2024_11_05,
        Revision::V2025_03_26,
        Revision::V2025_06_18,
        Revision::V2025_11_25,
        Revision::V2026_07_28,
    ];

    /// What applies to a request without an `MCP-Protocol-Version` header (the transport spec).
    pub const WITHOUT_HEADER: Revision = Revision::V2025_03_26;

    /// Parses an `MCP-Protocol-Version` header value; `None` for a revision Moat does not know.
    pub fn from_header(value: &str) -> Option<Revision> {
        Self::ALL.into_iter().find(|r| r.as_str() == value)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Revision::V2024_11_05 => "2024-11-05",
            Revision::V2025_03_26 => "2025-03-26",
            Revision::V2025_06_18 => "2025-06-18",
            Revision::V2025_11_25 => "2025-11-25",
            Revision::V2026_07_28 => "2026-07-28",
        }
    }

    /// JSON-RPC batches (a JSON array body): 2025-03-26 and the legacy 2024-11-05 only.
    pub fn allows_batch(self) -> bool {
        matches!(self, Revision::V2024_11_05 | Revision::V2025_03_26)
    }

    /// From 2026-07-28 on, requests must carry `Mcp-Method` (and `Mcp-Name` where the method names something).
    pub fn requires_standard_headers(self) -> bool {
        self >= Revision::V2026_07_28
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Bounds on what [`decode`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Body size in bytes, checked before parsing.
    pub max_body: usize,
    /// Messages in one batch.
    pub max_batch: usize,
    /// Nesting of arrays and objects (the outermost counts as 1); capped at [`MAX_DEPTH_CAP`].
    pub max_depth: usize,
}

/// The deepest nesting [`decode`] ever accepts, whatever [`Limits::max_depth`] says: it keeps
/// parsing clear of serde_json's own recursion limit (128) and of the stack.
pub const MAX_DEPTH_CAP: usize = 100;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: 4 * 1024 * 1024,
            max_batch: 100,
            max_depth: 64,
        }
    }
}
