//! The agent's top-level error: what failed, with the context a user needs to fix it.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Steer(#[from] crate::steer::SteerError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error(transparent)]
    Admin(#[from] crate::admin::AdminError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Tls(String),
    /// `approvals:` that cannot be used (its token file, its webhook).
    #[error("{0}")]
    Approvals(String),
    /// The authorization server cannot start: its store, keys, certificates or listener.
    #[error("authorization server: {0}")]
    Authz(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// Keys, CA files or secrets of `auth` / `upstream_auth` that cannot be used.
    #[error("{0}")]
    Auth(String),
    /// A policy file that does not load, or a described request that cannot be read.
    #[error("{0}")]
    Policy(String),
    /// `moat policy test --expect` saw another decision.
    #[error("{0}")]
    Expectation(String),
    #[error(transparent)]
    Cert(#[from] crate::tls::selfsigned::CertError),
    #[error(
        "another agent (pid {pid}) holds {path}: one agent per instance (`moat run --take-over` \
         replaces it without closing the ports)"
    )]
    AlreadyRunning {
        path: std::path::PathBuf,
        pid: String,
    },
    #[error("taking over from agent pid {pid}: {why}")]
    TakeOver { pid: String, why: String },
    #[error("give the pin directory with -c CONFIG or --bpffs DIR")]
    NoBpffs,
    #[error("moat unlock: give --all, --server NAME, --sub SUB or --client ID")]
    NoScope,
    #[error(
        "the kernel programs of this instance are attached ({path}): they steer the protected \
         ports away from plain listeners; `moat detach` first to run --unprotected"
    )]
    StillAttached { path: std::path::PathBuf },
}

impl AppError {
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }

    /// Exit status: 2 for a config the user must fix, 1 for everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Config(_) | Self::Tls(_) | Self::Auth(_) | Self::Policy(_) => 2,
            _ => 1,
        }
    }
}
