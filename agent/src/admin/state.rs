//! What the admin listener reads from the running agent: the audit log's state, the kernel's
//! pins and counters (or that it serves unprotected, without them), and from them whether the
//! agent is ready to serve.
use std::{
    io,
    os::fd::AsFd,
    path::Path,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
};

use agent_common::{Counters, HOST_COUNTERS};

use crate::{audit::AuditLog, integrity::Guard, steer::Kernel};

/// Filled in by `moat run` as the agent starts: the audit log once it is open, the guards of
/// tool integrity, the kernel
/// once the programs are attached and the proxy's socket is in the sockmap (or that it serves
/// unprotected, from plain listeners).
#[derive(Default)]
pub struct AgentState {
    audit: OnceLock<AuditLog>,
    /// The guards of the servers with `integrity` on.
    guards: OnceLock<Vec<Arc<Guard>>>,
    serving: OnceLock<Serving>,
    stopping: AtomicBool,
}

enum Serving {
    /// The pins the agent serves with, and the cookie of its own listening socket.
    Kernel {
        kernel: Box<Kernel>,
        proxy_cookie: u64,
    },
    /// `moat run --unprotected`: plain listeners, no kernel programs.
    Unprotected,
}

/// Audit records written and lost so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditCounts {
    pub written: u64,
    pub dropped: u64,
}

/// The kernel's counters, summed over CPUs: per protected port, and host-wide.
pub struct KernelCounters<'a> {
    pub ports: Vec<(u16, &'a std::sync::Arc<str>, Counters)>,
    pub host: Counters,
}

/// What readiness is decided from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub stopping: bool,
    /// None until the audit log is open; then whether requests may go on.
    pub audit_accepting: Option<bool>,
    /// None until the programs are attached and the proxy socket was put in the sockmap.
    pub kernel: Option<KernelFacts>,
    /// Serving from plain listeners (`moat run --unprotected`): there is no kernel to check.
    pub unprotected: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelFacts {
    /// Every link is still pinned (`moat detach` removes them).
    pub attached: bool,
    /// The cookie of the socket in the sockmap (None: empty), or why it could not be read.
    pub sockmap: Result<Option<u64>, String>,
    /// The cookie of the agent's own listening socket.
    pub proxy_cookie: u64,
    /// The first link that is detached or runs another program than the agent's.
    pub tampered: Option<String>,
}

/// Why the agent is not ready, as /readyz says it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    #[error("starting: the audit log is not open yet")]
    AuditNotOpen,
    #[error("starting: the kernel programs are not attached yet")]
    NotAttached,
    #[error("the kernel programs are detached (moat detach)")]
    Detached,
    #[error("the proxy socket is not in the sockmap: protected ports are closed")]
    ProxySocketAbsent,
    #[error("the kernel programs were tampered with: {0}")]
    Tampered(String),
    #[error("another socket than the agent's is in the sockmap")]
    ProxySocketForeign,
    #[error("cannot read the sockmap: {0}")]
    Sockmap(String),
    #[error("the audit log cannot be written: requests are refused (on_failure: fail_closed)")]
    AuditFailing,
    #[error("stopping")]
    Stopping,
}

/// Ready when the programs are attached, the agent's own socket is in the sockmap, and the
/// audit log takes records; otherwise the first reason it is not.
pub fn verdict(f: &Facts) -> Result<(), NotReady> {
    if f.stopping {
        return Err(NotReady::Stopping);
    }
    if f.unprotected {
        return audit_verdict(f.audit_accepting);
    }
    let Some(k) = &f.kernel else {
        return Err(match f.audit_accepting {
            None => NotReady::AuditNotOpen,
            Some(_) => NotReady::NotAttached,
        });
    };
    if !k.attached {
        return Err(NotReady::Detached);
    }
    if let Some(t) = &k.tampered {
        return Err(NotReady::Tampered(t.clone()));
    }
    match &k.sockmap {
        Err(e) => return Err(NotReady::Sockmap(e.clone())),
        Ok(None) => return Err(NotReady::ProxySocketAbsent),
        Ok(Some(c)) if *c != k.proxy_cookie => return Err(NotReady::ProxySocketForeign),
        Ok(Some(_)) => {}
    }
    audit_verdict(f.audit_accepting)
}

fn audit_verdict(accepting: Option<bool>) -> Result<(), NotReady> {
    match accepting {
        Some(true) => Ok(()),
        Some(false) => Err(NotReady::AuditFailing),
        None => Err(NotReady::AuditNotOpen),
    }
}

impl AgentState {
    pub fn set_audit(&self, audit: AuditLog) {
        let _ = self.audit.set(audit);
    }

    pub fn set_guards(&self, guards: Vec<Arc<Guard>>) {
        let _ = self.guards.set(guards);
    }

    /// The guards of the servers with `integrity` on (none before they are set).
    pub fn guards(&self) -> &[Arc<Guard>] {
        self.guards.get().map_or(&[], Vec::as_slice)
    }

    /// The agent serves: `kernel`'s programs are attached and `listener` was put in the
    /// sockmap (it is recognised there by its cookie).
    pub fn set_serving(&self, kernel: Kernel, listener: &impl AsFd) -> io::Result<()> {
        let proxy_cookie = socket2::SockRef::from(listener).cookie()?;
        let _ = self.serving.set(Serving::Kernel {
            kernel: Box::new(kernel),
            proxy_cookie,
        });
        Ok(())
    }

    /// The agent serves unprotected (`moat run --unprotected`): from plain listeners, with no
    /// kernel programs.
    pub fn set_unprotected(&self) {
        let _ = self.serving.set(Serving::Unprotected);
    }

