//! The audit file: appended to, forced to disk (unless `fsync: off`) at most SYNC_EVERY after
//! a record was written and as soon as records stop coming, and rotated by size or age. A rotated file is renamed for the number of its last record
//! (`audit.jsonl` -> `audit.000000001234.jsonl`), so names sort in chain order, and the chain
//! goes on in the new file. Rotated files are kept: shipping and removing them is the
//! operator's.
use std::{
    fs::{File, OpenOptions},
    io,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use super::{chain::Chain, stream::Stream};
use crate::config::{FileSink as Config, Fsync};

pub struct FileSink {
    config: Config,
    /// A regular file: rotated and forced to disk. (Not a device such as /dev/null, or a
    /// pipe.)
    regular: bool,
    stream: Stream<File>,
    /// Size when opened; `stream.written` adds to it.
    size_at_open: u64,
    opened: SystemTime,
    /// Written but not yet forced to disk.
    unsynced: bool,
    last_sync: Instant,
}

/// While records keep coming, they are forced to disk this often (group commit): an fsync per
/// batch of a millisecond would cost more than the records.
const SYNC_EVERY: Duration = Duration::from_millis(50);

impl FileSink {
    /// Opens (appending) the file, and the chain it ends with, if it holds records.
    pub fn open(config: &Config) -> io::Result<(Self, Option<Chain>)> {
        let mut file = open(&config.path)?;
        let chain = Chain::resume(&mut file)?;
        let meta = file.metadata()?;
        let opened = meta.created().unwrap_or_else(|_| SystemTime::now());
        let sink = Self {
            config: config.clone(),
            regular: meta.is_file(),
            stream: Stream::new(file),
            size_at_open: meta.len(),
            opened,
            unsynced: false,
            last_sync: Instant::now(),
        };
        Ok((sink, (chain.seq > 0).then_some(chain)))
    }

    pub fn write(&mut self, buf: &mut Vec<u8>) -> io::Result<()> {
        self.unsynced |= !buf.is_empty();
        self.stream.write(buf)
    }

    pub fn discarded(&mut self) {
        self.stream.discarded();
    }

    /// Forces what was written to disk: now, or if SYNC_EVERY has passed since the last time.
    pub fn sync(&mut self, now: bool) -> io::Result<()> {
        if !self.unsynced || !now && self.last_sync.elapsed() < SYNC_EVERY {
            return Ok(());
        }
        if self.config.fsync == Fsync::Batch && self.regular {
            self.stream.w.sync_data()?;
        }
        self.unsynced = false;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Nothing written waits to be forced to disk.
    pub fn durable(&self) -> bool {
        !self.unsynced
    }

    /// Whether the file's chain passes through `head`; false when it cannot be read.
    pub fn passes_through(&self, head: &Chain) -> bool {
        super::chain::passes_through(&self.config.path, head).unwrap_or(false)
    }

    fn size(&self) -> u64 {
        self.size_at_open + self.stream.written
    }

    /// Whether the file is due for rotation once `more` bytes are written.
    pub fn rotation_due(&self, more: u64) -> bool {
        let size = self.size() + more;
        let big = self.config.max_bytes.is_some_and(|max| size >= max);
        let old = self
            .config
            .max_age
            .is_some_and(|max| self.opened.elapsed().unwrap_or(Duration::ZERO) >= max && size > 0);
        (big || old) && self.regular && !self.stream.mid_line()
    }

    /// Renames the file for its last record and opens a new one in its place.
    pub fn rotate(&mut self, last_seq: u64) -> io::Result<PathBuf> {
        self.sync(true)?;
        let path = &self.config.path;
        let to = rotated_name(path, last_seq);
        std::fs::rename(path, &to)?;
        let file = match open(path) {
            Ok(f) => f,
            Err(e) => {
                // Keep writing to the file we have, under its name.
                let _ = std::fs::rename(&to, path);
                return Err(e);
            }
        };
        if self.config.fsync == Fsync::Batch
            && let Some(dir) = path.parent()
        {
            // The rename and the new file survive a crash.
            File::open(dir)?.sync_all()?;
        }
        self.stream = Stream::new(file);
        self.size_at_open = 0;
        self.opened = SystemTime::now();
        Ok(to)
    }
}

fn open(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(path)
}

/// `dir/audit.jsonl` -> `dir/audit.000000001234.jsonl` (`dir/audit` -> `dir/audit.000000001234`);
/// a name already taken gets `-1`, `-2`, ... after the number.
fn rotated_name(path: &Path, last_seq: u64) -> PathBuf {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    let mut n = 0;
    loop {
        let suffix = if n == 0 {
            String::new()
        } else {
            format!("-{n}")
        };
        let to = path.with_file_name(format!("{stem}.{last_seq:012}{suffix}{ext}"));
        if !to.exists() {
            return to;
        }
        n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_names_sort_in_chain_order_before_the_live_file() {
        let dir = std::env::temp_dir().join(format!("moat-rot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let live = dir.join("audit.jsonl");
        let a = rotated_name(&live, 999);
        let b = rotated_name(&live, 1000);
        assert_eq!(a, dir.join("audit.000000000999.jsonl"));
        let mut names = vec![live.clone(), b.clone(), a.clone()];
        names.sort();
        assert_eq!(names, [a.clone(), b, live.clone()]);
        std::fs::write(&a, "").unwrap();
        assert_eq!(
            rotated_name(&live, 999),
            dir.join("audit.000000000999-1.jsonl")
        );
        assert_eq!(
            rotated_name(&dir.join("audit"), 5),
            dir.join("audit.000000000005")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
