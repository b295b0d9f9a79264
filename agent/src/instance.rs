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

/// Raises the open-file limit to its hard maximum: each client connection and its upstream
/// connection take a descriptor, and the default soft limit (often 1024) is soon reached.
pub fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read or write the one struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::warn!(
                    "could not raise the open-file limit: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    }
}