    /// Whether the agent serves unprotected.
    pub fn unprotected(&self) -> bool {
        matches!(self.serving.get(), Some(Serving::Unprotected))
    }

    fn kernel(&self) -> Option<(&Kernel, u64)> {
        match self.serving.get()? {
            Serving::Kernel {
                kernel,
                proxy_cookie,
            } => Some((kernel, *proxy_cookie)),
            Serving::Unprotected => None,
        }
    }

    /// The agent is shutting down: no longer ready, and no longer the socket new connections
    /// go to (unless another agent already took the sockmap).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        if let Some((kernel, cookie)) = self.kernel() {
            match kernel.release_proxy(cookie) {
                Ok(true) => tracing::info!(
                    "new connections to protected ports are dropped until an agent is back"
                ),
                Ok(false) => tracing::info!("another agent takes the new connections"),
                Err(e) => tracing::warn!("{e}"),
            }
        }
    }

    /// Looks at the agent as it is now.
    pub fn facts(&self) -> Facts {
        Facts {
            stopping: self.stopping.load(Ordering::Relaxed),
            audit_accepting: self.audit.get().map(AuditLog::accepting),
            kernel: self.kernel().map(|(kernel, proxy_cookie)| KernelFacts {
                attached: links_pinned(&kernel.dir),
                sockmap: kernel.proxy_socket().map_err(|e| e.to_string()),
                proxy_cookie,
                tampered: kernel.verify().iter().find_map(|c| c.problem()),
            }),
            unprotected: self.unprotected(),
        }
    }

    pub fn readiness(&self) -> Result<(), NotReady> {
        verdict(&self.facts())
    }

    pub fn audit_stats(&self) -> Option<AuditCounts> {
        self.audit.get().map(|a| AuditCounts {
            written: a.stats.written.load(Ordering::Relaxed),
            dropped: a.stats.dropped.load(Ordering::Relaxed),
        })
    }

    /// The kernel counters of `ports` (port, server name), once the agent serves.
    pub fn kernel_counters<'a>(
        &self,
        ports: &'a [(u16, std::sync::Arc<str>)],
    ) -> Option<KernelCounters<'a>> {
        let (kernel, _) = self.kernel()?;
        Some(KernelCounters {
            ports: ports
                .iter()
                .map(|(port, name)| (*port, name, kernel.counters(u32::from(*port))))
                .collect(),
            host: kernel.counters(HOST_COUNTERS),
        })
    }
}

fn links_pinned(dir: &Path) -> bool {
    crate::steer::LINKS.iter().all(|l| dir.join(l).exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serving() -> Facts {
        Facts {
            stopping: false,
            audit_accepting: Some(true),
            kernel: Some(KernelFacts {
                attached: true,
                sockmap: Ok(Some(7)),
                proxy_cookie: 7,
                tampered: None,
            }),
            unprotected: false,
        }
    }

    /// What readiness says of a serving agent changed by `change`.
    fn not_ready(change: impl FnOnce(&mut Facts)) -> NotReady {
        let mut f = serving();
        change(&mut f);
        verdict(&f).unwrap_err()
    }

    fn kernel_not_ready(change: impl FnOnce(&mut KernelFacts)) -> NotReady {
        not_ready(|f| change(f.kernel.as_mut().unwrap()))
    }

    #[test]
    fn ready_only_when_attached_in_the_sockmap_and_auditing() {
        assert_eq!(verdict(&serving()), Ok(()));
        assert_eq!(not_ready(|f| f.stopping = true), NotReady::Stopping);
        assert_eq!(
            not_ready(|f| {
                f.kernel = None;
                f.audit_accepting = None;
            }),
            NotReady::AuditNotOpen
        );
        assert_eq!(not_ready(|f| f.kernel = None), NotReady::NotAttached);
        assert_eq!(kernel_not_ready(|k| k.attached = false), NotReady::Detached);
        assert_eq!(
            kernel_not_ready(|k| k.tampered = Some("link_steer was detached".into())),
            NotReady::Tampered("link_steer was detached".into())
        );
        assert_eq!(
            kernel_not_ready(|k| k.sockmap = Ok(None)),
            NotReady::ProxySocketAbsent
        );
        assert_eq!(
            kernel_not_ready(|k| k.sockmap = Ok(Some(8))),
            NotReady::ProxySocketForeign
        );
        assert_eq!(
            kernel_not_ready(|k| k.sockmap = Err("EPERM".into())),
            NotReady::Sockmap("EPERM".into())
        );
        assert_eq!(
            not_ready(|f| f.audit_accepting = Some(false)),
            NotReady::AuditFailing
        );
    }

    #[test]
    fn unprotected_is_ready_with_no_kernel_while_the_audit_log_takes_records() {
        let unprotected = |audit| Facts {
            stopping: false,
            audit_accepting: audit,
            kernel: None,
            unprotected: true,
        };
        assert_eq!(verdict(&unprotected(Some(true))), Ok(()));
        assert_eq!(
            verdict(&unprotected(Some(false))),
            Err(NotReady::AuditFailing)
        );
        assert_eq!(verdict(&unprotected(None)), Err(NotReady::AuditNotOpen));
        let s = AgentState::default();
        assert!(!s.unprotected());
        s.set_unprotected();
        assert!(s.unprotected() && s.kernel_counters(&[]).is_none());
        assert_eq!(s.readiness(), Err(NotReady::AuditNotOpen));
    }

    #[test]
    fn a_starting_agent_is_not_ready() {
        let s = AgentState::default();
        assert_eq!(s.readiness(), Err(NotReady::AuditNotOpen));
        assert_eq!(s.audit_stats(), None);
        assert!(s.kernel_counters(&[]).is_none());
    }
}
