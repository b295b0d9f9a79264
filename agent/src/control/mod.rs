//! The agent's control socket (`<state_dir>/control.sock`): the commands that read or change
//! the authorization server's state (`moat users`, `moat clients`, `moat grants`, `moat token
//! mint`), the pins (`moat tools`) and lockdowns (`moat lockdown`, `moat unlock`) run inside
//! the agent, which holds the store, whose revocations and lockdowns must take effect at once
//! and which has seen what the servers list; while no agent runs, the command line runs them
//! on the store itself.
use std::{
    collections::HashMap,
    io::{BufRead as _, BufReader, Write as _},
    os::unix::{fs::PermissionsExt as _, net::UnixStream},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};

use crate::{
    approval::{Answer, Approvals},
    authz::AuthServer,
    behaviour::Monitor,
    config::Config,
    error::AppError,
    integrity::Guard,
    lockdown::{Lockdowns, Scope},
    store::baselines::Whose,
    vocab::Via,
};

/// Who asked, as a lockdown's audit names them: the uid, and its user name where
/// `/etc/passwd` has it.
fn caller(uid: u32) -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let name = passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let (name, id) = (f.next()?, f.nth(1)?);
        (id.parse() == Ok(uid)).then_some(name)
    });
    match name {
        Some(n) => format!("uid {uid} ({n})"),
        None => format!("uid {uid}"),
    }
}

/// One command.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    Mint {
        server: String,
        sub: String,
        /// Absent: one token for `sub`; else this many, for `sub-0` ...
        #[serde(default)]
        count: Option<u32>,
        client_id: String,
        scopes: Vec<String>,
        claims: Map<String, Value>,
        ttl: u64,
    },
    UserAdd {
        name: String,
        password: String,
    },
    UserRemove {
        name: String,
    },
    Users,
    Clients,
    ClientShow {
        id: String,
    },
    ClientRevoke {
        id: String,
    },
    Grants {
        sub: Option<String>,
        client: Option<String>,
    },
    GrantsRevoke {
        sub: Option<String>,
        client: Option<String>,
    },
    /// Re-seals the users' third-party tokens under a new key.
    UpstreamRotateKey,
    /// A server's entries, pinned or seen, and how each stands.
    ToolsDiff {
        server: String,
    },
    /// Pins what was last seen of the entries named (all: None).
    ToolsApprove {
        server: String,
        names: Option<Vec<String>>,
    },
    /// Per server with `integrity` on: how many entries are pinned, changed, unpinned, flagged.
    ToolsCounts,
    /// Asks the server what it offers now (Moat as its client), then as [`Request::ToolsDiff`].
    ToolsPin {
        server: String,
    },
    /// Stops `scope` at once (`moat lockdown`).
    Lockdown {
        scope: Scope,
        reason: String,
    },
    /// Lifts a lockdown (`moat unlock`).
    Unlock {
        scope: Scope,
    },
    Lockdowns,
    /// A subject's or client's baselines and recent signals (`moat behaviour show`), on one
    /// server or every server with `behaviour` on.
    Behaviour {
        server: Option<String>,
        sub: Option<String>,
        client: Option<String>,
    },
    /// The approvals waiting for an answer (`moat approvals list`).
    Approvals,
    /// Answers one (`moat approvals approve|deny ID`).
    ApprovalAnswer {
        id: String,
        approve: bool,
        by: Option<String>,
    },
}

impl Request {
    /// Whether the authorization server answers it (the rest: pins and lockdowns).
    fn for_authz(&self) -> bool {
        matches!(
            self,
            Request::Mint { .. }
                | Request::UserAdd { .. }
                | Request::UserRemove { .. }
                | Request::Users
                | Request::Clients
                | Request::ClientShow { .. }
                | Request::ClientRevoke { .. }
                | Request::Grants { .. }
                | Request::GrantsRevoke { .. }
                | Request::UpstreamRotateKey
        )
    }
}

/// What the control socket runs commands on.
pub struct Control {
    pub authz: Option<Arc<AuthServer>>,
    pub guards: HashMap<String, Arc<Guard>>,
    pub lockdowns: Arc<Lockdowns>,
    pub monitors: HashMap<String, Arc<Monitor>>,
    /// The requests held for approval (None: no agent runs, so none is held).
    pub approvals: Option<Arc<Approvals>>,
}

impl Control {
    fn authz(&self) -> Result<&AuthServer, String> {
        self.authz
            .as_deref()
            .ok_or_else(|| "the config has no `authorization_server` (Moat's own issuer)".into())
    }

    fn guard(&self, server: &str) -> Result<&Guard, String> {
        self.guards.get(server).map(|g| &**g).ok_or_else(|| {
            format!("no server `{server}` with `integrity` on (mode `enforce` or `warn`)")
        })
    }
}

/// The most tokens one `moat token mint --count` makes.
pub const MAX_MINT: u32 = 100_000;

/// The longest request line read.
const MAX_LINE: usize = 64 * 1024;

pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("control.sock")
}

