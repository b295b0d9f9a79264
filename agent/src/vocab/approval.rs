//! A person's approval of one call, as the audit record keeps it: which approval, what became
//! of it, and who gave it, how and when.
use serde::Serialize;

/// What became of a request held for approval.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Approved,
    Denied,
    /// Nobody answered within the approvals' timeout: denied (fail closed).
    TimedOut,
    /// Covered by an approval of the same call given within its policy's minutes.
    Reused,
    /// The client went away while the request was held.
    Abandoned,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Approved => "approved",
            Verdict::Denied => "denied",
            Verdict::TimedOut => "timed_out",
            Verdict::Reused => "reused",
            Verdict::Abandoned => "abandoned",
        }
    }

    /// Whether the request may go on.
    pub fn permits(self) -> bool {
        matches!(self, Verdict::Approved | Verdict::Reused)
    }
}

/// How an approval was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// By the MCP client's user, asked with `elicitation/create` on the request's stream.
    Elicitation,
    /// `moat approvals approve|deny` (the control socket).
    Cli,
    /// `POST /approvals/ID/approve|deny` on the admin listener.
    Admin,
}

/// A user's own token at a third party, given to the upstream for them (never the token).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ThirdParty {
    /// The provider (its token endpoint's origin).
    pub provider: String,
    /// Refreshed for this request (seconds since the epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refreshed: Option<u64>,
}

/// One request's approval, in its audit record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ApprovalNote {
    /// The approval's id (what `moat approvals approve` names).
    pub id: String,
    /// The `@approval` policy that asked for it.
    pub policy: String,
    /// SHA-256 (hex) of the arguments in RFC 8785 form: what the approval is bound to, with
    /// the principal, session, server and target.
    pub arguments_sha256: String,
    pub verdict: Verdict,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<Via>,
    /// Who answered: the approver's name as given (`--by`, the admin request's `by`), the
    /// control socket's peer (`uid N`), or the MCP client's user (the principal's `sub`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// When it was answered, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
}
