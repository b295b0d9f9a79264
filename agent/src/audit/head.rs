//! The chain head kept in the state directory: the last written record's number and hash, so a
//! chain whose sink cannot be read back (standard output, syslog, a file moved away) continues
//! after a restart.
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
        let chain = text.trim().split_once(' ').and_then(|(seq, hash)| {
            Some(Chain {
                seq: seq.parse().ok()?,
                prev: unhex(hash)?,
            })
        });
        Ok((Self { file }, chain))
    }

    /// Records where the chain stands (one fixed-size write in place).
    pub fn store(&mut self, chain: &Chain) -> io::Result<()> {
        let line = format!("{:020} {}\n", chain.seq, hex(&chain.prev));
        self.file.write_all_at(line.as_bytes(), 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