/// Runs `req` on `ctl`, for `caller` (who asked: named in the audit of a lockdown).
pub async fn execute(ctl: &Control, req: Request, caller: &str) -> Result<Value, String> {
    let s = |e: crate::store::StoreError| e.to_string();
    match req {
        Request::Lockdown { scope, reason } => {
            ctl.lockdowns.lock(&scope, &reason, caller).map_err(s)
        }
        Request::Unlock { scope } => ctl.lockdowns.unlock(&scope, caller).map_err(s),
        Request::Lockdowns => ctl.lockdowns.list().map_err(s),
        Request::Approvals => Ok(Value::Array(
            ctl.approvals.as_ref().map(|a| a.list()).unwrap_or_default(),
        )),
        Request::ApprovalAnswer { id, approve, by } => {
            let approvals = ctl
                .approvals
                .as_ref()
                .ok_or("no agent runs: no request is waiting for approval")?;
            let by = match by {
                Some(name) => format!("{name} ({caller})"),
                None => caller.to_string(),
            };
            let answer = Answer {
                approve,
                via: Via::Cli,
                by,
                at: std::time::SystemTime::now(),
            };
            approvals
                .answer(&id, answer, None)
                .map_err(|e| e.to_string())?;
            Ok(json!({"id": id, "answer": if approve { "approve" } else { "deny" }}))
        }
        Request::Behaviour {
            server,
            sub,
            client,
        } => {
            let (whose, id) = match (sub, client) {
                (Some(s), None) => (Whose::Sub, s),
                (None, Some(c)) => (Whose::Client, c),
                _ => return Err("give exactly one of --sub and --client".into()),
            };
            let mut names: Vec<&String> = match &server {
                Some(name) => vec![ctl.monitors.get_key_value(name).map(|(k, _)| k).ok_or_else(|| {
                    format!("no server `{name}` with `behaviour` on (mode `enforce` or `shadow`)")
                })?],
                None => ctl.monitors.keys().collect(),
            };
            names.sort();
            Ok(Value::Array(
                names
                    .into_iter()
                    .map(|n| ctl.monitors[n].show(whose, &id))
                    .collect(),
            ))
        }
        Request::ToolsDiff { server } => Ok(json!(ctl.guard(&server)?.entries())),
        Request::ToolsPin { server } => {
            let guard = ctl.guard(&server)?;
            guard.check_now("operator").await?;
            Ok(json!(guard.entries()))
        }
        Request::ToolsApprove { server, names } => {
            let pinned = ctl.guard(&server)?.approve(names.as_deref())?;
            Ok(json!(pinned))
        }
        Request::ToolsCounts => {
            let counts: Map<String, Value> = ctl
                .guards
                .iter()
                .map(|(name, g)| {
                    let c: Map<String, Value> = g
                        .counts()
                        .into_iter()
                        .map(|(k, v)| (k.into(), v.into()))
                        .collect();
                    (name.clone(), Value::Object(c))
                })
                .collect();
            Ok(Value::Object(counts))
        }
        req => authz(ctl.authz()?, req).await,
    }
}

/// Runs a request of the authorization server.
async fn authz(server: &AuthServer, req: Request) -> Result<Value, String> {
    let e = |e: crate::authz::OAuthError| e.to_string();
    match req {
        Request::Mint {
            server: name,
            sub,
            count,
            client_id,
            scopes,
            claims,
            ttl,
        } => {
            if !(1..=30 * 86_400).contains(&ttl) {
                return Err("--ttl is 1 to 2592000 seconds".into());
            }
            if count.is_some_and(|n| !(1..=MAX_MINT).contains(&n)) {
                return Err(format!("--count is 1 to {MAX_MINT}"));
            }
            let tokens = server
                .mint(&name, &sub, count, &client_id, &scopes, &claims, ttl)
                .await?;
            Ok(match count {
                None => tokens
                    .into_iter()
                    .map(Value::String)
                    .next()
                    .unwrap_or_default(),
                Some(_) => json!(tokens),
            })
        }
        Request::UserAdd { name, password } => server.user_add(&name, &password).await.map_err(e),
        Request::UserRemove { name } => server.user_remove(&name).await.map_err(e),
        Request::Users => server.users().map_err(e),
        Request::Clients => server.clients_list().map_err(e),
        Request::ClientShow { id } => server.client_show(&id).map_err(e),
        Request::ClientRevoke { id } => server.client_revoke(&id).await.map_err(e),
        Request::Grants { sub, client } => server
            .grants_list(sub.as_deref(), client.as_deref())
            .map_err(e),
        Request::GrantsRevoke { sub, client } => match (sub, client) {
            (Some(s), None) => server.revoke_subject(&s, "operator").await.map_err(e),
            (None, Some(c)) => server.revoke_client_grants(&c).await.map_err(e),
            _ => Err("give exactly one of --sub and --client".into()),
        },
        Request::UpstreamRotateKey => server.upstream_rotate_key().await.map_err(e),
        _ => unreachable!("pins and lockdowns are answered by `execute`"),
    }
}

