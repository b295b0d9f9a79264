//! What runs beside the proxy for the agent's lifetime: certificate and policy reloads (each
//! outcome logged and audited), upstream signing key rotation, Moat's own checks of what
//! servers with `integrity` on offer, and the writing of behaviour baselines to the store.
use std::{collections::HashMap, sync::Arc, time::Duration};

use serde_json::json;

use crate::{
    audit::{self, AuditLog},
    auth::upstream::UpstreamKeys,
    behaviour::Monitor,
    integrity::{fetch, guard::Asker, recheck},
    policy::Reloaded,
    serve::Sites,
    tls,
    upstream::{Upstream, pool::Pool},
    vocab::Principal,
};

/// Reloads certificates whose files changed, logging and auditing each outcome.
pub async fn reload_certs(sites: Arc<Sites>, audit: AuditLog) {
    let mut tick = tokio::time::interval(tls::RELOAD_EVERY);
    loop {
        tick.tick().await;
        for p in sites.by_port.values() {
            let Some(t) = &p.tls else { continue };
            for (path, result) in t.reload_changed() {
                let (event, error) = match &result {
                    Ok(()) => ("tls_reloaded", None),
                    Err(e) => ("tls_reload_failed", Some(e.to_string())),
                };
                match &error {
                    None => {
                        tracing::info!(server = %p.server.name, cert = %path.display(), "certificate reloaded")
                    }
                    Some(e) => {
                        tracing::error!(server = %p.server.name, "certificate reload failed, keeping the old one: {e}")
                    }
                }
                let extra = json!({"server": p.server.name, "cert": path.display().to_string(), "error": error});
                audit
                    .record("config", audit::agent_event(event, extra))
                    .await;
            }
        }
    }
}

/// Reloads policies whose files changed (checked with the certificates' period), and all of
/// them on SIGHUP; a file that does not load keeps the policies in force. Each outcome is
/// logged and audited.
pub async fn reload_policies(sites: Arc<Sites>, audit: AuditLog) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(tls::RELOAD_EVERY);
    loop {
        let force = tokio::select! {
            _ = tick.tick() => false,
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
        };
        for p in sites.by_port.values() {
            let Some(live) = &p.policy else { continue };
            let (event, error) = match live.reload(force) {
                Reloaded::Unchanged => continue,
                Reloaded::Replaced => ("policy_reloaded", None),
                Reloaded::Failed(e) => ("policy_reload_failed", Some(e)),
            };
            let (server, file) = (&p.server.name, live.config.file.display().to_string());
            match &error {
                None => tracing::info!(server = %server, policy = %file, "policies reloaded"),
                Some(e) => {
                    tracing::error!(server = %server, "policy reload failed, keeping the policies in force:\n{e}")
                }
            }
            // What is in force now (after a failure, still the old policies).
            let sha256 = live.current().source_sha256.clone();
            audit
                .record(
                    "config",
                    audit::agent_event(
                        event,
                        json!({"server": server, "policy": file, "sha256": sha256, "error": error}),
                    ),
                )
                .await;
        }
    }
}

/// Makes a new upstream signing key when one is due (checked hourly).
pub async fn rotate_upstream_keys(keys: Arc<UpstreamKeys>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(e) = keys.tick() {
            tracing::error!("rotating the upstream signing keys: {e}");
        }
    }
}

/// Gives each server with `integrity` on Moat's own client (from the agent's upstream
/// identity; a server whose upstream credential is a minted JWT gets one for the subject
/// `moat`), and starts the checks of those with a `recheck_s` interval.
pub fn recheck_integrity(
    sites: &Sites,
    upstream: &Arc<Upstream>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let moat = Principal {
        sub: "moat".into(),
        client_id: None,
        iss: String::new(),
        scopes: Vec::new(),
        claims: serde_json::Map::new(),
    };
    sites
        .by_port
        .values()
        .filter_map(|site| {
            let guard = site.integrity.clone()?;
            guard.set_asker(Asker {
                pool: Pool::new(upstream.clone()),
                target: fetch::Target {
                    addr: site.server.upstream,
                    endpoint: site.server.endpoint.clone(),
                    credential: site.credential.header(Some(&moat)),
                    timeout: site.server.limits.upstream_timeout,
                },
            });
            let every = site.server.integrity.recheck?;
            Some(tokio::spawn(recheck::run(guard, every)))
        })
        .collect()
}

/// How often what the baselines learned is written to the store (and at the agent's stop).
const BASELINES_EVERY: Duration = Duration::from_secs(30);

/// Writes the baselines' changes to the store every [`BASELINES_EVERY`].
pub async fn write_baselines(monitors: HashMap<String, Arc<Monitor>>) {
    let mut tick = tokio::time::interval(BASELINES_EVERY);
    tick.tick().await;
    loop {
        tick.tick().await;
        let m = monitors.clone();
        let _ = tokio::task::spawn_blocking(move || flush_baselines(&m)).await;
    }
}

/// Writes the baselines changed since they were last written; a failure is logged, and they
/// are written next time.
pub fn flush_baselines(monitors: &HashMap<String, Arc<Monitor>>) {
    for (name, m) in monitors {
        if let Err(e) = m.flush() {
            tracing::warn!(server = %name, "writing behaviour baselines: {e}; tried again later");
        }
    }
}
