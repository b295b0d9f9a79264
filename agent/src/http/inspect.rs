//! The inspection phase, both ways, on a server with `inspect` on. A tool call's arguments are
//! inspected before the policies decide (they read `context.content`); what a rule blocks
//! refuses the call. A result (of `tools/call`, `resources/read`, `prompts/get`) is inspected
//! before the client gets it: a JSON body read whole within `max_size_kib`, an event stream
//! event by event (each within the same bound, so a long stream is never held); redacted text
//! is replaced, and a message a rule blocks is replaced by a JSON-RPC error. The audit record
//! keeps the findings (rule, kind, JSON path, action) and never the text.
use std::{collections::VecDeque, sync::Arc};

use bytes::Bytes;
use serde_json::Value;

use super::{Site, body::Reader, decode::Asked, error::ProxyError};
use crate::{
    audit::RequestRecord,
    inspect::{Inspector, Outcome},
    mcp::{Message, SseParser},
    vocab::{ContentFacts, Findings, Method},
};

/// Inspects the arguments of each `tools/call` in `asked`: the facts the policies read (None
/// when nothing was inspected), or the refusal when a rule blocks.
pub fn arguments(
    site: &Site,
    asked: &Asked,
    record: &mut RequestRecord,
) -> Result<Option<ContentFacts>, ProxyError> {
    let (Some(inspector), Asked::Messages(d)) = (&site.inspect, asked) else {
        return Ok(None);
    };
    // A result read for something else (a list, `initialize`) would pass uninspected with the
    // call's in the same response: such a batch is refused.
    let reads_results = |m: &Message| {
        matches!(
            m.call(),
            Some(Method::ToolsCall | Method::ResourcesRead | Method::PromptsGet)
        )
    };
    let read_otherwise = |m: &Message| {
        m.call().is_some_and(|c| {
            c.list().is_some() || matches!(c, Method::Initialize | Method::ResourcesTemplatesList)
        })
    };
    if inspector.results
        && d.messages.iter().any(reads_results)
        && d.messages.iter().any(read_otherwise)
    {
        return Err(ProxyError::Uninspectable(
            "with content inspection, a batch may not mix calls with lists or initialize: send them apart",
        ));
    }
    if !inspector.arguments {
        return Ok(None);
    }
    let mut found = Findings::default();
    let mut refusal = None;
    let mut calls = false;
    for (n, m) in d.messages.iter().enumerate() {
        if m.call() != Some(Method::ToolsCall) {
            continue;
        }
        calls = true;
        let (Some(tool), Some(args)) = (&m.tool, &m.arguments) else {
            continue;
        };
        let o = inspector.arguments(tool, args);
        if o.is_empty() {
            continue;
        }
        if n == 0 {
            // The record keeps the first message's arguments: without what was found.
            record.arguments(&inspector.redacted(tool, args));
        }
        site.metrics.content_findings(&o.found);
        if refusal.is_none() {
            refusal = o.blocking().map(|f| ProxyError::ContentRefused {
                rule: f.rule.clone(),
                kind: f.kind,
                path: f.path.clone(),
            });
        }
        found.merge(o.found);
    }
    let facts = ContentFacts::of(&found.findings);
    record.inspected(found);
    match refusal {
        Some(e) => Err(e),
        None => Ok(calls.then_some(facts)),
    }
}

/// How the results of one POST are inspected: by which server's rules, and the tool each
/// request id called (for its per-tool settings).
pub struct Results {
    inspector: Arc<Inspector>,
    tools: Vec<(Value, Option<String>)>,
}

impl Results {
    /// The results of `messages` to inspect, if any: requests for content (`tools/call`,
    /// `resources/read`, `prompts/get`) on a server with `inspect.results` on.
    pub fn of(site: &Site, messages: &[Message]) -> Option<Self> {
        let inspector = site.inspect.as_ref().filter(|i| i.results)?;
        let tools: Vec<(Value, Option<String>)> = messages
            .iter()
            .filter(|m| {
                matches!(
                    m.call(),
                    Some(Method::ToolsCall | Method::ResourcesRead | Method::PromptsGet)
                )
            })
            .filter_map(|m| Some((m.id.clone()?, m.tool.clone())))
            .collect();
        (!tools.is_empty()).then(|| Self {
            inspector: inspector.clone(),
            tools,
        })
    }