/// Serves the control socket until the task is dropped. Only the agent's own user (or root)
/// may connect; the socket is 0600 in the (0700) state directory.
pub async fn serve(
    state_dir: &Path,
    ctl: Arc<Control>,
) -> Result<tokio::task::JoinHandle<()>, AppError> {
    let path = socket_path(state_dir);
    // The instance lock is held: a socket file left here is a dead agent's.
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)
        .map_err(AppError::io(format!("binding {}", path.display())))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(AppError::io(format!("chmod {}", path.display())))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let Some(uid) = stream
                .peer_cred()
                .ok()
                .map(|c| c.uid())
                .filter(|&uid| uid == 0 || uid == me)
            else {
                continue;
            };
            let ctl = ctl.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut line = String::new();
                let mut reader = tokio::io::BufReader::new(read).take(MAX_LINE as u64);
                let answer = match reader.read_line(&mut line).await {
                    Ok(_) => match serde_json::from_str::<Request>(&line) {
                        Ok(req) => match execute(&ctl, req, &caller(uid)).await {
                            Ok(v) => json!({"ok": v}),
                            Err(e) => json!({"error": e}),
                        },
                        Err(e) => json!({"error": format!("bad request: {e}")}),
                    },
                    Err(e) => json!({"error": format!("reading the request: {e}")}),
                };
                let _ = write.write_all(format!("{answer}\n").as_bytes()).await;
            });
        }
    }))
}

use tokio::io::AsyncReadExt as _;

/// Runs `req` in the running agent of `config`, or, when none runs, on the store itself.
pub fn run(config: &Config, req: Request) -> Result<Value, AppError> {
    if req.for_authz() && config.authorization_server.is_none() {
        return Err(AppError::Authz(
            "the config has no `authorization_server` (Moat's own issuer)".into(),
        ));
    }
    let path = socket_path(&config.agent.state_dir);
    match UnixStream::connect(&path) {
        Ok(stream) => send(stream, &req).map_err(AppError::Authz),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            offline(config, req)
        }
        Err(e) => Err(AppError::Io {
            what: format!("connecting to the agent at {}", path.display()),
            source: e,
        }),
    }
}

/// Runs `req` in the running agent of `config`; None when no agent listens. Never touches the
/// store or the instance lock (for `moat status`, which must not get in a starting agent's way).
pub fn ask(config: &Config, req: &Request) -> Option<Result<Value, String>> {
    let stream = UnixStream::connect(socket_path(&config.agent.state_dir)).ok()?;
    Some(send(stream, req))
}

/// No agent runs: the command runs here, holding the instance's lock (so no agent starts
/// meanwhile) and writing its events to the audit log as the agent would.
fn offline(config: &Config, req: Request) -> Result<Value, AppError> {
    let _lock = crate::instance::lock(&config.agent.state_dir)?;
    let store = Arc::new(crate::store::Store::open(&config.agent.state_dir)?);
    let ctl = Control {
        authz: crate::authz::open(config, store.clone())?,
        guards: crate::integrity::guards(config, &store)?,
        lockdowns: Arc::new(Lockdowns::open(store.clone())?),
        monitors: crate::behaviour::monitors(config, &store),
        approvals: None,
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(AppError::io("starting the runtime"))?
        .block_on(async {
            let redactor = crate::audit::redact::Redactor::new(
                &config.audit.redact_keys,
                &config.audit.redact_patterns,
            )
            .map_err(AppError::Policy)?;
            let (audit, writer) =
                crate::audit::AuditLog::open(&config.audit, &config.agent.state_dir, redactor)?;
            if let Some(a) = &ctl.authz {
                a.set_audit(audit.clone());
                let (vault, connectors) = crate::thirdparty::open(config, &store)
                    .await
                    .map_err(AppError::Auth)?;
                a.set_connectors(vault, connectors);
            }
            for g in ctl.guards.values() {
                g.set_audit(audit.clone());
            }
            ctl.lockdowns.set_audit(audit.clone());
            // SAFETY: getuid has no preconditions and cannot fail.
            let uid = unsafe { libc::getuid() };
            let answer = execute(&ctl, req, &caller(uid))
                .await
                .map_err(AppError::Authz);
            audit.flush().await;
            drop(audit);
            drop(ctl);
            let _ = writer.await;
            answer
        })
}

fn send(mut stream: UnixStream, req: &Request) -> Result<Value, String> {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let line = serde_json::to_string(req).map_err(|e| e.to_string())?;
    stream
        .write_all(format!("{line}\n").as_bytes())
        .map_err(|e| format!("sending to the agent: {e}"))?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .map_err(|e| format!("reading the agent's answer: {e}"))?;
    let v: Value = serde_json::from_str(&answer).map_err(|e| format!("the agent's answer: {e}"))?;
    match (v.get("ok"), v.get("error")) {
        (Some(ok), _) => Ok(ok.clone()),
        (None, Some(err)) => Err(err.as_str().unwrap_or("error").to_string()),
        _ => Err("the agent's answer is empty".into()),
    }
}
