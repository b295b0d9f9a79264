//! The commands: run the agent, check a config, detach.
use std::{collections::HashMap, path::Path, sync::Arc};

use serde_json::{Value, json};

use crate::{
    admin::{self, Admin, Metrics, ServerMetrics},
    approval::Approvals,
    audit::{self, AuditLog},
    auth::{
        self, Authenticator,
        upstream::{Credential, UpstreamKeys},
    },
    background,
    behaviour::Monitor,
    config::{Config, HostAddrs, Issuer, UpstreamAuth},
    error::AppError,
    events,
    http::Site,
    inspect::Inspector,
    instance,
    integrity::Guard,
    listen::{Listening, Mode},
    lockdown::Lockdowns,
    serve::{self, Sites},
    steer,
    store::Store,
    tls::ServerTls,
    upstream::Upstream,
};

/// The sites, and what must run beside them: the JWKS fetchers and the upstream keys.
struct Loaded {
    sites: Sites,
    jwks: Vec<Arc<auth::Jwks>>,
    upstream_keys: Option<Arc<UpstreamKeys>>,
}

/// What the sites share that lives in the store: pins, baselines, lockdowns (none for `moat
/// check`).
#[derive(Default)]
struct Kept {
    guards: HashMap<String, Arc<Guard>>,
    monitors: HashMap<String, Arc<Monitor>>,
    lockdowns: Option<Arc<Lockdowns>>,
    /// The requests held for approval.
    approvals: Option<Arc<Approvals>>,
    /// Each user's third-party tokens, by server (`upstream_auth: { oauth2 }`).
    connectors: crate::thirdparty::Connectors,
}

