//! The words every phase of a request shares: the connection it came on, who sent it, the MCP
//! method it carries and what that names, and what was decided; and how records name a file
//! in force. A leaf: it imports nothing else of the crate, so every other module can depend on
//! it and it on none of them.
mod approval;
mod conn;
mod content;
mod decision;
mod digest;
pub(crate) mod method;
mod pin;
mod principal;
mod redirect;
mod signal;

pub use approval::{ApprovalNote, ThirdParty, Verdict, Via};
pub use conn::{Conn, Process};
pub use content::{ContentAction, ContentFacts, ContentKind, Direction, Finding, Findings, RULES};
pub use decision::{Decision, Effect, Hidden, Listing};
pub use digest::sha256_hex;
pub use method::{Denial, HttpAction, List, Method, NOTIFICATION, Param, Target, actions};
pub use pin::{PinCheck, PinState};
pub use principal::Principal;
pub use redirect::{redirect_uri_matches, redirect_uri_ok};
pub use signal::{Assessment, Signal, Signals};