    /// What an event stream of the server's own (a legacy session's) is inspected with.
    pub fn stream(site: &Site) -> Option<Self> {
        let inspector = site.inspect.as_ref().filter(|i| i.results)?;
        Some(Self {
            inspector: inspector.clone(),
            tools: Vec::new(),
        })
    }

    pub fn max_size(&self) -> usize {
        self.inspector.max_size
    }

    /// Inspects one message; true when it changed.
    fn message(&self, site_metrics: &Metrics, m: &mut Value, record: &mut RequestRecord) -> bool {
        let tool = m
            .get("id")
            .filter(|_| m.get("method").is_none())
            .and_then(|id| self.tools.iter().find(|(i, _)| i == id))
            .and_then(|(_, t)| t.as_deref());
        let o: Outcome = self.inspector.response(tool, m);
        if o.is_empty() {
            return false;
        }
        site_metrics.content_findings(&o.found);
        let withheld = o.blocking().map(|f| {
            format!(
                "Withheld: the result holds {} content ({} at {})",
                f.kind.name(),
                f.rule,
                f.path
            )
        });
        record.inspected(o.found);
        if let Some(why) = withheld {
            let id = m.get("id").cloned();
            *m = crate::mcp::error_body(id.as_ref(), -32603, &why);
            return true;
        }
        o.changed
    }

    /// Inspects each message of a JSON body (one, or a batch): the bytes the client gets.
    pub fn read_json(
        &self,
        metrics: &Metrics,
        body: &[u8],
        record: &mut RequestRecord,
    ) -> Result<Bytes, String> {
        let mut v: Value =
            serde_json::from_slice(body).map_err(|e| format!("the result is not JSON: {e}"))?;
        let changed = match &mut v {
            Value::Array(ms) => ms
                .iter_mut()
                .fold(false, |c, m| self.message(metrics, m, record) | c),
            one => self.message(metrics, one, record),
        };
        Ok(if changed {
            Bytes::from(v.to_string())
        } else {
            Bytes::copy_from_slice(body)
        })
    }
}

type Metrics = crate::admin::ServerMetrics;

/// An event stream inspected event by event as it passes; what passes goes on to `inner`
/// (which watches for the answers, or serves a legacy session). An event larger than the bound,
/// or one that is not JSON, ends the stream: it is not passed on unread.
pub struct InspectStream {
    results: Results,
    metrics: Metrics,
    parser: SseParser,
    inner: Option<Box<dyn Reader>>,
    passed: VecDeque<Bytes>,
}

impl InspectStream {
    pub fn new(results: Results, metrics: Metrics, inner: Option<Box<dyn Reader>>) -> Self {
        Self {
            parser: SseParser::with_blocks(results.max_size()),
            results,
            metrics,
            inner,
            passed: VecDeque::new(),
        }
    }
}

impl Reader for InspectStream {
    fn chunk(
        &mut self,
        data: Bytes,
        record: &mut RequestRecord,
        out: &mut VecDeque<Bytes>,
    ) -> Result<(), String> {
        let blocks = self
            .parser
            .push_blocks(&data)
            .map_err(|e| format!("inspecting the stream: {e}"))?;
        for block in blocks {
            // Clients read messages from `message` events only (the default type); the rest
            // (a legacy stream's `endpoint`) pass unread.
            let Some(event) = block.event.as_ref().filter(|e| {
                !e.data.is_empty() && e.event.as_deref().is_none_or(|t| t == "message")
            }) else {
                self.passed.push_back(block.raw.into());
                continue;
            };
            let mut v: Value = serde_json::from_str(&event.data)
                .map_err(|e| format!("inspecting the stream: an event is not JSON: {e}"))?;
            let changed = match &mut v {
                Value::Array(ms) => ms.iter_mut().fold(false, |c, m| {
                    self.results.message(&self.metrics, m, record) | c
                }),
                one => self.results.message(&self.metrics, one, record),
            };
            self.passed.push_back(if changed {
                block.with_data(&v.to_string()).into()
            } else {
                block.raw.into()
            });
        }
        while let Some(b) = self.passed.pop_front() {
            match &mut self.inner {
                Some(r) => r.chunk(b, record, out)?,
                None => out.push_back(b),
            }
        }
        Ok(())
    }

    fn finish(&mut self, record: &mut RequestRecord, out: &mut VecDeque<Bytes>) {
        if let Some(r) = &mut self.inner {
            r.finish(record, out);
        }
    }

    fn poll_added(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<Bytes>> {
        match &mut self.inner {
            Some(r) => r.poll_added(cx),
            None => std::task::Poll::Pending,
        }
    }
}
