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
pub mod fetch;
pub mod markers;
pub mod recheck;

pub mod guard;
pub mod shadowing;

pub use definition::Definition;
pub use guard::Guard;
pub use markers::Marker;

use std::{collections::HashMap, sync::Arc};

use crate::{config::Config, config::IntegrityMode, store::Store};

/// The guard of each server whose `integrity` is on, on `store` (which the agent opens when
/// any is).
pub fn guards(
    config: &Config,
    store: &Arc<Store>,
) -> Result<HashMap<String, Arc<Guard>>, crate::store::StoreError> {
    let mut out = HashMap::new();
    let offers = Arc::new(shadowing::Offers::default());
    for s in &config.servers {
        if s.integrity.mode != IntegrityMode::Off {
            let g = Guard::open(
                s.name.as_str().into(),
                s.integrity,
                store.clone(),
                offers.clone(),
            )?;
            out.insert(s.name.clone(), Arc::new(g));
        }
    }
    Ok(out)
}
