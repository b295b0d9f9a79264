//! One site of `bench proxy`: a network namespace with the upstream and a `moat` running, the
//! config that this `moat` takes, and the tokens of its auth targets. A `moat` from before
//! Moat's authorization server (`--baseline` of an older ref) gets the config and tokens of its
//! time: no `authorization_server:` section (it refuses unknown keys), tokens `iss: moat:local`
//! signed with `state/issuer/local.pem`.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::{Value, json};

use super::{
    AUTHZ, DIRECT, FRESH_TOKENS, HAPROXY_UP, PLAIN, USERS,
    check::Check,
    haproxy::Haproxy,
    load::{self, Bench},
    target::{Target, targets},
    upstream::Upstream,
    usage::Audit,
};
use crate::{Result, host::Lab};

/// How the site's `moat` issues tokens for `issuer: local`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Issuer {
    /// Moat's authorization server (`authorization_server:`, keys in `moat.redb`, `iss` its
    /// URL): tokens from `moat token mint`, many at once with `--count` where it has it (else
    /// one request each on the control socket).
    Server { count: bool },
    /// Before it: `issuer: local` alone, `iss: moat:local`, the key in `state/issuer/local.pem`.
    Legacy,
}

impl Issuer {
    pub fn describe(self) -> &'static str {
        match self {
            Issuer::Server { count: true } => "authorization server, token mint --count",
            Issuer::Server { count: false } => {
                "authorization server, tokens one by one on the control socket"
            }
            Issuer::Legacy => "issuer key state/issuer/local.pem (before the authorization server)",
        }
    }
}

/// The tokens of the auth targets.
pub struct Tokens {
    /// From `moat token mint`, sent with every request.
    pub one: String,
    /// USERS principals, in turn.
    pub users: Vec<String>,
    /// FRESH_TOKENS principals, in turn.
    pub fresh: Vec<String>,
    /// For the `full` server: a member of the groups its policies permit `echo` to.
    pub full: String,
}

/// A namespace with the agent, the upstream and (in the first) HAProxy running, ready for load.
pub struct Site {
    /// Declared before `lab`: they stop before the namespace goes.
    pub upstream: Upstream,
    pub haproxy: Option<Haproxy>,
    pub lab: Lab,
    pub agent: u32,
    pub issuer: Issuer,
    pub targets: Vec<Target>,
    pub script: PathBuf,
    /// The checks made once the agent runs (the policy's decisions).
    pub checks: Vec<Check>,
}

impl Site {
    /// Starts the site `name` with `moat`, the config's `servers` (the authorization server's
    /// section is added when this `moat` takes it), the upstream (`xtask`), HAProxy with the
    /// certificate and key `haproxy` if given, and checks the `full` server's policy (TLS
    /// trusting `ca`).
    pub fn start(
        name: &str,
        moat: PathBuf,
        servers: &str,
        xtask: &Path,
        ca: &Path,
        haproxy: Option<(&Path, &Path)>,
    ) -> Result<Self> {
        let authz = format!(
            "authorization_server:\n  issuer: 'http://127.0.0.1:{AUTHZ}'\n  dangerous: {{plaintext: true}}\n"
        );
        let mut lab = Lab::new(name, moat, &format!("{servers}{authz}"))?;
        // The log is counted and freed under the agent after each round (usage::Audit): no
        // rotation by size, which counts what was written.
        let audit = format!(
            "  path: {}\n  rotate: {{max_age_s: 86400}}\n",
            lab.audit.display()
        );
        lab.write_config(&audit)?;
        let issuer = issuer_of(&lab)?;
        if issuer == Issuer::Legacy {
            lab.set_servers(servers);
            lab.write_config(&audit)?;
        }
        let script = load::write_script(&lab)?;
        let upstream = Upstream::start(&lab, xtask, &[DIRECT, PLAIN, HAPROXY_UP])?;
        let haproxy = haproxy
            .map(|(cert, key)| Haproxy::start(&lab, cert, key))
            .transpose()?;
        // Minted on the store before the agent starts (its memory is the bench's), except one
        // by one, which needs its control socket.
        let before = (issuer != Issuer::Server { count: false })
            .then(|| tokens(&lab, issuer))
            .transpose()?;
        lab.start_agent()?;
        let agent = lab
            .status()
            .and_then(|s| s["agent_pid"].as_u64())
            .ok_or("moat status --json gave no agent_pid")? as u32;
        let tokens = match before {
            Some(t) => t,
            None => tokens(&lab, issuer)?,
        };
        let checks = super::check::policy(&lab, ca, &tokens.full);
        let targets = targets(&lab, &tokens)?;
        Ok(Self {
            upstream,
            haproxy,
            lab,
            agent,
            issuer,
            targets,
            script,
            checks,
        })
    }

    pub fn bench<'a>(&'a self, xtask: &'a Path, ca: &Path) -> Bench<'a> {
        Bench {
            lab: &self.lab,
            script: &self.script,
            xtask,
            ca: ca.to_owned(),
            agent: self.agent,
            haproxy: self.haproxy.as_ref().map(|h| h.pid),
            upstream: self.upstream.pid,
            audit: Audit::default(),
        }
    }
}

