//! The one place where a refused or failed request becomes an HTTP status and a JSON-RPC error.
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::Value;

use super::body::{ProxyBody, full};
use crate::{
    auth::AuthError,
    mcp::DecodeError,
    vocab::{ContentKind, Decision, Denial, Target, Verdict},
};

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no MCP endpoint at {0}")]
    NotFound(String),
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(String),
    #[error("content type must be application/json")]
    UnsupportedMediaType,
    #[error("request body is larger than {0} bytes")]
    BodyTooLarge(usize),
    #[error("request body not received in time")]
    BodyTimeout,
    #[error("reading the request body: {0}")]
    ClientBody(String),
    #[error("host {0:?} is not served here")]
    BadHost(String),
    #[error("origin {0:?} is not allowed")]
    BadOrigin(String),
    #[error("unsupported MCP-Protocol-Version {0:?}")]
    BadProtocolVersion(String),
    /// An MCP header Moat would decide on one way and the server might read another.
    #[error("the {name} header {why}")]
    BadHeader {
        name: &'static str,
        why: &'static str,
    },
    /// A GET or DELETE with a body: its framing is not what Moat forwards.
    #[error("a {0} request has no body")]
    BodyNotAllowed(String),
    /// A response Moat must read (a list result, a legacy stream) that it cannot read: it is
    /// not passed on unread.
    #[error("upstream response cannot be read: {0}")]
    UpstreamUnreadable(String),
    /// More requests in flight on one legacy session than Moat keeps track of.
    #[error("too many requests in flight on this session")]
    TooManyPending,
    #[error("{0}")]
    Decode(#[from] DecodeError),
    #[error("unknown or closed SSE session")]
    UnknownSession,
    #[error("upstream unavailable: {0}")]
    UpstreamConnect(String),
    #[error("upstream did not answer in time")]
    UpstreamTimeout,
    #[error("{error}")]
    Auth {
        error: AuthError,
        /// The `WWW-Authenticate` value.
        challenge: Option<HeaderValue>,
    },
    /// A session id that this principal did not create (another's, or one Moat never saw):
    /// the client is told only that the session does not exist.
    #[error("session {0}")]
    Session(&'static str),
    /// Refused by policy. The client learns only that the tool, resource or prompt does not
    /// exist (or, for other methods, that it is forbidden): never which policy said so.
    /// The audit log cannot be written and the policy is `fail_closed`.
    #[error("the audit log cannot be written; requests are refused until it can")]
    AuditUnavailable,
    /// An operator's lockdown stops the request (`moat lockdown`).
    #[error("locked down by an operator")]
    LockedDown,
    #[error("rate limit: {0}")]
    RateLimited(String),
    /// Content inspection found what a rule blocks in a call's arguments.
    #[error("content inspection: {} ({rule}) at {path}", kind.name())]
    ContentRefused {
        rule: Arc<str>,
        kind: ContentKind,
        path: String,
    },
    /// An `@approval` policy permitted the request, and it was not approved.
    #[error("not approved: {} (approval {id})", match verdict {
        Verdict::TimedOut => "no answer in time",
        Verdict::Abandoned => "the client went away",
        _ => "denied by an approver",
    })]
    Unapproved { id: String, verdict: Verdict },
    /// The server acts for each user at a third party, and this user has not connected it
    /// (or the token can no longer be refreshed): they must open `url`.
    #[error("connect your account at {provider} first: open {url}")]
    NotConnected {
        provider: String,
        url: String,
        /// The client declared elicitation's URL mode: the error is MCP's
        /// URLElicitationRequiredError (-32042), the URL in its data.
        url_mode: bool,
    },
    /// A request whose answer content inspection could not read whole.
    #[error("{0}")]
    Uninspectable(&'static str),
    /// A client's answer to an elicitation of Moat's that is not taken: nothing waits for it,
    /// or it waits for another caller.
    #[error("{0}")]
    ApprovalAnswer(crate::approval::ApprovalError),
    /// An `@approval` policy permitted the request, and no approval can be asked for it.
    #[error("needs approval, which cannot be asked: {0}")]
    ApprovalUnavailable(&'static str),
    #[error("denied by policy: {}", decision.reason)]
    Denied {
        /// How the method's denial is answered.
        denial: Denial,
        /// The JSON-RPC method (or the action, for an HTTP action).
        method: String,
        target: Option<String>,
        /// What the policies decided, and why.
        decision: Decision,
    },
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound(_) | Self::UnknownSession => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::ClientBody(_)
            | Self::BadProtocolVersion(_)
            | Self::BadHeader { .. }
            | Self::Uninspectable(_)
            | Self::BodyNotAllowed(_) => StatusCode::BAD_REQUEST,
            Self::UpstreamUnreadable(_) => StatusCode::BAD_GATEWAY,
            Self::TooManyPending => StatusCode::TOO_MANY_REQUESTS,
            Self::BadHost(_) => StatusCode::MISDIRECTED_REQUEST,
            Self::BadOrigin(_) => StatusCode::FORBIDDEN,
            Self::Decode(DecodeError::TooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Decode(_) => StatusCode::BAD_REQUEST,
            Self::UpstreamConnect(_) => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Auth { error, .. } => match error {
                AuthError::BadRequest(_) => StatusCode::BAD_REQUEST,
                AuthError::InsufficientScope { .. } => StatusCode::FORBIDDEN,
                AuthError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::UNAUTHORIZED,
            },
            Self::Session(_) => StatusCode::NOT_FOUND,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::AuditUnavailable | Self::LockedDown => StatusCode::SERVICE_UNAVAILABLE,
            Self::ApprovalAnswer(crate::approval::ApprovalError::NotPending(_)) => {
                StatusCode::NOT_FOUND
            }
            Self::ApprovalAnswer(_) => StatusCode::FORBIDDEN,
            // A tool call's error, as servers answer one.
            Self::ContentRefused { .. }
            | Self::NotConnected { .. }
            | Self::Unapproved { .. }
            | Self::ApprovalUnavailable(_) => StatusCode::OK,
            Self::Denied { denial, .. } => match denial {
                Denial::Unknown(_) => StatusCode::OK,
                // What a server without a stream, or one that does not let clients end
                // sessions, answers: clients carry on without them.
                Denial::NotAllowed => StatusCode::METHOD_NOT_ALLOWED,
                Denial::Forbidden => StatusCode::FORBIDDEN,
            },
        }
    }

    pub fn jsonrpc_code(&self) -> i64 {
        match self {
            Self::Decode(e) => e.jsonrpc_code(),
            Self::BadProtocolVersion(_) => -32022,
            Self::BodyTooLarge(_)
            | Self::BadHeader { .. }
            | Self::BodyNotAllowed(_)
            | Self::Uninspectable(_) => -32600,
            Self::UpstreamConnect(_)
            | Self::UpstreamTimeout
            | Self::UpstreamUnreadable(_)
            | Self::AuditUnavailable => -32603,
            Self::Auth { .. } => -32001,
            Self::ContentRefused { .. } => -32602,
            Self::NotConnected { url_mode: true, .. } => -32042,
            Self::Unapproved { .. } | Self::ApprovalUnavailable(_) | Self::NotConnected { .. } => {
                -32001
            }
            Self::Session(_) | Self::RateLimited(_) | Self::TooManyPending => -32001,
            Self::Denied { denial, .. } => match denial {
                Denial::Unknown(Target::Tool | Target::Prompt) => -32602,
                Denial::Unknown(Target::Resource) => -32002,
                Denial::Forbidden | Denial::NotAllowed => -32001,
            },
            _ => -32000,
        }
    }

    /// The JSON-RPC error the client reads (answering request `id`).
    pub fn response_body(&self, id: Option<&Value>) -> Value {
        let message = match self {
            Self::Session(_) => "Session not found".to_string(),
            Self::LockedDown => "Locked down: an operator has stopped these requests".to_string(),
            Self::ContentRefused { rule, kind, path } => format!(
                "Refused: the arguments hold {} content ({rule} at {path}); remove it and call again",
                kind.name()
            ),
            Self::Denied {
                denial,
                method,
                target,
                ..
            } => {
                let t = target.as_deref().unwrap_or_default();
                match denial {
                    Denial::Unknown(Target::Tool) => format!("Unknown tool: {t}"),
                    Denial::Unknown(Target::Prompt) => format!("Unknown prompt: {t}"),
                    Denial::Unknown(Target::Resource) => format!("Resource not found: {t}"),
                    Denial::NotAllowed => "Method not allowed".to_string(),
                    Denial::Forbidden => format!("Forbidden: {method}"),
                }
            }
            Self::Auth {
                error: AuthError::Unavailable(_),
                ..
            } => "cannot validate access tokens now; try again later".to_string(),
            _ => self.to_string(),
        };
        let mut body = crate::mcp::error_body(id, self.jsonrpc_code(), &message);
        if let Self::NotConnected {
            url,
            provider,
            url_mode: true,
        } = self
        {
            // The connection is named by the URL: asking twice shows one thing to do.
            body["error"]["data"] = serde_json::json!({"elicitations": [{
                "mode": "url",
                "elicitationId": crate::vocab::sha256_hex(url.as_bytes()),
                "url": url,
                "message": format!("Connect your account at {provider}: Moat keeps the token for you."),
            }]});
        }
        body
    }

    /// The response the client gets: the status, and a JSON-RPC error it can read.
    pub fn response(&self, id: Option<&Value>) -> Response<ProxyBody> {
        let body = self.response_body(id);
        let mut resp = Response::new(full(Bytes::from(body.to_string())));
        *resp.status_mut() = self.status();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Self::Auth {
            challenge: Some(c), ..
        } = self
        {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, c.clone());
        }
        if let Self::RateLimited(_) = self {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
        }
        let allow = match self {
            Self::MethodNotAllowed(_) => Some("GET, POST, DELETE"),
            Self::Denied {
                denial: Denial::NotAllowed,
                ..
            } => Some("POST"),
            _ => None,
        };
        if let Some(allow) = allow {
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        resp
    }
}