/// Loads each server's certificates, keys and secrets; every failure is reported. For `moat
/// check` (`run` false) nothing is created in the state directory. Requests are counted in
/// `metrics`, when given.
fn load_sites(
    config: &Config,
    run: bool,
    kept: &Kept,
    metrics: Option<&Metrics>,
    local: Option<(
        &auth::SharedKeys,
        &auth::RevocationCheck,
        &tokio::sync::watch::Receiver<u64>,
    )>,
) -> Result<Loaded, AppError> {
    let mut by_port = HashMap::new();
    let mut jwks = Vec::new();
    let mut tls_errors = Vec::new();
    let mut auth_errors = Vec::new();
    let state_dir = &config.agent.state_dir;
    let mints = config
        .servers
        .iter()
        .any(|s| matches!(s.upstream_auth, UpstreamAuth::Jwt { .. }));
    let upstream_keys = if mints && run {
        match UpstreamKeys::open(state_dir, auth::upstream::ROTATE) {
            Ok(k) => Some(Arc::new(k)),
            Err(e) => return Err(AppError::Auth(format!("upstream signing keys: {e}"))),
        }
    } else {
        None
    };
    for s in &config.servers {
        let tls = if s.plaintext {
            None
        } else {
            match ServerTls::load(&s.tls.certs) {
                Ok(t) => Some(t),
                Err(e) => {
                    tls_errors.push(format!("server `{}`: {e}", s.name));
                    None
                }
            }
        };
        let authenticator = match &s.auth {
            None => None,
            Some(a) => {
                let public_url = s.public_url.as_deref().unwrap_or_default();
                let made = auth::key_source(a, local.map(|l| l.0)).and_then(|(keys, fetcher)| {
                    jwks.extend(fetcher);
                    let made = Authenticator::new(a, public_url, &s.endpoint, keys)?;
                    Ok(match (&a.issuer, local) {
                        (Issuer::Local(_), Some((_, revoked, changed))) => {
                            made.with_revocations(revoked.clone(), changed.clone())
                        }
                        _ => made,
                    })
                });
                match made {
                    Ok(x) => Some(x),
                    Err(e) => {
                        auth_errors.push(format!("server `{}`: auth: {e}", s.name));
                        None
                    }
                }
            }
        };
        let issuer = s.public_url.as_deref().unwrap_or(&s.name);
        let credential = match (&s.upstream_auth, run) {
            // `moat check`: the keys are made when the agent starts.
            (UpstreamAuth::Jwt { .. }, false) => Ok(Credential::None),
            (c, _) => Credential::new(c, issuer, upstream_keys.as_ref()),
        };
        let credential = match credential {
            Ok(c) => c,
            Err(e) => {
                auth_errors.push(format!("server `{}`: upstream_auth: {e}", s.name));
                continue;
            }
        };
        let policy = match s.policy.as_ref().map(|p| (p, crate::policy::load(p))) {
            None => None,
            Some((p, Ok(engine))) => Some(crate::policy::Live::new(p.clone(), engine)),
            Some((_, Err(e))) => {
                auth_errors.push(format!("server `{}`: policy:\n{e}", s.name));
                continue;
            }
        };
        if s.auth.is_some() && authenticator.is_none() || !s.plaintext && tls.is_none() {
            continue;
        }
        let inspector = match s.inspect.as_ref().map(Inspector::new).transpose() {
            Ok(i) => i.map(Arc::new),
            Err(e) => {
                auth_errors.push(format!("server `{}`: inspect: {e}", s.name));
                continue;
            }
        };
        let keys = match s.upstream_auth {
            UpstreamAuth::Jwt { .. } => upstream_keys.clone(),
            _ => None,
        };
        by_port.insert(
            s.port,
            Arc::new(
                Site::new(
                    s.clone(),
                    tls,
                    authenticator,
                    credential,
                    keys,
                    policy,
                    metrics.map_or_else(ServerMetrics::default, |m| m.server(&s.name)),
                )
                .with_integrity(kept.guards.get(&s.name).cloned())
                .with_behaviour(kept.monitors.get(&s.name).cloned())
                .with_inspect(inspector)
                .with_lockdowns(kept.lockdowns.clone())
                .with_approvals(kept.approvals.clone())
                .with_connector(kept.connectors.get(&s.name).cloned()),
            ),
        );
    }
    if !tls_errors.is_empty() {
        tls_errors.extend(auth_errors);
        return Err(AppError::Tls(tls_errors.join("\n")));
    }
    if !auth_errors.is_empty() {
        return Err(AppError::Auth(auth_errors.join("\n")));
    }
    Ok(Loaded {
        sites: Sites { by_port },
        jwks,
        upstream_keys,
    })
}

