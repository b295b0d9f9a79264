//! The words every phase of a request shares: the connection it came on, who sent it, the MCP
//! method it carries and what that names, and what was decided. A leaf: it imports nothing
//! else of the crate, so every other module can depend on it and it on none of them.
mod conn;
mod decision;
mod method;
mod principal;

pub use conn::{Conn, Process};
pub use decision::{Decision, Effect, Hidden, Listing};
pub use method::{
    Denial, HttpAction, List, METHODS, Method, NOTIFICATION, OTHER, Param, Spec, Target, actions,
};
pub use principal::Principal;
