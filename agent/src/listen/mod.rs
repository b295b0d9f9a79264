//! Where protected connections are accepted. Normally from one socket the kernel steers every
//! connection for a protected port to ([`steered`]); with `moat run --unprotected`, from plain
//! loopback listeners that protect nothing ([`plain`]). Everything after accept is the same.
pub mod plain;
pub mod steered;

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use aya::maps::{MapData, RingBuf};
use serde_json::{Value, json};

use crate::{admin::AgentState, config::Config, error::AppError, steer::identity::Identity};

/// How `moat run` takes its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The kernel steers every connection for a protected port to the agent (the default).
    Steered,
    /// `--unprotected`: plain listeners on 127.0.0.1, no kernel programs (see [`plain`]).
    Unprotected,
}

/// The agent's listening sockets, and what the kernel gives beside them when it steers.
pub struct Listening {
    sockets: Vec<std::net::TcpListener>,
    steered: Option<steered::Steered>,
    marker: Option<plain::Marker>,
}

impl Listening {
    /// For `moat run --take-over`, before the running agent is asked to stop: this version's
    /// kernel programs and this agent's socket in the sockmap (steered only; plain listeners
    /// can only be opened once the other agent has closed them).
    pub fn prepare(mode: Mode, config: &Config) -> Result<Option<steered::Attached>, AppError> {
        match mode {
            Mode::Steered => steered::attach(config).map(Some),
            Mode::Unprotected => Ok(None),
        }
    }

    /// Opens the sockets for `mode`: for [`Mode::Steered`], attaches the kernel programs too
    /// (unless [`Listening::prepare`] did).
    pub fn open(
        mode: Mode,
        config: &Config,
        prepared: Option<steered::Attached>,
    ) -> Result<Self, AppError> {
        plain::clear_marker(&config.agent.state_dir);
        Ok(match mode {
            Mode::Steered => {
                let (socket, steered) = steered::open(config, prepared)?;
                Self {
                    sockets: vec![socket],
                    steered: Some(steered),
                    marker: None,
                }
            }
            Mode::Unprotected => Self {
                sockets: plain::open(config)?,
                steered: None,
                marker: None,
            },
        })
    }

    /// The addresses the agent listens on: an upstream there would be the agent itself.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.sockets
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect()
    }

    /// What the `started` audit record says of the protection.
    pub fn describe(&self) -> Value {
        match &self.steered {
            Some(s) => json!({
                "protection": "kernel",
                "adopted_pins": s.kernel.adopted,
                "programs": s.kernel.upgraded,
                "sealed_ports": s.sealed,
            }),
            None => json!({"protection": "none", "listeners": self.addrs()}),
        }
    }

    /// The kernel's event ring buffer (steered only; once).
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.steered.as_mut()?.kernel.take_events()
    }

    /// The reader of the kernel programs' diagnostics (steered, with `agent.kernel_log` on;
    /// once).
    pub fn take_kernel_log(&mut self) -> Option<crate::steer::diagnostics::KernelLogger> {
        self.steered.as_mut()?.kernel.log.take()
    }

    /// Which local process opened a connection (steered only).
    pub fn identity(&self) -> Option<Arc<Identity>> {
        self.steered.as_ref()?.identity.clone()
    }

    /// Hands the sockets to the runtime and tells `state` how the agent serves; the marker of
    /// an unprotected agent is kept (for `moat status`) until `self` is dropped.
    pub fn serve(
        &mut self,
        state: &AgentState,
        config: &Config,
    ) -> Result<Vec<tokio::net::TcpListener>, AppError> {
        let sockets = std::mem::take(&mut self.sockets);
        let addrs: Vec<SocketAddr> = sockets.iter().filter_map(|s| s.local_addr().ok()).collect();
        let sockets: Vec<_> = sockets
            .into_iter()
            .map(tokio::net::TcpListener::from_std)
            .collect::<Result<_, _>>()
            .map_err(AppError::io("registering the listening sockets"))?;
        match self.steered.take() {
            Some(s) => state
                .set_serving(s.kernel, &sockets[0])
                .map_err(AppError::io("reading the proxy socket's cookie"))?,
            None => {
                self.marker = Some(
                    plain::Marker::write(&config.agent.state_dir, &addrs)
                        .map_err(AppError::io("writing the unprotected marker"))?,
                );
                state.set_unprotected();
                tracing::warn!(listeners = ?addrs, "moat is serving its ports UNPROTECTED");
            }
        }
        Ok(sockets)
    }
}

/// IPv4-mapped IPv6 addresses (as a dual-stack socket reports IPv4 peers) as plain IPv4.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}
