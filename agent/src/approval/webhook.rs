//! Tells a configured URL of each approval asked for: a JSON POST of what `moat approvals
//! list` shows of it, sent in the background (a webhook that fails or is slow delays nothing;
//! its failure is logged).
use serde_json::Value;

pub struct Webhook {
    url: String,
    client: reqwest::Client,
}

impl Webhook {
    pub fn new(url: &str) -> Result<Self, String> {
        Ok(Self {
            url: url.to_string(),
            client: crate::auth::fetch::client(None)?,
        })
    }

    /// Posts `approval` (with `"event": "approval_requested"`).
    pub fn tell(&self, mut approval: Value) {
        approval["event"] = "approval_requested".into();
        let (client, url) = (self.client.clone(), self.url.clone());
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(%url, "approvals webhook not told: no runtime");
            return;
        };
        rt.spawn(async move {
            match client.post(&url).json(&approval).send().await {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => tracing::warn!(%url, status = %r.status(), "approvals webhook refused"),
                Err(e) => tracing::warn!(%url, "approvals webhook failed: {e}"),
            }
        });
    }
}
