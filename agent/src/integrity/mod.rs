//! Tool integrity: what each protected server offers (tools, prompts, resources) is pinned in
//! a canonical form, and every listing and call is checked against the pins, so a definition
//! that changed after it was approved (a rug pull), one never approved, or one carrying signs
//! of poisoning is seen, audited and, in `enforce` mode, kept from the client.
#![cfg_attr(
    not(test),
    allow(
        dead_code,
        reason = "checked on every listing and call once wired into the proxy"
    )
)]
pub mod definition;
pub mod markers;