/// Runs the agent until SIGINT or SIGTERM, taking its connections as `mode` says. With
/// `take_over`, an agent of the same instance that is running is replaced: this version's
/// kernel programs go in through the links and this agent's socket into the sockmap, then the
/// other agent is asked to stop; new connections wait in this agent's queue while it drains.
pub async fn run(config_path: &Path, mode: Mode, take_over: bool) -> Result<(), AppError> {
    let config = Arc::new(Config::load_on(config_path, &this_host(mode)?)?);
    let (_instance, prepared) = match instance::lock(&config.agent.state_dir) {
        Ok(lock) => (lock, None),
        Err(AppError::AlreadyRunning { pid, .. }) if take_over => {
            let prepared = Listening::prepare(mode, &config)?;
            let wait = serve::DRAIN + std::time::Duration::from_secs(10);
            let lock = instance::take_over(&config.agent.state_dir, &pid, wait).await?;
            (lock, prepared)
        }
        Err(e) => return Err(e),
    };
    let mut admin = Admin::new(&config);
    let approvals = Arc::new(Approvals::new(&config.approvals).map_err(AppError::Approvals)?);
    admin.approvals = Some(approvals.clone());
    // The store holds what survives restarts: lockdowns always, grants and pins when used.
    let store = Arc::new(Store::open(&config.agent.state_dir)?);
    let authz = crate::authz::open(&config, store.clone())?;
    let (vault, connectors) = crate::thirdparty::open(&config, &store)
        .await
        .map_err(AppError::Auth)?;
    if let Some(a) = &authz {
        a.set_connectors(vault.clone(), connectors.clone());
    }
    let kept = Kept {
        guards: crate::integrity::guards(&config, &store)?,
        monitors: crate::behaviour::monitors(&config, &store),
        lockdowns: Some(Arc::new(Lockdowns::open(store.clone())?)),
        approvals: Some(approvals.clone()),
        connectors: connectors.clone(),
    };
    let (guards, lockdowns) = (&kept.guards, kept.lockdowns.clone().expect("opened above"));
    let local = authz.as_ref().map(|a| {
        let r = a.revocations();
        (a.signer().keys(), r.check(), r.watch())
    });
    let Loaded {
        sites,
        jwks,
        upstream_keys,
    } = load_sites(
        &config,
        true,
        &kept,
        Some(&admin.metrics),
        local.as_ref().map(|(k, r, w)| (k, r, w)),
    )?;
    // Listening before anything is attached: a taken address stops the agent here, and
    // /readyz says when it serves.
    let admin_task = admin::start(config.agent.admin_listen, admin.clone()).await?;
    let sites = Arc::new(sites);
    let fd_limit = instance::raise_fd_limit();
    let max_connections = instance::connection_capacity(config.agent.max_connections, fd_limit);
    if max_connections < config.agent.max_connections {
        tracing::warn!(
            fd_limit,
            max_connections,
            "agent.max_connections ({}) does not fit the open-file limit: at most {max_connections} \
             connections at once (two descriptors each, {} kept for the audit log and the rest); \
             raise the limit (LimitNOFILE=) to allow more",
            config.agent.max_connections,
            instance::RESERVED_FDS
        );
    }
    for s in config.servers.iter().filter(|s| s.plaintext) {
        tracing::warn!(server = %s.name, port = s.port, "DANGEROUS: plain HTTP on a protected port; requests and tokens cross the network unencrypted");
    }
    for s in config.servers.iter().filter(|s| s.auth.is_none()) {
        tracing::warn!(server = %s.name, port = s.port, "DANGEROUS: no authentication; anyone who reaches the port can call every tool");
    }
    for s in config
        .servers
        .iter()
        .filter(|s| s.auth.is_some() && s.policy.is_none())
    {
        tracing::info!(server = %s.name, "no policy: every authenticated caller may call every tool");
    }
    let redactor =
        audit::redact::Redactor::new(&config.audit.redact_keys, &config.audit.redact_patterns)
            .map_err(AppError::Policy)?;
    let (audit, writer) = AuditLog::open(&config.audit, &config.agent.state_dir, redactor)?;
    admin.state.set_audit(audit.clone());
    for g in guards.values() {
        g.set_audit(audit.clone());
    }
    admin.state.set_guards(guards.values().cloned().collect());
    lockdowns.set_audit(audit.clone());
    let authz_task = match &authz {
        Some(a) => Some(crate::authz::listener::start(a.clone(), audit.clone()).await?),
        None => None,
    };
    let ctl = crate::control::Control {
        authz,
        guards: guards.clone(),
        lockdowns: lockdowns.clone(),
        monitors: kept.monitors.clone(),
        approvals: Some(approvals),
    };
    let control_task = Some(crate::control::serve(&config.agent.state_dir, Arc::new(ctl)).await?);
    // Key fetchers and rotation run on this thread for the agent's lifetime.
    let key_tasks: Vec<_> = jwks
        .into_iter()
        .map(|j| {
            let audit = audit.clone();
            let record = move |e: auth::KeyEvent| {
                let audit = audit.clone();
                async move { audit.record("auth", e.fields()).await }
            };
            tokio::spawn(j.run(record))
        })
        .chain(upstream_keys.map(|k| tokio::spawn(background::rotate_upstream_keys(k))))
        .collect();

    let mut listening = Listening::open(mode, &config, prepared)?;
    let servers: Vec<Value> = config
        .servers
        .iter()
        .map(|s| {
            let policy = sites
                .by_port
                .get(&s.port)
                .and_then(|p| p.policy.as_ref())
                .map(|live| json!({"file": live.config.file, "sha256": live.current().source_sha256}));
            json!({"name": s.name, "port": s.port, "upstream": s.upstream.to_string(), "policy": policy})
        })
        .collect();
    let mut started = json!({
        "config": config_path.display().to_string(),
        "config_sha256": std::fs::read(config_path).ok().map(|b| crate::vocab::sha256_hex(&b)),
        "pid": std::process::id(),
        "servers": servers,
    });
    for (k, v) in listening.describe().as_object().into_iter().flatten() {
        started[k] = v.clone();
    }
    audit
        .record("config", audit::agent_event("started", started))
        .await;

    let kernel_log_task = listening
        .take_kernel_log()
        .map(|l| tokio::spawn(crate::steer::diagnostics::forward(l)));
    let events_task = listening.take_events().map(|ring| {
        let (config, audit) = (config.clone(), audit.clone());
        tokio::spawn(async move { events::forward(ring, &config, audit).await })
    });
    let upstream = Arc::new(Upstream::listening_on(
        config.agent.upstream_ports,
        listening.addrs(),
    ));
    let identity = listening.identity();
    let reload_task = tokio::spawn(background::reload_certs(sites.clone(), audit.clone()));
    let policy_task = tokio::spawn(background::reload_policies(sites.clone(), audit.clone()));
    let recheck_tasks = background::recheck_integrity(&sites, &upstream);
    let baselines_task = (!kept.monitors.is_empty())
        .then(|| tokio::spawn(background::write_baselines(kept.monitors.clone())));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let n = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let serve::Workers { threads, handoff } =
        serve::spawn_workers(n, &sites, &upstream, &audit, identity, &stopped)
            .map_err(AppError::io("starting the proxy workers"))?;
    let listeners = listening.serve(&admin.state, &config)?;
    let limits = crate::conn_limits::Limiter::new(
        max_connections,
        config.agent.max_connections_per_source.min(max_connections),
        admin.metrics.connections(),
        Some(audit.clone()),
    );
    let mut accepting = tokio::spawn(serve::accept(listeners, handoff, limits, stopped.clone()));
    let workers_failed = tokio::select! {
        () = shutdown_signal() => {
            match mode {
                Mode::Steered => tracing::info!("stopping: draining the requests in flight; protected ports stay closed until an agent is back"),
                Mode::Unprotected => tracing::info!("stopping: draining the requests in flight"),
            }
            false
        }
        _ = &mut accepting => true,
    };
    admin.state.stop();
    let _ = stop.send(true);
    if !workers_failed {
        // What is already in the queue is still taken, then the listeners close.
        let _ = accepting.await;
    }
    let _ =
        tokio::task::spawn_blocking(move || threads.into_iter().for_each(|w| drop(w.join()))).await;
    for t in events_task.iter().chain(&kernel_log_task) {
        t.abort();
    }
    reload_task.abort();
    policy_task.abort();
    if let Some(t) = baselines_task {
        t.abort();
    }
    // What the baselines learned since they were last written.
    background::flush_baselines(&kept.monitors);
    key_tasks
        .iter()
        .chain(&recheck_tasks)
        .for_each(tokio::task::JoinHandle::abort);
    authz_task
        .iter()
        .chain(&control_task)
        .for_each(tokio::task::JoinHandle::abort);
    audit
        .record(
            "config",
            audit::agent_event("stopped", json!({"pid": std::process::id()})),
        )
        .await;
    audit.flush().await;
    if let Some(t) = admin_task {
        t.abort();
    }
    drop(audit);
    // Requests still in flight end when the runtime drops their tasks; their records go to the
    // writer, which ends after the last of them (dropping the runtime waits for it).
    drop(writer);
    drop(listening);
    if workers_failed {
        return Err(AppError::Io {
            what: "serving".into(),
            source: std::io::Error::other(
                "every proxy worker stopped; the protected ports are closed",
            ),
        });
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// `moat policy test`: the decision for the request described in `file`.
pub fn policy_test(config: &Config, file: &Path) -> Result<crate::vocab::Decision, AppError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| AppError::Policy(format!("{}: {e}", file.display())))?;
    let d: crate::policy::explain::Described = serde_json::from_str(&text)
        .map_err(|e| AppError::Policy(format!("{}: {e}", file.display())))?;
    let with_policy: Vec<_> = config
        .servers
        .iter()
        .filter(|s| s.policy.is_some())
        .collect();
    let server = match (&d.server, with_policy.as_slice()) {
        (Some(name), _) => with_policy
            .iter()
            .find(|s| &s.name == name)
            .ok_or_else(|| AppError::Policy(format!("no server `{name}` with a policy")))?,
        (None, [one]) => one,
        (None, _) => {
            return Err(AppError::Policy(
                "name the server (`\"server\"`): the config has several with a policy, or none"
                    .into(),
            ));
        }
    };
    let policy = server.policy.as_ref().expect("filtered on policy");
    let engine = crate::policy::load(policy).map_err(AppError::Policy)?;
    crate::policy::explain::decide(&engine, &server.name, &d).map_err(AppError::Policy)
}

