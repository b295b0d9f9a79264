//! The chain head kept in the state directory: the last written record's number and hash, so a
//! chain whose sink cannot be read back (standard output, syslog, a file moved away) continues
//! after a restart, and records removed from the end of the log are seen (by `moat audit
//! verify`, and by the agent when it starts). The writer saves it only once the records it
//! names are written (and, with `fsync: batch`, on disk), so it never runs ahead of the log; it
//! may lag behind it by the records of the last moments before a crash.
use std::{fs::File, io, os::unix::fs::FileExt as _, path::Path};

use super::chain::{Chain, hex, unhex};

pub struct Head {
    file: File,
}

impl Head {
    /// Opens (creating) the head file, and the chain it holds, if any.
    pub fn open(path: &Path) -> io::Result<(Self, Option<Chain>)> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)?;
        let text = io::read_to_string(&file)?;
        Ok((Self { file }, parse(&text)))
    }

    /// Records where the chain stands (one fixed-size write in place).
    pub fn store(&mut self, chain: &Chain) -> io::Result<()> {
        let line = format!("{:020} {}\n", chain.seq, hex(&chain.prev));
        self.file.write_all_at(line.as_bytes(), 0)
    }
}

fn parse(text: &str) -> Option<Chain> {
    let (seq, hash) = text.trim().split_once(' ')?;
    Some(Chain {
        seq: seq.parse().ok()?,
        prev: unhex(hash)?,
    })
}

/// Reads a head file without creating or changing it (for `moat audit verify`).
pub fn read(path: &Path) -> io::Result<Chain> {
    let text = std::fs::read_to_string(path)?;
    parse(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "not a chain head (expected `SEQ HASH`)",
        )
    })
}

/// The log's end did not continue the saved head when the agent started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mismatch {
    /// The last record in the log.
    pub log: Chain,
    pub head: Chain,
}

/// Where the chain goes on, from the last record in the sink (`in_sink`, when it can be read
/// back and holds one) and the saved head (`saved`); `passes_through` tells whether the
/// sink's chain holds the head's record.
///
/// - Only one of them: that one (a sink that cannot be read back, a new or emptied file, or
///   no head yet).
/// - The log ends at the head, or goes on past it through the head's record (the head lags
///   after a crash): the log's end.
/// - Otherwise the log's end was removed or rewritten while the agent was stopped (or lost in
///   a power failure): the chain goes on from the later of the two (so no number is used
///   twice), and the mismatch is returned, to be recorded first.
pub fn resume(
    in_sink: Option<Chain>,
    saved: Option<Chain>,
    passes_through: impl FnOnce(&Chain) -> bool,
) -> (Chain, Option<Mismatch>) {
    match (in_sink, saved) {
        (None, None) => (Chain::START, None),
        (Some(c), None) | (None, Some(c)) => (c, None),
        (Some(log), Some(head)) if log == head => (log, None),
        (Some(log), Some(head)) if log.seq > head.seq && passes_through(&head) => (log, None),
        (Some(log), Some(head)) => {
            let from = if log.seq >= head.seq { log } else { head };
            (from, Some(Mismatch { log, head }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(seq: u64, h: u8) -> Chain {
        Chain { seq, prev: [h; 32] }
    }

    #[test]
    fn resuming_trusts_a_log_that_reaches_the_head_and_reports_one_that_does_not() {
        let never = |_: &Chain| panic!("not asked");
        assert_eq!(resume(None, None, never), (Chain::START, None));
        assert_eq!(resume(None, Some(c(7, 1)), never), (c(7, 1), None));
        assert_eq!(resume(Some(c(7, 1)), None, never), (c(7, 1), None));
        assert_eq!(resume(Some(c(7, 1)), Some(c(7, 1)), never), (c(7, 1), None));
        // The head lags (a crash before it was saved), and the log holds its record.
        assert_eq!(
            resume(Some(c(9, 2)), Some(c(7, 1)), |_| true),
            (c(9, 2), None)
        );
        // ... or it does not: rewritten past the head.
        let (from, m) = resume(Some(c(9, 2)), Some(c(7, 1)), |_| false);
        assert_eq!(from, c(9, 2), "numbering goes on from the later one");
        assert_eq!(
            m,
            Some(Mismatch {
                log: c(9, 2),
                head: c(7, 1)
            })
        );
        // Records removed from the end.
        let (from, m) = resume(Some(c(4, 3)), Some(c(7, 1)), never);
        assert_eq!(from, c(7, 1));
        assert_eq!(m.unwrap().log, c(4, 3));
        // The last record replaced.
        let (from, m) = resume(Some(c(7, 3)), Some(c(7, 1)), never);
        assert_eq!(from, c(7, 3));
        assert!(m.is_some());
    }

    #[test]
    fn reading_a_head_never_creates_one() {
        let dir = std::env::temp_dir().join(format!("moat-head-read-{}", std::process::id()));
        let path = dir.join("audit-head");
        assert_eq!(read(&path).unwrap_err().kind(), io::ErrorKind::NotFound);
        assert!(!path.exists());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&path, "garbage\n").unwrap();
        assert_eq!(read(&path).unwrap_err().kind(), io::ErrorKind::InvalidData);
        Head::open(&path).unwrap().0.store(&c(12, 5)).unwrap();
        assert_eq!(read(&path).unwrap(), c(12, 5));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_head_survives_reopening() {
        let dir = std::env::temp_dir().join(format!("moat-head-{}", std::process::id()));
        let path = dir.join("audit-head");
        let (mut h, none) = Head::open(&path).unwrap();
        assert_eq!(none, None);
        let c = Chain {
            seq: 41,
            prev: [7; 32],
        };
        h.store(&Chain {
            seq: 3,
            prev: [1; 32],
        })
        .unwrap();
        h.store(&c).unwrap();
        drop(h);
        assert_eq!(Head::open(&path).unwrap().1, Some(c));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
