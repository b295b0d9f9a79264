//! One agent per instance: an exclusive lock in the state directory, and enough file
//! descriptors for many connections.
use std::{
    fs::File,
    io::{Read as _, Seek as _, Write as _},
    path::Path,
};

use crate::error::AppError;

/// Held for the agent's lifetime; the lock goes with the process, however it ends.
pub struct InstanceLock {
    _file: File,
}

/// Takes `<state_dir>/agent.lock`. A second agent for the same instance would take over the
/// proxy socket and the upstream identity from the first, so it is refused.
pub fn lock(state_dir: &Path) -> Result<InstanceLock, AppError> {
    std::fs::create_dir_all(state_dir)
        .map_err(AppError::io(format!("creating {}", state_dir.display())))?;
    let path = state_dir.join("agent.lock");
    let mut file = File::options()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(AppError::io(format!("opening {}", path.display())))?;
    if file.try_lock().is_err() {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        return Err(AppError::AlreadyRunning {
            path,
            pid: holder.trim().to_string(),
        });
    }
    let _ = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| write!(file, "{}", std::process::id()));
    Ok(InstanceLock { _file: file })
}

/// Asks the agent `pid` that holds the lock to stop (SIGTERM: it drains), and takes the lock
/// once it is gone. An agent still there after `wait` is killed (SIGKILL, as systemd does
/// after its stop timeout): it no longer gets connections (this agent's socket is in the
/// sockmap), so waiting longer would only keep the ports closed.
pub async fn take_over(
    state_dir: &Path,
    pid: &str,
    wait: std::time::Duration,
) -> Result<InstanceLock, AppError> {
    let fail = |why: String| AppError::TakeOver {
        pid: pid.to_string(),
        why,
    };
    let n: libc::pid_t = pid
        .parse()
        .map_err(|_| fail("the lock file names no process".into()))?;
    // SAFETY: kill takes no pointers.
    if unsafe { libc::kill(n, libc::SIGTERM) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ESRCH) {
            return Err(fail(format!("signalling it: {e}")));
        }
    }
    tracing::info!(
        pid = n,
        "asked the running agent to stop; waiting while it drains"
    );
    if let Some(l) = wait_lock(state_dir, wait).await? {
        return Ok(l);
    }
    tracing::warn!(
        pid = n,
        ?wait,
        "the running agent has not stopped: killing it"
    );
    // SAFETY: kill takes no pointers.
    unsafe { libc::kill(n, libc::SIGKILL) };
    wait_lock(state_dir, std::time::Duration::from_secs(5))
        .await?
        .ok_or_else(|| fail(format!("it still runs after {wait:?} and SIGKILL")))
}

/// The instance lock, once its holder is gone; None if it is still held after `wait`.
async fn wait_lock(
    state_dir: &Path,
    wait: std::time::Duration,
) -> Result<Option<InstanceLock>, AppError> {
    let until = std::time::Instant::now() + wait;
    loop {
        match lock(state_dir) {
            Ok(l) => return Ok(Some(l)),
            Err(AppError::AlreadyRunning { .. }) if std::time::Instant::now() < until => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(AppError::AlreadyRunning { .. }) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

/// Raises the open-file limit to its hard maximum: each client connection and its upstream
/// connection take a descriptor, and the default soft limit (often 1024) is soon reached.
/// Returns the limit in effect.
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // With the privilege to (root), the hard limit too, up to the kernel's `fs.nr_open`: every
    // held stream takes two descriptors.
    let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
        .min(1 << 20);
    // SAFETY: getrlimit/setrlimit read or write the one struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if nr_open > lim.rlim_max {
            let wider = libc::rlimit {
                rlim_cur: nr_open,
                rlim_max: nr_open,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wider) == 0 {
                return nr_open;
            }
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
            tracing::warn!(
                "could not raise the open-file limit: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    lim.rlim_cur
}

/// Descriptors kept for everything but client connections and their upstream connections:
/// the audit log and its rotation, the store, listeners, the authorization server's and the
/// admin listener's connections, key fetches.
pub const RESERVED_FDS: u64 = 512;

/// How many client connections fit in `fd_limit` descriptors (two each: the client's and its
/// upstream's), with [`RESERVED_FDS`] kept for the rest: `wanted`, or fewer.
pub fn connection_capacity(wanted: usize, fd_limit: u64) -> usize {
    let fit = fd_limit.saturating_sub(RESERVED_FDS) / 2;
    wanted
        .min(usize::try_from(fit).unwrap_or(usize::MAX))
        .max(1)
}
