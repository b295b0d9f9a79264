//! What content inspection finds in a message (see `inspect`): the kinds of content, what is
//! done about a finding, and a finding as audit records and policies name it (its rule and
//! where it was, never the text).
use std::sync::Arc;

use serde::Serialize;

/// What a rule looks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ContentKind {
    /// Credentials: keys, tokens, passwords.
    Secret,
    /// Personal data: e-mail addresses, payment cards, bank accounts, phone numbers.
    Personal,
    /// Text addressed to the model, or hidden from the person reading it.
    Injection,
}

impl ContentKind {
    pub const ALL: [ContentKind; 3] = [
        ContentKind::Secret,
        ContentKind::Personal,
        ContentKind::Injection,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ContentKind::Secret => "secret",
            ContentKind::Personal => "personal",
            ContentKind::Injection => "injection",
        }
    }

    pub fn by_name(name: &str) -> Option<ContentKind> {
        ContentKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// What is done about a finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ContentAction {
    /// Recorded only.
    Flag,
    /// In a result, the matched text is replaced before the client gets it; in a call's
    /// arguments (which Moat does not rewrite), the call is refused.
    Redact,
    /// The call is refused, or the result replaced by an error.
    Block,
}

impl ContentAction {
    pub fn name(self) -> &'static str {
        match self {
            ContentAction::Flag => "flag",
            ContentAction::Redact => "redact",
            ContentAction::Block => "block",
        }
    }

    pub fn by_name(name: &str) -> Option<ContentAction> {
        [
            ContentAction::Flag,
            ContentAction::Redact,
            ContentAction::Block,
        ]
        .into_iter()
        .find(|a| a.name() == name)
    }
}

/// Which way the inspected message went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From the client to the server (a call's arguments).
    Request,
    /// From the server to the client (a result, an event of its stream).
    Response,
}

/// One finding: the rule that matched, where, and what was done. Never the matched text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub rule: Arc<str>,
    pub kind: ContentKind,
    pub direction: Direction,
    /// A JSON path into the message (`$.params.arguments.body`, `$.result.content[0].text`).
    pub path: String,
    pub action: ContentAction,
}

/// The most findings one request's record keeps by name; the rest are counted.
pub const MAX_FINDINGS: usize = 32;

/// The findings of one request (its arguments, its result or stream), as its audit record
/// keeps them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Findings {
    /// The first [`MAX_FINDINGS`].
    pub findings: Vec<Finding>,
    /// Findings past those.
    #[serde(skip_serializing_if = "is_zero")]
    pub more: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Findings {
    pub fn is_empty(&self) -> bool {
        self.findings.is_empty()
    }

    pub fn push(&mut self, f: Finding) {
        if self.findings.len() < MAX_FINDINGS {
            self.findings.push(f);
        } else {
            self.more += 1;
        }
    }

    pub fn merge(&mut self, other: Findings) {
        let more = other.more;
        other.findings.into_iter().for_each(|f| self.push(f));
        self.more += more;
    }
}

/// The findings of one request's inspection, as policies read them (`context.content`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ContentFacts {
    /// The rules that matched, sorted, once each.
    pub rules: Vec<Arc<str>>,
    /// Their kinds, sorted, once each.
    pub kinds: Vec<ContentKind>,
}

impl ContentFacts {
    pub fn of(findings: &[Finding]) -> Self {
        let mut rules: Vec<Arc<str>> = findings.iter().map(|f| f.rule.clone()).collect();
        rules.sort();
        rules.dedup();
        let mut kinds: Vec<ContentKind> = findings.iter().map(|f| f.kind).collect();
        kinds.sort();
        kinds.dedup();
        Self { rules, kinds }
    }
}

/// A built-in rule of content inspection as the config, the README and `moat inspect rules`
/// name it (its pattern is `inspect`'s).
pub struct RuleInfo {
    pub id: &'static str,
    pub kind: ContentKind,
    /// What is done when the config says nothing.
    pub action: ContentAction,
    /// What it finds.
    pub about: &'static str,
}