/// Which kind of `moat` the lab runs: one that takes the config with `authorization_server:`
/// (`moat check`), or one from before, which refuses the key.
fn issuer_of(lab: &Lab) -> Result<Issuer> {
    let out = lab
        .command(&lab.moat)
        .args(["check", "-c"])
        .arg(&lab.config)
        .output()
        .map_err(|e| format!("moat check: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        let help = Command::new(&lab.moat)
            .args(["token", "mint", "--help"])
            .output()
            .map_err(|e| format!("moat token mint --help: {e}"))?;
        let count = String::from_utf8_lossy(&help.stdout).contains("--count");
        Ok(Issuer::Server { count })
    } else if stderr.contains("authorization_server") && stderr.contains("unknown key") {
        Ok(Issuer::Legacy)
    } else {
        Err(format!(
            "moat check -c {}: {}",
            lab.config.display(),
            stderr.trim()
        ))
    }
}

/// The tokens of the site's auth targets: `one` and `full` from `moat token mint`, the many
/// distinct ones as the site's `moat` allows.
fn tokens(lab: &Lab, issuer: Issuer) -> Result<Tokens> {
    let one = mint(lab, &["--server", "auth", "--sub", "bench"])?;
    let full = mint(
        lab,
        &[
            "--server",
            "full",
            "--sub",
            "bench-full",
            "--claim",
            r#"groups=["engineering","staff","oncall"]"#,
            "--claim",
            "department=platform",
        ],
    )?;
    let (users, fresh) = match issuer {
        Issuer::Server { count: true } => {
            let many = |sub: &str, n: usize| -> Result<Vec<String>> {
                let out = mint(
                    lab,
                    &["--server", "auth", "--sub", sub, "--count", &n.to_string()],
                )?;
                let tokens: Vec<String> = out.lines().map(str::to_string).collect();
                if tokens.len() != n {
                    return Err(format!(
                        "moat token mint --count {n} gave {} tokens",
                        tokens.len()
                    ));
                }
                Ok(tokens)
            };
            (many("user", USERS)?, many("bench", FRESH_TOKENS)?)
        }
        Issuer::Server { count: false } => (
            mint_each(lab, "user", USERS)?,
            mint_each(lab, "bench", FRESH_TOKENS)?,
        ),
        Issuer::Legacy => (
            sign_legacy(lab, "user", USERS)?,
            sign_legacy(lab, "bench", FRESH_TOKENS)?,
        ),
    };
    Ok(Tokens {
        one,
        users,
        fresh,
        full,
    })
}

/// `moat token mint -c CONFIG --scope mcp:tools ARGS`: its output, trimmed.
pub fn mint(lab: &Lab, args: &[&str]) -> Result<String> {
    let out = Command::new(&lab.moat)
        .args(["token", "mint", "-c"])
        .arg(&lab.config)
        .args(["--scope", "mcp:tools"])
        .args(args)
        .output()
        .map_err(|e| format!("moat token mint: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "moat token mint {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `n` tokens for `sub-0` .. on the running agent's control socket, one request each (a `moat`
/// with the authorization server but without `token mint --count`).
fn mint_each(lab: &Lab, sub: &str, n: usize) -> Result<Vec<String>> {
    let socket = lab.dir.join("state/control.sock");
    (0..n)
        .map(|i| {
            let e = |e: std::io::Error| format!("{}: {e}", socket.display());
            let mut s = UnixStream::connect(&socket).map_err(e)?;
            let req = json!({
                "command": "mint", "server": "auth", "sub": format!("{sub}-{i}"),
                "client_id": "moat-cli", "scopes": ["mcp:tools"], "claims": {}, "ttl": 3600,
            });
            writeln!(s, "{req}").map_err(e)?;
            let mut answer = String::new();
            BufReader::new(s).read_line(&mut answer).map_err(e)?;
            let v: Value = serde_json::from_str(&answer).map_err(|e| e.to_string())?;
            v["ok"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("the agent's control socket answered {v}"))
        })
        .collect()
}

/// `n` tokens for `sub-0` .. signed here with the key of a `moat` from before the
/// authorization server (`state/issuer/local.pem`, created by its first `moat token mint`;
/// ES256, no kid: that issuer has one key).
fn sign_legacy(lab: &Lab, sub: &str, n: usize) -> Result<Vec<String>> {
    let pem_path = lab.dir.join("state/issuer/local.pem");
    let pem = std::fs::read(&pem_path).map_err(|e| format!("{}: {e}", pem_path.display()))?;
    let key = jsonwebtoken::EncodingKey::from_ec_pem(&pem).map_err(|e| e.to_string())?;
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    (0..n)
        .map(|i| {
            let claims = json!({
                "iss": "moat:local", "aud": format!("http://127.0.0.1:{}/mcp", super::AUTH),
                "sub": format!("{sub}-{i}"), "scope": "mcp:tools", "iat": now, "exp": now + 3600,
            });
            jsonwebtoken::encode(&header, &claims, &key).map_err(|e| e.to_string())
        })
        .collect()
}
