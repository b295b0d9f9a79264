//! The protected way in: the kernel programs attached (or adopted), the protected and sealed
//! ports reconciled with the config, and one dual-stack socket in the sockmap that sk_lookup
//! hands every connection for a protected port.
use std::{
    io,
    net::{Ipv6Addr, SocketAddr, TcpListener},
    os::fd::AsFd as _,
    sync::Arc,
};

use agent_common::Settings;
use socket2::{Domain, Protocol, Socket, Type};

use crate::{
    config::{Cgroup, Config},
    error::AppError,
    steer::{self, Hooks, Kernel, identity::Identity},
    upstream,
};

/// The attached programs and what they give beside the proxy socket.
pub struct Steered {
    pub kernel: Kernel,
    /// The upstream ports the kernel seals (only the agent connects to them).
    pub sealed: Vec<u16>,
    /// Which local process opened each connection; None when the pins predate it.
    pub identity: Option<Arc<Identity>>,
}

/// This version's programs attached (or the pinned ones upgraded to them) and a new proxy
/// socket in the sockmap: from then on new connections wait in its queue.
pub struct Attached {
    listener: TcpListener,
    kernel: Kernel,
}

/// Attaches (or adopts and upgrades) the programs and puts a new proxy socket in the sockmap.
/// Safe while another agent of the instance still runs (`moat run --take-over`): the maps
/// are shared, and the programs are replaced atomically through their links.
pub fn attach(config: &Config) -> Result<Attached, AppError> {
    let cgroup = match &config.agent.cgroup {
        Cgroup::Auto => steer::cgroup2_root().map_err(AppError::io("finding the cgroup2 root"))?,
        Cgroup::Path(p) => p.clone(),
    };
    let hooks = Hooks {
        netns: "/proc/self/ns/net".into(),
        cgroup,
    };
    let kernel =
        Kernel::attach_or_adopt(&config.agent.bpffs, &hooks, config.agent.kernel_log.level())?;
    for u in &kernel.upgraded {
        tracing::info!(program = u.program, old_tag = ?u.old_tag, new_tag = %u.new_tag, how = u.how, "kernel program");
    }
    let listener = proxy_listener().map_err(AppError::io("creating the proxy listener"))?;
    kernel.set_proxy(listener.as_fd())?;
    Ok(Attached { listener, kernel })
}

/// Reserves the upstream ports, attaches the programs (unless `attached`), makes this agent
/// the one the bind guard lets through, puts the proxy socket in the sockmap (again, after a
/// take-over: the agent that stopped may have emptied it) and makes the kernel's protected
/// and sealed ports those of `config`.
pub fn open(
    config: &Config,
    attached: Option<Attached>,
) -> Result<(TcpListener, Steered), AppError> {
    upstream::reserve_ports(config.agent.upstream_ports).map_err(AppError::io(
        "reserving the upstream ports in net.ipv4.ip_local_reserved_ports",
    ))?;
    let Attached {
        listener,
        mut kernel,
    } = match attached {
        Some(a) => a,
        None => attach(config)?,
    };
    kernel.set_settings(Settings {
        upstream_port_lo: config.agent.upstream_ports.lo.into(),
        upstream_port_hi: config.agent.upstream_ports.hi.into(),
        agent_tgid: std::process::id(),
        manager_tgid: 0,
        agent_cgroup_id: steer::own_cgroup_id()
            .map_err(AppError::io("finding the agent's own cgroup"))?,
    })?;

    kernel.set_proxy(listener.as_fd())?;
    let wanted: Vec<(u16, u32)> = config
        .servers
        .iter()
        .zip(1..)
        .map(|(s, id)| (s.port, id))
        .collect();
    let sealed: Vec<(u16, u32)> = config
        .sealed_ports()
        .into_iter()
        .map(|(port, i)| (port, i as u32 + 1))
        .collect();
    kernel.reconcile(&wanted, &sealed)?;
    tracing::info!(
        bpffs = %kernel.dir.display(),
        adopted = kernel.adopted,
        proxy = ?listener.local_addr().ok(),
        ports = ?wanted.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        sealed = ?sealed.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        "moat is protecting its ports"
    );
    let identity = Identity::open(&kernel.dir).map(Arc::new);
    if identity.is_none() {
        tracing::warn!(bpffs = %kernel.dir.display(), "the pinned programs predate local process identity: `moat detach` and start again to have it");
    }
    let steered = Steered {
        kernel,
        sealed: sealed.iter().map(|(p, _)| *p).collect(),
        identity,
    };
    Ok((listener, steered))
}

/// A dual-stack (IPV6_V6ONLY=0) listener on [::] and a kernel-chosen port. It serves IPv4, IPv6
/// and v4-mapped lookups from one sockmap slot. It must be bound to the unspecified address:
/// binding an IPv6 socket to any other address makes it IPv6-only, and the kernel then refuses
/// to assign it IPv4 connections. Connections made to its own port name no protected server
/// and are closed.
pub fn proxy_listener() -> io::Result<TcpListener> {
    let s = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))?;
    s.set_only_v6(false)?;
    s.set_nonblocking(true)?;
    s.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)).into())?;
    s.listen(1024)?;
    Ok(s.into())
}