/// The built-in rules, in the order findings are reported.
pub const RULES: &[RuleInfo] = &[
    RuleInfo {
        id: "aws_access_key_id",
        kind: ContentKind::Secret,
        action: ContentAction::Redact,
        about: "an AWS access key id (AKIA..., ASIA...)",
    },
    RuleInfo {
        id: "aws_secret_access_key",
        kind: ContentKind::Secret,
        action: ContentAction::Redact,
        about: "an AWS secret access key next to its name",
    },
    RuleInfo {
        id: "gcp_api_key",
        kind: ContentKind::Secret,
        action: ContentAction::Redact,
        about: "a Google Cloud API key (AIza...)",
    },
    RuleInfo {
        id: "github_token",
        kind: ContentKind::Secret,
        action: ContentAction::Redact,
        about: "a GitHub token (ghp_, gho_, ghu_, ghs_, ghr_, github_pat_)",
    },
    RuleInfo {
        id: "gitlab_token",
        kind: ContentKind::Secret,
        action: ContentAction::Redact,
        about: "a GitLab personal access token (glpat-)",
    },
    RuleInfo {
        id: "slack_token",
        kind: ContentKind::Secret,
        action: ContentAction::Redact,
        about: "a Slack token (xoxb-, xoxp-, ...) or incoming webhook",
    },
    RuleInfo {
        id: "stripe_key",
        kind: ContentKind::Secret,
        action: ContentAction::Redact,
        about: "a Stripe secret or restricted key (sk_live_, rk_live_, ...)",
    },
    RuleInfo {
        id: "openai_api_key",
        kind: ContentKind::Secret,
        action: ContentAction::Redact,
        about: "an OpenAI API key (sk-proj-, sk-...T3BlbkFJ...)",
    },
    RuleInfo {
        id: "anthropic_api_key",
        kind: ContentKind::Secret,
        action: ContentAction::Redact,
        about: "an Anthropic API key (sk-ant-api03-...)",
    },
    RuleInfo {
        id: "private_key",
        kind: ContentKind::Secret,
        action: ContentAction::Redact,
        about: "a PEM or OpenSSH private key, to its END line",
    },
    RuleInfo {
        id: "jwt",
        kind: ContentKind::Secret,
        action: ContentAction::Redact,
        about: "a JSON Web Token (three base64url parts, a JSON header and claims)",
    },
    RuleInfo {
        id: "bearer_token",
        kind: ContentKind::Secret,
        action: ContentAction::Redact,
        about: "a bearer token after its scheme name (RFC 6750)",
    },
    RuleInfo {
        id: "url_password",
        kind: ContentKind::Secret,
        action: ContentAction::Redact,
        about: "a password in a URL (scheme://user:password@host)",
    },
    RuleInfo {
        id: "generic_secret",
        kind: ContentKind::Secret,
        action: ContentAction::Redact,
        about: "a random value of 16 characters or more after a name like secret, token, password or api_key",
    },
    RuleInfo {
        id: "email",
        kind: ContentKind::Personal,
        action: ContentAction::Flag,
        about: "an e-mail address",
    },
    RuleInfo {
        id: "payment_card",
        kind: ContentKind::Personal,
        action: ContentAction::Flag,
        about: "a payment card number (an issuer's prefix, 13-19 digits, the Luhn check)",
    },
    RuleInfo {
        id: "iban",
        kind: ContentKind::Personal,
        action: ContentAction::Flag,
        about: "an IBAN (its country's length, the mod-97 checksum)",
    },
    RuleInfo {
        id: "phone",
        kind: ContentKind::Personal,
        action: ContentAction::Flag,
        about: "a phone number in international form (+ and 8-15 digits)",
    },
    RuleInfo {
        id: "model_directive",
        kind: ContentKind::Injection,
        action: ContentAction::Flag,
        about: "pseudo-markup or a phrase addressed to the model (as in tool integrity)",
    },
    RuleInfo {
        id: "invisible_unicode",
        kind: ContentKind::Injection,
        action: ContentAction::Flag,
        about: "characters that render as nothing (tags, zero-width, fillers)",
    },
    RuleInfo {
        id: "bidi_control",
        kind: ContentKind::Injection,
        action: ContentAction::Flag,
        about: "bidirectional controls that reorder what is shown",
    },
    RuleInfo {
        id: "terminal_escape",
        kind: ContentKind::Injection,
        action: ContentAction::Flag,
        about: "terminal escape sequences and other control characters",
    },
];