/// The addresses of the network namespace the agent runs in: upstreams must be among them (and,
/// unprotected, not where the agent itself listens).
fn this_host(mode: Mode) -> Result<HostAddrs, AppError> {
    let host = HostAddrs::of_this_host()
        .map_err(AppError::io("reading this host's interface addresses"))?;
    Ok(match mode {
        Mode::Steered => host,
        Mode::Unprotected => host.with_plain_listeners(),
    })
}

/// Validates a config file (upstreams against this host's addresses) for an agent run in
/// `mode`; prints a summary.
pub fn check(config_path: &Path, mode: Mode) -> Result<String, AppError> {
    let c = Config::load_on(config_path, &this_host(mode)?)?;
    // Certificates, CA files and secrets must load too, as they will when the agent starts.
    load_sites(&c, false, &Kept::default(), None, None)?;
    Approvals::new(&c.approvals).map_err(AppError::Approvals)?;
    crate::thirdparty::check(&c).map_err(AppError::Auth)?;
    crate::authz::check(&c)?;
    let mut out = format!(
        "{}: ok, {} server(s)\n",
        config_path.display(),
        c.servers.len()
    );
    for s in &c.servers {
        let tls = if s.plaintext {
            "plain HTTP (dangerous)".to_string()
        } else {
            format!("TLS, {} certificate(s)", s.tls.certs.len())
        };
        let auth = match &s.auth {
            Some(a) => format!("tokens from {}", a.issuer.id()),
            None => "no authentication (dangerous)".to_string(),
        };
        let auth = match &s.policy {
            Some(p) => format!("{auth}, policy {} ({:?})", p.file.display(), p.mode),
            None => auth,
        };
        out.push_str(&format!(
            "  {} port {} -> {} ({tls}, endpoint {}, {auth})\n",
            s.name, s.port, s.upstream, s.endpoint
        ));
    }
    if mode == Mode::Unprotected {
        out.push_str(
            "  UNPROTECTED (--unprotected): plain listeners on 127.0.0.1, nothing sealed\n",
        );
        return Ok(out);
    }
    for (port, i) in c.sealed_ports() {
        out.push_str(&format!(
            "  port {port} sealed: only Moat connects to `{}`'s upstream\n",
            c.servers[i].name
        ));
    }
    Ok(out)
}

/// Removes the programs; the protected ports open again.
pub fn detach(bpffs: &Path) -> Result<(), AppError> {
    Ok(steer::detach(bpffs)?)
}
