//! `approvals:`: how requests held for a person's approval (by `@approval` policies) are
//! asked about and how long they wait.
use std::{path::PathBuf, time::Duration};

use super::yaml::{Node, Report};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approvals {
    /// How long a held request waits for an answer; then it is denied.
    pub timeout: Duration,
    /// Told of each approval asked for (a JSON POST), if set.
    pub webhook: Option<String>,
    /// The bearer token of the admin listener's `/approvals` endpoints (a file holding it);
    /// None: those endpoints are off.
    pub token_file: Option<PathBuf>,
}

/// `timeout_s` when not given.
const TIMEOUT: Duration = Duration::from_secs(120);

impl Default for Approvals {
    fn default() -> Self {
        Self {
            timeout: TIMEOUT,
            webhook: None,
            token_file: None,
        }
    }
}

pub(super) fn read_approvals(n: &Node<'_>, r: &mut Report) -> Option<Approvals> {
    let m = n.mapping(&["timeout_s", "webhook", "token_file"], r)?;
    let timeout = match m.get("timeout_s") {
        None => Some(TIMEOUT),
        Some(v) => match v.integer(r)? {
            s @ 1..=3600 => Some(Duration::from_secs(s as u64)),
            s => {
                r.add(v, format!("expected 1 to 3600 (seconds), found {s}"));
                None
            }
        },
    };
    let webhook = match m.get("webhook") {
        None => Some(None),
        Some(v) => v.string(r).and_then(|u| match url::Url::parse(&u) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                Some(Some(u))
            }
            _ => {
                r.add(v, format!("expected an http(s) URL, found {u:?}"));
                None
            }
        }),
    };
    let token_file = match m.get("token_file") {
        None => Some(None),
        Some(v) => v.string(r).and_then(|p| {
            if p.starts_with('/') {
                Some(Some(PathBuf::from(p)))
            } else {
                r.add(v, "expected an absolute path");
                None
            }
        }),
    };
    Some(Approvals {
        timeout: timeout?,
        webhook: webhook?,
        token_file: token_file?,
    })
}
