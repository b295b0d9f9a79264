//! The kernel programs' own diagnostics (aya-log): loaded only at the level `agent.kernel_log`
//! asks for (below it the verifier prunes the logging instructions: nothing on the fast path),
//! read from their ring buffer into the agent's log under the target `moat::kernel`.
use aya::{Ebpf, EbpfLoader};
use aya_log::EbpfLogger;

use super::load::{Context as _, SteerError};

/// The kernel programs' log records, as the agent's own.
pub struct Bridge;

impl log::Log for Bridge {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    /// Shown at the agent's info level whatever the kernel record's level: asking for them
    /// (`agent.kernel_log`) is what shows them; their own level is a field.
    fn log(&self, r: &log::Record<'_>) {
        let (msg, level) = (r.args(), r.level().as_str());
        match r.level() {
            log::Level::Error => tracing::error!(target: "moat::kernel", level, "{msg}"),
            log::Level::Warn => tracing::warn!(target: "moat::kernel", level, "{msg}"),
            _ => tracing::info!(target: "moat::kernel", level, "{msg}"),
        }
    }

    fn flush(&self) {}
}

pub type KernelLogger = EbpfLogger<Bridge>;

/// Loads the object with its diagnostics at `level` (0: none, else aya-log's 1 = error to
/// 5 = trace), and the maps `loader` was told to find pinned.
pub fn load<'a>(
    mut loader: EbpfLoader<'a>,
    object: &[u8],
    level: &'a u8,
) -> Result<Ebpf, SteerError> {
    loader
        .override_global(aya_log::LEVEL, level, false)
        .load(object)
        .context("loading the kernel programs")
}

/// The reader of `ebpf`'s diagnostics, when any are loaded.
pub fn logger(ebpf: &mut Ebpf, level: u8) -> Result<Option<KernelLogger>, SteerError> {
    if level == 0 {
        return Ok(None);
    }
    EbpfLogger::init_with_logger(ebpf, Bridge)
        .map(Some)
        .context("reading the kernel programs' diagnostics")
}

/// Writes the records as they come, for the agent's lifetime.
pub async fn forward(logger: KernelLogger) {
    // SAFETY: the ring buffer's descriptor is owned by the logger, which the AsyncFd owns for
    // as long as it is registered; it is neither closed nor replaced meanwhile.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
    };
    let mut ready = match registered {
        Ok(r) => r,
        Err(e) => {
            return tracing::warn!("the kernel programs' diagnostics cannot be read: {e}");
        }
    };
    loop {
        let Ok(mut guard) = ready.readable_mut().await else {
            return;
        };
        guard.get_inner_mut().flush();
        guard.clear_ready();
    }
}
