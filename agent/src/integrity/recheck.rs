//! Moat checks each server with `integrity` on by itself, so a change is seen even when no
//! client lists: when the agent starts, every `recheck` interval, and at once when the server
//! announces that a list changed (`notifications/*/list_changed` seen passing to a client).
use std::{sync::Arc, time::Duration};

use super::Guard;

/// How soon a failed check is tried again (the server may not be up yet).
const RETRY: Duration = Duration::from_secs(10);

/// Checks `guard`'s server until the task is dropped: at once, then every `every`, and
/// whenever the server announces a change.
pub async fn run(guard: Arc<Guard>, every: Duration) {
    let mut source = "start";
    loop {
        let next = match guard.check_now(source).await {
            Ok(_) => every,
            Err(e) => {
                tracing::warn!(server = %guard.server(), source, "checking what the server offers: {e}");
                every.min(RETRY)
            }
        };
        source = tokio::select! {
            () = tokio::time::sleep(next) => "schedule",
            () = guard.changed() => "list_changed",
        };
    }
}
